"""The CUDA tensor-core fast path (dense NCHW, groups 1; any stride and dilation on the mma.sync
kernel, float32, float16 and bfloat16) against the floor path and the float64 reference, on
shapes around its tile edges."""

import os
import random

import pytest
import torch

import fusedconv
from fusedconv.kernelbench.problems import KERNELBENCH_V0, KERNELBENCH_V0_1
from fusedconv.reference import reference_float64, reference_forward
from fusedconv.reference import relative_l2_error

from conftest import (assert_close_with_nonfinite, assert_within_one_ulp, cuda_kernel_names,
                      poisoned_call)

# The kernels themselves, wherever they apply (conftest.fused_kernels).
pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("fused_kernels")]

# 3xTF32 (the default) vs float64; the opt-in single-TF32 mode's bound (issue 3's targets).
THREE_TF32_TOLERANCE = 1e-5
TF32_TOLERANCE = 5e-4


def _random_case(rng, strided=False):
    """A configuration the fast path takes, sized to hit partial tiles and odd planes."""
    kernel_h, kernel_w = rng.randint(1, 5), rng.randint(1, 5)
    padding = (rng.randint(0, 2), rng.randint(0, 2))
    stride = (rng.randint(1, 3), rng.randint(1, 3)) if strided else (1, 1)
    dilation = (rng.randint(1, 3), rng.randint(1, 3)) if strided else (1, 1)
    span_h = dilation[0] * (kernel_h - 1) + 1
    span_w = dilation[1] * (kernel_w - 1) + 1
    width = rng.randint(max(1, span_w - 2 * padding[1]), 70 * stride[1])
    height = rng.randint(max(1, span_h - 2 * padding[0]), 37 * stride[0])
    return dict(batch=rng.randint(1, 3), in_channels=rng.choice([1, 2, 3, 5, 8, 13, 16, 33]),
                out_channels=rng.choice([1, 7, 16, 17, 32, 33, 64, 65, 130]),
                height=height, width=width, kernel=(kernel_h, kernel_w), padding=padding,
                stride=stride, dilation=dilation, bias=rng.random() < 0.8)


def _tensors(case, device="cuda"):
    x = torch.randn(case["batch"], case["in_channels"], case["height"], case["width"],
                    device=device)
    fan_in = case["in_channels"] * case["kernel"][0] * case["kernel"][1]
    weight = torch.randn(case["out_channels"], case["in_channels"], *case["kernel"],
                         device=device) / fan_in ** 0.5
    bias = torch.randn(case["out_channels"], device=device) if case["bias"] else None
    return x, weight, bias


