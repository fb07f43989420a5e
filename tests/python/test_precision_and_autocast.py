"""Precision and autocast follow PyTorch: allow_tf32=None (the default) does what PyTorch's
convolution does under the current flags, True / False override them, the backward keeps the
forward's precision; inside torch.autocast the op runs in autocast's type, with the output dtype
of relu(hardswish(conv2d(...))) under the same autocast, on CUDA and on the CPU."""

import pytest
import torch
import torch.nn.functional as F

import fusedconv
from fusedconv.reference import reference_float64, reference_forward, relative_l2_error

from conftest import DEVICES, HAS_CUDA

THREE_TF32_TOLERANCE = 1e-5
TF32_TOLERANCE = 5e-4

# (batch, in, out, size, kernel, keyword arguments): the KernelBench v0.1-like shape takes a
# fused kernel on Hopper (wgmma) and the 64-channel one the floor path (cuDNN) under the default
# plan; both precision sources are covered whichever way the plan falls.
SHAPES = [(4, 8, 64, 40, 3, {}), (2, 64, 64, 28, 3, {"padding": 1})]


def _tensors(shape, device, dtype=torch.float32):
    n, cin, cout, size, kernel, kwargs = shape
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(n, cin, size, size, generator=generator, dtype=dtype).to(device)
    weight = (torch.randn(cout, cin, kernel, kernel, generator=generator, dtype=dtype)
              / (cin * kernel * kernel) ** 0.5).to(device)
    bias = torch.randn(cout, generator=generator, dtype=dtype).to(device)
    return x, weight, bias, kwargs


def _set_conv_tf32(allowed):
    torch.backends.cudnn.allow_tf32 = allowed
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        conv.fp32_precision = "tf32" if allowed else "ieee"


@pytest.fixture
def restore_flags():
    conv = getattr(torch.backends.cudnn, "conv", None)
    has_precision = conv is not None and hasattr(conv, "fp32_precision")
    previous = (torch.backends.cudnn.allow_tf32, conv.fp32_precision if has_precision else None)
    yield
    torch.backends.cudnn.allow_tf32 = previous[0]
    if has_precision:
        conv.fp32_precision = previous[1]


@pytest.mark.cuda
@pytest.mark.usefixtures("restore_flags")
@pytest.mark.parametrize("shape", SHAPES, ids=["fused", "floor"])
def test_default_precision_follows_pytorchs_convolution_flag(shape):
    x, weight, bias, kwargs = _tensors(shape, "cuda")
    expected = reference_float64(x, weight, bias, **kwargs)
    explicit = {flag: fusedconv.conv2d_hardswish_relu(x, weight, bias, allow_tf32=flag, **kwargs)
                for flag in (False, True)}
    assert relative_l2_error(explicit[False], expected) < THREE_TF32_TOLERANCE
    assert relative_l2_error(explicit[True], expected) < TF32_TOLERANCE
    for allowed in (False, True):
        _set_conv_tf32(allowed)
        default = fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)
        # Same kernels, same precision: bitwise the explicit call's result, whatever the flags.
        assert torch.equal(default, explicit[allowed]), allowed
        module = fusedconv.Conv2dHardSwishReLU(shape[1], shape[2], shape[4], **kwargs).cuda()
        module.load_state_dict({"weight": weight, "bias": bias})
        assert module.allow_tf32 is None
        with torch.no_grad():
            assert torch.equal(module(x), explicit[allowed]), allowed
    _set_conv_tf32(True)
    assert torch.equal(fusedconv.conv2d_hardswish_relu(x, weight, bias, allow_tf32=False,
                                                       **kwargs), explicit[False])


@pytest.mark.cuda
@pytest.mark.usefixtures("restore_flags")
def test_tf32_flag_changes_the_fused_kernels_result():
    # On the fused kernels one TF32 product and 3xTF32 differ in the last bits: the flag reaches
    # them (off Hopper the shape may take another kernel; the products differ there too).
    x, weight, bias, kwargs = _tensors(SHAPES[0], "cuda")
    _set_conv_tf32(True)
    with_tf32 = fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)
    _set_conv_tf32(False)
    without = fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)
    assert not torch.equal(with_tf32, without)


