"""Calls of the channels_last depthwise forward (the vector kernel) for ncu: effb0 dw3x3 32
bfloat16, effb0 dw3x3 s2 96 float32 and mnv3 dw5x5 120 bfloat16 (batch 64), each twice. Usage
(GPU): FUSEDCONV_PLAN=fused ncu --kernel-name regex:depthwise_vector --launch-count 6
--section SpeedOfLight --section Occupancy --section WarpStateStats
python benchmarks/profile_depthwise_channels_last.py"""

import torch

import fusedconv

fusedconv.load_extension()
op = torch.ops.fusedconv.conv2d_hardswish_relu
for channels, size, kernel, stride, dtype in ((32, 112, 3, 1, torch.bfloat16),
                                              (96, 112, 3, 2, torch.float32),
                                              (120, 28, 5, 1, torch.bfloat16)):
    x = torch.randn(64, channels, size, size, device="cuda", dtype=dtype).contiguous(
        memory_format=torch.channels_last)
    w = torch.randn(channels, 1, kernel, kernel, device="cuda", dtype=dtype)
    b = torch.randn(channels, device="cuda", dtype=dtype)
    pad = kernel // 2
    for _ in range(2):
        y = op(x, w, b, [stride, stride], [pad, pad, pad, pad], [1, 1], channels, None)
    torch.cuda.synchronize()
    print(channels, size, kernel, stride, dtype, tuple(y.shape), y.stride())
