"""One v0.1 forward call after a warm-up, for ncu (tools/gpu_round.sh --profile)."""
import torch

import fusedconv
from fusedconv.reference import KERNELBENCH_V0_1 as P

fusedconv.load_extension()
torch.manual_seed(0)
conv = torch.nn.Conv2d(P.in_channels, P.out_channels, P.kernel_size).cuda()
x = P.make_input("cuda")
for _ in range(2):
    fusedconv.conv2d_hardswish_relu(x, conv.weight.detach(), conv.bias.detach())
torch.cuda.synchronize()
