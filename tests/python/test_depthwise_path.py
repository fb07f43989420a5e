"""The depthwise forward kernel (csrc/cuda/forward/depthwise.cu: groups == in_channels > 1, any
channel multiplier, kernel, stride, padding and dilation, NCHW and channels_last, every dtype):
that it is the kernel that runs, against float64 on poisoned outputs, with the floor path's output
strides, NaN / inf propagation, and float16 / bfloat16 no worse than eager."""

import random
import re

import pytest
import torch

import fusedconv
from fusedconv.reference import reference_float64, reference_forward, relative_l2_error

from conftest import assert_close_with_nonfinite, cuda_kernel_names, poisoned_call

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("fused_kernels")]

# Both the scalar kernel and the channels_last vector kernel.
KERNEL_NAME = "conv_hardswish_relu_depthwise_"
VECTOR_KERNEL_NAME = "conv_hardswish_relu_depthwise_vector_kernel"
# float32 products and sums on CUDA cores (no TF32 in either mode), float64 for float64.
TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-12}


def _random_case(rng):
    kernel = rng.choice([(3, 3), (3, 3), (5, 5), (5, 5), (7, 7), (1, 1), (3, 2), (1, 5)])
    stride = rng.choice([1, 1, 2, 2, 3])
    dilation = rng.choice([1, 1, 1, 2])
    padding = rng.randint(0, kernel[0] // 2 * dilation + 1)
    span = dilation * (max(kernel) - 1) + 1
    return dict(batch=rng.randint(1, 3), channels=rng.choice([2, 3, 8, 13, 32, 40]),
                multiplier=rng.choice([1, 1, 1, 2, 3]),
                height=rng.randint(max(1, span - 2 * padding), 30),
                width=rng.randint(max(1, span - 2 * padding), 37),
                kernel=kernel, stride=stride, dilation=dilation, padding=padding,
                bias=rng.random() < 0.8, channels_last=rng.random() < 0.5)


def _tensors(case, dtype):
    channels = case["channels"]
    x = torch.randn(case["batch"], channels, case["height"], case["width"], device="cuda",
                    dtype=dtype)
    weight = torch.randn(channels * case["multiplier"], 1, *case["kernel"], device="cuda",
                         dtype=dtype) * 0.4
    bias = (torch.randn(channels * case["multiplier"], device="cuda", dtype=dtype)
            if case["bias"] else None)
    if case["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
        weight = weight.contiguous(memory_format=torch.channels_last)
    geometry = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                    groups=channels)
    return x, weight, bias, geometry


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(24))
def test_depthwise_kernel_matches_float64(seed, dtype):
    case = _random_case(random.Random(seed))
    x, weight, bias, geometry = _tensors(case, dtype)

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, **geometry)

    # float64 on CUDA: F.conv2d's output is contiguous whatever the input's layout, and the
    # kernel takes input and output in one layout only.
    takes_it = not (case["channels_last"] and dtype == torch.float64)
    launched = any(KERNEL_NAME in name for name in cuda_kernel_names(call))
    assert launched == takes_it, case
    actual = poisoned_call(call, dtype, "cuda")
    expected = reference_float64(x, weight, bias, **geometry)
    assert actual.dtype == dtype and actual.shape == expected.shape
    assert relative_l2_error(actual, expected) <= TOLERANCE[dtype], case
    # The strides the floor path gives (an empty tensor's in F.conv2d's memory format, which the
    # fake kernel reports too).
    torch.ops.fusedconv._plan_policy("floor")
    try:
        floor = fusedconv.conv2d_hardswish_relu(x, weight, bias, **geometry)
    finally:
        torch.ops.fusedconv._plan_policy("fused")
    assert actual.stride() == floor.stride(), case


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", range(8))
def test_depthwise_half_precision_no_worse_than_eager(seed, dtype):
    # Accumulated in float32 and rounded once; eager rounds the convolution, then the activation.
    case = _random_case(random.Random(100 + seed))
    x, weight, bias, geometry = _tensors(case, dtype)
    actual = poisoned_call(lambda: fusedconv.conv2d_hardswish_relu(x, weight, bias, **geometry),
                           dtype, "cuda")
    expected = reference_float64(x, weight, bias, **geometry)
    assert actual.dtype == dtype and not actual.isnan().any(), case
    ours = relative_l2_error(actual, expected)
    eager = relative_l2_error(reference_forward(x, weight, bias, **geometry), expected)
    assert ours <= 1.2 * eager + 1e-4, (case, ours, eager)


@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_kernel_propagates_nan_and_inf(channels_last):
    case = dict(batch=2, channels=16, multiplier=1, height=14, width=15, kernel=(3, 3), stride=1,
                dilation=1, padding=1, bias=True, channels_last=channels_last)
    x, weight, bias, geometry = _tensors(case, torch.float32)
    x[0, 3, 4, 5] = float("nan")
    x[1, 7, 0, 0] = float("inf")
    x[1, 9, 13, 14] = float("-inf")
    actual = fusedconv.conv2d_hardswish_relu(x, weight, bias, **geometry)
    expected = reference_float64(x, weight, bias, **geometry)
    assert_close_with_nonfinite(actual, expected, rtol=1e-5, atol=1e-6)


