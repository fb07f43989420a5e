"""fusedconv: ``relu(hardswish(conv2d(x, W, b)))`` as one fused operator, forward and backward.

Public API:
    conv2d_hardswish_relu(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1)
    Conv2dHardSwishReLU(...)   every nn.Conv2d argument; a subclass of nn.Conv2d
    ModelNew(in_channels, out_channels, kernel_size)   the KernelBench level-2 #69 drop-in
    load_extension()   build/load the compiled library now (otherwise the first call does it)
"""

from fusedconv.modules import Conv2dHardSwishReLU, ModelNew
from fusedconv.ops import conv2d_hardswish_relu, load_extension

__all__ = ["conv2d_hardswish_relu", "Conv2dHardSwishReLU", "ModelNew", "load_extension"]
__version__ = "0.1.0"
