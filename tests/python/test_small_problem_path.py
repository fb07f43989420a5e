"""The small-problem forward (csrc/cuda/forward/small_problem.cu: up to 16 output channels and
at most 32 inputs per position, KernelBench's v0): that v0 takes it in one launch, and that both
of its kernels (FP64 tensor-core DMMA on compute capability 8.0 / 9.0, float32 FFMA elsewhere or
with FUSEDCONV_DISABLE_DMMA=1, run in a subprocess: the switch is read once per process) agree with
float64 and the floor path on random strided, dilated and padded shapes, on planes of odd
size, and across the persistent grid's passes."""

import os
import random
import subprocess
import sys

import pytest
import torch

import fusedconv
from fusedconv.reference import reference_float64, relative_l2_error

from conftest import assert_close_with_nonfinite, cuda_kernel_names, poisoned_call

# The kernels themselves, wherever they apply (conftest.fused_kernels).
pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("fused_kernels")]

# Exact float32 accumulation (FFMA) or exact products and a float64 sum (DMMA): far below the
# 3xTF32 bound of 1e-5.
FFMA_TOLERANCE = 1e-6


def _expected_kernel():
    """The direct kernel this device runs (small_problem.cu)."""
    full_rate_float64 = torch.cuda.get_device_capability() in ((8, 0), (9, 0))
    switch = os.environ.get("FUSEDCONV_DISABLE_DMMA", "")  # read as common/plan_memo.h does
    disabled = switch != "" and not switch.startswith("0")
    return "direct_dmma_kernel" if full_rate_float64 and not disabled else "direct_ffma_kernel"


def _random_case(rng):
    kernel_h, kernel_w = rng.randint(1, 3), rng.randint(1, 3)
    in_channels = rng.randint(1, 32 // (kernel_h * kernel_w))
    stride = (rng.randint(1, 3), rng.randint(1, 3))
    dilation = (rng.randint(1, 2), rng.randint(1, 2))
    padding = (rng.randint(0, 2), rng.randint(0, 2))
    span_h = dilation[0] * (kernel_h - 1) + 1
    span_w = dilation[1] * (kernel_w - 1) + 1
    return dict(batch=rng.randint(1, 4), in_channels=in_channels,
                out_channels=rng.randint(1, 16),
                height=rng.randint(max(1, span_h - 2 * padding[0]), 40),
                width=rng.randint(max(1, span_w - 2 * padding[1]), 70),
                kernel=(kernel_h, kernel_w), stride=stride, dilation=dilation, padding=padding,
                bias=rng.random() < 0.8)


def _tensors(case):
    x = torch.randn(case["batch"], case["in_channels"], case["height"], case["width"],
                    device="cuda")
    weight = torch.randn(case["out_channels"], case["in_channels"], *case["kernel"],
                         device="cuda")
    bias = torch.randn(case["out_channels"], device="cuda") if case["bias"] else None
    return x, weight, bias


@pytest.mark.parametrize("seed", range(30))
def test_direct_kernel_matches_float64_and_floor(seed):
    case = _random_case(random.Random(seed))
    x, weight, bias = _tensors(case)
    geometry = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"])

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, **geometry)

    names = cuda_kernel_names(call)
    assert any(_expected_kernel() in name for name in names), (case, names)
    actual = poisoned_call(call, torch.float32, "cuda")
    expected = reference_float64(x, weight, bias, **geometry)
    assert actual.shape == expected.shape
    assert relative_l2_error(actual, expected) < FFMA_TOLERANCE, case
    # channels_last input is not dense NCHW: another path (cuDNN without TF32, or the
    # channels_last GEMM in 3xTF32), float32-accurate either way.
    floor = fusedconv.conv2d_hardswish_relu(x.contiguous(memory_format=torch.channels_last),
                                            weight, bias, **geometry)
    torch.testing.assert_close(actual, floor.contiguous(), rtol=1e-4, atol=1e-5)


def test_kernelbench_v0_is_one_direct_launch_in_both_modes():
    torch.manual_seed(0)
    model = fusedconv.ModelNew(3, 16, 3).cuda()
    x = torch.randn(128, 3, 32, 32, device="cuda")
    with torch.no_grad():
        default = model(x)
        names = cuda_kernel_names(lambda: model(x))
        model.allow_tf32 = True
        fast = model(x)
    kernels = [name for name in names if "fusedconv" in name and "kernel" in name]
    assert len(kernels) == 1 and _expected_kernel() in kernels[0], names
    assert torch.equal(default, fast)  # exact float32 whatever the mode
    expected = reference_float64(x, model.conv.weight, model.conv.bias)
    assert relative_l2_error(default, expected) < FFMA_TOLERANCE


def test_direct_kernel_reads_the_weights_on_every_call():
    x = torch.randn(2, 3, 16, 16, device="cuda")
    weight = torch.randn(8, 3, 3, 3, device="cuda")
    bias = torch.randn(8, device="cuda")
    first = fusedconv.conv2d_hardswish_relu(x, weight, bias)
    with torch.no_grad():
        weight.mul_(-0.5)  # in place, as an optimizer step
        bias.add_(1.0)
    second = fusedconv.conv2d_hardswish_relu(x, weight, bias)
    assert not torch.equal(first, second)
    assert relative_l2_error(second, reference_float64(x, weight, bias)) < FFMA_TOLERANCE


