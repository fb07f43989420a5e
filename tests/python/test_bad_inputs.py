"""Bad arguments raise a clear Python exception that names the argument and says what was
expected; nothing crashes, hangs or answers silently wrong."""

import pytest
import torch

import fusedconv

from conftest import DEVICES


def _valid(device="cpu", dtype=torch.float32):
    return (torch.randn(2, 4, 8, 8, device=device, dtype=dtype),
            torch.randn(6, 4, 3, 3, device=device, dtype=dtype),
            torch.randn(6, device=device, dtype=dtype))


def _raises(exception, pattern, **overrides):
    x, weight, b = _valid(overrides.pop("device", "cpu"))
    args = {"input": x, "weight": weight, "bias": b}
    args.update(overrides)
    with pytest.raises(exception, match=pattern):
        fusedconv.conv2d_hardswish_relu(**args)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case,exception,pattern", [
    ({"input": torch.randn(4, 8)}, ValueError, r"expected input to be a 4-D tensor"),
    ({"input": torch.randn(1, 2, 4, 8, 8)}, ValueError, r"expected input to be a 4-D tensor"),
    ({"weight": torch.randn(6, 4, 3)}, ValueError, r"expected weight to be a 4-D tensor"),
    ({"input": torch.randn(2, 5, 8, 8)}, ValueError,
     r"expected input to have 4 channels \(weight.size\(1\) = 4 x groups = 1\)"),
    ({"weight": torch.randn(6, 2, 3, 3), "groups": 3}, ValueError,
     r"expected input to have 6 channels"),
    ({"weight": torch.randn(6, 1, 3, 3), "groups": 4}, ValueError,
     r"out_channels \(weight.size\(0\) = 6\) to be divisible by groups = 4"),
    ({"bias": torch.randn(5)}, ValueError, r"expected bias of shape \[6\]"),
    ({"bias": torch.randn(6, 1)}, ValueError, r"expected bias of shape \[6\]"),
    ({"weight": torch.randn(6, 4, 9, 3)}, ValueError, r"smaller than the dilated kernel 9x3"),
    ({"dilation": 4}, ValueError, r"smaller than the dilated kernel 9x9"),
    ({"stride": 0}, ValueError, r"expected every stride value to be >= 1"),
    ({"stride": (1, -2)}, ValueError, r"expected every stride value to be >= 1"),
    ({"dilation": 0}, ValueError, r"expected every dilation value to be >= 1"),
    ({"padding": -1}, ValueError, r"expected every padding value to be >= 0"),
    ({"padding": "full"}, ValueError, r"expected padding to be an int, a pair of ints, 'same'"),
    ({"padding": "same", "stride": 2}, ValueError, r"padding='same' is not supported for strided"),
    ({"stride": (1, 2, 3)}, TypeError, r"expected stride to be an int or a pair of ints"),
    ({"stride": 1.5}, TypeError, r"expected stride to be an int or a pair of ints"),
    ({"stride": []}, TypeError, r"expected stride to be an int or a pair of ints"),
    ({"dilation": [-1]}, ValueError, r"expected every dilation value to be >= 1"),
    ({"groups": 0}, ValueError, r"expected groups >= 1, got 0"),
    ({"groups": 2.0}, TypeError, r"expected groups to be an int"),
    ({"allow_tf32": 1}, TypeError, r"expected allow_tf32 to be None or a bool, got 1"),
    ({"input": torch.randint(0, 5, (2, 4, 8, 8))}, TypeError, r"expected input to be float32"),
    ({"weight": torch.randn(6, 4, 3, 3, dtype=torch.float64)}, TypeError,
     r"expected weight to have the input's dtype"),
    ({"bias": torch.randn(6, dtype=torch.float64)}, TypeError,
     r"expected bias to have the input's dtype"),
    ({"input": [[1.0]]}, TypeError, r"expected input to be a torch.Tensor"),
    ({"weight": None}, TypeError, r"expected weight to be a torch.Tensor"),
    ({"bias": 3.0}, TypeError, r"expected bias to be a torch.Tensor or None"),
    ({"weight": torch.randn(6, 0, 3, 3)}, ValueError,
     r"expected weight's in_channels / groups, kernel_h and kernel_w to be >= 1"),
    ({"weight": torch.randn(6, 4, 0, 3)}, ValueError,
     r"expected weight's in_channels / groups, kernel_h and kernel_w to be >= 1"),
    ({"weight": torch.randn(0, 4, 3, 3), "bias": None}, ValueError,
     r"expected weight to have at least one output channel"),
], ids=lambda v: str(v)[:40] if isinstance(v, str) else None)
def test_bad_argument_raises(device, case, exception, pattern):
    overrides = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
    _raises(exception, pattern, device=device, **overrides)


