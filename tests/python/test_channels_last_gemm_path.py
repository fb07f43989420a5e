"""The channels_last GEMM forward kernel (csrc/cuda/forward/channels_last_gemm.cu: float16 /
bfloat16, and float32 in TF32 or, with TF32 disallowed, 3xTF32; dense channels_last, channel
counts whole 16-byte chunks, any kernel size, stride, padding and dilation): that it is the kernel
that runs, against float64 on poisoned outputs (no worse than eager, which rounds the convolution
before the activation; within TF32's error for float32 with TF32, 1e-5 without), with the floor
path's output strides, NaN / inf propagation, and the configurations it leaves to others."""

import random

import pytest
import torch

import fusedconv
from fusedconv.reference import reference_float64, reference_forward, relative_l2_error

from conftest import assert_close_with_nonfinite, cuda_kernel_names, poisoned_call

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("fused_kernels")]

KERNEL_NAME = "conv_hardswish_relu_channels_last_gemm_kernel"
HALF_TYPES = [torch.float16, torch.bfloat16]


def _tensors(batch, cin, cout, height, width, dtype, kernel=(1, 1), bias=True,
             weight_channels_last=True):
    x = torch.randn(batch, cin, height, width, device="cuda", dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(cout, cin, *kernel, device="cuda", dtype=dtype)
    weight = weight / (cin * kernel[0] * kernel[1]) ** 0.5
    if weight_channels_last:
        weight = weight.contiguous(memory_format=torch.channels_last)
    b = torch.randn(cout, device="cuda", dtype=dtype) if bias else None
    return x, weight, b


def _kernel_call_padded_1(x, weight, bias, allow_tf32=True):
    """(the op with padding 1, asserted to run this kernel; its float64 reference)."""
    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, padding=1, allow_tf32=allow_tf32)

    assert any(KERNEL_NAME in name for name in cuda_kernel_names(call))
    return call, reference_float64(x, weight, bias, padding=1)


# One TF32 product per term (10-bit mantissas rounded to nearest): about 5e-4 relative L2 on
# these draws; a wrong tap or row is of order 1.
TF32_TOLERANCE = 2e-3
# 3xTF32 (TF32 disallowed): float32's accuracy, issue 20's bound.
FLOAT32_TOLERANCE = 1e-5


def _check(x, weight, bias, allow_tf32=True, **geometry):
    """Runs the op on poisoned memory; asserts the kernel ran, the error is no worse than eager's
    (float32: within TF32's, or float32's without TF32) and the strides are the floor path's."""
    allow_tf32 = allow_tf32 if x.dtype == torch.float32 else None

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, allow_tf32=allow_tf32, **geometry)

    names = cuda_kernel_names(call)
    assert any(KERNEL_NAME in name for name in names), names
    actual = poisoned_call(call, x.dtype, "cuda")
    expected = reference_float64(x, weight, bias, **geometry)
    assert actual.dtype == x.dtype and actual.shape == expected.shape
    assert not actual.isnan().any()
    ours = relative_l2_error(actual, expected)
    if x.dtype == torch.float32:
        assert ours <= (TF32_TOLERANCE if allow_tf32 else FLOAT32_TOLERANCE), ours
    else:
        eager = relative_l2_error(reference_forward(x, weight, bias, **geometry), expected)
        assert ours <= 1.2 * eager + 1e-4, (ours, eager)
    torch.ops.fusedconv._plan_policy("floor")
    try:
        floor = call()
    finally:
        torch.ops.fusedconv._plan_policy("fused")
    assert actual.stride() == floor.stride()
    return actual


@pytest.mark.parametrize("dtype", HALF_TYPES)
@pytest.mark.parametrize("seed", range(16))
def test_pointwise_convolutions_match_float64(seed, dtype):
    rng = random.Random(seed)
    cin = rng.choice([8, 16, 24, 40, 72, 136])
    cout = rng.choice([8, 16, 40, 64, 72, 136])
    stride, padding = rng.choice([(1, 0), (1, 0), (2, 0), (1, 1), (2, 1)])
    x, weight, bias = _tensors(rng.randint(1, 3), cin, cout, rng.randint(1, 21),
                               rng.randint(1, 23), dtype, bias=rng.random() < 0.8,
                               weight_channels_last=rng.random() < 0.5)
    _check(x, weight, bias, stride=stride, padding=padding)


