"""The CPU forward: the floor path (PyTorch's oneDNN / native convolution plus one in-place
activation pass) by default, and the OpenMP direct kernel under FUSEDCONV_CPU_DIRECT=1 (read once
per process, so in a subprocess), both against float64 on layouts, groups, strides and dtypes."""

import os
import subprocess
import sys

import torch

import fusedconv
from fusedconv.reference import reference_float64, reference_forward, relative_l2_error

# (batch, in, out, size, kernel, keyword arguments)
CONFIGS = [
    (2, 8, 16, 13, 3, {"padding": 1}),
    (2, 12, 12, 11, 3, {"padding": 1, "groups": 12}),
    (1, 6, 9, 12, 4, {"padding": "same", "groups": 3}),
    (2, 4, 8, 15, 3, {"stride": 2, "dilation": 2}),
]

SCRIPT = """
import sys, torch, fusedconv
cases = torch.load(sys.argv[1])
torch.save([fusedconv.conv2d_hardswish_relu(x, w, b, **kw) for x, w, b, kw in cases], sys.argv[2])
"""


def _cases():
    torch.manual_seed(0)
    cases = []
    for n, cin, cout, size, kernel, kwargs in CONFIGS:
        for dtype in (torch.float32, torch.float64):
            groups = kwargs.get("groups", 1)
            x = torch.randn(n, cin, size, size + 2, dtype=dtype)
            weight = torch.randn(cout, cin // groups, kernel, kernel, dtype=dtype) * 0.3
            bias = torch.randn(cout, dtype=dtype)
            cases.append((x, weight, bias, kwargs))
            cases.append((x.contiguous(memory_format=torch.channels_last), weight, bias, kwargs))
    return cases


def test_cpu_floor_and_direct_kernel_match_float64(tmp_path):
    cases = _cases()
    torch.save(cases, tmp_path / "cases.pt")
    environment = dict(os.environ, FUSEDCONV_CPU_DIRECT="1")
    subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "cases.pt"),
                    str(tmp_path / "direct.pt")], env=environment, check=True)
    direct = torch.load(tmp_path / "direct.pt")
    for (x, weight, bias, kwargs), from_direct in zip(cases, direct):
        expected = reference_float64(x, weight, bias, **kwargs)
        floor = fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)
        tolerance = 1e-12 if x.dtype == torch.float64 else 1e-5
        assert relative_l2_error(floor, expected) <= tolerance
        assert relative_l2_error(from_direct, expected) <= tolerance
        # Both in the memory format F.conv2d gives.
        assert floor.stride() == reference_forward(x, weight, bias, **kwargs).stride()
        assert from_direct.stride() == floor.stride()
