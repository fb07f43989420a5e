"""Calls of the NCHW depthwise blocks-of-planes kernels for ncu (the planes forward and the
one-pass backward, `FUSEDCONV_DEPTHWISE_CANDIDATES=all`): c672 14x14 k5 s2 and c960 7x7 k5 s1,
float32, batch 64, each op twice. Why: the one pass ran at 4.7-5.7x its memory time on an H100
(twenty-third session) where an instruction count put it near issue-bound; ncu's instructions
executed and stall reasons tell which. Usage (GPU):
FUSEDCONV_DEPTHWISE_CANDIDATES=all ncu --kernel-name regex:depthwise_.*planes_kernel
--launch-count 8 --section SpeedOfLight --section WarpStateStats --section InstructionStats
--section Occupancy python benchmarks/profile_depthwise_planes.py"""

import torch

import fusedconv

ops = fusedconv.load_extension()
ops._depthwise_candidates("all")
for channels, size, kernel, stride in ((672, 14, 5, 2), (960, 7, 5, 1)):
    x = torch.randn(64, channels, size, size, device="cuda")
    w = torch.randn(channels, 1, kernel, kernel, device="cuda") * 0.2
    b = torch.randn(channels, device="cuda")
    geometry = ([stride, stride], [kernel // 2] * 4, [1, 1], channels)
    for _ in range(2):
        y = ops.conv2d_hardswish_relu(x, w, b, *geometry)
        grads = ops.conv2d_hardswish_relu_backward(torch.randn_like(y), x, w, y, *geometry,
                                                   [True] * 3)
    torch.cuda.synchronize()
    print(channels, size, kernel, stride, tuple(y.shape), [tuple(g.shape) for g in grads])