@pytest.mark.parametrize("dtype", HALF_TYPES)
@pytest.mark.parametrize("seed", range(24))
def test_spatial_convolutions_match_float64(seed, dtype):
    # Kernel sizes, stride, padding (up to past the kernel's reach) and dilation drawn per axis:
    # taps that fall on the padding for some rows and not others, whole tap rows in the padding.
    rng = random.Random(1000 + seed)
    cin = rng.choice([8, 16, 24, 40, 64, 72])
    cout = rng.choice([8, 16, 32, 40, 64, 72])
    kernel = (rng.choice([1, 2, 3, 3, 5, 7]), rng.choice([1, 3, 3, 5]))
    stride = (rng.choice([1, 1, 2, 3]), rng.choice([1, 2]))
    dilation = (rng.choice([1, 1, 2]), rng.choice([1, 2]))
    padding = tuple(rng.randint(0, (k - 1) * d + 1) for k, d in zip(kernel, dilation))
    height = rng.randint((kernel[0] - 1) * dilation[0] + 1, 24)
    width = rng.randint((kernel[1] - 1) * dilation[1] + 1, 26)
    x, weight, bias = _tensors(rng.randint(1, 3), cin, cout, height, width, dtype, kernel,
                               bias=rng.random() < 0.8)
    _check(x, weight, bias, stride=stride, padding=padding, dilation=dilation)


