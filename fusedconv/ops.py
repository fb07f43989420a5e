"""``torch.ops.fusedconv`` wrappers: argument normalisation and the fake (meta) kernels.

The C++ library (csrc/torch/ops.cpp) defines the schema, validates tensors and carries the
autograd kernel; this module turns ``torch.nn.functional.conv2d``-style arguments (ints, pairs,
'same' / 'valid') into the schema's explicit lists and registers the shape-only Meta kernels that
let ``torch.compile`` trace the operators with symbolic shapes.
"""

import numbers
from typing import List

import torch
from torch.overrides import handle_torch_function, has_torch_function

from fusedconv import _build

__all__ = ["conv2d_hardswish_relu", "load_extension", "output_size"]


def _suggest_memory_format(tensor):
    """c10's ``TensorBase::suggest_memory_format()``, which the C++ kernels call, for 4-D strided
    tensors: channels_last when the strides order the dimensions C, W, H, N
    (``is_channels_last_strides_2d``). ``torch._prims_common.suggest_memory_format`` differs on
    size-1 dimensions (it grows its bound by the size only where the stride exceeds 1), and a
    meta kernel that disagreed with the real one broke torch.compile on such views."""
    if tensor.layout != torch.strided or tensor.dim() != 4:
        return torch.contiguous_format
    sizes, strides = tensor.shape, tensor.stride()
    if strides[1] == 0:
        return torch.contiguous_format
    bound = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0 or strides[d] < bound or (d == 0 and bound == strides[1]):
            return torch.contiguous_format
        bound = strides[d] * sizes[d] if sizes[d] > 1 else strides[d]
    return torch.channels_last


# The Python-side registrations; None until the compiled library is loaded. A plain global
# (not a cached function) so torch.compile reads it as a constant instead of breaking the graph.
_META_LIBRARY = None
# torch.ops.fusedconv.conv2d_hardswish_relu.default once loaded: calling the overload directly
# skips the packet's overload resolution, a few microseconds of every call.
_FORWARD_OP = None


def load_extension():
    """Build or load the compiled library; afterwards ``torch.ops.fusedconv.*`` exist."""
    global _META_LIBRARY, _FORWARD_OP
    if _META_LIBRARY is None:
        _build.load_extension()
        library = torch.library.Library("fusedconv", "IMPL")
        library.impl("conv2d_hardswish_relu", _conv2d_hardswish_relu_meta, "Meta")
        library.impl("hardswish_relu_grad", _hardswish_relu_grad_meta, "Meta")
        library.impl("conv2d_hardswish_relu_backward", _conv2d_hardswish_relu_backward_meta,
                     "Meta")
        _FORWARD_OP = torch.ops.fusedconv.conv2d_hardswish_relu.default
        _META_LIBRARY = library
    return torch.ops.fusedconv


def _extension_loaded():
    """Loads the library on the first call; True.

    The first call of a program may be inside torch.compile, fullgraph included. Marked as
    torch._dynamo.assume_constant_result marks (without importing dynamo, a second of import
    time): dynamo runs it at trace time and treats the result as a constant instead of tracing
    into the loader (lru_cache, file system, compiler), and the op global read after it already
    holds the loaded operator.
    """
    if _FORWARD_OP is None:
        load_extension()
    return True


_extension_loaded._dynamo_marked_constant = True