@pytest.mark.cuda
@pytest.mark.usefixtures("restore_flags")
@pytest.mark.parametrize("shape", SHAPES, ids=["fused", "floor"])
def test_backward_follows_the_flags_when_it_runs(shape):
    # As nn.Conv2d's: with allow_tf32=None the backward reads PyTorch's flags when it runs, not
    # when the forward ran. Autograd's gradients equal the backward op's, called under the
    # backward-time flags with the same saved tensors (cuDNN deterministic, so bitwise).
    x, weight, bias, kwargs = _tensors(shape, "cuda")
    padding = [kwargs.get("padding", 0)] * 4
    previous = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        for backward_flag in (False, True):
            leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
            _set_conv_tf32(not backward_flag)
            y = fusedconv.conv2d_hardswish_relu(*leaves, **kwargs)
            grad_out = torch.randn_like(y)
            _set_conv_tf32(backward_flag)
            autograd = torch.autograd.grad(y, leaves, grad_out)
            direct = torch.ops.fusedconv.conv2d_hardswish_relu_backward(
                grad_out, x, weight, y.detach(), [1, 1], padding, [1, 1], 1, [True] * 3)
            explicit = torch.ops.fusedconv.conv2d_hardswish_relu_backward(
                grad_out, x, weight, y.detach(), [1, 1], padding, [1, 1], 1, [True] * 3,
                backward_flag)
            for a, b, c in zip(autograd, direct, explicit):
                assert torch.equal(a, b) and torch.equal(b, c), backward_flag
    finally:
        torch.backends.cudnn.deterministic = previous


def _autocast_types(device):
    return [torch.bfloat16] + ([torch.float16] if device == "cuda" else [])


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_output_dtype_and_values_match_conv2d(device):
    for dtype in _autocast_types(device):
        x, weight, bias, kwargs = _tensors(SHAPES[1], device)
        with torch.autocast(device_type=device, dtype=dtype):
            actual = fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)
            eager = reference_forward(x, weight, bias, **kwargs)
        assert actual.dtype == eager.dtype == dtype
        assert actual.is_contiguous(memory_format=torch.contiguous_format)
        # autocast feeds the convolution the inputs rounded to `dtype`: so does the reference.
        expected = reference_float64(x.to(dtype), weight.to(dtype), bias.to(dtype), **kwargs)
        assert relative_l2_error(actual, expected) <= 2 * relative_l2_error(eager, expected) + 1e-3


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_module_trains_float32_parameters(device):
    # Gradients flow back through autocast's casts: float32 leaves get float32 gradients, close
    # to eager's under the same autocast.
    module = fusedconv.Conv2dHardSwishReLU(16, 24, 3, padding=1).to(device)
    reference = torch.nn.Conv2d(16, 24, 3, padding=1).to(device)
    reference.load_state_dict(module.state_dict())
    x = torch.randn(2, 16, 12, 12, device=device)
    grads = []
    for net in (module, lambda t: reference_forward(t, reference.weight, reference.bias,
                                                    padding=1)):
        leaf = x.clone().requires_grad_()
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            y = net(leaf)
        assert y.dtype == torch.bfloat16
        y.float().square().sum().backward()
        grads.append(leaf.grad)
    assert module.weight.grad.dtype == torch.float32 and grads[0].dtype == torch.float32
    assert relative_l2_error(grads[0], grads[1]) < 3e-2
    assert relative_l2_error(module.weight.grad, reference.weight.grad) < 3e-2


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_leaves_float64_alone(device):
    x, weight, bias, kwargs = _tensors(SHAPES[1], device, torch.float64)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        actual = fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)
        eager = reference_forward(x, weight, bias, **kwargs)
    assert actual.dtype == eager.dtype == torch.float64
    assert relative_l2_error(actual, reference_float64(x, weight, bias, **kwargs)) < 1e-12


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cpu_autocast_leaves_cuda_tensors_alone():
    x, weight, bias, kwargs = _tensors(SHAPES[1], "cuda")
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        actual = fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)
    assert actual.dtype == torch.float32


def test_cpu_reduced_precision_without_autocast():
    # bfloat16 tensors on the CPU (what CPU autocast feeds the op): the floor path and its
    # activation pass in float32, rounded once, as eager PyTorch; its backward too.
    x, weight, bias, kwargs = _tensors(SHAPES[1], "cpu", torch.bfloat16)
    actual = fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)
    eager = torch.relu(F.hardswish(F.conv2d(x, weight, bias, padding=1)))
    assert actual.dtype == torch.bfloat16
    expected = reference_float64(x, weight, bias, **kwargs)
    assert relative_l2_error(actual, expected) <= 2 * relative_l2_error(eager, expected)
    leaf = x.clone().requires_grad_()
    fusedconv.conv2d_hardswish_relu(leaf, weight, bias, **kwargs).float().sum().backward()
    eager_leaf = x.clone().requires_grad_()
    torch.relu(F.hardswish(F.conv2d(eager_leaf, weight, bias, padding=1))).float().sum().backward()
    assert leaf.grad.dtype == torch.bfloat16
    assert relative_l2_error(leaf.grad, eager_leaf.grad) < 3e-2
