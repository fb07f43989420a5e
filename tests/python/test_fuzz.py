"""Differential fuzzing against PyTorch's float64 reference: random valid configurations of every
knob (batch incl. 0 and 1, prime channel counts, groups, non-square kernels, stride, padding incl.
'same'/'valid', dilation, bias, dtype, memory layout), forward and backward; a third of the cases
drawn inside the CUDA tensor-core path's rule.

Seeded: FUSEDCONV_FUZZ_SEED picks the stream (default 20261124), every failure message names the
case index and its configuration, and `-k "case_17"` reruns one case. Counts:
FUSEDCONV_FUZZ_CUDA_CASES (default 1000) and FUSEDCONV_FUZZ_CPU_CASES (default 150).

Tolerances (relative L2 error against float64, the output checked NaN-free first):
  float64 1e-12, float32 1e-5 (3xTF32 or FFMA), float16 3e-3, bfloat16 2e-2 — the storage
  rounding of the result (2^-11 and 2^-8 relative) with headroom; gradients: float64 1e-10,
  float32 1e-5 (against float64 on the output's activation branches), float16 2e-2, bfloat16 1e-1.
"""

import os
import random

import pytest
import torch

import fusedconv
from fusedconv.reference import (reference_float64, reference_gradients_float64,
                                 relative_l2_error)

SEED = int(os.environ.get("FUSEDCONV_FUZZ_SEED", "20261124"))
CUDA_CASES = int(os.environ.get("FUSEDCONV_FUZZ_CUDA_CASES", "1000"))
CPU_CASES = int(os.environ.get("FUSEDCONV_FUZZ_CPU_CASES", "150"))
PRIMES = [1, 2, 3, 5, 7, 11, 13]

FORWARD_TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 3e-3,
                     torch.bfloat16: 2e-2}
GRADIENT_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-2,
                      torch.bfloat16: 1e-1}


def draw_case(index, device):
    """Configuration number `index` of the stream; valid by construction."""
    rng = random.Random(SEED * 1000003 + index * 2 + (device == "cuda"))
    # A third of the cases fit the CUDA tensor-core path's rule (float32, dense NCHW, stride 1,
    # dilation 1, groups 1), which uniform draws would rarely hit.
    fast_path = rng.random() < 1 / 3
    groups = 1 if fast_path else rng.choice([1, 1, 1, 2, 3])
    in_channels = groups * rng.choice(PRIMES + [4, 8, 16])
    out_channels = groups * rng.choice(PRIMES + [4, 8, 16])
    kernel = (rng.randint(1, 7), rng.randint(1, 7))
    dilation = (1, 1) if fast_path else (rng.randint(1, 3), rng.randint(1, 3))
    padding_kind = rng.choice(["int", "pair", "same", "valid"])
    stride = ((1, 1) if padding_kind == "same" or fast_path
              else (rng.randint(1, 3), rng.randint(1, 3)))
    if padding_kind == "int":
        padding = rng.randint(0, 3)
        pads = (padding, padding)
    elif padding_kind == "pair":
        padding = (rng.randint(0, 3), rng.randint(0, 3))
        pads = padding
    else:
        padding = padding_kind
        pads = (0, 0)
    extent = [dilation[i] * (kernel[i] - 1) + 1 for i in range(2)]
    # Spatial size from the smallest valid one up; now and then up to ~100.
    limit = 100 if rng.random() < 0.1 else 40
    height = rng.randint(max(1, extent[0] - 2 * pads[0]), max(extent[0], limit))
    width = rng.randint(max(1, extent[1] - 2 * pads[1]), max(extent[1], limit))
    if padding_kind == "same":
        height, width = max(height, 1), max(width, 1)
    dtypes = ([torch.float32, torch.float32, torch.float16, torch.bfloat16] if device == "cuda"
              else [torch.float32, torch.float64])
    return dict(batch=rng.choice([0, 1, 1, 2, 3]), in_channels=in_channels,
                out_channels=out_channels, height=height, width=width, kernel=kernel,
                stride=stride, padding=padding, dilation=dilation, groups=groups,
                bias=rng.random() < 0.75,
                dtype=torch.float32 if fast_path else rng.choice(dtypes),
                layout="nchw" if fast_path else rng.choice(["nchw", "nchw", "channels_last",
                                                            "strided"]),
                backward=rng.random() < 0.3)


def make_tensors(case, device, generator):
    shape = (case["batch"], case["in_channels"], case["height"], case["width"])
    if case["layout"] == "strided":
        # Every other column of a wider buffer: not contiguous in any memory format.
        wide = torch.randn(shape[:3] + (2 * shape[3],), generator=generator)
        x = wide[..., ::2]
    else:
        x = torch.randn(shape, generator=generator)
    fan_in = case["in_channels"] // case["groups"] * case["kernel"][0] * case["kernel"][1]
    weight = torch.randn((case["out_channels"], case["in_channels"] // case["groups"]) +
                         case["kernel"], generator=generator) / fan_in ** 0.5
    bias = torch.randn(case["out_channels"], generator=generator) if case["bias"] else None
    dtype = case["dtype"]
    x = x.to(device=device, dtype=dtype)
    if case["layout"] == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    weight = weight.to(device=device, dtype=dtype)
    bias = None if bias is None else bias.to(device=device, dtype=dtype)
    return x, weight, bias


def check_case(index, device):
    case = draw_case(index, device)
    label = "case %d (FUSEDCONV_FUZZ_SEED=%d, %s): %r" % (index, SEED, device, case)
    generator = torch.Generator().manual_seed(SEED + index)
    x, weight, bias = make_tensors(case, device, generator)
    conv = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                groups=case["groups"])
    expected = reference_float64(x, weight, bias, **conv)
    leaves = [t.detach().requires_grad_() if case["backward"] else t
              for t in (x, weight, bias) if t is not None]
    actual = fusedconv.conv2d_hardswish_relu(leaves[0], leaves[1],
                                             leaves[2] if bias is not None else None, **conv)
    assert actual.shape == expected.shape, label
    assert actual.dtype == case["dtype"], label
    if actual.numel() == 0:
        return
    assert torch.isfinite(actual).all(), "non-finite output: " + label
    error = relative_l2_error(actual, expected)
    assert error <= FORWARD_TOLERANCE[case["dtype"]], "forward error %.3g: %s" % (error, label)
    if not case["backward"]:
        return
    grad_output = torch.randn(actual.shape, generator=generator).to(actual)
    grads = torch.autograd.grad(actual, leaves, grad_output)
    reference = reference_gradients_float64(x, weight, bias, grad_output, actual.detach(),
                                            **conv)
    for name, grad, ref in zip(("input", "weight", "bias"), grads, reference):
        assert grad.shape == ref.shape and grad.dtype == case["dtype"], label
        if ref.abs().max() == 0:
            assert grad.abs().max() == 0, "grad %s should be zero: %s" % (name, label)
            continue
        error = relative_l2_error(grad, ref)
        assert error <= GRADIENT_TOLERANCE[case["dtype"]], \
            "grad %s error %.3g: %s" % (name, error, label)


@pytest.mark.parametrize("index", range(CPU_CASES), ids=lambda i: "case_%d" % i)
def test_fuzz_cpu(index):
    check_case(index, "cpu")


@pytest.mark.cuda
@pytest.mark.usefixtures("fused_kernels")  # the fused kernels on random shapes (conftest)
@pytest.mark.parametrize("index", range(CUDA_CASES), ids=lambda i: "case_%d" % i)
def test_fuzz_cuda(index):
    check_case(index, "cuda")
