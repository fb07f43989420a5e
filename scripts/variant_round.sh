#!/usr/bin/env bash
# Same-machine A/B of several variants of one source file, in one device call. The tree is built
# once per variant, each build after the first from a copy of the previous build's folder, so
# ninja recompiles the one changed file and relinks (~40 s on an H100 host, against ~70 s for a
# whole build). Each variant's library becomes the prebuilt _C.so of its own copy of the package
# (.scratch/variant_pkgs/NAME), which CMD then imports. The libraries' md5s are printed, and two
# variants whose sources differ but whose libraries do not stop the round: a build that silently
# reused another's library once made five variants one (twenty-seventh session). So variants that
# differ only in comments stop it too.
#   scripts/variant_round.sh FILE ROUNDS CMD NAME=VARIANT_FILE...
# FILE is a source under csrc/ (restored afterwards); each VARIANT_FILE is a whole copy of it
# (keep them under .scratch/ and carry .scratch; FILE itself may be one), read once at the start.
# CMD runs with bash in benchmarks/, once per variant per round, in forward order in odd rounds
# and reverse order in even ones; it sees VARIANT (the name), ROUND (1..ROUNDS) and OUT. Logs and
# what CMD writes under $OUT (which should start empty: it is emptied into the archive) come back
# as $OUT/variant_logs.tgz. Example:
#   scripts/variant_round.sh csrc/cuda/forward/channels_last_gemm.cu 2 'python3
#     channels_last_gemm_kernel_time.py --variant-set --json $OUT/t_${VARIANT}_${ROUND}.json'
#     main=.scratch/v/main.cu fast_divisor=.scratch/v/fast_divisor.cu
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
if [ $# -lt 4 ]; then
  sed -n '2,19p' "$0" >&2
  exit 2
fi
file="$1" rounds="$2" command="$3"
shift 3
if [ ! -f "$file" ]; then
  echo "no source file $file" >&2
  exit 2
fi
file=$(realpath -- "$file")
if ! [[ "$rounds" =~ ^[1-9][0-9]*$ ]]; then
  echo "ROUNDS must be a positive integer, got '$rounds'" >&2
  exit 2
fi
if compgen -G "$ROOT/fusedconv/_C*.so" >/dev/null; then
  echo "a prebuilt fusedconv/_C*.so would be loaded instead of each variant's build" >&2
  exit 2
fi
# Every variant read now, before FILE changes (FILE may be one of them).
snapshots=$(mktemp -d)
names=()
declare -A seen
for spec in "$@"; do
  name="${spec%%=*}" path="${spec#*=}"
  if [ ! -f "$path" ] || ! [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || [ "$name" = "$spec" ] ||
     [ -n "${seen[$name]:-}" ]; then
    echo "bad variant '$spec' (NAME=FILE, names of [A-Za-z0-9_.-], each once)" >&2
    exit 2
  fi
  seen[$name]=1
  names+=("$name")
  cp "$path" "$snapshots/$name" || exit 1
done
export OUT="${OUT:-/tmp/variant-round}" PYTHONUNBUFFERED=1
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$ROOT/.torch_extensions}"
mkdir -p "$OUT"
# The system compiler, as scripts/gpu_round.sh explains.
if [ -x /usr/bin/g++ ]; then
  export CXX=/usr/bin/g++ CC=/usr/bin/gcc
fi
PACKAGES=$ROOT/.scratch/variant_pkgs
original=$(mktemp)
cp "$file" "$original" || exit 1
# On any exit: FILE back as it was, and the logs in one archive (a call returns only a few files).
# shellcheck disable=SC2317  # run by the EXIT trap
finish() {
  cp "$original" "$file" || echo "could not restore $file (its original: $original)" >&2
  rm -rf "$snapshots"
  local archive
  archive=$(mktemp --suffix=.tgz)
  (cd "$OUT" && tar czf "$archive" . && find . -mindepth 1 -delete &&
    mv "$archive" variant_logs.tgz)
}
trap finish EXIT

build_folder() {
  PYTHONPATH=$ROOT python3 -c "import torch; from fusedconv import _build as b
print(b._BuildPlan(b.source_root(), with_cuda=torch.cuda.is_available()).directory)"
}
previous=""
declare -A library_md5 source_md5
for name in "${names[@]}"; do
  cp "$snapshots/$name" "$file" && touch "$file" || exit 1
  folder=$(build_folder) || exit 1
  if [ -n "$previous" ] && [ ! -d "$folder" ]; then
    # The previous build's objects, without its library: load_extension builds what is missing.
    cp -a "$previous" "$folder" && rm -f "$folder"/*.so || exit 1
  fi
  started=$(date +%s)
  library=$(PYTHONPATH=$ROOT python3 -c \
    "from fusedconv import _build; print(_build.load_extension())" \
    2>"$OUT/variant_build_$name.log")
  status=$?
  echo "build $name: exit $status, $(( $(date +%s) - started )) s"
  if [ "$status" -ne 0 ] || [ ! -f "$library" ] || [[ "$library" != "$folder"/* ]]; then
    echo "  library '$library', expected in $folder" >&2
    tail -n 20 "$OUT/variant_build_$name.log"
    exit 1
  fi
  package="$PACKAGES/$name/fusedconv"
  rm -rf "${PACKAGES:?}/$name" && mkdir -p "$PACKAGES/$name" && cp -r fusedconv "$package" &&
    rm -f "$package"/_C*.so && cp "$library" "$package/_C.so" || exit 1
  library_md5[$name]=$(md5sum < "$library" | cut -c1-32)
  source_md5[$name]=$(md5sum < "$snapshots/$name" | cut -c1-32)
  echo "  library md5 ${library_md5[$name]}"
  for other in "${!library_md5[@]}"; do
    if [ "$other" != "$name" ] && [ "${library_md5[$other]}" = "${library_md5[$name]}" ] &&
       [ "${source_md5[$other]}" != "${source_md5[$name]}" ]; then
      echo "variants $other and $name differ in source but built one library" >&2
      exit 1
    fi
  done
  previous=$folder
done

status=0
for ((round = 1; round <= rounds; ++round)); do
  order=("${names[@]}")
  if (( round % 2 == 0 )); then
    order=()
    for ((i = ${#names[@]} - 1; i >= 0; --i)); do order+=("${names[$i]}"); done
  fi
  for name in "${order[@]}"; do
    (cd "$ROOT/benchmarks" && VARIANT=$name ROUND=$round \
      PYTHONPATH="$PACKAGES/$name:$ROOT/benchmarks" bash -c "$command" \
      >"$OUT/variant_${name}_$round.log" 2>&1)
    rc=$?
    echo "round $round $name: exit $rc"
    [ "$rc" -eq 0 ] || status=1
  done
done
exit "$status"
