"""The pointwise forward kernel (csrc/cuda/forward/pointwise.cu: 1x1 convolutions in float16 /
bfloat16, dense channels_last, channel counts multiples of 8, any stride and padding): that it is
the kernel that runs, against float64 on poisoned outputs (no worse than eager, which rounds
the convolution before the activation), with the floor path's output strides, NaN / inf
propagation, and the configurations it leaves to others."""

import random

import pytest
import torch

import fusedconv
from fusedconv.reference import reference_float64, reference_forward, relative_l2_error

from conftest import assert_close_with_nonfinite, cuda_kernel_names, poisoned_call

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("fused_kernels")]

KERNEL_NAME = "conv_hardswish_relu_pointwise_kernel"
HALF_TYPES = [torch.float16, torch.bfloat16]


def _tensors(batch, cin, cout, height, width, dtype, bias=True, weight_channels_last=False):
    x = torch.randn(batch, cin, height, width, device="cuda", dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(cout, cin, 1, 1, device="cuda", dtype=dtype) / cin ** 0.5
    if weight_channels_last:
        weight = weight.contiguous(memory_format=torch.channels_last)
    b = torch.randn(cout, device="cuda", dtype=dtype) if bias else None
    return x, weight, b


def _check(x, weight, bias, **geometry):
    """Runs the op on poisoned memory; asserts the kernel ran, the error is no worse than eager's
    and the strides are the floor path's."""

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, **geometry)

    names = cuda_kernel_names(call)
    assert any(KERNEL_NAME in name for name in names), names
    actual = poisoned_call(call, x.dtype, "cuda")
    expected = reference_float64(x, weight, bias, **geometry)
    assert actual.dtype == x.dtype and actual.shape == expected.shape
    assert not actual.isnan().any()
    ours = relative_l2_error(actual, expected)
    eager = relative_l2_error(reference_forward(x, weight, bias, **geometry), expected)
    assert ours <= 1.2 * eager + 1e-4, (ours, eager)
    torch.ops.fusedconv._plan_policy("floor")
    try:
        floor = fusedconv.conv2d_hardswish_relu(x, weight, bias, **geometry)
    finally:
        torch.ops.fusedconv._plan_policy("fused")
    assert actual.stride() == floor.stride()
    return actual


@pytest.mark.parametrize("dtype", HALF_TYPES)
@pytest.mark.parametrize("seed", range(16))
def test_pointwise_kernel_matches_float64(seed, dtype):
    rng = random.Random(seed)
    cin = rng.choice([8, 16, 24, 40, 72, 136])
    cout = rng.choice([8, 16, 40, 64, 72, 136])
    stride, padding = rng.choice([(1, 0), (1, 0), (2, 0), (1, 1), (2, 1)])
    x, weight, bias = _tensors(rng.randint(1, 3), cin, cout, rng.randint(1, 21),
                               rng.randint(1, 23), dtype, bias=rng.random() < 0.8,
                               weight_channels_last=rng.random() < 0.5)
    _check(x, weight, bias, stride=stride, padding=padding)


@pytest.mark.parametrize("dtype", HALF_TYPES)
def test_pointwise_kernel_long_channel_loop_and_partial_tiles(dtype):
    # 1000 input channels: 32 stages through the 3-deep ring, the last one partial; 969
    # positions and 72 output channels: partial tiles in both output dimensions.
    x, weight, bias = _tensors(3, 1000, 72, 17, 19, dtype)
    _check(x, weight, bias)
    _check(x, weight, None)


# (batch, in, out channels, plane): each tile shape of the launch, with more tiles than the
# H200's resident grid (132 SMs x 3 CTAs) where it says so, so CTAs walk several tiles and the
# cp.async ring crosses tile boundaries; 16 input channels: one k step per tile.
PERSISTENT_CASES = [
    (8, 96, 136, 56),  # 128 x 64 tiles, 588 of them
    (8, 16, 136, 56),  # the same with one k step per tile
    (17, 64, 16, 56),  # 128 x 32 tiles, 417
    (2, 64, 16, 20),  # 64 x 32 tiles
    (2, 96, 72, 20),  # 64 x 64 tiles
]


@pytest.mark.parametrize("case", PERSISTENT_CASES, ids=str)
def test_pointwise_kernel_tile_shapes_and_persistent_grid(case):
    batch, cin, cout, size = case
    x, weight, bias = _tensors(batch, cin, cout, size, size, torch.bfloat16)
    _check(x, weight, bias)


def test_pointwise_kernel_propagates_nan_and_inf():
    x, weight, bias = _tensors(2, 32, 48, 9, 10, torch.bfloat16)
    x[0, 3, 4, 5] = float("nan")
    x[1, 7, 0, 0] = float("inf")
    x[1, 9, 8, 9] = float("-inf")
    assert any(KERNEL_NAME in name for name in cuda_kernel_names(
        lambda: fusedconv.conv2d_hardswish_relu(x, weight, bias)))
    actual = fusedconv.conv2d_hardswish_relu(x, weight, bias)
    expected = reference_float64(x, weight, bias)
    assert_close_with_nonfinite(actual.double(), expected, rtol=2e-2, atol=2e-2)


def _misaligned_channels_last(batch, cin, height, width, dtype):
    storage = torch.randn(batch * height * width * cin + 1, device="cuda", dtype=dtype)
    return storage[1:].view(batch, height, width, cin).permute(0, 3, 1, 2)


@pytest.mark.parametrize("case", ["cin_not_multiple_of_8", "cout_not_multiple_of_8", "nchw",
                                  "float32", "misaligned", "grouped", "3x3"])
def test_configurations_the_pointwise_kernel_leaves_to_others(case):
    dtype = torch.float32 if case == "float32" else torch.bfloat16
    cin, cout, groups, kernel = 16, 32, 1, 1
    cin = 12 if case == "cin_not_multiple_of_8" else cin
    cout = 36 if case == "cout_not_multiple_of_8" else cout
    groups = 2 if case == "grouped" else groups
    kernel = 3 if case == "3x3" else kernel
    x, _, bias = _tensors(2, cin, cout, 10, 12, dtype)
    if case == "nchw":
        x = x.contiguous()
    if case == "misaligned":
        x = _misaligned_channels_last(2, cin, 10, 12, dtype)
        assert x.is_contiguous(memory_format=torch.channels_last) and x.data_ptr() % 16 != 0
    weight = torch.randn(cout, cin // groups, kernel, kernel, device="cuda", dtype=dtype) * 0.2

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, groups=groups)

    assert not any(KERNEL_NAME in name for name in cuda_kernel_names(call))
    actual = poisoned_call(call, dtype, "cuda")
    expected = reference_float64(x, weight, bias, groups=groups)
    eager = relative_l2_error(reference_forward(x, weight, bias, groups=groups), expected)
    assert relative_l2_error(actual, expected) <= 1.2 * eager + 1e-4


def test_pointwise_kernel_empty_batch():
    x, weight, bias = _tensors(2, 16, 32, 5, 6, torch.float16)
    assert torch.ops.fusedconv._plan(x, weight, bias, [1, 1], [0, 0, 0, 0], [1, 1], 1,
                                     None) == "pointwise"
    empty = fusedconv.conv2d_hardswish_relu(x[:0], weight, bias)
    assert empty.shape == (0, 32, 5, 6)
