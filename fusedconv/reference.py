"""The PyTorch reference, shared by the tests, the main job and the benchmarks. KernelBench's
problem shapes are defined in ``fusedconv.kernelbench.problems``."""

import torch
import torch.nn.functional as F
from torch import nn

from fusedconv.kernelbench.problems import Problem

__all__ = ["Model", "reference_forward", "reference_float64", "reference_gradients_float64",
           "relative_l2_error", "CPU_DEFAULT"]


class Model(nn.Module):
    """KernelBench level 2, problem 69, verbatim: conv, then hardswish, then relu."""

    def __init__(self, in_channels, out_channels, kernel_size):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)

    def forward(self, x):
        x = self.conv(x)
        x = F.hardswish(x)
        x = torch.relu(x)
        return x


def reference_forward(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """relu(hardswish(conv2d(...))) through PyTorch's own operators, in the inputs' dtype."""
    return torch.relu(F.hardswish(F.conv2d(input, weight, bias, stride, padding, dilation, groups)))


def reference_float64(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """The reference computed in float64 on the inputs' device (TF32 cannot apply to float64).

    hardswish is written out here: PyTorch's CUDA kernel multiplies by a float32 1/6 even for
    float64 tensors, which puts a 3e-8 relative error into a "float64" F.hardswish.
    """
    z = F.conv2d(input.double(), weight.double(), None if bias is None else bias.double(), stride,
                 padding, dilation, groups)
    return torch.relu(z * torch.clamp(z + 3, 0, 6) / 6)


def reference_gradients_float64(input, weight, bias, grad_output, output, stride=1, padding=0,
                                dilation=1, groups=1):
    """Float64 gradients (input, weight, bias) of relu(hardswish(conv2d)), on `output`'s branches.

    f = relu o hardswish has jumps in its derivative: 0 -> 0.5 at z = 0 and 1.5 -> 1 at z = 3.
    Where a float32 pre-activation lies within rounding of a jump, float32 and float64 take
    different sides, and on KernelBench-sized tensors one such element moves the relative L2
    error of every gradient by ~1e-4, for eager PyTorch as for us. So this reference computes the
    convolution and its backward in float64 but takes the branch from the float32 `output` being
    checked (y == 0: slope 0; y > 3: slope 1; otherwise (2z + 3) / 6 with z in float64).
    """
    leaves = [t.detach().double().requires_grad_() for t in (input, weight)]
    if bias is not None:
        leaves.append(bias.detach().double().requires_grad_())
    z = F.conv2d(leaves[0], leaves[1], leaves[2] if bias is not None else None, stride, padding,
                 dilation, groups)
    y = output.detach().double()
    slope = torch.where(y <= 0, torch.zeros_like(z),
                        torch.where(y > 3, torch.ones_like(z), (2 * z.detach() + 3) / 6))
    grads = torch.autograd.grad(z, leaves, grad_output.double() * slope)
    return list(grads) + ([None] if bias is None else [])


def relative_l2_error(actual, expected):
    """||actual - expected|| / ||expected||, in float64; NaN anywhere gives NaN."""
    actual = actual.detach().double()
    expected = expected.detach().double()
    denominator = expected.norm()
    if denominator == 0:
        return (actual - expected).norm().item()
    return ((actual - expected).norm() / denominator).item()


# The main job's problem without a GPU: KernelBench v0.1's channels on smaller images.
CPU_DEFAULT = Problem("cpu-small", 8, 8, 64, 64, 64, 3, "rand")
