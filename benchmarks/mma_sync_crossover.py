"""Forward Python-call medians (CUDA events, 30 calls) of shapes the mma.sync kernel takes, beside
eager. Run twice for the crossover against the floor path:
    python benchmarks/mma_sync_crossover.py
    FUSEDCONV_DISABLE_MMA_SYNC=1 python benchmarks/mma_sync_crossover.py
"""

import os

import torch
import torch.nn.functional as F
from floor_layers import median_ms  # same folder: run as a script

import fusedconv

torch.backends.cudnn.allow_tf32 = False
CASES = [  # N, Cin, Cout, H, k, stride, pad
    (64, 112, 672, 14, 1, 1, 0), (64, 160, 960, 7, 1, 1, 0), (64, 256, 256, 14, 3, 1, 1),
    (64, 64, 256, 56, 1, 1, 0), (64, 16, 16, 112, 3, 1, 1), (64, 3, 16, 224, 3, 2, 1),
    (64, 64, 128, 56, 3, 2, 1), (64, 128, 256, 28, 3, 2, 1), (64, 256, 512, 14, 1, 2, 0),
    (64, 24, 72, 56, 1, 1, 0),
]

label = "floor" if os.environ.get("FUSEDCONV_DISABLE_MMA_SYNC") else "default"
for n, cin, cout, h, k, s, p in CASES:
    x = torch.randn(n, cin, h, h, device="cuda")
    w = torch.randn(cout, cin, k, k, device="cuda") * 0.1
    b = torch.randn(cout, device="cuda")
    ours = median_ms(lambda: fusedconv.conv2d_hardswish_relu(x, w, b, s, p))
    eager = median_ms(lambda: torch.relu(F.hardswish(F.conv2d(x, w, b, s, p))))
    print("%s %dx%dx%dx%dk%ds%d  ours %.4f  eager %.4f  %.2fx"
          % (label, n, cin, cout, h, k, s, ours, eager, eager / ours))
