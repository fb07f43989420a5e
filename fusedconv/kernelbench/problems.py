"""KernelBench level 2, problem 69 (Conv2d -> HardSwish -> ReLU): the one definition of its
problem files and shapes, as KernelBench v0.1 and v0 state them. The evaluator, the
benchmarks, the main job and the tests import them from here; benchmarks/kernelbench/ holds the
files that ``write_problem_files`` generates (a test keeps them equal).
"""

from pathlib import Path

import torch

__all__ = ["Problem", "KERNELBENCH_V0_1", "KERNELBENCH_V0", "KERNELBENCH_PROBLEMS",
           "PROBLEM_NAME", "problem_file_name", "problem_source", "write_problem_files",
           "REFERENCE_V0_1_SOURCE"]

PROBLEM_NAME = "69_Conv2d_HardSwish_ReLU"


class Problem:
    """One problem size as KernelBench states it: x of (batch, in, height, width), kernel k."""

    def __init__(self, name, batch, in_channels, out_channels, height, width, kernel_size,
                 distribution):
        self.name = name
        self.batch = batch
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.height = height
        self.width = width
        self.kernel_size = kernel_size
        self.distribution = distribution  # 'rand' (uniform [0, 1)) or 'randn', as KernelBench

    def make_input(self, device, dtype=torch.float32, generator=None):
        draw = torch.rand if self.distribution == "rand" else torch.randn
        return draw(self.batch, self.in_channels, self.height, self.width, device=device,
                    dtype=dtype, generator=generator)

    def describe(self):
        return "x %dx%dx%dx%d, W %dx%dx%dx%d" % (
            self.batch, self.in_channels, self.height, self.width, self.out_channels,
            self.in_channels, self.kernel_size, self.kernel_size)


KERNELBENCH_V0_1 = Problem("v0.1", 128, 8, 64, 128, 128, 3, "rand")
KERNELBENCH_V0 = Problem("v0", 128, 3, 16, 32, 32, 3, "randn")
KERNELBENCH_PROBLEMS = (KERNELBENCH_V0_1, KERNELBENCH_V0)

# KernelBench's problem file, verbatim but for the shapes and the input distribution.
_SOURCE_TEMPLATE = '''\
import torch
import torch.nn as nn


class Model(nn.Module):
    """
    Model that performs a convolution, applies HardSwish, and then ReLU.
    """

    def __init__(self, in_channels, out_channels, kernel_size):
        super(Model, self).__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)

    def forward(self, x):
        """
        Args:
            x (torch.Tensor): Input tensor of shape (batch_size, in_channels, height, width).

        Returns:
            torch.Tensor: Output tensor of shape (batch_size, out_channels, height, width).
        """
        x = self.conv(x)
        x = torch.nn.functional.hardswish(x)
        x = torch.relu(x)
        return x


batch_size = {batch}
in_channels = {in_channels}
out_channels = {out_channels}
height, width = {height}, {width}
kernel_size = {kernel_size}


def get_inputs():
    return [torch.{distribution}(batch_size, in_channels, height, width)]


def get_init_inputs():
    return [in_channels, out_channels, kernel_size]
'''


def problem_file_name(problem):
    """KernelBench's file name for `problem`, with its version: 69_..._v0_1.py."""
    return "%s_%s.py" % (PROBLEM_NAME, problem.name.replace(".", "_"))


def problem_source(problem):
    """The KernelBench problem file (Model, get_inputs, get_init_inputs) for `problem`."""
    return _SOURCE_TEMPLATE.format(**vars(problem))


def write_problem_files(directory):
    """Write every KernelBench problem's file into `directory`; returns their paths."""
    paths = []
    for problem in KERNELBENCH_PROBLEMS:
        path = Path(directory) / problem_file_name(problem)
        path.write_text(problem_source(problem))
        paths.append(path)
    return paths


# The evaluator's default reference: the problem at KernelBench v0.1's shapes.
REFERENCE_V0_1_SOURCE = problem_source(KERNELBENCH_V0_1)
