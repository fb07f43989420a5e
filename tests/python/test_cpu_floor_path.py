"""The CPU forward: the floor path (PyTorch's oneDNN / native convolution plus one in-place
activation pass) by default, and the OpenMP direct kernel under FUSEDCONV_CPU_DIRECT=1 (read once
per process, so in a subprocess), both against float64 on layouts, groups, strides and dtypes;
and the CPU backward, which runs grouped channels_last convolutions on NCHW copies where
PyTorch's own channels_last backward measured slow (ops.cpp, cpu_backward_via_nchw)."""

import os
import subprocess
import sys

import pytest
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("config", CONFIGS, ids=["dense", "depthwise", "grouped_same", "strided"])
def test_cpu_backward_matches_float64_in_channels_last(config, dtype):
    torch.manual_seed(1)
    n, cin, cout, size, kernel, kwargs = config
    groups = kwargs.get("groups", 1)
    channels_last = torch.channels_last
    x = torch.randn(n, cin, size, size + 2, dtype=dtype).contiguous(memory_format=channels_last)
    weight = (torch.randn(cout, cin // groups, kernel, kernel, dtype=dtype) * 0.3).contiguous(
        memory_format=channels_last)
    bias = torch.randn(cout, dtype=dtype)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    y = fusedconv.conv2d_hardswish_relu(*leaves, **kwargs)
    grad_output = torch.randn_like(y)
    actual = torch.autograd.grad(y, leaves, grad_output)
    references = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    expected = torch.autograd.grad(reference_float64(*references, **kwargs), references,
                                   grad_output.double())
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), actual, expected):
        assert relative_l2_error(a, e) <= tolerance, name
    # The gradients in channels_last, as the forward's output, whatever layout computed them.
    for name, a in zip(("grad_input", "grad_weight"), actual[:2]):
        assert a.is_contiguous(memory_format=channels_last), name