@pytest.mark.parametrize("strided", [False, True], ids=["stride1", "strided-dilated"])
@pytest.mark.parametrize("seed", range(40))
def test_fast_path_matches_floor_and_float64(seed, strided):
    case = _random_case(random.Random(seed), strided)
    x, weight, bias = _tensors(case)
    geometry = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"])
    expected = reference_float64(x, weight, bias, **geometry)
    fast = poisoned_call(
        lambda: fusedconv.conv2d_hardswish_relu(x, weight, bias, **geometry),
        torch.float32, "cuda")
    # channels_last input is not dense NCHW, so the same call runs another path (cuDNN, or
    # the channels_last GEMM in 3xTF32).
    floor = fusedconv.conv2d_hardswish_relu(x.contiguous(memory_format=torch.channels_last),
                                            weight, bias, **geometry)
    assert torch.isfinite(fast).all(), case
    assert relative_l2_error(fast, expected) < THREE_TF32_TOLERANCE, case
    assert relative_l2_error(floor, expected) < THREE_TF32_TOLERANCE, case
    torch.testing.assert_close(fast, floor.contiguous(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("problem", [KERNELBENCH_V0_1, KERNELBENCH_V0], ids=lambda p: p.name)
def test_kernelbench_shapes_default_and_tf32_modes(problem):
    torch.manual_seed(0)
    model = fusedconv.ModelNew(problem.in_channels, problem.out_channels,
                               problem.kernel_size).cuda()
    for draw in (torch.rand, torch.randn):
        x = draw(problem.batch, problem.in_channels, problem.height, problem.width,
                 device="cuda")
        expected = reference_float64(x, model.conv.weight, model.conv.bias)
        default = model(x)
        model.allow_tf32 = True
        fast = model(x)
        model.allow_tf32 = False
        default_error = relative_l2_error(default, expected)
        tf32_error = relative_l2_error(fast, expected)
        assert default_error < THREE_TF32_TOLERANCE
        assert tf32_error < TF32_TOLERANCE
        if problem is KERNELBENCH_V0:
            # The small-problem kernel (small_problem.cu): exact float32 or better in both modes.
            assert torch.equal(default, fast)
            assert default_error < 1e-6
        else:
            # The opt-in mode really is the single-TF32 product (it rounds operands to 10 bits).
            assert tf32_error > 10 * default_error


def test_inf_and_nan_on_the_fast_path():
    x = torch.randn(1, 8, 20, 20, device="cuda")
    weight = torch.randn(16, 8, 3, 3, device="cuda")
    x[0, 3, 5, 5] = float("inf")
    x[0, 4, 12, 7] = float("nan")
    actual = fusedconv.conv2d_hardswish_relu(x, weight, padding=1)
    expected = reference_float64(x, weight, padding=1)
    assert_close_with_nonfinite(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stride,dilation", [(2, 1), ((1, 2), 1), (1, 2), (3, (2, 1))])
def test_strided_and_dilated_calls_run_on_tensor_cores(stride, dilation):
    # The sweep's stride-2 case (3x32x224, padding 1) at batch 2, and dilated variants: the
    # mma.sync kernel, not the generic one, and right against float64 on poisoned outputs.
    x = torch.randn(2, 3, 224, 224, device="cuda")
    weight = torch.randn(32, 3, 3, 3, device="cuda") / 27 ** 0.5
    bias = torch.randn(32, device="cuda")

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, stride=stride, padding=1,
                                               dilation=dilation)

    names = cuda_kernel_names(call)
    assert any("mma_sync_kernel" in name for name in names), names
    assert not any("generic_kernel" in name for name in names), names
    actual = poisoned_call(call, torch.float32, "cuda")
    expected = reference_float64(x, weight, bias, stride=stride, padding=1, dilation=dilation)
    assert actual.shape == expected.shape
    assert relative_l2_error(actual, expected) < THREE_TF32_TOLERANCE


@pytest.mark.parametrize("allow_tf32", [False, True])
def test_small_weights_take_one_launch(allow_tf32):
    # 16 output channels, too many inputs per position for the FFMA kernel (8 x 3 x 3 > 32): the
    # mma.sync CTAs split the weights into shared memory themselves, so there is no prep kernel;
    # the weights are still read on every call.
    x = torch.randn(4, 8, 32, 32, device="cuda")
    weight = torch.randn(16, 8, 3, 3, device="cuda") / 72 ** 0.5
    bias = torch.randn(16, device="cuda")

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, allow_tf32=allow_tf32)

    call()
    names = cuda_kernel_names(call)
    assert sum("mma_sync_kernel" in name for name in names) == 1, names
    assert not any("split_weights" in name for name in names), names
    tolerance = TF32_TOLERANCE if allow_tf32 else THREE_TF32_TOLERANCE
    assert relative_l2_error(poisoned_call(call, torch.float32, "cuda"),
                             reference_float64(x, weight, bias)) < tolerance
    weight.mul_(-1.5)  # in place, as an optimizer step
    assert relative_l2_error(call(), reference_float64(x, weight, bias)) < tolerance


@pytest.mark.parametrize("in_channels,out_channels,kernel,stride", [
    (128, 128, 1, 1),  # the sweep's 1x1 case: two 64-channel chunks, no chunk totals
    (200, 40, 1, 2),  # 64 + 64 + 64 + 8 channels: more k steps than the no-totals limit
    (70, 33, (1, 2), (2, 1)),  # 32-channel chunks, one partial
    (45, 20, 2, 2),  # 16-channel chunks of 2x2 taps
])
def test_small_kernels_take_wide_channel_chunks(in_channels, out_channels, kernel, stride):
    # Kernels of 1-4 taps stage 16-64 input channels per chunk (csrc/cuda/forward/mma_sync/,
    # preferred_chunk_channels); correct against float64 on poisoned outputs, in both modes.
    # Strided cases keep the Hopper kernel (stride 1 only) out; on an H100 the 1x1 / 128 case
    # runs the streamed wgmma kernel instead (test_wgmma_path.py covers it there).
    kernel_h, kernel_w = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = torch.randn(3, in_channels, 19, 29, device="cuda")
    weight = torch.randn(out_channels, in_channels, kernel_h, kernel_w, device="cuda") / (
        in_channels * kernel_h * kernel_w) ** 0.5
    bias = torch.randn(out_channels, device="cuda")
    expected = reference_float64(x, weight, bias, stride=stride, padding=1)
    for allow_tf32, tolerance in ((False, THREE_TF32_TOLERANCE), (True, TF32_TOLERANCE)):
        def call():
            return fusedconv.conv2d_hardswish_relu(x, weight, bias, stride=stride, padding=1,
                                                   allow_tf32=allow_tf32)
        names = cuda_kernel_names(call)
        assert any("mma_sync_kernel" in name or "wgmma" in name for name in names), names
        assert not any("generic_kernel" in name for name in names), names
        actual = poisoned_call(call, torch.float32, "cuda")
        assert relative_l2_error(actual, expected) < tolerance, allow_tf32


# (batch, in, out, height, width, kernel, padding, stride, kernel on an H100): each kernel family
# memoizes the plan (tile layout) of the last shape a thread ran. A stale plan would size the
# grid, items or staging for another shape; shapes that differ in one field at a time, revisited,
# with the precision mode (part of the key) alternating from call to call, catch that.
ALTERNATING_SHAPES = [
    (2, 8, 64, 19, 128, 3, 0, 1, "wgmma_kernel"),
    (5, 8, 64, 19, 128, 3, 0, 1, "wgmma_kernel"),        # batch only
    (2, 8, 64, 23, 128, 3, 0, 1, "wgmma_kernel"),        # height only
    (1, 64, 64, 20, 20, 3, 1, 1, "wgmma_streamed_kernel"),
    (1, 64, 96, 20, 20, 3, 1, 1, "wgmma_streamed_kernel"),  # output channels only
    (2, 8, 40, 17, 23, 3, 1, 2, "mma_sync_kernel"),    # strided: mma.sync everywhere
    (3, 8, 40, 17, 23, 3, 1, 2, "mma_sync_kernel"),    # batch only
]


def test_plans_follow_the_shape_when_shapes_alternate():
    hopper = (torch.cuda.get_device_capability() == (9, 0)
              and os.environ.get("FUSEDCONV_DISABLE_WGMMA", "0") in ("", "0"))
    generator = torch.Generator().manual_seed(5)
    cases = []
    for batch, cin, cout, height, width, kernel, padding, stride, family in ALTERNATING_SHAPES:
        x = torch.randn(batch, cin, height, width, generator=generator).cuda()
        weight = (torch.randn(cout, cin, kernel, kernel, generator=generator)
                  / (cin * kernel ** 2) ** 0.5).cuda()
        bias = torch.randn(cout, generator=generator).cuda()
        expected = reference_float64(x, weight, bias, stride=stride, padding=padding)
        cases.append((x, weight, bias, stride, padding, expected,
                      family if hopper else "mma_sync_kernel"))
    calls = 0
    for order in (cases, cases[::-1], cases[::2] + cases[1::2], cases):
        for x, weight, bias, stride, padding, expected, family in order:
            allow_tf32 = calls % 2 == 1
            calls += 1

            def call():
                return fusedconv.conv2d_hardswish_relu(x, weight, bias, stride=stride,
                                                       padding=padding, allow_tf32=allow_tf32)
            names = cuda_kernel_names(call)
            assert any(family in name for name in names), (x.shape, weight.shape, names)
            actual = poisoned_call(call, torch.float32, "cuda")
            tolerance = TF32_TOLERANCE if allow_tf32 else THREE_TF32_TOLERANCE
            assert relative_l2_error(actual, expected) < tolerance, (x.shape, allow_tf32)


# float16 and bfloat16 on the mma.sync kernel: one TF32 product, exact for these types, float32
# sums, one rounding at the store; so at most one unit in the last place from the float64
# reference rounded to the type (test_wgmma_path.py's bound), in either precision mode.
REDUCED_PRECISION = [(torch.float16, 1e-3), (torch.bfloat16, 8e-3)]


REDUCED_PRECISION_SEEDS = range(16)


def _reduced_precision_case(seed, dtype):
    """A random strided (and dilated) shape, which only the mma.sync kernel takes in 16 bits:
    partial tiles and chunks, odd planes (unpaired stores), with and without a bias; the
    widest strided rows do not fit its staged tile and take the floor."""
    case = _random_case(random.Random(1000 + seed), strided=True)
    case["stride"] = (max(2, case["stride"][0]), case["stride"][1])
    x, weight, bias = (None if t is None else t.to(dtype) for t in _tensors(case))
    geometry = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"])
    return case, x, weight, bias, geometry


def _op_plan(x, weight, bias, geometry):
    def pair(value):
        return list(value) if isinstance(value, tuple) else [value] * 2
    padding = pair(geometry["padding"])
    return torch.ops.fusedconv._plan(x, weight, bias, pair(geometry["stride"]),
                                     [padding[0], padding[0], padding[1], padding[1]],
                                     pair(geometry["dilation"]), 1, None)


@pytest.mark.parametrize("dtype,l2_tolerance", REDUCED_PRECISION, ids=str)
@pytest.mark.parametrize("seed", REDUCED_PRECISION_SEEDS)
def test_reduced_precision_strided_cases_against_float64(seed, dtype, l2_tolerance):
    case, x, weight, bias, geometry = _reduced_precision_case(seed, dtype)
    planned = _op_plan(x, weight, bias, geometry)
    assert planned in ("mma_sync", "floor"), (case, planned)

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, **geometry)

    names = cuda_kernel_names(call)
    assert any("mma_sync_kernel" in name for name in names) == (planned == "mma_sync"), (
        case, names)
    expected = reference_float64(x, weight, bias, **geometry)
    actual = poisoned_call(call, dtype, "cuda")
    if planned == "mma_sync":
        assert_within_one_ulp(actual, expected, dtype, l2_tolerance, case)
    else:  # the floor's contract (test_floor_path.py): within twice eager PyTorch's error
        eager = reference_forward(x, weight, bias, **geometry)
        assert relative_l2_error(actual, expected) <= (
            2 * relative_l2_error(eager, expected) + 1e-3), case


