"""Two forward calls of one benchmark case for ncu (scripts/profile_round.sh profiles the second):
v0.1 by default, or the case FUSEDCONV_PROFILE_PROBLEM names (v0, 64x64x56k3p1n128, ... as in
python -m fusedconv bench --cases)."""
import os

import torch

import fusedconv
from fusedconv.bench import sweep_cases

wanted = os.environ.get("FUSEDCONV_PROFILE_PROBLEM", "v0.1")
case = next(c for c in sweep_cases() if c.name == wanted)
P = case.problem

fusedconv.load_extension()
torch.manual_seed(0)
conv = torch.nn.Conv2d(P.in_channels, P.out_channels, P.kernel_size).cuda()
x = P.make_input("cuda")
for _ in range(2):
    fusedconv.conv2d_hardswish_relu(x, conv.weight.detach(), conv.bias.detach(),
                                    stride=case.stride, padding=case.padding)
torch.cuda.synchronize()