def test_depthwise_default_plan_and_empty_batch():
    # The measured policy takes the kernel too (NCHW); an empty batch launches nothing.
    torch.ops.fusedconv._plan_policy("measured")
    x = torch.randn(2, 24, 20, 20, device="cuda")
    weight = torch.randn(24, 1, 3, 3, device="cuda")
    bias = torch.randn(24, device="cuda")
    args = (x, weight, bias, [2, 2], [1, 1, 1, 1], [1, 1], 24)
    assert torch.ops.fusedconv._plan(*args) == "depthwise"
    empty = fusedconv.conv2d_hardswish_relu(x[:0], weight, bias, stride=2, padding=1, groups=24)
    assert empty.shape == (0, 24, 10, 10)


# The default plan's domain (NCHW float32 / bfloat16) through each unrolled instance (3x3 / 5x5
# at stride 1 / 2) and the run-time one (7x7, asymmetric 'same' padding, multiplier 2).
GEOMETRIES = [
    dict(kernel=(3, 3), stride=1, padding=1), dict(kernel=(3, 3), stride=2, padding=1),
    dict(kernel=(5, 5), stride=1, padding=2), dict(kernel=(5, 5), stride=2, padding=2),
    dict(kernel=(7, 7), stride=1, padding=3), dict(kernel=(4, 4), stride=1, padding="same"),
    dict(kernel=(3, 3), stride=1, padding=1, multiplier=2),
]


def _geometry_case(geometry, channels_last=False):
    case = dict(batch=2, channels=12, multiplier=1, height=15, width=18, dilation=1, bias=True,
                channels_last=channels_last)
    case.update(geometry)
    return case


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_depthwise_instances_in_nchw(geometry, dtype):
    case = _geometry_case(geometry)
    x, weight, bias, kwargs = _tensors(case, dtype)

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)

    assert any(KERNEL_NAME in name for name in cuda_kernel_names(call)), case
    actual = poisoned_call(call, dtype, "cuda")
    expected = reference_float64(x, weight, bias, **kwargs)
    assert actual.shape == expected.shape and actual.is_contiguous()
    error = relative_l2_error(actual, expected)
    if dtype == torch.float32:
        assert error <= TOLERANCE[dtype], case
    else:
        eager = relative_l2_error(reference_forward(x, weight, bias, **kwargs), expected)
        assert error <= 1.2 * eager + 1e-4, (case, error, eager)


SYMMETRIC = [g for g in GEOMETRIES if g["padding"] != "same"]


@pytest.mark.parametrize("geometry", SYMMETRIC, ids=str)
def test_depthwise_non_finite_weights_as_eager(geometry):
    # An infinite or NaN weight whose tap falls in the zero padding at the borders: PyTorch's
    # depthwise kernel (eager and the floor path in NCHW) skips padded taps, so those outputs
    # stay finite; every NaN and inf position must match eager's. (Asymmetric 'same' padding
    # is left out: eager pads the extra row and column explicitly, as real zeros that an
    # infinite weight turns into NaN, where the kernel skips them like the rest.)
    case = _geometry_case(geometry)
    x, weight, bias, kwargs = _tensors(case, torch.float32)
    weight[0, 0, 0, 0] = float("inf")
    weight[3, 0, -1, 0] = float("nan")
    weight[5, 0, 1, -1] = float("-inf")
    actual = fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)
    eager = reference_forward(x, weight, bias, **kwargs)
    assert torch.equal(actual.isnan(), eager.isnan()), case
    assert torch.equal(actual.isinf(), eager.isinf()), case
    finite = eager.isfinite()
    torch.testing.assert_close(actual[finite], eager[finite], rtol=1e-4, atol=1e-5)


