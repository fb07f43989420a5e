"""The grouped forward kernel (csrc/cuda/forward/grouped.cu: groups > 1, float32 / float16 /
bfloat16, dense NCHW or channels_last, any kernel, stride, padding and dilation): that it is the
kernel that runs, against float64 on poisoned outputs, with the floor path's output strides,
16-bit results within one ulp, NaN / inf propagation, and the plan's edges."""

import random

import pytest
import torch

import fusedconv
from fusedconv.reference import reference_float64, relative_l2_error

from conftest import (assert_close_with_nonfinite, assert_within_one_ulp, cuda_kernel_names,
                      poisoned_call, with_floor_policy)

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("fused_kernels")]

KERNEL_NAME = "conv_hardswish_relu_grouped_kernel"
# float32 products and sums on CUDA cores in either precision mode.
FLOAT32_TOLERANCE = 2e-6


def _random_case(rng):
    kernel = rng.choice([(3, 3), (3, 3), (3, 3), (1, 1), (5, 5), (3, 2), (7, 7), (1, 3)])
    stride = rng.choice([1, 1, 2, 2, 3])
    dilation = rng.choice([1, 1, 1, 2])
    padding = rng.randint(0, kernel[0] // 2 * dilation + 1)
    span = dilation * (max(kernel) - 1) + 1
    return dict(batch=rng.randint(1, 3), groups=rng.choice([2, 3, 4, 8, 32]),
                in_per_group=rng.choice([2, 3, 4, 8, 16, 33]),
                out_per_group=rng.choice([1, 2, 4, 5, 8, 12, 16]),
                height=rng.randint(max(1, span - 2 * padding), 30),
                width=rng.randint(max(1, span - 2 * padding), 40),
                kernel=kernel, stride=stride, dilation=dilation, padding=padding,
                bias=rng.random() < 0.8, channels_last=rng.random() < 0.5)


def _tensors(case, dtype):
    groups = case["groups"]
    x = torch.randn(case["batch"], groups * case["in_per_group"], case["height"], case["width"],
                    device="cuda", dtype=dtype)
    fan_in = case["in_per_group"] * case["kernel"][0] * case["kernel"][1]
    weight = (torch.randn(groups * case["out_per_group"], case["in_per_group"], *case["kernel"],
                          device="cuda") / fan_in ** 0.5).to(dtype)
    bias = (torch.randn(groups * case["out_per_group"], device="cuda", dtype=dtype)
            if case["bias"] else None)
    if case["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
        weight = weight.contiguous(memory_format=torch.channels_last)
    geometry = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                    groups=groups)
    return x, weight, bias, geometry


def _launches_grouped(call):
    return any(KERNEL_NAME in name for name in cuda_kernel_names(call))


def _check(case, dtype, x, weight, bias, geometry):
    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, **geometry)

    assert _launches_grouped(call), case
    actual = poisoned_call(call, dtype, "cuda")
    expected = reference_float64(x, weight, bias, **geometry)
    assert actual.shape == expected.shape, case
    if dtype == torch.float32:
        assert actual.dtype == dtype and not actual.isnan().any(), case
        assert relative_l2_error(actual, expected) <= FLOAT32_TOLERANCE, case
    else:
        assert_within_one_ulp(actual, expected, dtype, 1e-2, context=str(case))
    floor = with_floor_policy(call)
    assert actual.stride() == floor.stride(), case


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("seed", range(16))
def test_grouped_kernel_matches_float64(seed, dtype):
    case = _random_case(random.Random(seed))
    _check(case, dtype, *_tensors(case, dtype))


# ResNeXt-50's grouped 3x3 layers (32 groups of 4 / 8 / 16 / 32 channels) at small planes, the
# unrolled instances in both layouts and both channel blocks; 1x1 grouped (ShuffleNet-style),
# wide rows (more than one tile of 128 columns) and a tall plane (several row tiles).
LAYERS = [
    dict(groups=32, in_per_group=4, out_per_group=4, size=(16, 16), kernel=(3, 3), stride=1),
    dict(groups=32, in_per_group=8, out_per_group=8, size=(16, 16), kernel=(3, 3), stride=2),
    dict(groups=32, in_per_group=16, out_per_group=16, size=(14, 14), kernel=(3, 3), stride=1),
    dict(groups=32, in_per_group=32, out_per_group=32, size=(14, 14), kernel=(3, 3), stride=2),
    dict(groups=4, in_per_group=6, out_per_group=10, size=(9, 7), kernel=(1, 1), stride=1),
    dict(groups=2, in_per_group=3, out_per_group=8, size=(5, 300), kernel=(3, 3), stride=1),
    dict(groups=2, in_per_group=2, out_per_group=4, size=(150, 11), kernel=(3, 3), stride=2),
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layer", LAYERS, ids=str)
def test_grouped_layers(layer, dtype, channels_last):
    case = dict(batch=2, height=layer["size"][0], width=layer["size"][1], dilation=1,
                padding=layer["kernel"][0] // 2, bias=True, channels_last=channels_last,
                **{k: v for k, v in layer.items() if k != "size"})
    _check(case, dtype, *_tensors(case, dtype))


def test_grouped_kernel_reads_any_weight_strides():
    # A weight that is a transposed view (not contiguous in either layout): read by its strides.
    case = dict(batch=2, groups=4, in_per_group=8, out_per_group=8, height=12, width=13,
                kernel=(3, 3), stride=1, dilation=1, padding=1, bias=True, channels_last=False)
    x, weight, bias, geometry = _tensors(case, torch.float32)
    weight = weight.transpose(2, 3).contiguous().transpose(2, 3)
    assert not weight.is_contiguous()
    _check(case, torch.float32, x, weight, bias, geometry)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_grouped_kernel_propagates_nan_and_inf(channels_last, dtype):
    case = dict(batch=2, groups=8, in_per_group=4, out_per_group=4, height=14, width=15,
                kernel=(3, 3), stride=1, dilation=1, padding=1, bias=True,
                channels_last=channels_last)
    x, weight, bias, geometry = _tensors(case, dtype)
    x[0, 3, 4, 5] = float("nan")
    x[1, 7, 0, 0] = float("inf")
    x[1, 9, 13, 14] = float("-inf")
    # An infinite input times a zero weight is NaN, as in PyTorch's convolution: channel 9 is
    # in group 2 (channels 8-11), whose output channel 8 gets a zero tap over it.
    weight[8, 1, 1, 1] = 0.0

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, **geometry)

    assert _launches_grouped(call)
    actual = call()
    expected = reference_float64(x, weight, bias, **geometry)
    assert bool(expected[1, 8, 13, 14].isnan())
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    assert_close_with_nonfinite(actual, expected, rtol=tolerance, atol=tolerance)


