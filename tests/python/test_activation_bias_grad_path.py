"""The floor backward with grad_bias summed in its g pass (csrc/cuda/backward/
activation_bias_grad.cu; the plan "floor_summing_bias"): grad_bias against the float64 sum of the
stored g on poisoned outputs, in both layouts (channels innermost: rows of whole 16-byte vectors,
ragged rows element by element, more channel columns than one CTA holds, many chunks; planes:
vectors or elements), float32 / float16 / bfloat16; grad_input and grad_weight as the floor
path's; the gradients not asked for (grad_bias alone stores no g); bitwise determinism, an
unaligned view summing bitwise as its aligned copy; NaN positions as the floor's."""

import random

import pytest
import torch

from conftest import poisoned_call, with_floor_policy

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("fused_kernels")]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = ["nchw", "channels_last"]


def _case(rng, dtype, channels_last, out_channels=None):
    """A random convolution the fused backward kernels do not take (float32 is strided: the
    NCHW fused backward takes stride 1, and a channels_last tensor of one input channel is a
    dense NCHW one too; and has more than 16 output channels: the small-problem backward takes
    any stride), with its output and a random grad_output."""
    cin = rng.choice([1, 3, 4, 8])
    small = [] if dtype == torch.float32 else [1, 3, 6, 8, 16]
    cout = out_channels or rng.choice(small + [24, 40, 72, 136])
    kernel = rng.choice([1, 3])
    stride = 2 if dtype == torch.float32 else rng.choice([1, 2])
    size = [rng.randint(kernel, 13), rng.randint(kernel, 11)]
    x = torch.randn(rng.randint(1, 3), cin, *size, device="cuda", dtype=dtype)
    weight = torch.randn(cout, cin, kernel, kernel, device="cuda", dtype=dtype) * 0.4
    bias = torch.randn(cout, device="cuda", dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    geometry = ([stride, stride], [kernel // 2] * 4, [1, 1], 1)
    y = torch.ops.fusedconv.conv2d_hardswish_relu(x, weight, bias, *geometry)
    return torch.randn_like(y), x, weight, y, geometry


def _pointwise_case(shape, out_channels, layout):
    """A bfloat16 1x1 layer (bias, stride 1) on an x of `shape` in `layout`: (grad_y, x,
    weight, y, geometry)."""
    x = torch.randn(*shape, device="cuda", dtype=torch.bfloat16)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(out_channels, shape[1], 1, 1, device="cuda", dtype=torch.bfloat16)
    bias = torch.randn(out_channels, device="cuda", dtype=torch.bfloat16)
    geometry = ([1, 1], [0] * 4, [1, 1], 1)
    y = torch.ops.fusedconv.conv2d_hardswish_relu(x, weight, bias, *geometry)
    return torch.randn_like(y), x, weight, y, geometry


def _backward(grad_y, x, weight, y, geometry, mask=(True, True, True)):
    return torch.ops.fusedconv.conv2d_hardswish_relu_backward(grad_y, x, weight, y, *geometry,
                                                              list(mask))


def _plan(grad_y, x, weight, y, geometry, mask=(True, True, True)):
    return torch.ops.fusedconv._plan_backward(grad_y, x, weight, y, *geometry, list(mask))


def _assert_bias_sums(grad_bias, grad_y, y):
    """grad_bias within rounding to its dtype of the float64 sum of the stored g (what ATen
    sums), plus float32 accumulation's share: 1e-5 of the sum of |g|."""
    g = torch.ops.fusedconv.hardswish_relu_grad(grad_y, y).double()
    expected = g.sum(dim=(0, 2, 3))
    bound = (torch.finfo(grad_bias.dtype).eps * expected.abs()
             + 1e-5 * g.abs().sum(dim=(0, 2, 3)) + 1e-30)
    error = (grad_bias.double() - expected).abs()
    assert bool((error <= bound).all()), (error - bound).max().item()


def _assert_as_floor(ours, floor, dtype):
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(ours, floor, rtol=tolerance, atol=tolerance)


def _check_summing_bias(grad_y, x, weight, y, geometry, dtype, against_floor=True):
    """The call planned as floor_summing_bias, run on poisoned outputs: grad_bias against the
    float64 sum, and (against_floor) every gradient as the floor policy's. Returns (ours,
    the floor's or None)."""
    assert _plan(grad_y, x, weight, y, geometry) == "floor_summing_bias"
    grads = poisoned_call(lambda: _backward(grad_y, x, weight, y, geometry), dtype, "cuda")
    _assert_bias_sums(grads[2], grad_y, y)
    if not against_floor:
        return grads, None
    floor = with_floor_policy(lambda: _backward(grad_y, x, weight, y, geometry))
    for ours, theirs in zip(grads, floor):
        _assert_as_floor(ours, theirs, dtype)
    return grads, floor


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", range(10))
def test_bias_summed_in_the_gradient_pass(seed, dtype, layout):
    grad_y, x, weight, y, geometry = _case(random.Random(seed), dtype, layout == "channels_last")
    grads, floor = _check_summing_bias(grad_y, x, weight, y, geometry, dtype)
    for name, ours, theirs in zip(("input", "weight", "bias"), grads, floor):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, name
        assert ours.stride() == theirs.stride(), name


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("out_channels,dtype", [(1040, torch.float32), (1030, torch.float32),
                                                (2056, torch.bfloat16), (300, torch.float16)],
                         ids=str)
def test_more_channels_than_one_cta_holds(out_channels, dtype, layout):
    """Channels innermost, over 256 columns: 16-byte vectors (1040 float32, 2056 bfloat16) or
    elements (1030 float32, 300 float16) in several CTAs across the channels."""
    grad_y, x, weight, y, geometry = _case(random.Random(out_channels), dtype,
                                           layout == "channels_last", out_channels)
    _check_summing_bias(grad_y, x, weight, y, geometry, dtype, against_floor=False)


def _shifted(tensor, layout):
    """A dense copy of `tensor` in `layout` whose storage starts 2 bytes past 16-byte alignment."""
    nhwc = layout == "channels_last"
    shape = tensor.permute(0, 2, 3, 1).shape if nhwc else tensor.shape
    storage = torch.empty(tensor.numel() + 1, device=tensor.device, dtype=tensor.dtype)
    shifted = storage[1:].view(shape)
    if nhwc:
        shifted = shifted.permute(0, 3, 1, 2)
    shifted.copy_(tensor)
    assert shifted.data_ptr() % 16 != 0
    return shifted


@pytest.mark.parametrize("layout", LAYOUTS)
def test_unaligned_grad_output_sums_as_its_aligned_copy(layout):
    """grad_output and output as dense views 2 bytes off 16-byte alignment, in a shape whose
    channel runs are whole 16-byte vectors (24 channels; an 8 x 6 plane): element by element,
    in the same order as the aligned copy's vectors, so grad_bias is bitwise the same."""
    grad_y, x, weight, y, geometry = _pointwise_case((2, 8, 8, 6), 24, layout)
    aligned = _backward(grad_y, x, weight, y, geometry)
    grad_y_view, y_view = _shifted(grad_y, layout), _shifted(y, layout)
    assert _plan(grad_y_view, x, weight, y_view, geometry) == "floor_summing_bias"
    grads = poisoned_call(lambda: _backward(grad_y_view, x, weight, y_view, geometry),
                          torch.bfloat16, "cuda")
    assert torch.equal(grads[2], aligned[2])
    _assert_bias_sums(grads[2], grad_y, y)
    for ours, theirs in zip(grads, aligned):
        _assert_as_floor(ours, theirs, torch.bfloat16)


def test_grad_output_expanded_from_a_scalar():
    grad_y, x, weight, y, geometry = _case(random.Random(4), torch.float16, True, 16)
    expanded = torch.randn((), device="cuda", dtype=torch.float16).expand(y.shape)
    _check_summing_bias(expanded, x, weight, y, geometry, torch.float16)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_many_rows_in_many_chunks(layout):
    """Enough positions for more than 32 chunks (each reduce lane adds several) and, in
    channels_last, 128 lanes over the rows of 2 vector columns."""
    grad_y, x, weight, y, geometry = _pointwise_case((16, 4, 64, 64), 16, layout)
    _check_summing_bias(grad_y, x, weight, y, geometry, torch.bfloat16)


@pytest.mark.parametrize("mask", [[True, True, True], [False, False, True], [True, False, True],
                                  [False, True, True]], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradients_not_asked_for(mask, layout):
    grad_y, x, weight, y, geometry = _case(random.Random(11), torch.float16,
                                           layout == "channels_last", 40)
    assert _plan(grad_y, x, weight, y, geometry, mask) == "floor_summing_bias"
    grads = _backward(grad_y, x, weight, y, geometry, mask)
    everything = _backward(grad_y, x, weight, y, geometry)
    floor = with_floor_policy(lambda: _backward(grad_y, x, weight, y, geometry, mask))
    for wanted, actual, full, theirs in zip(mask, grads, everything, floor):
        if wanted:  # cuDNN's grad_weight may differ in the last bits from call to call
            _assert_as_floor(actual, full, torch.float16)
            _assert_as_floor(actual, theirs, torch.float16)
        else:
            assert actual.numel() == 0 and theirs.numel() == 0
    assert torch.equal(grads[2], everything[2])
    _assert_bias_sums(grads[2], grad_y, y)


def test_no_bias_asked_for_is_the_plain_floor():
    grad_y, x, weight, y, geometry = _case(random.Random(5), torch.bfloat16, True, 16)
    assert _plan(grad_y, x, weight, y, geometry, (True, True, False)) == "floor"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bitwise_deterministic(layout):
    grad_y, x, weight, y, geometry = _case(random.Random(9), torch.float32,
                                           layout == "channels_last", 72)
    first = _backward(grad_y, x, weight, y, geometry, (False, False, True))[2]
    second = _backward(grad_y, x, weight, y, geometry, (False, False, True))[2]
    assert torch.equal(first, second)
    _assert_bias_sums(first, grad_y, y)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_in_grad_output_reaches_its_channel_only(layout):
    grad_y, x, weight, y, geometry = _case(random.Random(13), torch.bfloat16,
                                           layout == "channels_last", 16)
    y = y.clone()
    y[0, 5, 0, 0] = 1.0  # a slope that passes grad_output through
    grad_y = grad_y.clone()
    grad_y[0, 5, 0, 0] = float("nan")
    ours = _backward(grad_y, x, weight, y, geometry)[2]
    floor = with_floor_policy(lambda: _backward(grad_y, x, weight, y, geometry))[2]
    assert torch.equal(ours.isnan(), floor.isnan())
    assert ours.isnan().tolist() == [c == 5 for c in range(16)]
