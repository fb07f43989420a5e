"""The depthwise backward kernels (csrc/cuda/backward/depthwise_backward.cu and
depthwise_backward_channels_last.cu: groups == in_channels == out_channels, square 3x3 / 5x5 /
7x7, any stride, padding and dilation, dense NCHW or channels_last in whole 16-byte channel
vectors, float32 / float16 / bfloat16): that the plan takes them, every gradient against float64 on
poisoned outputs (float16 / bfloat16 no worse than the floor path), the gradients not asked for,
bitwise determinism, NaN positions as the floor path gives them (a NaN input; infinities are left
out: over zero padding the floor's backend may multiply them by zero, this kernel skips padded
taps as the forward does), and the configurations left to the floor."""

import random

import pytest
import torch

from fusedconv.reference import reference_gradients_float64, relative_l2_error

from conftest import poisoned_call, with_floor_policy

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("fused_kernels")]

MASKS = [[True, True, True], [True, False, False], [False, True, False], [False, False, True],
         [False, True, True]]


LAYOUTS = ["nchw", "channels_last"]


def _case(rng, dtype, channels_last=False):
    """A random depthwise layer; stride, dilation and padding drawn per axis. In channels_last
    the channels are whole 16-byte vectors of every dtype (multiples of 8)."""
    kernel = rng.choice([3, 3, 5, 7])
    stride = [rng.choice([1, 1, 2]) for _ in range(2)]
    dilation = [rng.choice([1, 1, 2]) for _ in range(2)]
    padding = [rng.randint(0, kernel // 2 * d) for d in dilation]
    plane = [rng.randint(max(1, d * (kernel - 1) + 1 - 2 * p), limit)
             for d, p, limit in zip(dilation, padding, (21, 26))]
    channels = rng.choice([8, 16, 24, 40] if channels_last else [2, 3, 8, 16, 24])
    x = torch.randn(rng.randint(1, 3), channels, *plane, device="cuda", dtype=dtype)
    weight = torch.randn(channels, 1, kernel, kernel, device="cuda", dtype=dtype) * 0.3
    bias = torch.randn(channels, device="cuda", dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    pads = [padding[0], padding[0], padding[1], padding[1]]
    return x, weight, bias, (stride, pads, dilation, channels)


def _forward(x, weight, bias, geometry):
    return torch.ops.fusedconv.conv2d_hardswish_relu(x, weight, bias, *geometry)


def _backward(grad_y, x, weight, y, geometry, mask):
    return torch.ops.fusedconv.conv2d_hardswish_relu_backward(grad_y, x, weight, y, *geometry,
                                                              mask)


def _assert_planned(grad_y, x, weight, y, geometry, mask=(True, True, True)):
    assert torch.ops.fusedconv._plan_backward(grad_y, x, weight, y, *geometry,
                                              list(mask)) == "depthwise"


def _expected(x, weight, bias, grad_y, y, geometry):
    stride, padding, dilation, groups = geometry
    return reference_gradients_float64(x, weight, bias, grad_y, y, stride,
                                       (padding[0], padding[2]), dilation, groups)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", range(24))
def test_depthwise_backward_matches_float64(seed, layout):
    rng = random.Random(seed)
    x, weight, bias, geometry = _case(rng, torch.float32, layout == "channels_last")
    y = _forward(x, weight, bias, geometry)
    grad_y = torch.randn_like(y)
    _assert_planned(grad_y, x, weight, y, geometry)
    grads = poisoned_call(lambda: _backward(grad_y, x, weight, y, geometry, [True] * 3),
                          torch.float32, "cuda")
    expected = _expected(x, weight, bias, grad_y, y, geometry)
    for name, actual, wanted in zip(("input", "weight", "bias"), grads, expected):
        assert actual.shape == wanted.shape, name
        assert relative_l2_error(actual, wanted) <= 1e-5, (name, geometry)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", range(8))
def test_depthwise_backward_half_precision_no_worse_than_the_floor(seed, dtype, layout):
    rng = random.Random(100 + seed)
    x, weight, bias, geometry = _case(rng, dtype, layout == "channels_last")
    y = _forward(x, weight, bias, geometry)
    grad_y = torch.randn_like(y)
    _assert_planned(grad_y, x, weight, y, geometry)
    grads = poisoned_call(lambda: _backward(grad_y, x, weight, y, geometry, [True] * 3), dtype,
                          "cuda")
    floor = with_floor_policy(lambda: _backward(grad_y, x, weight, y, geometry, [True] * 3))
    expected = _expected(x, weight, bias, grad_y, y, geometry)
    for name, ours, theirs, wanted in zip(("input", "weight", "bias"), grads, floor, expected):
        assert ours.dtype == dtype and not ours.isnan().any(), name
        error, floor_error = relative_l2_error(ours, wanted), relative_l2_error(theirs, wanted)
        assert error <= 1.2 * floor_error + 1e-3, (name, error, floor_error, geometry)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mask", MASKS, ids=str)
def test_depthwise_backward_gradients_not_asked_for(mask, layout):
    x, weight, bias, geometry = _case(random.Random(7), torch.float32, layout == "channels_last")
    y = _forward(x, weight, bias, geometry)
    grad_y = torch.randn_like(y)
    _assert_planned(grad_y, x, weight, y, geometry, mask)
    grads = _backward(grad_y, x, weight, y, geometry, mask)
    everything = _backward(grad_y, x, weight, y, geometry, [True] * 3)
    for wanted, actual, full in zip(mask, grads, everything):
        if wanted:
            assert torch.equal(actual, full)
        else:
            assert actual.numel() == 0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_depthwise_backward_is_bitwise_deterministic_and_correct_across_slices(layout):
    # 4 x 56 output rows of 56 positions: the weight pass splits each channel into several
    # slices (NCHW: 6 of 38 rows, the last 34, on an H200), whose partials the reduce kernel
    # sums; channels_last: one block of 8 vectors x 25 taps (200 threads, one lane), 6 slices.
    x = torch.randn(4, 32, 56, 56, device="cuda")
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(32, 1, 5, 5, device="cuda") * 0.2
    bias = torch.randn(32, device="cuda")
    geometry = ([1, 1], [2] * 4, [1, 1], 32)
    y = _forward(x, weight, bias, geometry)
    grad_y = torch.randn_like(y)
    _assert_planned(grad_y, x, weight, y, geometry)
    first = _backward(grad_y, x, weight, y, geometry, [True] * 3)
    for actual, wanted in zip(first, _expected(x, weight, bias, grad_y, y, geometry)):
        assert relative_l2_error(actual, wanted) <= 1e-5
    for _ in range(3):
        again = _backward(grad_y, x, weight, y, geometry, [True] * 3)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_depthwise_backward_nan_positions_as_the_floor(layout):
    x, weight, bias, geometry = _case(random.Random(11), torch.float32, layout == "channels_last")
    x[0, 0, 0, 0] = float("nan")
    y = _forward(x, weight, bias, geometry)
    grad_y = torch.randn_like(y)
    _assert_planned(grad_y, x, weight, y, geometry)
    ours = _backward(grad_y, x, weight, y, geometry, [True] * 3)
    floor = with_floor_policy(lambda: _backward(grad_y, x, weight, y, geometry, [True] * 3))
    for a, b in zip(ours, floor):
        assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.isinf(), b.isinf())


@pytest.mark.parametrize("case", ["channels_last_partial_vector", "multiplier_2", "kernel_4",
                                  "float64", "non_square"])
def test_configurations_the_depthwise_backward_leaves_to_the_floor(case):
    dtype = torch.float64 if case == "float64" else torch.float32
    x, weight, bias, geometry = _case(random.Random(3), dtype)
    if case == "channels_last_partial_vector":  # 6 float32 channels: one and a half vectors
        x = x[:, :1].repeat(1, 6, 1, 1).contiguous(memory_format=torch.channels_last)
        weight, bias = weight[:1].repeat(6, 1, 1, 1), bias[:1].repeat(6)
    channels = x.shape[1]
    if case == "multiplier_2":
        weight = torch.cat([weight, weight], 0)
        bias = torch.cat([bias, bias])
    if case == "kernel_4":
        weight = torch.randn(channels, 1, 4, 4, device="cuda")
    if case == "non_square":
        weight = torch.randn(channels, 1, 3, 1, device="cuda")
    geometry = ([1, 1], [1] * 4, [1, 1], channels)
    y = _forward(x, weight, bias, geometry)
    grad_y = torch.randn_like(y)
    # The floor (float16 / bfloat16 / float32 with the bias summed in its g pass).
    assert torch.ops.fusedconv._plan_backward(grad_y, x, weight, y, *geometry,
                                              [True] * 3) in ("floor", "floor_summing_bias")
    grads = _backward(grad_y, x, weight, y, geometry, [True] * 3)
    expected = _expected(x, weight, bias, grad_y, y, geometry)
    tolerance = 1e-12 if dtype == torch.float64 else 5e-3  # the floor may use TF32
    for actual, wanted in zip(grads, expected):
        assert relative_l2_error(actual, wanted) <= tolerance


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("weight_kind", ["dense", "strided"])
def test_depthwise_backward_channels_last_filters_per_tap_or_resident(weight_kind, dtype):
    # channels_last grad_input keeps a vector's 3x3 filters in registers where they are one dense,
    # aligned run, and loads them per tap otherwise (a strided weight view); both against
    # float64, with a stride-3 axis for the run-time stride instance.
    channels = 16
    x = torch.randn(2, channels, 17, 15, device="cuda", dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    if weight_kind == "strided":  # scaled before the view: a product would be dense again
        weight = (torch.randn(channels, 1, 3, 4, device="cuda", dtype=dtype) * 0.3)[:, :, :, :3]
        assert weight.stride() == (12, 12, 4, 1)
    else:
        weight = torch.randn(channels, 1, 3, 3, device="cuda", dtype=dtype) * 0.3
    bias = torch.randn(channels, device="cuda", dtype=dtype)
    geometry = ([3, 1], [1] * 4, [1, 1], channels)
    y = _forward(x, weight, bias, geometry)
    grad_y = torch.randn_like(y)
    _assert_planned(grad_y, x, weight, y, geometry)
    grads = poisoned_call(lambda: _backward(grad_y, x, weight, y, geometry, [True] * 3), dtype,
                          "cuda")
    floor = with_floor_policy(lambda: _backward(grad_y, x, weight, y, geometry, [True] * 3))
    expected = _expected(x, weight, bias, grad_y, y, geometry)
    for name, ours, theirs, wanted in zip(("input", "weight", "bias"), grads, floor, expected):
        assert ours.stride() == theirs.stride(), name
        error, floor_error = relative_l2_error(ours, wanted), relative_l2_error(theirs, wanted)
        assert error <= (1e-5 if dtype == torch.float32 else 1.2 * floor_error + 1e-3), name


def test_depthwise_backward_channels_last_lanes_and_slices_together():
    # 8 float32 channels (2 vectors), 3x3: 2 vectors x 9 taps x 14 lanes per weight-pass CTA,
    # and 270 output rows of 23 in 3 slices of 90 (on an H200): the in-CTA lane sum and the
    # slice-order reduce checked together, against float64.
    x = torch.randn(6, 8, 45, 45, device="cuda").contiguous(memory_format=torch.channels_last)
    weight = torch.randn(8, 1, 3, 3, device="cuda") * 0.3
    bias = torch.randn(8, device="cuda")
    geometry = ([1, 2], [1] * 4, [1, 1], 8)
    y = _forward(x, weight, bias, geometry)
    grad_y = torch.randn_like(y)
    _assert_planned(grad_y, x, weight, y, geometry)
    grads = poisoned_call(lambda: _backward(grad_y, x, weight, y, geometry, [True] * 3),
                          torch.float32, "cuda")
    for actual, wanted in zip(grads, _expected(x, weight, bias, grad_y, y, geometry)):
        assert relative_l2_error(actual, wanted) <= 1e-5