def test_half_precision_on_cpu_behaves_like_conv2d():
    # float16 on the CPU runs PyTorch's own convolution (the floor path): it works exactly where
    # F.conv2d does on this torch, and raises PyTorch's error where it does not.
    x, weight, b = (t.half() for t in _valid())
    try:
        expected = torch.relu(torch.nn.functional.hardswish(
            torch.nn.functional.conv2d(x, weight, b)))
    except RuntimeError:
        with pytest.raises(RuntimeError):
            fusedconv.conv2d_hardswish_relu(x, weight, b)
        return
    actual = fusedconv.conv2d_hardswish_relu(x, weight, b)
    assert actual.dtype == torch.float16
    torch.testing.assert_close(actual, expected, rtol=2e-3, atol=2e-3)


def test_integer_input_on_cpu_is_rejected_clearly():
    x, weight, b = _valid(dtype=torch.float32)
    with pytest.raises(TypeError, match=r"expected input to be float32, float64, bfloat16 or "
                                        r"float16 on the CPU, got Int"):
        fusedconv.conv2d_hardswish_relu(x.int(), weight, b)


@pytest.mark.cuda
@pytest.mark.parametrize("moved", ["weight", "bias"])
def test_mixed_devices_raise(moved):
    x, weight, b = _valid("cuda")
    args = {"input": x, "weight": weight, "bias": b}
    args[moved] = args[moved].cpu()
    with pytest.raises(ValueError, match=r"expected %s on the input's device cuda:0, got cpu"
                       % moved):
        fusedconv.conv2d_hardswish_relu(**args)


def test_module_rejects_bad_configuration():
    # nn.Conv2d's own constructor checks apply to the fused module too.
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        fusedconv.Conv2dHardSwishReLU(5, 6, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode"):
        fusedconv.Conv2dHardSwishReLU(4, 6, 3, padding_mode="mirror")
    module = fusedconv.Conv2dHardSwishReLU(4, 6, 3)
    with pytest.raises(ValueError, match=r"expected input to have 4 channels"):
        module(torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("moved", ["input", "weight", "bias"])
def test_meta_operand_beside_a_cpu_one_raises_the_device_error(moved):
    # Meta outranks CPU in dispatch, so the shape-only kernel runs: it must not hand back an
    # uninitialised CPU tensor.
    x, weight, b = _valid()
    args = {"input": x, "weight": weight, "bias": b}
    args[moved] = args[moved].to("meta")
    with pytest.raises(ValueError, match=r"on the input's device"):
        fusedconv.conv2d_hardswish_relu(**args)


@pytest.mark.parametrize("case,pattern", [
    ({"input": torch.randn(2, 5, 8, 8)}, r"expected input to have 4 channels"),
    ({"input": torch.randn(1, 2, 4, 8, 8)}, r"expected input to be a 4-D tensor"),
    ({"input": torch.randn(2, 4, 2, 2)}, r"smaller than the dilated kernel"),
    ({"weight": torch.randn(0, 4, 3, 3), "bias": None}, r"at least one output channel"),
    ({"weight": torch.randn(6, 1, 3, 3), "groups": 4}, r"to be divisible by groups = 4"),
    ({"bias": torch.randn(5)}, r"expected bias of shape \[6\]"),
], ids=str)
def test_meta_tensors_fail_where_the_real_kernels_fail(case, pattern):
    # The shape-only kernel also shapes torch.compile's fake tensors: bad shapes must fail there
    # with the real kernel's error, not hand back a tensor.
    for device in ("meta", "cpu"):
        x, weight, b = _valid()
        args = {"input": x, "weight": weight, "bias": b}
        args.update(case)
        args = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
        with pytest.raises(ValueError, match=pattern):
            fusedconv.conv2d_hardswish_relu(**args)


@pytest.mark.parametrize("moved", ["grad_output", "output"])
def test_activation_gradient_with_a_meta_operand_raises(moved):
    output, grad_output = torch.rand(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    fusedconv.load_extension()
    operands = {"grad_output": grad_output, "output": output}
    operands[moved] = operands[moved].to("meta")
    with pytest.raises(ValueError, match=r"hardswish_relu_grad: expected grad_output"):
        torch.ops.fusedconv.hardswish_relu_grad(operands["grad_output"], operands["output"])


@pytest.mark.parametrize("device", DEVICES)
def test_integer_tensor_arguments_as_conv2d_takes_them(device):
    # F.conv2d takes 0-d integer tensors for its int arguments.
    x = torch.randn(2, 4, 9, 9, device=device)
    weight = torch.randn(8, 2, 3, 3, device=device)
    expected = fusedconv.conv2d_hardswish_relu(x, weight, None, 2, (1, 0), 1, 2)
    actual = fusedconv.conv2d_hardswish_relu(x, weight, None, torch.tensor(2),
                                             (torch.tensor(1), 0), 1, torch.tensor(2))
    assert torch.equal(actual, expected)
    with pytest.raises(TypeError, match="expected stride to be an int or a pair of ints"):
        fusedconv.conv2d_hardswish_relu(x, weight, None, torch.tensor(2.0), groups=2)