@pytest.mark.parametrize("padding", [0, 1])
def test_inf_and_nan_on_the_direct_kernel(padding):
    # 27 inputs per position: the last k4 step of the DMMA kernel is partial, and its masked k
    # must not turn an infinity into NaN (0 * inf). padding=1 takes the bounds-checked variant.
    x = torch.randn(2, 3, 20, 20, device="cuda")
    weight = torch.randn(16, 3, 3, 3, device="cuda")
    x[0, 1, 5, 5] = float("inf")
    x[1, 2, 12, 7] = float("nan")
    x[1, 0, 0, 0] = float("-inf")
    actual = fusedconv.conv2d_hardswish_relu(x, weight, padding=padding)
    expected = reference_float64(x, weight, padding=padding)
    assert_close_with_nonfinite(actual, expected, rtol=1e-5, atol=1e-6)


# (batch, in, out, height, width, kernel, padding): more positions than one pass of the DMMA
# kernel's persistent grid covers on an H100 (2 CTAs x 132 SMs x 8 warps x 4 groups x 8 = 67,584),
# with an even plane (paired stores), an odd plane (a pair may straddle two images), padding
# (bounds checks), 1 and 8 output channels (a partial and an unused m8 tile), and 32 inputs per
# position (every k4 step full).
PASS_SHAPES = [
    (128, 3, 16, 32, 32, 3, 0),   # 115,200 positions
    (101, 3, 13, 31, 31, 3, 0),   # 84,941
    (90, 3, 9, 29, 33, 3, 1),     # 86,130
    (600, 2, 1, 17, 15, 2, 0),    # 134,400
    (160, 8, 8, 24, 24, 2, 0),    # 84,640
]


@pytest.mark.parametrize("shape", PASS_SHAPES, ids=str)
def test_direct_kernel_across_passes_and_odd_planes(shape):
    batch, in_channels, out_channels, height, width, kernel, padding = shape
    x = torch.randn(batch, in_channels, height, width, device="cuda")
    weight = torch.randn(out_channels, in_channels, kernel, kernel, device="cuda")
    bias = torch.randn(out_channels, device="cuda")

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, padding=padding)

    assert any(_expected_kernel() in name for name in cuda_kernel_names(call))
    actual = poisoned_call(call, torch.float32, "cuda")
    expected = reference_float64(x, weight, bias, padding=padding)
    assert relative_l2_error(actual, expected) < FFMA_TOLERANCE


FFMA_SCRIPT = """
import sys
import torch
import fusedconv
torch.backends.cudnn.allow_tf32 = False  # float32 accuracy, as the parent test's
from conftest import cuda_kernel_names, poisoned_call
cases = torch.load(sys.argv[1])
outputs, names = [], []
for x, weight, bias, geometry in cases:
    x, weight = x.cuda(), weight.cuda()
    bias = None if bias is None else bias.cuda()
    call = lambda: fusedconv.conv2d_hardswish_relu(x, weight, bias, **geometry)
    names.append(cuda_kernel_names(call))
    outputs.append(poisoned_call(call, torch.float32, "cuda").cpu())
torch.save((outputs, names), sys.argv[2])
"""


def test_ffma_kernel_when_dmma_is_disabled(tmp_path):
    # The FFMA kernel is what devices without full-rate float64 run; here it is forced, so both
    # kernels are checked on whatever GPU runs the suite. The random cases above, KernelBench's
    # v0 at a small batch, and the pass shapes, against float64.
    rng = random.Random(2024)
    cases = []
    for _ in range(12):
        case = _random_case(rng)
        x, weight, bias = (t.cpu() if t is not None else None for t in _tensors(case))
        geometry = dict(stride=case["stride"], padding=case["padding"],
                        dilation=case["dilation"])
        cases.append((x, weight, bias, geometry))
    for batch, in_channels, out_channels, height, width, kernel, padding in PASS_SHAPES[:3]:
        cases.append((torch.randn(batch // 8, in_channels, height, width),
                      torch.randn(out_channels, in_channels, kernel, kernel),
                      torch.randn(out_channels), dict(padding=padding)))
    torch.save(cases, tmp_path / "cases.pt")
    environment = dict(os.environ, FUSEDCONV_DISABLE_DMMA="1", FUSEDCONV_PLAN="fused")
    environment["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(__file__), environment.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, "-c", FFMA_SCRIPT, str(tmp_path / "cases.pt"),
                    str(tmp_path / "out.pt")], check=True, env=environment, timeout=600)
    outputs, names = torch.load(tmp_path / "out.pt")
    for (x, weight, bias, geometry), actual, launched in zip(cases, outputs, names):
        assert any("direct_ffma_kernel" in name for name in launched), launched
        expected = reference_float64(x.cuda(), weight.cuda(),
                                     None if bias is None else bias.cuda(), **geometry)
        assert relative_l2_error(actual.cuda(), expected) < FFMA_TOLERANCE, (x.shape, geometry)
