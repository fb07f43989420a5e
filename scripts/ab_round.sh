#!/usr/bin/env bash
# Same-machine A/B of two builds: the working tree ("new") against a git ref ("base"), each with
# its own extension directory, timed in alternating rounds so drift between them shows.
#   scripts/ab_round.sh prepare REF        (here, before the device call) writes REF's sources to
#                                          .scratch/base_tree (ignored: carry .scratch)
#   scripts/ab_round.sh run ROUNDS CMD     (on the device) builds both trees at once, then runs
#                                          CMD with bash in each tree's benchmarks/ directory,
#                                          base then new, ROUNDS times; CMD sees AB_TREE (base /
#                                          new), AB_ROUND (1..ROUNDS) and OUT. Logs and whatever
#                                          CMD writes under $OUT come back as $OUT/ab_logs.tgz.
# Example: scripts/ab_round.sh run 2 'python3 channels_last_gemm_kernel_time.py --small-channels
#          --json $OUT/small_${AB_TREE}_${AB_ROUND}.json'
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
BASE=$ROOT/.scratch/base_tree

case "${1:-}" in
  prepare)
    ref="${2:?prepare needs a git ref}"
    rm -rf "$BASE" "$ROOT/.scratch/base_te"
    mkdir -p "$BASE"
    git archive "$ref" csrc fusedconv setup.py pyproject.toml benchmarks tests/sanitizer |
      tar -x -C "$BASE"
    echo "base tree: $(git rev-parse --short "$ref") in $BASE"
    ;;
  run)
    rounds="${2:?run needs a round count}"
    command="${3:?run needs a command}"
    [ -d "$BASE" ] || { echo "no base tree: run 'prepare REF' first" >&2; exit 2; }
    export OUT="${OUT:-/tmp/ab-round}" PYTHONUNBUFFERED=1
    mkdir -p "$OUT"
    # The system compiler, as scripts/gpu_round.sh explains.
    if [ -x /usr/bin/g++ ]; then
      export CXX=/usr/bin/g++ CC=/usr/bin/gcc
    fi
    tree_dir() { [ "$1" = base ] && echo "$BASE" || echo "$ROOT"; }
    extensions_dir() {
      [ "$1" = base ] && echo "$ROOT/.scratch/base_te" || echo "$ROOT/.torch_extensions"
    }
    pids=()
    for tree in base new; do
      (cd "$(tree_dir $tree)" && TORCH_EXTENSIONS_DIR="$(extensions_dir $tree)" \
        PYTHONPATH="$(tree_dir $tree)" python3 -c "import fusedconv; fusedconv.load_extension()" \
        >"$OUT/ab_build_$tree.log" 2>&1) &
      pids+=($!)
    done
    status=0
    for i in 0 1; do
      tree=$([ "$i" = 0 ] && echo base || echo new)
      if wait "${pids[$i]}"; then
        echo "build $tree: ok"
      else
        echo "build $tree: FAILED"; tail -n 20 "$OUT/ab_build_$tree.log"; status=1
      fi
    done
    [ "$status" -eq 0 ] || exit 1
    for ((round = 1; round <= rounds; ++round)); do
      for tree in base new; do
        (cd "$(tree_dir $tree)/benchmarks" && AB_TREE=$tree AB_ROUND=$round \
          TORCH_EXTENSIONS_DIR="$(extensions_dir $tree)" PYTHONPATH="$(tree_dir $tree)" \
          bash -c "$command" >"$OUT/ab_${tree}_$round.log" 2>&1)
        rc=$?
        echo "round $round $tree: exit $rc"
        [ "$rc" -eq 0 ] || status=1
      done
    done
    # One archive: a call returns only a few files from $OUT.
    (cd "$OUT" && tar czf /tmp/ab_logs.tgz ./* && find . -mindepth 1 -delete &&
      mv /tmp/ab_logs.tgz .)
    exit "$status"
    ;;
  *)
    sed -n '2,12p' "$0" >&2
    exit 2
    ;;
esac