def output_size(size, pad_begin, pad_end, kernel, stride, dilation):
    """Output length of a convolution along one axis (csrc/include/fusedconv/shape.h's rule)."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def _output_memory_format(input, weight):
    # The C++ side's rule (ops.cpp, output_memory_format), as torch.nn.functional.conv2d does:
    # contiguous for an empty batch or channel dimension and for float64 on CUDA, else
    # channels_last when either operand suggests it.
    # Under FakeTensorMode a meta kernel sees device "meta"; the fake tensor keeps the real one.
    device = getattr(input, "fake_device", input.device)
    empty = input.shape[0] == 0 or input.shape[1] == 0
    if empty or (device.type == "cuda" and input.dtype == torch.float64):
        return torch.contiguous_format
    if torch.channels_last in (_suggest_memory_format(input), _suggest_memory_format(weight)):
        return torch.channels_last
    return torch.contiguous_format


def _check_same_device(input, **tensors):
    # The meta kernel also runs when one operand is on the meta device and the input is not
    # (meta outranks CPU and CUDA in dispatch): raise the device error the real kernels raise
    # instead of returning an uninitialised tensor on the input's device.
    for name, tensor in tensors.items():
        if tensor is not None and tensor.device != input.device:
            raise ValueError("conv2d_hardswish_relu: expected %s on the input's device %s, got %s"
                             % (name, input.device, tensor.device))


def _check_shapes(input, weight, bias, padding, groups, out_height, out_width):
    # ops.cpp's validate_conv for the shape-only kernel (same messages): the meta kernel also
    # shapes torch.compile's fake tensors, which must fail where the real kernel fails.
    def fail(message):
        raise ValueError("conv2d_hardswish_relu: " + message)
    if input.dim() != 4:
        fail("expected input to be a 4-D tensor (N, C, H, W), got a %d-D tensor of shape %s"
             % (input.dim(), list(input.shape)))
    if weight.dim() != 4:
        fail("expected weight to be a 4-D tensor (out_channels, in_channels / groups, kernel_h, "
             "kernel_w), got a %d-D tensor of shape %s" % (weight.dim(), list(weight.shape)))
    if groups < 1:
        fail("expected groups >= 1, got %d" % groups)
    if weight.shape[0] < 1:
        fail("expected weight to have at least one output channel, got weight of shape %s"
             % list(weight.shape))
    if weight.shape[1] < 1 or weight.shape[2] < 1 or weight.shape[3] < 1:
        fail("expected weight's in_channels / groups, kernel_h and kernel_w to be >= 1, got "
             "weight of shape %s" % list(weight.shape))
    if weight.shape[0] % groups != 0:
        fail("expected out_channels (weight.size(0) = %d) to be divisible by groups = %d"
             % (weight.shape[0], groups))
    if input.shape[1] != weight.shape[1] * groups:
        fail("expected input to have %d channels (weight.size(1) = %d x groups = %d), got input "
             "of shape %s" % (weight.shape[1] * groups, weight.shape[1], groups,
                              list(input.shape)))
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        fail("expected bias of shape [%d] (one value per output channel), got %s"
             % (weight.shape[0], list(bias.shape)))
    if out_height < 1 or out_width < 1:
        fail("input of spatial size %dx%d (padded: %dx%d) is smaller than the dilated kernel"
             % (input.shape[2], input.shape[3], input.shape[2] + padding[0] + padding[1],
                input.shape[3] + padding[2] + padding[3]))


def _conv2d_hardswish_relu_meta(input, weight, bias, stride, padding, dilation, groups,
                                allow_tf32=None):
    _check_same_device(input, weight=weight, bias=bias)
    if input.dim() == 4 and weight.dim() == 4:
        out_height = output_size(input.shape[2], padding[0], padding[1], weight.shape[2],
                                 stride[0], dilation[0])
        out_width = output_size(input.shape[3], padding[2], padding[3], weight.shape[3],
                                stride[1], dilation[1])
    else:
        out_height = out_width = 0
    _check_shapes(input, weight, bias, padding, groups, out_height, out_width)
    return torch.empty((input.shape[0], weight.shape[0], out_height, out_width),
                       dtype=input.dtype, device=input.device,
                       memory_format=_output_memory_format(input, weight))


def _hardswish_relu_grad_meta(grad_output, output):
    if grad_output.device != output.device or grad_output.shape != output.shape:
        raise ValueError("hardswish_relu_grad: expected grad_output of the output's shape %s on "
                         "its device %s, got %s on %s" % (list(output.shape), output.device,
                                                          list(grad_output.shape),
                                                          grad_output.device))
    return torch.empty_like(output, memory_format=_suggest_memory_format(output))


def _conv2d_hardswish_relu_backward_meta(grad_output, input, weight, output, stride, padding,
                                         dilation, groups, output_mask, allow_tf32=None):
    _check_same_device(input, grad_output=grad_output, weight=weight, output=output)

    # Gradients not asked for come back empty (the schema has no optional outputs).
    def grad_like(wanted, shape, memory_format=torch.contiguous_format):
        if not wanted:
            return torch.empty((0,), dtype=input.dtype, device=input.device)
        return torch.empty(shape, dtype=input.dtype, device=input.device,
                           memory_format=memory_format)
    # The real kernels' rule (ops.cpp, backward_outputs): the forward output's memory format.
    memory_format = _output_memory_format(input, weight)
    return (grad_like(output_mask[0], input.shape, memory_format),
            grad_like(output_mask[1], weight.shape, memory_format),
            grad_like(output_mask[2], (weight.shape[0],)))


def _index(value):
    """A 0-d integer tensor as a Python int (F.conv2d takes them for its int arguments)."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point() \
            and not value.is_complex() and value.dtype != torch.bool:
        return int(value)
    return value