def test_grouped_plan_edges():
    x = torch.randn(2, 16, 10, 10, device="cuda")
    weight = torch.randn(16, 4, 3, 3, device="cuda")
    args = (x, weight, None, [1, 1], [1, 1, 1, 1], [1, 1], 4)
    assert torch.ops.fusedconv._plan(*args) == "grouped"
    # float64 and a strided view take the floor.
    assert torch.ops.fusedconv._plan(x.double(), weight.double(), *args[2:]) == "floor"
    assert torch.ops.fusedconv._plan(x[:, :, :, ::2], weight, *args[2:]) == "floor"
    empty = fusedconv.conv2d_hardswish_relu(x[:0], weight, padding=1, groups=4)
    assert empty.shape == (0, 16, 10, 10)


# Each limit of grouped.cu's `applies` alone (arguments after x and weight: stride, padding,
# dilation), x of 4 channels and 1 x 1 pixel, 2 groups (2 channels each: not depthwise, whose
# kernel would take these), a 1 x 1 output.
LIMITS = [
    # A row reach past 32 bits (stride and padding; a 3-row output).
    ("rows_past_32_bits", (2 ** 32, 1), [2 ** 32, 2 ** 32, 0, 0], [1, 1], (1, 1)),
    # A patch past the 40 KB of shared memory with a small weight (4 x 2 x 2 x 1): two taps
    # 5,000 rows apart, 5,001 staged rows of 4 floats.
    ("patch_past_budget", (1, 1), [0, 5000, 0, 0], [5000, 1], (2, 1)),
    # Rows and columns dilated so far that their product overflowed 64 bits before the
    # budget was checked (the review's case).
    ("patch_product_overflow", (1, 3), [0, 1582400787, 0, 1566439044], [527466929, 522146348],
     (4, 4)),
]


@pytest.mark.parametrize("case,stride,padding,dilation,kernel", LIMITS,
                         ids=[c[0] for c in LIMITS])
def test_grouped_limits_take_the_floor(case, stride, padding, dilation, kernel):
    x = torch.randn(1, 4, 1, 1, device="cuda")
    weight = torch.randn(4, 2, *kernel, device="cuda")
    assert torch.ops.fusedconv._plan(x, weight, None, list(stride), padding, dilation,
                                     2) == "floor", case


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", [0, 1, 2, 3])
@pytest.mark.parametrize("width", [16, 18, 13])
def test_grouped_nchw_row_vectors(width, padding, stride, dtype):
    # NCHW rows are staged in aligned vectors of 4 elements (width a multiple of 4), 2 (even
    # width) or one by one; the padding sets how far the first vector starts before the patch.
    case = dict(batch=2, groups=4, in_per_group=4, out_per_group=4, height=9, width=width,
                kernel=(3, 3), stride=stride, dilation=1, padding=padding, bias=True,
                channels_last=False)
    _check(case, dtype, *_tensors(case, dtype))


@pytest.mark.parametrize("offset", [1, 2])
def test_grouped_nchw_input_off_vector_alignment(offset):
    # A dense input view starting 1 or 2 elements into its storage: its rows are not aligned
    # for 4-element vectors, so they are staged in smaller ones (or one by one).
    case = dict(batch=2, groups=4, in_per_group=4, out_per_group=4, height=9, width=16,
                kernel=(3, 3), stride=1, dilation=1, padding=1, bias=True, channels_last=False)
    x, weight, bias, geometry = _tensors(case, torch.float32)
    storage = torch.randn(x.numel() + offset, device="cuda")
    x = storage[offset:].view(x.shape)
    assert x.is_contiguous() and x.data_ptr() % 16 != 0
    _check(case, torch.float32, x, weight, bias, geometry)