@pytest.mark.parametrize("seed", range(12))
def test_float32_with_tf32_matches_float64(seed):
    # float32 steps 16 channels at a time: channel counts in 4s, 1x1 and spatial kernels.
    rng = random.Random(2000 + seed)
    cin = rng.choice([4, 12, 16, 20, 36, 64])
    cout = rng.choice([4, 8, 20, 32, 44, 72])
    k = rng.choice([(1, 1), (3, 3), (5, 3)])
    stride = rng.choice([1, 2])
    x, weight, bias = _tensors(rng.randint(1, 3), cin, cout, rng.randint(5, 19),
                               rng.randint(5, 21), torch.float32, k, bias=rng.random() < 0.8)
    _check(x, weight, bias, stride=stride, padding=(k[0] // 2, k[1] // 2))


@pytest.mark.parametrize("seed", range(16))
def test_float32_without_tf32_matches_float64(seed):
    # 3xTF32 on every staging: taps of wide channels (16-channel steps), taps of few channels
    # (through L1), kernel rows' runs by 16-byte copies (4 or 8 channels) and by plain loads
    # (3 or 6). The same call with TF32 allowed misses the bound: the test tells the modes apart.
    rng = random.Random(5000 + seed)
    cin = rng.choice([3, 4, 6, 8, 12, 16, 20, 36, 64])
    cout = rng.choice([4, 8, 20, 32, 44, 72])
    kernel = rng.choice([(1, 1), (3, 3), (5, 3), (7, 7)])
    stride = rng.choice([1, 2])
    dilation = (rng.choice([1, 2]), 1)
    padding = (kernel[0] // 2, kernel[1] // 2)
    x, weight, bias = _tensors(rng.randint(1, 3), cin, cout,
                               rng.randint((kernel[0] - 1) * dilation[0] + 1, 19),
                               rng.randint(kernel[1], 21), torch.float32, kernel,
                               bias=rng.random() < 0.8)
    geometry = dict(stride=stride, padding=padding, dilation=dilation)
    _check(x, weight, bias, allow_tf32=False, **geometry)
    tf32 = fusedconv.conv2d_hardswish_relu(x, weight, bias, allow_tf32=True, **geometry)
    assert relative_l2_error(tf32, reference_float64(x, weight, bias, **geometry)) > \
        FLOAT32_TOLERANCE


@pytest.mark.parametrize("allow_tf32", [True, False], ids=["tf32", "three_tf32"])
@pytest.mark.parametrize("cin", [4, 12])
def test_float32_narrow_pixels_taps_through_l1(cin, allow_tf32):
    # 4 or 12 float32 channels at 3x3 with dilated columns (no runs): taps whose pixels fill
    # less than a 64-byte k step, x staged through L1; 128 x 64 tiles over several CTAs.
    x, weight, bias = _tensors(3, cin, 64, 37, 41, torch.float32, (3, 3))
    _check(x, weight, bias, allow_tf32=allow_tf32, padding=(1, 2), dilation=(1, 2))


def test_float32_precision_follows_the_flags():
    # allow_tf32=None follows torch.backends.cudnn.allow_tf32 (off in these tests): 3xTF32, at
    # float32's accuracy; True takes one TF32 product.
    x, weight, bias = _tensors(2, 16, 32, 10, 12, torch.float32, (3, 3))
    expected = reference_float64(x, weight, bias, padding=1)
    for allow_tf32, bound in ((None, FLOAT32_TOLERANCE), (False, FLOAT32_TOLERANCE),
                              (True, TF32_TOLERANCE)):
        args = (x, weight, bias, [1, 1], [1] * 4, [1, 1], 1, allow_tf32)
        assert torch.ops.fusedconv._plan(*args) == "channels_last_gemm"
        error = relative_l2_error(torch.ops.fusedconv.conv2d_hardswish_relu(*args), expected)
        assert error <= bound, (allow_tf32, error)
        if allow_tf32:
            assert error > FLOAT32_TOLERANCE


@pytest.mark.parametrize("dtype", HALF_TYPES + [torch.float32])
@pytest.mark.parametrize("seed", range(12))
def test_stems_with_few_input_channels_match_float64(seed, dtype):
    # Input channels that fill no 16-byte chunk (3, as image stems; 5, and 12 of 16 bits or 6 of
    # float32): K walks contiguous runs of kernel_w x C elements per kernel row, staged by plain
    # loads. (One channel is not drawn: PyTorch keeps a 1-channel tensor's NCHW strides under
    # contiguous(channels_last), so it never arrives in channels_last.)
    rng = random.Random(3000 + seed)
    cin = rng.choice([3, 3, 2, 5] + ([12] if dtype != torch.float32 else [6]))
    cout = rng.choice([8, 16, 32, 64])
    kernel = rng.choice([(3, 3), (7, 7), (5, 3), (3, 1), (1, 1)])
    stride = (rng.choice([1, 2]), rng.choice([1, 2]))
    dilation = (rng.choice([1, 2]), 1)  # runs need contiguous columns
    padding = tuple(rng.randint(0, (k - 1) * d) for k, d in zip(kernel, dilation))
    height = rng.randint((kernel[0] - 1) * dilation[0] + 1, 30)
    width = rng.randint(kernel[1], 33)
    x, weight, bias = _tensors(rng.randint(1, 3), cin, cout, height, width, dtype, kernel,
                               bias=rng.random() < 0.8)
    _check(x, weight, bias, stride=stride, padding=padding, dilation=dilation)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("stem", [(64, 7), (32, 3)], ids=["resnet_7x7_64", "3x3_32"])
def test_stems_on_many_tiles(stem, dtype):
    # Stride-2 stems over 3 channels at batch 17: 417 tiles of 128 positions (128 x 64 for 64
    # output channels, 128 x 32 for 32), so CTAs walk several. A 7x7 kernel row's run is 21
    # elements: one 32-element step of 16 bits, two 16-element steps of float32.
    cout, k = stem
    x, weight, bias = _tensors(17, 3, cout, 112, 112, dtype, (k, k))
    _check(x, weight, bias, stride=2, padding=k // 2)


@pytest.mark.parametrize("dtype", HALF_TYPES + [torch.float32])
@pytest.mark.parametrize("seed", range(12))
def test_few_whole_chunk_channels_staged_as_runs(seed, dtype):
    # Channels in whole 16-byte chunks but fewer than a k step holds (8 or 16 of 16 bits, 4 or 8
    # of float32): a kernel row's run of kernel_w x C elements, copied 16 bytes at a time, takes
    # fewer steps than its taps (KernelBench v0.1's 8 channels: one step a row instead of three).
    rng = random.Random(4000 + seed)
    cin = rng.choice([8, 16] if dtype != torch.float32 else [4, 8])
    cout = rng.choice([8, 16, 32, 64, 72])
    kernel = rng.choice([(3, 3), (5, 5), (7, 7), (1, 3), (3, 5)])
    stride = (rng.choice([1, 2]), rng.choice([1, 2]))
    dilation = (rng.choice([1, 2]), 1)  # runs need contiguous columns
    padding = tuple(rng.randint(0, (k - 1) * d + 1) for k, d in zip(kernel, dilation))
    height = rng.randint((kernel[0] - 1) * dilation[0] + 1, 30)
    width = rng.randint(kernel[1], 33)
    x, weight, bias = _tensors(rng.randint(1, 3), cin, cout, height, width, dtype, kernel,
                               bias=rng.random() < 0.8)
    _check(x, weight, bias, stride=stride, padding=padding, dilation=dilation)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_whole_chunk_runs_on_many_tiles_with_nonfinite_inputs(dtype):
    # KernelBench v0.1's channels (8 -> 64, 3x3) at batch 5 and 64x64: 160 tiles of 128
    # positions, CTAs walking several; a NaN and infinities in x reach the outputs their taps
    # cover, as PyTorch's do.
    x, weight, bias = _tensors(5, 8, 64, 64, 64, dtype, (3, 3))
    x[0, 3, 4, 5] = float("nan")
    x[2, 7, 0, 0] = float("inf")
    x[4, 1, 63, 63] = float("-inf")
    call, expected = _kernel_call_padded_1(x, weight, bias)
    assert expected.isnan().any() and expected.isinf().any()
    assert_close_with_nonfinite(poisoned_call(call, dtype, "cuda").double(), expected, rtol=2e-2,
                                atol=2e-2)


@pytest.mark.parametrize("case", ["dilated_columns", "nchw_weight"])
def test_stems_the_kernel_leaves_to_others(case):
    x, weight, bias = _tensors(2, 3, 16, 12, 13, torch.bfloat16, (3, 3),
                               weight_channels_last=case != "nchw_weight")
    dilation = (1, 2) if case == "dilated_columns" else 1

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, padding=1, dilation=dilation)

    assert not any(KERNEL_NAME in name for name in cuda_kernel_names(call))
    expected = reference_float64(x, weight, bias, padding=1, dilation=dilation)
    eager = relative_l2_error(reference_forward(x, weight, bias, padding=1, dilation=dilation),
                              expected)
    assert relative_l2_error(poisoned_call(call, x.dtype, "cuda"), expected) <= 1.2 * eager + 1e-4


@pytest.mark.parametrize("dtype", HALF_TYPES)
def test_same_padding_with_an_even_kernel(dtype):
    # 'same' with a 4-wide kernel pads 1 before and 2 after: only the leading pad moves sources.
    x, weight, bias = _tensors(2, 16, 24, 13, 11, dtype, (4, 4))
    _check(x, weight, bias, padding="same")


@pytest.mark.parametrize("dtype", HALF_TYPES + [torch.float32])
def test_long_channel_loop_and_partial_tiles(dtype):
    # 1000 input channels: 32 stages (63 in float32) through the 3-deep ring, the last one
    # partial; 969
    # positions and 72 output channels: partial tiles in both output dimensions.
    x, weight, bias = _tensors(3, 1000, 72, 17, 19, dtype)
    _check(x, weight, bias)
    _check(x, weight, None)
    # With taps: 9 x 4 steps per tile, the last channel step of each tap partial.
    x, weight, bias = _tensors(2, 104, 72, 11, 9, dtype, (3, 3))
    _check(x, weight, bias, padding=1)


# (batch, in, out channels, plane, kernel): each tile shape of the launch, with more tiles than
# the H200's resident grid (132 SMs x 3 CTAs) where it says so, so CTAs walk several tiles and the
# cp.async ring crosses tile (and tap) boundaries; 16 input channels: one step per tap.
PERSISTENT_CASES = [
    (8, 96, 136, 56, 1),  # 128 x 64 tiles, 588 of them
    (8, 16, 136, 56, 1),  # the same with one k step per tile
    (17, 64, 16, 56, 1),  # 128 x 32 tiles, 417
    (2, 64, 16, 20, 1),  # 64 x 32 tiles
    (2, 96, 72, 20, 1),  # 64 x 64 tiles
    (9, 16, 72, 56, 3),  # 128 x 64 tiles, 442 of them, 9 steps each
    (17, 32, 16, 56, 3),  # 128 x 32 tiles, 9 steps each
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("case", PERSISTENT_CASES, ids=str)
def test_tile_shapes_and_persistent_grid(case, dtype):
    batch, cin, cout, size, k = case
    x, weight, bias = _tensors(batch, cin, cout, size, size, dtype, (k, k))
    _check(x, weight, bias, padding=k // 2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, "float32_three_tf32"])
def test_propagates_nan_and_inf(dtype):
    allow_tf32 = dtype != "float32_three_tf32"
    dtype = torch.float32 if dtype == "float32_three_tf32" else dtype
    x, weight, bias = _tensors(2, 32, 48, 9, 10, dtype, (3, 3))
    x[0, 3, 4, 5] = float("nan")
    x[1, 7, 0, 0] = float("inf")
    x[1, 9, 8, 9] = float("-inf")
    call, expected = _kernel_call_padded_1(x, weight, bias, allow_tf32)
    assert_close_with_nonfinite(call().double(), expected, rtol=2e-2, atol=2e-2)


def _misaligned_channels_last(batch, cin, height, width, dtype):
    storage = torch.randn(batch * height * width * cin + 1, device="cuda", dtype=dtype)
    return storage[1:].view(batch, height, width, cin).permute(0, 3, 1, 2)


@pytest.mark.parametrize("case", ["cout_not_multiple_of_8", "nchw", "float64", "misaligned",
                                  "grouped", "nchw_weight_3x3"])
def test_configurations_the_kernel_leaves_to_others(case):
    dtype = torch.float64 if case == "float64" else torch.bfloat16
    cin, cout, groups, kernel = 16, 32, 1, 1
    cout = 36 if case == "cout_not_multiple_of_8" else cout
    groups = 2 if case == "grouped" else groups
    kernel = 3 if case == "nchw_weight_3x3" else kernel
    x, _, bias = _tensors(2, cin, cout, 10, 12, dtype)
    if case == "nchw":
        x = x.contiguous()
    if case == "misaligned":
        x = _misaligned_channels_last(2, cin, 10, 12, dtype)
        assert x.is_contiguous(memory_format=torch.channels_last) and x.data_ptr() % 16 != 0
    # An NCHW 3x3 weight: its input channels are not innermost.
    weight = torch.randn(cout, cin // groups, kernel, kernel, device="cuda", dtype=dtype) * 0.2

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, groups=groups)

    assert not any(KERNEL_NAME in name for name in cuda_kernel_names(call))
    actual = poisoned_call(call, dtype, "cuda")
    expected = reference_float64(x, weight, bias, groups=groups)
    eager = relative_l2_error(reference_forward(x, weight, bias, groups=groups), expected)
    assert relative_l2_error(actual, expected) <= 1.2 * eager + 1e-4


@pytest.mark.parametrize("kernel", [1, 3])
def test_empty_batch(kernel):
    x, weight, bias = _tensors(2, 16, 32, 5, 6, torch.float16, (kernel, kernel))
    padding = [kernel // 2] * 4
    assert torch.ops.fusedconv._plan(x, weight, bias, [1, 1], padding, [1, 1], 1,
                                     None) == "channels_last_gemm"
    empty = fusedconv.conv2d_hardswish_relu(x[:0], weight, bias, padding=kernel // 2)
    assert empty.shape == (0, 32, 5, 6)