def _int_pair(value, name):
    """An int or a sequence of one or two ints -> a tuple of two Python ints."""
    # Exact-type checks first: the common case (nn.Conv2d's tuples of ints) then costs no
    # abstract-base-class isinstance, which shows on small problems' per-call host time.
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int \
            and type(value[1]) is int:
        return value
    if type(value) is int:
        return (value, value)
    given, value = value, _index(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return (int(value), int(value))
    if isinstance(value, (tuple, list, torch.Size)):
        value = [_index(v) for v in value]
    if isinstance(value, list) and len(value) in (1, 2) and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        return (int(value[0]), int(value[-1]))  # one element stands for both, as in F.conv2d
    raise TypeError("conv2d_hardswish_relu: expected %s to be an int or a pair of ints, got %r"
                    % (name, given))


def same_padding(kernel_h: int, kernel_w: int, dilation_h: int, dilation_w: int) -> List[int]:
    """padding='same' as (top, bottom, left, right): dilation * (kernel - 1) in total per axis,
    the odd element at the end (bottom, right), exactly as torch.nn.functional.conv2d pads.
    TorchScript-compatible (the scripted modules use it too)."""
    total_h = dilation_h * (kernel_h - 1)
    total_w = dilation_w * (kernel_w - 1)
    return [total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2]


def resolve_padding(padding, weight_shape, stride, dilation):
    """F.conv2d's padding argument -> (top, bottom, left, right) ('same': same_padding)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError("conv2d_hardswish_relu: padding='same' is not supported for "
                                 "strided convolutions, got stride=%r" % (stride,))
            return tuple(same_padding(weight_shape[2], weight_shape[3], dilation[0], dilation[1]))
        raise ValueError("conv2d_hardswish_relu: expected padding to be an int, a pair of ints, "
                         "'same' or 'valid', got %r" % (padding,))
    pad_h, pad_w = _int_pair(padding, "padding")
    return (pad_h, pad_h, pad_w, pad_w)


def _module_forward(input, weight, bias, stride, padding, dilation, groups, allow_tf32):
    """conv2d_hardswish_relu for an ``nn.Conv2d``'s own attributes (stride and dilation tuples of
    ints, padding a tuple or a string, groups an int, as its constructor leaves them; anything
    else, such as a tuple of one element, which nn.Conv2d keeps as given, or an int set on the
    module after construction, which nn.Conv2d accepts too, takes the general path).

    A 4-D tensor input with pair padding goes to the operator directly: the arguments need no
    normalisation and the checks below cost a few microseconds of every call, which is what a
    host-bound layer's call costs beyond its launches. Anything else takes the general path.
    """
    if type(input) is torch.Tensor and type(padding) is tuple and len(padding) == 2 \
            and type(stride) is tuple and len(stride) == 2 \
            and type(dilation) is tuple and len(dilation) == 2 \
            and (allow_tf32 is None or type(allow_tf32) is bool) and input.dim() == 4:
        _extension_loaded()
        pad_h, pad_w = padding
        return _FORWARD_OP(input, weight, bias, stride, (pad_h, pad_h, pad_w, pad_w), dilation,
                           groups, allow_tf32)
    return conv2d_hardswish_relu(input, weight, bias, stride, padding, dilation, groups,
                                 allow_tf32)


def _plain_tensor(value):
    """A torch.Tensor or nn.Parameter itself: no __torch_function__ of its own."""
    return type(value) is torch.Tensor or type(value) is torch.nn.Parameter


def conv2d_hardswish_relu(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                          allow_tf32=None):
    """``relu(hardswish(conv2d(input, weight, bias, stride, padding, dilation, groups)))``.

    Arguments mean what they mean for ``torch.nn.functional.conv2d``; ``input`` may be batched
    (N, C, H, W) or unbatched (C, H, W). Differentiable with respect to input, weight and bias.
    Inside ``torch.autocast`` it runs in autocast's lower-precision type, as ``conv2d`` does.

    ``allow_tf32`` (float32 on CUDA): ``None`` (the default) follows PyTorch's own convolution
    precision flag (``torch.backends.cudnn.allow_tf32``, or ``torch.backends.cudnn.conv.
    fp32_precision`` on torch >= 2.9), so the result is as precise as ``nn.Conv2d``'s; ``True``
    allows TF32 (one TF32 product on the fused tensor-core kernels, cuDNN's TF32 elsewhere; ~3e-4
    relative error); ``False`` keeps float32 accuracy (3xTF32 on the fused kernels).

    Arguments with ``__torch_function__`` (torch.fx proxies, tensor subclasses) are handed to
    it, as ``F.conv2d`` does: ``torch.fx.symbolic_trace`` records one call. (With plain tensors
    a ``TorchFunctionMode`` sees the ``torch.ops`` call instead.)
    """
    # Exact types first: torch.compile (2.1) cannot trace has_torch_function, and decides
    # these type checks at trace time instead.
    if not (_plain_tensor(input) and _plain_tensor(weight)
            and (bias is None or _plain_tensor(bias))):
        operands = (input, weight) if bias is None else (input, weight, bias)
        if has_torch_function(operands):
            return handle_torch_function(conv2d_hardswish_relu, operands, input, weight, bias,
                                         stride=stride, padding=padding, dilation=dilation,
                                         groups=groups, allow_tf32=allow_tf32)
    if not isinstance(input, torch.Tensor):
        raise TypeError("conv2d_hardswish_relu: expected input to be a torch.Tensor, got %s"
                        % type(input).__name__)
    if not isinstance(weight, torch.Tensor):
        raise TypeError("conv2d_hardswish_relu: expected weight to be a torch.Tensor, got %s"
                        % type(weight).__name__)
    if bias is not None and not isinstance(bias, torch.Tensor):
        raise TypeError("conv2d_hardswish_relu: expected bias to be a torch.Tensor or None, got %s"
                        % type(bias).__name__)
    if type(groups) is not int:
        groups = _index(groups)
    if type(groups) is not int and (
            isinstance(groups, bool) or not isinstance(groups, numbers.Integral)):
        raise TypeError("conv2d_hardswish_relu: expected groups to be an int, got %r" % (groups,))
    if allow_tf32 is not None and type(allow_tf32) is not bool:
        raise TypeError("conv2d_hardswish_relu: expected allow_tf32 to be None or a bool, got %r"
                        % (allow_tf32,))
    if weight.dim() != 4:
        raise ValueError("conv2d_hardswish_relu: expected weight to be a 4-D tensor "
                         "(out_channels, in_channels / groups, kernel_h, kernel_w), got a %d-D "
                         "tensor of shape %s" % (weight.dim(), list(weight.shape)))
    stride = _int_pair(stride, "stride")
    dilation = _int_pair(dilation, "dilation")
    padding = resolve_padding(padding, weight.shape, stride, dilation)
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    _extension_loaded()
    output = _FORWARD_OP(input, weight, bias, stride, padding, dilation, int(groups), allow_tf32)
    return output.squeeze(0) if unbatched else output
