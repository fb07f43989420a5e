"""The small-problem FFMA kernel (conv_fwd_direct.cu: up to 16 output channels and at most 32
inputs per position, KernelBench's v0): that v0 takes it in one launch, and that it agrees with
float64 and the generic kernel on random strided, dilated and padded shapes."""

import random

import pytest
import torch

import fusedconv
from fusedconv.reference import reference_float64, relative_l2_error

from conftest import assert_close_with_nonfinite, cuda_kernel_names, poisoned_call

pytestmark = pytest.mark.cuda

# Exact float32 accumulation: far below the 3xTF32 bound of 1e-5.
FFMA_TOLERANCE = 1e-6


def _random_case(rng):
    kernel_h, kernel_w = rng.randint(1, 3), rng.randint(1, 3)
    in_channels = rng.randint(1, 32 // (kernel_h * kernel_w))
    stride = (rng.randint(1, 3), rng.randint(1, 3))
    dilation = (rng.randint(1, 2), rng.randint(1, 2))
    padding = (rng.randint(0, 2), rng.randint(0, 2))
    span_h = dilation[0] * (kernel_h - 1) + 1
    span_w = dilation[1] * (kernel_w - 1) + 1
    return dict(batch=rng.randint(1, 4), in_channels=in_channels,
                out_channels=rng.randint(1, 16),
                height=rng.randint(max(1, span_h - 2 * padding[0]), 40),
                width=rng.randint(max(1, span_w - 2 * padding[1]), 70),
                kernel=(kernel_h, kernel_w), stride=stride, dilation=dilation, padding=padding,
                bias=rng.random() < 0.8)


def _tensors(case):
    x = torch.randn(case["batch"], case["in_channels"], case["height"], case["width"],
                    device="cuda")
    weight = torch.randn(case["out_channels"], case["in_channels"], *case["kernel"],
                         device="cuda")
    bias = torch.randn(case["out_channels"], device="cuda") if case["bias"] else None
    return x, weight, bias


@pytest.mark.parametrize("seed", range(30))
def test_direct_kernel_matches_float64_and_generic(seed):
    case = _random_case(random.Random(seed))
    x, weight, bias = _tensors(case)
    geometry = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"])

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, **geometry)

    names = cuda_kernel_names(call)
    assert any("direct_kernel" in name for name in names), (case, names)
    actual = poisoned_call(call, torch.float32, "cuda")
    expected = reference_float64(x, weight, bias, **geometry)
    assert actual.shape == expected.shape
    assert relative_l2_error(actual, expected) < FFMA_TOLERANCE, case
    # channels_last input is not dense NCHW: the generic kernel, also exact float32.
    generic = fusedconv.conv2d_hardswish_relu(x.contiguous(memory_format=torch.channels_last),
                                              weight, bias, **geometry)
    torch.testing.assert_close(actual, generic.contiguous(), rtol=1e-5, atol=1e-6)


def test_kernelbench_v0_is_one_direct_launch_in_both_modes():
    torch.manual_seed(0)
    model = fusedconv.ModelNew(3, 16, 3).cuda()
    x = torch.randn(128, 3, 32, 32, device="cuda")
    with torch.no_grad():
        default = model(x)
        names = cuda_kernel_names(lambda: model(x))
        model.allow_tf32 = True
        fast = model(x)
    kernels = [name for name in names if "fusedconv" in name and "kernel" in name]
    assert len(kernels) == 1 and "direct_kernel" in kernels[0], names
    assert torch.equal(default, fast)  # exact float32 whatever the mode
    expected = reference_float64(x, model.conv.weight, model.conv.bias)
    assert relative_l2_error(default, expected) < FFMA_TOLERANCE


def test_direct_kernel_reads_the_weights_on_every_call():
    x = torch.randn(2, 3, 16, 16, device="cuda")
    weight = torch.randn(8, 3, 3, 3, device="cuda")
    bias = torch.randn(8, device="cuda")
    first = fusedconv.conv2d_hardswish_relu(x, weight, bias)
    with torch.no_grad():
        weight.mul_(-0.5)  # in place, as an optimizer step
        bias.add_(1.0)
    second = fusedconv.conv2d_hardswish_relu(x, weight, bias)
    assert not torch.equal(first, second)
    assert relative_l2_error(second, reference_float64(x, weight, bias)) < FFMA_TOLERANCE


def test_inf_and_nan_on_the_direct_kernel():
    x = torch.randn(2, 3, 20, 20, device="cuda")
    weight = torch.randn(16, 3, 3, 3, device="cuda")
    x[0, 1, 5, 5] = float("inf")
    x[1, 2, 12, 7] = float("nan")
    actual = fusedconv.conv2d_hardswish_relu(x, weight, padding=1)
    expected = reference_float64(x, weight, padding=1)
    assert_close_with_nonfinite(actual, expected, rtol=1e-5, atol=1e-6)
