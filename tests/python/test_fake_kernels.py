"""The fake (meta) kernels (fusedconv/ops.py) agree with the real ones on the sizes and strides of
every output of every operator, for every memory-format combination of input and weight, on
the CPU and CUDA: torch.compile (inductor's assert_size_stride) relies on it, and inductor
switches ordinary CNN graphs to channels_last by itself."""

import itertools
import random

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

import fusedconv

from conftest import DEVICES

FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
MASKS = [[True, True, True], [True, False, False], [False, True, True], [True, False, True]]


def _tensors(device, dtype, x_format, w_format, batch=2, groups=1):
    x = torch.randn(batch, 4, 9, 11, device=device, dtype=dtype)
    weight = torch.randn(6, 4 // groups, 3, 3, device=device, dtype=dtype) * 0.3
    bias = torch.randn(6, device=device, dtype=dtype)
    return (x.contiguous(memory_format=FORMATS[x_format]),
            weight.contiguous(memory_format=FORMATS[w_format]), bias)


def _fake_call(op, args):
    """op(*args) under a FakeTensorMode, tensors converted from the real ones (same strides)."""
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        return op(*fake_args)


def _layouts(result):
    results = result if isinstance(result, (tuple, list)) else (result,)
    return [(tuple(r.shape), r.stride(), r.dtype) for r in results]


CASES = list(itertools.product(FORMATS, FORMATS, [torch.float32, torch.float64]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("x_format,w_format,dtype", CASES,
                         ids=["x_%s-w_%s-%s" % (a, b, str(c)[6:]) for a, b, c in CASES])
@pytest.mark.parametrize("batch,groups", [(2, 1), (2, 2), (0, 1)],
                         ids=["dense", "grouped", "empty"])
def test_real_and_fake_agree_on_every_output(device, x_format, w_format, dtype, batch, groups):
    ops = fusedconv.load_extension()
    x, weight, bias = _tensors(device, dtype, x_format, w_format, batch, groups)
    geometry = ([1, 1], [1, 1, 1, 1], [1, 1], groups)
    forward_args = (x, weight, bias) + geometry
    y = ops.conv2d_hardswish_relu(*forward_args)
    assert _layouts(_fake_call(ops.conv2d_hardswish_relu.default, forward_args)) == _layouts(y)
    grad_y = torch.randn_like(y)
    grad_args = (grad_y, y)
    assert _layouts(_fake_call(ops.hardswish_relu_grad.default, grad_args)) == \
        _layouts(ops.hardswish_relu_grad(*grad_args))
    for mask in MASKS:
        backward_args = (grad_y, x, weight, y) + geometry + (mask,)
        real = ops.conv2d_hardswish_relu_backward(*backward_args)
        fake = _fake_call(ops.conv2d_hardswish_relu_backward.default, backward_args)
        assert _layouts(fake) == _layouts(real), mask


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_training_step_with_a_plain_nchw_model(device):
    # The reported failure: inductor turns this ordinary NCHW graph channels_last by itself, and
    # the backward's fake strides (grad_weight contiguous) disagreed with the real ones.
    torch.manual_seed(0)
    net = nn.Sequential(fusedconv.Conv2dHardSwishReLU(3, 16, 3, padding=1),
                        nn.Conv2d(16, 4, 1)).to(device)
    x = torch.randn(4, 3, 20, 20, device=device)
    net(x).sum().backward()
    expected = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    torch.compile(net)(x).sum().backward()
    for actual, wanted in zip((p.grad for p in net.parameters()), expected):
        torch.testing.assert_close(actual, wanted, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_training_step_of_a_channels_last_module(device):
    torch.manual_seed(0)
    module = fusedconv.Conv2dHardSwishReLU(3, 8, 3, padding=1).to(device).to(
        memory_format=torch.channels_last)
    x = torch.randn(2, 3, 12, 12, device=device).contiguous(memory_format=torch.channels_last)
    module(x).sum().backward()
    expected = module.weight.grad.clone()
    module.weight.grad = None
    torch.compile(module)(x).sum().backward()
    torch.testing.assert_close(module.weight.grad, expected, rtol=1e-4, atol=1e-5)


# Depthwise: on CUDA the depthwise kernel writes an output it allocates itself (NCHW), or the
# floor's (channels_last); a 1x1 output plane is where channels_last strides are ambiguous.
DEPTHWISE = [(2, 8, 1, 9, 11, 3, 1), (3, 13, 3, 3, 1, 5, 3)]  # N, C, multiplier, H, W, k, stride


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", FORMATS)
@pytest.mark.parametrize("shape", DEPTHWISE, ids=["plane", "one_by_one_output"])
def test_real_and_fake_agree_on_depthwise(device, layout, shape):
    ops = fusedconv.load_extension()
    n, channels, multiplier, h, w, kernel, stride = shape
    x = torch.randn(n, channels, h, w, device=device).contiguous(memory_format=FORMATS[layout])
    weight = torch.randn(channels * multiplier, 1, kernel, kernel, device=device).contiguous(
        memory_format=FORMATS[layout])
    bias = torch.randn(channels * multiplier, device=device)
    pad = kernel // 2
    geometry = ([stride, stride], [pad] * 4, [1, 1], channels)
    forward_args = (x, weight, bias) + geometry
    y = ops.conv2d_hardswish_relu(*forward_args)
    assert _layouts(_fake_call(ops.conv2d_hardswish_relu.default, forward_args)) == _layouts(y)
    backward_args = (torch.randn_like(y), x, weight, y) + geometry + ([True] * 3,)
    real = ops.conv2d_hardswish_relu_backward(*backward_args)
    fake = _fake_call(ops.conv2d_hardswish_relu_backward.default, backward_args)
    assert _layouts(fake) == _layouts(real)


def _random_small_case(rng, device):
    """A convolution with size-1 dimensions drawn often (channels, kernel, plane), where more
    than one set of strides satisfies a memory format."""
    while True:
        groups = rng.choice([1, 1, 2, 3])
        cin, cout = groups * rng.choice([1, 1, 2, 3]), groups * rng.choice([1, 2, 3])
        kernel, pad = rng.choice([1, 1, 2, 3]), rng.choice([0, 1])
        h, w = rng.choice([1, 1, 2, 5]), rng.choice([1, 1, 3, 6])
        if h + 2 * pad >= kernel and w + 2 * pad >= kernel:
            break
    x = torch.randn(rng.choice([1, 2]), cin, h, w, device=device).contiguous(
        memory_format=FORMATS[rng.choice(list(FORMATS))])
    weight = torch.randn(cout, cin // groups, kernel, kernel, device=device).contiguous(
        memory_format=FORMATS[rng.choice(list(FORMATS))])
    return (x, weight, torch.randn(cout, device=device)), ([1, 1], [pad] * 4, [1, 1], groups)


@pytest.mark.parametrize("device", DEVICES)
def test_real_and_fake_agree_on_random_small_shapes(device):
    ops = fusedconv.load_extension()
    rng = random.Random(0)
    for _ in range(40):
        tensors, geometry = _random_small_case(rng, device)
        y = ops.conv2d_hardswish_relu(*tensors, *geometry)
        fake = _fake_call(ops.conv2d_hardswish_relu.default, tensors + geometry)
        assert _layouts(fake) == _layouts(y), (tensors[0].stride(), tensors[1].stride())
        for mask in MASKS:
            args = (torch.randn_like(y), tensors[0], tensors[1], y) + geometry + (mask,)
            real = ops.conv2d_hardswish_relu_backward(*args)
            fake = _fake_call(ops.conv2d_hardswish_relu_backward.default, args)
            assert _layouts(fake) == _layouts(real), (mask, tensors[0].shape, tensors[1].shape)


def _permuted_views(device):
    """4-D views of one buffer in every dimension order, sizes with 1s: the layouts whose memory
    format depends on how size-1 dimensions are read (a conv1d run as conv2d, (N, L, C) data
    transposed)."""
    for order in itertools.permutations(range(4)):
        for shape in ((2, 4, 5, 1), (1, 4, 1, 3), (2, 1, 3, 3)):
            base = torch.randn([shape[i] for i in order], device=device)
            yield base.permute([order.index(i) for i in range(4)])


@pytest.mark.parametrize("device", DEVICES)
def test_real_and_fake_agree_on_permuted_views(device):
    ops = fusedconv.load_extension()
    for x in _permuted_views(device):
        weight = torch.randn(6, x.shape[1], 1, 1, device=device)
        args = (x, weight, torch.randn(6, device=device), [1, 1], [0] * 4, [1, 1], 1)
        y = ops.conv2d_hardswish_relu(*args)
        fake = _fake_call(ops.conv2d_hardswish_relu.default, args)
        assert _layouts(fake) == _layouts(y), (x.shape, x.stride())
        backward_args = (torch.randn_like(y), x, weight, y) + args[3:] + ([True] * 3,)
        real = ops.conv2d_hardswish_relu_backward(*backward_args)
        fake = _fake_call(ops.conv2d_hardswish_relu_backward.default, backward_args)
        assert _layouts(fake) == _layouts(real), (x.shape, x.stride())
    for output in _permuted_views(device):
        grad_args = (torch.randn(output.shape, device=device), output.relu())
        assert _layouts(_fake_call(ops.hardswish_relu_grad.default, grad_args)) == \
            _layouts(ops.hardswish_relu_grad(*grad_args)), (output.shape, output.stride())


def test_compiled_call_on_a_transposed_sequence():
    # (N, L, C) data run as a (N, C, L, 1) convolution: its strides suggest a different memory
    # format to PyTorch's Python helper than to c10, which the real kernels follow.
    x = torch.randn(2, 5, 4).transpose(1, 2).unsqueeze(-1)
    weight, bias = torch.randn(6, 4, 3, 1), torch.randn(6)

    def step(x, weight, bias):
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, padding=(1, 0)) * 2 + 1

    expected = step(x, weight, bias)
    actual = torch.compile(step, fullgraph=True)(x, weight, bias)
    torch.testing.assert_close(actual, expected)


# The depthwise backward kernels (fused policy until measured) allocate their own gradients:
# shapes they take in both layouts (multiplier 1, whole channel vectors), a 1x1 output plane
# among them (stride 3 over a 3x3 input), where channels_last strides are ambiguous.
DEPTHWISE_BACKWARD = [(2, 8, 9, 11, 3, 1), (1, 16, 3, 3, 3, 3), (2, 8, 5, 4, 5, 2)]


@pytest.mark.cuda
@pytest.mark.parametrize("layout", FORMATS)
@pytest.mark.parametrize("shape", DEPTHWISE_BACKWARD, ids=str)
def test_real_and_fake_agree_on_the_depthwise_backward_kernels(layout, shape):
    ops = fusedconv.load_extension()
    n, channels, h, w, kernel, stride = shape
    x = torch.randn(n, channels, h, w, device="cuda").contiguous(memory_format=FORMATS[layout])
    weight = torch.randn(channels, 1, kernel, kernel, device="cuda").contiguous(
        memory_format=FORMATS[layout])
    bias = torch.randn(channels, device="cuda")
    geometry = ([stride, stride], [kernel // 2] * 4, [1, 1], channels)
    y = ops.conv2d_hardswish_relu(x, weight, bias, *geometry)
    backward_args = (torch.randn_like(y), x, weight, y) + geometry + ([True] * 3,)
    previous = ops._plan_policy("fused")
    try:
        assert ops._plan_backward(*backward_args) == "depthwise"
        real = ops.conv2d_hardswish_relu_backward(*backward_args)
    finally:
        ops._plan_policy(previous)
    fake = _fake_call(ops.conv2d_hardswish_relu_backward.default, backward_args)
    assert _layouts(fake) == _layouts(real)
