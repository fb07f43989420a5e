# Sourced by scripts/run.sh and .ci/run: sets PYTHON to an interpreter that has torch, pytest and
# ninja. FUSEDCONV_ENV picks it:
#   auto (default)  the system python3 if it already has all three (the GPU machine: no network,
#                   torch preinstalled), otherwise the cached virtualenv below
#   venv            always the cached virtualenv: PyTorch 2.1.2, our compatibility floor (CI)
#   system          python3 as it is
# The virtualenv lives outside the checkout (FUSEDCONV_VENV, default ~/.cache/fusedconv/...), so
# fresh clones on the same machine reuse it; a stamp file records what was installed into it.

FUSEDCONV_REQUIREMENTS="torch==2.1.2 numpy<2 pytest ninja pycodestyle"
FUSEDCONV_VENV="${FUSEDCONV_VENV:-$HOME/.cache/fusedconv/venv-py3-torch2.1.2}"

_fusedconv_system_ready() {
  python3 -c "import torch, pytest, ninja" >/dev/null 2>&1
}

_fusedconv_venv_ready() {
  [ -x "$FUSEDCONV_VENV/bin/python" ] &&
    [ "$(cat "$FUSEDCONV_VENV/.fusedconv-stamp" 2>/dev/null)" = "$FUSEDCONV_REQUIREMENTS" ]
}

_fusedconv_make_venv() {
  echo "fusedconv: installing $FUSEDCONV_REQUIREMENTS into $FUSEDCONV_VENV (once per machine)" >&2
  rm -rf "$FUSEDCONV_VENV"
  python3 -m venv "$FUSEDCONV_VENV" || return 1
  # shellcheck disable=SC2086  # the requirement list is meant to split into words
  "$FUSEDCONV_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    $FUSEDCONV_REQUIREMENTS || return 1
  echo "$FUSEDCONV_REQUIREMENTS" >"$FUSEDCONV_VENV/.fusedconv-stamp"
}

case "${FUSEDCONV_ENV:-auto}" in
  system)
    PYTHON=python3
    ;;
  venv)
    _fusedconv_venv_ready || _fusedconv_make_venv || return 1
    PYTHON="$FUSEDCONV_VENV/bin/python"
    ;;
  auto)
    if _fusedconv_system_ready; then
      PYTHON=python3
    else
      _fusedconv_venv_ready || _fusedconv_make_venv || return 1
      PYTHON="$FUSEDCONV_VENV/bin/python"
    fi
    ;;
  *)
    echo "fusedconv: FUSEDCONV_ENV must be auto, venv or system, got '$FUSEDCONV_ENV'" >&2
    return 1
    ;;
esac
export PYTHON