def test_depthwise_geometry_beyond_32_bits_takes_the_floor():
    x = torch.randn(1, 2, 1, 1, device="cuda")
    weight = torch.randn(2, 1, 1, 1, device="cuda")
    huge = 2 ** 32
    args = (x, weight, None, [huge, 1], [huge, huge, 0, 0], [1, 1], 2)
    assert torch.ops.fusedconv._plan(*args) == "floor"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("channels", [16, 12])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_depthwise_instances_in_channels_last(geometry, channels, dtype):
    # 16 channels: whole 16-byte vectors for every dtype, so the vector kernel takes the
    # unrolled geometries with multiplier 1; 12: whole vectors for float32 / float64 only.
    case = _geometry_case(geometry, channels_last=True)
    case["channels"] = channels
    x, weight, bias, kwargs = _tensors(case, dtype)

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)

    names = cuda_kernel_names(call)
    vector = 16 // x.element_size()
    unrolled = geometry["kernel"] in ((3, 3), (5, 5)) and "multiplier" not in geometry
    takes_vector = dtype != torch.float64 and unrolled and channels % vector == 0
    assert any(VECTOR_KERNEL_NAME in name for name in names) == takes_vector, (case, names)
    # float64 takes the floor (F.conv2d's float64 CUDA output is contiguous); every other
    # call one of the two depthwise kernels.
    assert any(KERNEL_NAME in name for name in names) == (dtype != torch.float64), names
    actual = poisoned_call(call, dtype, "cuda")
    expected = reference_float64(x, weight, bias, **kwargs)
    error = relative_l2_error(actual, expected)
    if dtype in TOLERANCE:
        assert error <= TOLERANCE[dtype], case
    else:
        eager = relative_l2_error(reference_forward(x, weight, bias, **kwargs), expected)
        assert error <= 1.2 * eager + 1e-4, (case, error, eager)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels", [4, 8, 24])
def test_depthwise_vector_kernel_bias_and_single_vector(channels, bias):
    # 4 float32 channels: one 16-byte vector per position (a single channel group).
    case = dict(batch=2, channels=channels, multiplier=1, height=13, width=11, kernel=(3, 3),
                stride=1, dilation=1, padding=1, bias=bias, channels_last=True)
    x, weight, bias_tensor, kwargs = _tensors(case, torch.float32)

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias_tensor, **kwargs)

    assert any(VECTOR_KERNEL_NAME in name for name in cuda_kernel_names(call))
    actual = poisoned_call(call, torch.float32, "cuda")
    expected = reference_float64(x, weight, bias_tensor, **kwargs)
    assert relative_l2_error(actual, expected) <= TOLERANCE[torch.float32]


def test_depthwise_misaligned_channels_last_input_takes_the_scalar_kernel():
    # A dense channels_last view one element into its storage: 4 bytes past a 16-byte boundary.
    n, c, h, w = 2, 16, 12, 10
    storage = torch.randn(n * h * w * c + 1, device="cuda")
    x = storage[1:].view(n, h, w, c).permute(0, 3, 1, 2)
    assert x.is_contiguous(memory_format=torch.channels_last) and x.data_ptr() % 16 != 0
    weight = torch.randn(c, 1, 3, 3, device="cuda").contiguous(memory_format=torch.channels_last)
    bias = torch.randn(c, device="cuda")

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, padding=1, groups=c)

    names = cuda_kernel_names(call)
    assert any(KERNEL_NAME in name for name in names), names
    assert not any(VECTOR_KERNEL_NAME in name for name in names), names
    actual = poisoned_call(call, torch.float32, "cuda")
    expected = reference_float64(x, weight, bias, padding=1, groups=c)
    assert relative_l2_error(actual, expected) <= TOLERANCE[torch.float32]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("weight_kind", ["dense", "strided", "misaligned"])
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_vector_kernel_resident_filters(stride, weight_kind, dtype):
    # 16-bit 3x3 with dense, 16-byte aligned filters keeps them in registers (the instance whose
    # last template argument is Filters::kResident, 1); a strided or misaligned weight loads them
    # per tap (0).
    n, c, h, w = 2, 24, 13, 11
    x = torch.randn(n, c, h, w, device="cuda", dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    # Scaled before the view is taken: an arithmetic result would be a fresh dense tensor.
    if weight_kind == "strided":  # filters 12 elements apart: w[:, :, :, :3] of a 3x4 weight
        weight = (torch.randn(c, 1, 3, 4, device="cuda", dtype=dtype) * 0.3)[:, :, :, :3]
        assert weight.stride() == (12, 12, 4, 1)
    elif weight_kind == "misaligned":  # dense, one element into its storage
        weight = (torch.randn(c * 9 + 1, device="cuda", dtype=dtype) * 0.3)[1:].view(c, 1, 3, 3)
        assert weight.data_ptr() % 16 == 2
    else:
        weight = torch.randn(c, 1, 3, 3, device="cuda", dtype=dtype) * 0.3
    bias = torch.randn(c, device="cuda", dtype=dtype)
    kwargs = dict(stride=stride, padding=1, groups=c)

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)

    names = [name for name in cuda_kernel_names(call) if VECTOR_KERNEL_NAME in name]
    assert len(names) == 1, names
    # The instance's last template argument, demangled ("Filters)1>") or not ("FiltersE1E").
    resident = re.search(r"Filters\)1>|FiltersE1E", names[0]) is not None
    assert resident == (weight_kind == "dense"), names
    actual = poisoned_call(call, dtype, "cuda")
    expected = reference_float64(x, weight, bias, **kwargs)
    eager = relative_l2_error(reference_forward(x, weight, bias, **kwargs), expected)
    assert relative_l2_error(actual, expected) <= 1.2 * eager + 1e-4
