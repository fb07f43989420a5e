#!/usr/bin/env bash
# CI's packaging check: `pip install --no-build-isolation` into a scratch directory (not the
# environment the tests import from), then, from outside the repository, one operator call and
# the KernelBench export from the installed package (csrc ships inside it). On a machine whose
# CUDA toolkit does not match torch's CUDA, setup.py builds the CPU operators and says why.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/python_env.sh
source scripts/python_env.sh
repo="$PWD"
target="$(mktemp -d)"
trap 'rm -rf "$target"' EXIT
"$PYTHON" -m pip install -q wheel
"$PYTHON" -m pip install -q --no-build-isolation --no-deps --target "$target/site" "$repo"
cd "$target"
PYTHONPATH="$target/site" "$PYTHON" - "$target/site" <<'PY'
import sys

import torch

import fusedconv

assert fusedconv.__file__.startswith(sys.argv[1]), fusedconv.__file__
x, w, b = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3), torch.randn(4)
y = fusedconv.conv2d_hardswish_relu(x, w, b, padding=1)
expected = torch.relu(torch.nn.functional.hardswish(torch.nn.functional.conv2d(x, w, b, padding=1)))
torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)
print("installed fusedconv: one call matches eager")
PY
PYTHONPATH="$target/site" "$PYTHON" -m fusedconv export-kernelbench -o "$target/model_new.py"
grep -q "class ModelNew" "$target/model_new.py"
echo "installed fusedconv: KernelBench export written ($(wc -l <"$target/model_new.py") lines)"
