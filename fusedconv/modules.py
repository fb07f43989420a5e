"""nn.Module front ends of the fused operator."""

import copy
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from fusedconv.ops import _int_pair, _module_forward, load_extension, same_padding

__all__ = ["Conv2dHardSwishReLU", "ModelNew"]


def _weight_and_bias(conv):
    """``conv.weight, conv.bias``, from ``conv._parameters`` where they are registered there
    (weight_norm, spectral_norm and parametrizations move them elsewhere: the attributes then).
    nn.Module's ``__getattr__`` fallback, which a plain attribute read takes, made the module
    call ~15 us slower than the operator call on the 2-core CI machine."""
    parameters = conv._parameters
    if "weight" in parameters and "bias" in parameters:
        return parameters["weight"], parameters["bias"]
    return conv.weight, conv.bias


def _conv_forward(conv, input, allow_tf32):
    """``relu(hardswish(conv(input)))`` for an ``nn.Conv2d`` ``conv`` with whatever attributes it
    holds now: padding modes other than 'zeros' pad the input first, as ``nn.Conv2d`` does, and
    the fused convolution then runs unpadded."""
    padding = conv.padding
    if conv.padding_mode != "zeros":
        input = F.pad(input, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = 0
    weight, bias = _weight_and_bias(conv)
    return _module_forward(input, weight, bias, conv.stride, padding, conv.dilation, conv.groups,
                           allow_tf32)


def _scripted_forward(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                      stride: Tuple[int, int], padding: Union[str, Tuple[int, int]],
                      dilation: Tuple[int, int], groups: int, padding_mode: str,
                      reversed_padding: List[int], allow_tf32: Optional[bool]) -> torch.Tensor:
    """_conv_forward in TorchScript, from an nn.Conv2d's attributes as its constructor leaves
    them (scripting a module compiles this; Python calls never run it)."""
    if padding_mode != "zeros":
        input = F.pad(input, reversed_padding, mode=padding_mode)
        pads = [0, 0, 0, 0]
    elif isinstance(padding, str):
        pads = [0, 0, 0, 0]
        if padding == "same":
            pads = same_padding(weight.shape[2], weight.shape[3], dilation[0], dilation[1])
    else:
        pads = [padding[0], padding[0], padding[1], padding[1]]
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    output = torch.ops.fusedconv.conv2d_hardswish_relu(
        input, weight, bias, [stride[0], stride[1]], pads, [dilation[0], dilation[1]], groups,
        allow_tf32)
    return output.squeeze(0) if unbatched else output


def _canonical_conv(conv):
    """`conv`, or a shallow copy of it (parameters shared) whose stride, padding and dilation are
    the pairs nn.Conv2d's constructor leaves, for _scripted_forward's types: the module accepts
    ints and one-element sequences too (set later, or as given to the constructor)."""
    stride = _int_pair(conv.stride, "stride")
    dilation = _int_pair(conv.dilation, "dilation")
    padding = conv.padding if isinstance(conv.padding, str) else _int_pair(conv.padding,
                                                                           "padding")
    if (stride, padding, dilation) == (conv.stride, conv.padding, conv.dilation):
        return conv
    canonical = copy.copy(conv)
    canonical.stride, canonical.padding, canonical.dilation = stride, padding, dilation
    return canonical


class _Scriptable:
    """torch.jit.script support: the operator must exist when TorchScript resolves it, and the
    convolution's attributes must have _scripted_forward's types."""

    def __prepare_scriptable__(self):
        load_extension()
        return self._scriptable()


class Conv2dHardSwishReLU(_Scriptable, nn.Conv2d):
    """``relu(hardswish(conv(x)))`` as one operator.

    A subclass of ``nn.Conv2d``: the same constructor arguments, parameters (``weight``,
    ``bias``), initialisation and state_dict, so it replaces ``nn.Conv2d`` followed by
    ``F.hardswish`` and ``torch.relu`` without any conversion. Padding modes other than 'zeros'
    pad the input first (as ``nn.Conv2d`` does), then run the fused convolution unpadded.

    ``module.allow_tf32``: ``None`` (the default) follows PyTorch's convolution precision flags
    as ``nn.Conv2d`` does; ``True`` / ``False`` override them (see ``conv2d_hardswish_relu``).
    """

    allow_tf32: Optional[bool] = None
    # TorchScript reads allow_tf32 once, when the module is scripted.
    __constants__ = nn.Conv2d.__constants__ + ["allow_tf32"]

    def _scriptable(self):
        return _canonical_conv(self)

    def forward(self, input):
        if torch.jit.is_scripting():
            return _scripted_forward(input, self.weight, self.bias, self.stride, self.padding,
                                     self.dilation, self.groups, self.padding_mode,
                                     self._reversed_padding_repeated_twice, self.allow_tf32)
        return _conv_forward(self, input, self.allow_tf32)


class ModelNew(_Scriptable, nn.Module):
    """Drop-in for KernelBench level 2, problem 69 (``Conv2d -> hardswish -> relu``).

    Keeps ``self.conv = nn.Conv2d(...)`` exactly as the reference ``Model`` does, so the
    state_dict keys (``conv.weight``, ``conv.bias``) and the weights drawn under a given
    ``torch.manual_seed`` are the same. ``allow_tf32`` as for ``Conv2dHardSwishReLU``: by default
    as precise as the reference ``Model`` under the same flags.
    """

    allow_tf32: Optional[bool] = None
    __constants__ = ["allow_tf32"]  # as for Conv2dHardSwishReLU

    def __init__(self, in_channels, out_channels, kernel_size):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)

    def _scriptable(self):
        conv = self._modules["conv"]
        canonical = _canonical_conv(conv)
        if canonical is conv:
            return self
        model = copy.copy(self)
        model._modules = dict(self._modules, conv=canonical)
        return model

    def forward(self, x):
        if torch.jit.is_scripting():
            conv = self.conv
            return _scripted_forward(x, conv.weight, conv.bias, conv.stride, conv.padding,
                                     conv.dilation, conv.groups, conv.padding_mode,
                                     conv._reversed_padding_repeated_twice, self.allow_tf32)
        conv = self._modules["conv"] if "conv" in self._modules else self.conv
        return _conv_forward(conv, x, self.allow_tf32)