def test_reduced_precision_random_cases_mostly_run_mma_sync():
    # The test above is about the kernel: most of its draws must reach it.
    planned = [_op_plan(*_reduced_precision_case(seed, torch.bfloat16)[1:])
               for seed in REDUCED_PRECISION_SEEDS]
    assert planned.count("mma_sync") >= 12, planned


@pytest.mark.parametrize("dtype,l2_tolerance", REDUCED_PRECISION, ids=str)
@pytest.mark.parametrize("out_channels,kernel", [(16, 3), (32, 3), (64, 7)])
def test_reduced_precision_stems(out_channels, kernel, dtype, l2_tolerance):
    # MobileNetV3's, EfficientNet's and ResNet's stems (3 input channels, stride 2) at 224,
    # batch 2: the layers this kernel takes in 16 bits under the default plan; the result does
    # not depend on the precision mode (a TF32 product of 16-bit values is exact).
    generator = torch.Generator().manual_seed(out_channels)
    x = torch.randn(2, 3, 224, 224, generator=generator).to("cuda", dtype)
    weight = (torch.randn(out_channels, 3, kernel, kernel, generator=generator)
              / (3 * kernel * kernel) ** 0.5).to("cuda", dtype)
    bias = torch.randn(out_channels, generator=generator).to("cuda", dtype)
    results = []
    for allow_tf32 in (False, True):
        def call():
            return fusedconv.conv2d_hardswish_relu(x, weight, bias, stride=2,
                                                   padding=kernel // 2, allow_tf32=allow_tf32)
        names = cuda_kernel_names(call)
        assert any("mma_sync_kernel" in name for name in names), names
        results.append(poisoned_call(call, dtype, "cuda"))
    expected = reference_float64(x, weight, bias, stride=2, padding=kernel // 2)
    assert_within_one_ulp(results[0], expected, dtype, l2_tolerance, (out_channels, kernel))
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_reduced_precision_inf_and_nan(dtype):
    x = torch.randn(1, 3, 20, 20, device="cuda").to(dtype)
    weight = (torch.randn(16, 3, 3, 3, device="cuda") / 27 ** 0.5).to(dtype)
    x[0, 1, 5, 5] = float("inf")
    x[0, 2, 12, 7] = float("nan")

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, stride=2, padding=1)

    names = cuda_kernel_names(call)
    assert any("mma_sync_kernel" in name for name in names), names
    actual = call()
    expected = reference_float64(x, weight, stride=2, padding=1)
    assert_close_with_nonfinite(actual.double(), expected, rtol=2 * torch.finfo(dtype).eps,
                                atol=1e-3)
