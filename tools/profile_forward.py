"""Two forward calls of one KernelBench problem (v0.1, or v0 with FUSEDCONV_PROFILE_PROBLEM=v0)
for ncu (tools/profile_round.sh profiles the second)."""
import os

import torch

import fusedconv
from fusedconv.reference import KERNELBENCH_V0, KERNELBENCH_V0_1

P = KERNELBENCH_V0 if os.environ.get("FUSEDCONV_PROFILE_PROBLEM") == "v0" else KERNELBENCH_V0_1

fusedconv.load_extension()
torch.manual_seed(0)
conv = torch.nn.Conv2d(P.in_channels, P.out_channels, P.kernel_size).cuda()
x = P.make_input("cuda")
for _ in range(2):
    fusedconv.conv2d_hardswish_relu(x, conv.weight.detach(), conv.bias.detach())
torch.cuda.synchronize()
