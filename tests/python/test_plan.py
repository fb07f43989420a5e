"""The CUDA planners (csrc/cuda/forward/forward_plan.cu, csrc/cuda/backward/backward_plan.cu):
which kernel a call gets under the default (measured) policy, that the private hook
torch.ops.fusedconv._plan names the kernels the call then launches, that every op call plans
exactly once, and the policy switch the kernel tests and crossover sweeps use."""

import pytest
import torch

import fusedconv

from conftest import channels_last_wgmma, cuda_kernel_names, depthwise_candidates

pytestmark = pytest.mark.cuda

HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)

# Names of the kernels each plan launches (fragments of the CUDA kernels' names); the floor
# launches cuDNN's convolution and our in-place activation pass.
FUSED_KERNEL_NAMES = {"depthwise": ("conv_hardswish_relu_depthwise_", "depthwise_rows_kernel",
                                    "depthwise_planes_kernel"),
                      "grouped": ("conv_hardswish_relu_grouped_kernel",),
                      "channels_last_gemm": ("conv_hardswish_relu_channels_last_gemm_kernel",),
                      "small_problem": ("conv_hardswish_relu_direct_",),
                      "wgmma": ("conv_hardswish_relu_wgmma",),
                      "mma_sync": ("conv_hardswish_relu_mma_sync_kernel",)}


@pytest.fixture(autouse=True)
def _depthwise_candidates_off():
    # Overrides conftest's: this file's subject is the default plan, so the depthwise candidates
    # run under their measured rule, as they do for a user.
    with depthwise_candidates("measured"):
        yield


@pytest.fixture(autouse=True)
def _channels_last_wgmma_off():
    # Overrides conftest's likewise: the channels_last wgmma forward under its measured rule.
    with channels_last_wgmma("measured"):
        yield


def _args(n, cin, cout, size, kernel, stride=1, padding=0, groups=1, dtype=torch.float32,
          channels_last=False, weight_channels_last=False):
    x = torch.randn(n, cin, size, size, device="cuda", dtype=dtype)
    weight = torch.randn(cout, cin // groups, kernel, kernel, device="cuda", dtype=dtype) * 0.2
    bias = torch.randn(cout, device="cuda", dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if weight_channels_last:  # as Module.to(memory_format=torch.channels_last) leaves it
        weight = weight.contiguous(memory_format=torch.channels_last)
    return (x, weight, bias, [stride, stride], [padding] * 4, [1, 1], groups)


def _plan(args, allow_tf32=None):
    return torch.ops.fusedconv._plan(*args, allow_tf32)


@pytest.fixture
def policy():
    """Sets the planners' policy for one test; restores the previous one after."""
    previous = torch.ops.fusedconv._plan_policy()
    yield lambda name: torch.ops.fusedconv._plan_policy(name)
    torch.ops.fusedconv._plan_policy(previous)


# (case, _args' arguments, forward kernel under the default policy on Hopper); tensors are made
# in the tests, so that collection needs no GPU.
CASES = [
    ("kernelbench_v0", dict(n=16, cin=3, cout=16, size=32, kernel=3), "small_problem"),
    ("kernelbench_v0.1_fp32", dict(n=8, cin=8, cout=64, size=64, kernel=3), "wgmma"),
    # channels_last at stride 2 with an NCHW weight: no fused kernel applies (the GEMM reads a
    # channels_last weight, wgmma runs stride 1).
    ("channels_last", dict(n=2, cin=16, cout=32, size=20, kernel=3, stride=2,
                           channels_last=True), "floor"),
    ("depthwise", dict(n=2, cin=32, cout=32, size=20, kernel=3, padding=1, groups=32),
     "depthwise"),
    ("depthwise_bf16_strided", dict(n=2, cin=32, cout=64, size=20, kernel=5, stride=2,
                                    groups=32, dtype=torch.bfloat16), "depthwise"),
    ("depthwise_channels_last", dict(n=2, cin=32, cout=32, size=20, kernel=3, groups=32,
                                     channels_last=True), "depthwise"),
    ("depthwise_fp16", dict(n=2, cin=32, cout=32, size=20, kernel=3, padding=1, groups=32,
                            dtype=torch.float16), "depthwise"),
    # Outside the row kernels' domain (no 'same' padding) cuDNN's float16 kernel wins.
    ("depthwise_fp16_valid", dict(n=2, cin=32, cout=32, size=20, kernel=3, groups=32,
                                  dtype=torch.float16), "floor"),
    ("depthwise_channels_last_5x5", dict(n=2, cin=32, cout=32, size=20, kernel=5, groups=32,
                                         channels_last=True), "depthwise"),
    # 192 channels' 5x5 filters (19.2 KB) are not staged: per-tap loads lose to the floor.
    ("depthwise_channels_last_5x5_wide", dict(n=2, cin=192, cout=192, size=20, kernel=5,
                                              groups=192, channels_last=True), "floor"),
    ("depthwise_channels_last_5x5_strided", dict(n=2, cin=32, cout=32, size=20, kernel=5,
                                                 stride=2, groups=32, channels_last=True),
     "floor"),
    ("depthwise_channels_last_bf16", dict(n=2, cin=32, cout=32, size=20, kernel=3, groups=32,
                                          dtype=torch.bfloat16, channels_last=True), "floor"),
    ("depthwise_channels_last_partial_vector", dict(n=2, cin=6, cout=6, size=20, kernel=3,
                                                    groups=6, channels_last=True), "floor"),
    ("depthwise_float64", dict(n=2, cin=32, cout=32, size=20, kernel=3, groups=32,
                               dtype=torch.float64), "floor"),
    ("pointwise_bf16_channels_last", dict(n=2, cin=16, cout=32, size=20, kernel=1,
                                          dtype=torch.bfloat16, channels_last=True),
     "channels_last_gemm"),
    ("pointwise_fp16_channels_last_equal", dict(n=2, cin=64, cout=64, size=20, kernel=1,
                                                dtype=torch.float16, channels_last=True),
     "channels_last_gemm"),
    ("pointwise_bf16_channels_last_reducing", dict(n=2, cin=240, cout=40, size=20, kernel=1,
                                                   dtype=torch.bfloat16, channels_last=True),
     "floor"),
    ("3x3_fp16_channels_last", dict(n=2, cin=16, cout=32, size=20, kernel=3, padding=1,
                                    dtype=torch.float16, channels_last=True), "floor"),
    # 3-channel stems: runs on the GEMM in bfloat16 (and float32 with TF32, below); cuDNN's
    # float16 stems were faster. The GEMM reads a channels_last weight only.
    ("stem_bf16_channels_last", dict(n=2, cin=3, cout=32, size=40, kernel=3, stride=2,
                                     padding=1, dtype=torch.bfloat16, channels_last=True,
                                     weight_channels_last=True), "channels_last_gemm"),
    ("stem_bf16_channels_last_7x7", dict(n=2, cin=3, cout=64, size=40, kernel=7, stride=2,
                                         padding=3, dtype=torch.bfloat16, channels_last=True,
                                         weight_channels_last=True), "channels_last_gemm"),
    ("stem_fp16_channels_last", dict(n=2, cin=3, cout=32, size=40, kernel=3, stride=2,
                                     padding=1, dtype=torch.float16, channels_last=True,
                                     weight_channels_last=True), "floor"),
    ("stem_bf16_channels_last_nchw_weight", dict(n=2, cin=3, cout=32, size=40, kernel=3,
                                                 stride=2, padding=1, dtype=torch.bfloat16,
                                                 channels_last=True), "floor"),
    ("bf16_channels_last_12ch_3x3", dict(n=2, cin=12, cout=32, size=40, kernel=3, padding=1,
                                         dtype=torch.bfloat16, channels_last=True,
                                         weight_channels_last=True), "floor"),
    # Dense channels_last layers of few whole-vector input channels (16-bit up to 32, at most 64
    # output channels, float16 from 32 outputs on; measured) take the GEMM, but where the wgmma
    # kernel won at stride 1 (either weight layout): up to 8 input channels into 48-128 outputs
    # (bfloat16 from 32; KernelBench v0.1's 8 -> 64), 16 into more than 64. Wider inputs or
    # outputs (lost or not measured) and float16's 16 -> 16 take the floor.
    ("bf16_channels_last_8ch_3x3", dict(n=2, cin=8, cout=64, size=40, kernel=3, padding=1,
                                        dtype=torch.bfloat16, channels_last=True,
                                        weight_channels_last=True), "wgmma"),
    ("bf16_channels_last_8ch_to_32", dict(n=2, cin=8, cout=32, size=40, kernel=3, padding=1,
                                          dtype=torch.bfloat16, channels_last=True), "wgmma"),
    ("fp16_channels_last_8ch_to_32", dict(n=2, cin=8, cout=32, size=40, kernel=3, padding=1,
                                          dtype=torch.float16, channels_last=True,
                                          weight_channels_last=True), "channels_last_gemm"),
    ("bf16_channels_last_8ch_1x1", dict(n=2, cin=8, cout=64, size=40, kernel=1,
                                        dtype=torch.bfloat16, channels_last=True,
                                        weight_channels_last=True), "channels_last_gemm"),
    ("bf16_channels_last_16ch_5x5_strided", dict(n=2, cin=16, cout=32, size=40, kernel=5,
                                                 stride=2, padding=2, dtype=torch.bfloat16,
                                                 channels_last=True, weight_channels_last=True),
     "channels_last_gemm"),
    ("bf16_channels_last_24ch_3x3", dict(n=2, cin=24, cout=24, size=40, kernel=3, padding=1,
                                         dtype=torch.bfloat16, channels_last=True,
                                         weight_channels_last=True), "channels_last_gemm"),
    ("bf16_channels_last_32ch_3x3", dict(n=2, cin=32, cout=64, size=40, kernel=3, padding=1,
                                         dtype=torch.bfloat16, channels_last=True,
                                         weight_channels_last=True), "channels_last_gemm"),
    ("bf16_channels_last_48ch_3x3", dict(n=2, cin=48, cout=64, size=40, kernel=3, padding=1,
                                         dtype=torch.bfloat16, channels_last=True,
                                         weight_channels_last=True), "floor"),
    ("bf16_channels_last_8ch_to_128", dict(n=2, cin=8, cout=128, size=40, kernel=3, padding=1,
                                           dtype=torch.bfloat16, channels_last=True,
                                           weight_channels_last=True), "wgmma"),
    ("bf16_channels_last_16ch_to_128", dict(n=2, cin=16, cout=128, size=40, kernel=3,
                                            padding=1, dtype=torch.bfloat16, channels_last=True,
                                            weight_channels_last=True), "wgmma"),
    ("bf16_channels_last_8ch_to_256", dict(n=2, cin=8, cout=256, size=40, kernel=3, padding=1,
                                           dtype=torch.bfloat16, channels_last=True,
                                           weight_channels_last=True), "floor"),
    ("fp16_channels_last_8ch_3x3", dict(n=2, cin=8, cout=64, size=40, kernel=3, padding=1,
                                        dtype=torch.float16, channels_last=True,
                                        weight_channels_last=True), "wgmma"),
    ("fp16_channels_last_16ch_to_16", dict(n=2, cin=16, cout=16, size=40, kernel=3, padding=1,
                                           dtype=torch.float16, channels_last=True,
                                           weight_channels_last=True), "floor"),
    # Grouped 3x3s: NCHW float32 up to 16 channels per group, 16-bit up to 8 at stride 1
    # (measured: the channels_last ones, 1x1s and other geometries stay with cuDNN).
    ("grouped", dict(n=2, cin=32, cout=64, size=20, kernel=3, padding=1, groups=4), "grouped"),
    ("grouped_strided", dict(n=2, cin=64, cout=64, size=20, kernel=3, stride=2, padding=1,
                             groups=4), "grouped"),
    ("grouped_bf16_4_per_group", dict(n=2, cin=32, cout=32, size=20, kernel=3, padding=1,
                                      groups=8, dtype=torch.bfloat16), "grouped"),
    ("grouped_bf16_8_per_group", dict(n=2, cin=32, cout=32, size=20, kernel=3, padding=1,
                                      groups=4, dtype=torch.bfloat16), "grouped"),
    ("grouped_bf16_16_per_group", dict(n=2, cin=32, cout=32, size=20, kernel=3, padding=1,
                                       groups=2, dtype=torch.bfloat16), "floor"),
    ("grouped_bf16_strided", dict(n=2, cin=32, cout=32, size=20, kernel=3, stride=2,
                                  padding=1, groups=8, dtype=torch.bfloat16), "floor"),
    ("grouped_bf16_channels_last", dict(n=2, cin=32, cout=32, size=20, kernel=3, padding=1,
                                        groups=8, dtype=torch.bfloat16, channels_last=True),
     "floor"),
    ("grouped_1x1", dict(n=2, cin=32, cout=64, size=20, kernel=1, groups=4), "floor"),
    ("grouped_5x5", dict(n=2, cin=32, cout=64, size=20, kernel=5, padding=2, groups=4),
     "floor"),
    ("float64", dict(n=2, cin=8, cout=64, size=20, kernel=3, dtype=torch.float64), "floor"),
    ("bf16_strided", dict(n=2, cin=16, cout=32, size=20, kernel=3, stride=2,
                          dtype=torch.bfloat16), "floor"),
    # 16-bit layers past the resident wgmma kernel's tile (32 k steps, or shared memory): its
    # streamed variant, on small calls only (TF32 products: cuDNN's 16-bit ones run at twice
    # the rate): up to 2^31 multiply-adds with 3x3 kernels, 2^29 for 1x1 (128 channels).
    ("bf16_3x3_64ch", dict(n=2, cin=64, cout=64, size=20, kernel=3, padding=1,
                           dtype=torch.bfloat16), "wgmma"),
    ("bf16_3x3_64ch_large", dict(n=32, cin=64, cout=64, size=56, kernel=3, padding=1,
                                 dtype=torch.bfloat16), "floor"),
    ("fp16_1x1_128ch", dict(n=32, cin=128, cout=128, size=28, kernel=1, dtype=torch.float16),
     "wgmma"),
    ("fp16_1x1_128ch_large", dict(n=32, cin=128, cout=128, size=56, kernel=1,
                                  dtype=torch.float16), "floor"),
    # 16-bit stems in NCHW: mma.sync (one TF32 product, exact for them).
    ("stem_bf16", dict(n=2, cin=3, cout=32, size=40, kernel=3, stride=2, padding=1,
                       dtype=torch.bfloat16), "mma_sync"),
    ("stem_fp16_7x7", dict(n=2, cin=3, cout=64, size=40, kernel=7, stride=2, padding=3,
                           dtype=torch.float16), "mma_sync"),
    ("fp32_1x1_wide", dict(n=4, cin=256, cout=512, size=14, kernel=1, stride=2), "floor"),
]
FUSED_CASE, FLOOR_CASE = CASES[1][1], CASES[2][1]


@pytest.mark.parametrize("case,args,expected", CASES, ids=[c[0] for c in CASES])
def test_default_plan_and_the_kernels_it_launches(case, args, expected):
    args = _args(**args)
    kernel = _plan(args)
    if HOPPER:
        assert kernel == expected, case
    names = cuda_kernel_names(lambda: torch.ops.fusedconv.conv2d_hardswish_relu(*args))
    for plan, fragments in FUSED_KERNEL_NAMES.items():
        launched = any(fragment in name for name in names for fragment in fragments)
        assert launched == (kernel == plan), (case, kernel, names)
    if kernel == "floor":
        assert any("hardswish_relu_inplace" in name for name in names), names


# (case, _args' arguments, forward kernel on Hopper with TF32 allowed, and with it disallowed):
# the crossovers of forward_plan.cu, measured against the floor (benchmarks/NOTES.md).
CROSSOVER_CASES = [
    ("1x1_expanding", dict(n=4, cin=24, cout=144, size=28, kernel=1), "wgmma", "wgmma"),
    ("1x1_equal_channels", dict(n=4, cin=128, cout=128, size=28, kernel=1), "wgmma", "wgmma"),
    ("1x1_non_expanding", dict(n=4, cin=144, cout=40, size=28, kernel=1), "floor", "floor"),
    ("1x1_narrow_reducing", dict(n=4, cin=48, cout=32, size=28, kernel=1), "wgmma", "wgmma"),
    ("3x3_8ch_strided", dict(n=4, cin=8, cout=64, size=28, kernel=3, stride=2),
     "mma_sync", "floor"),
    ("3x3_3ch_strided", dict(n=4, cin=3, cout=32, size=28, kernel=3, stride=2),
     "mma_sync", "mma_sync"),
    ("3x3_16ch_strided", dict(n=4, cin=16, cout=32, size=28, kernel=3, stride=2),
     "floor", "floor"),
    # float32 on the channels_last GEMM: one TF32 product with TF32 allowed, 3xTF32 without.
    ("1x1_channels_last_expanding", dict(n=4, cin=24, cout=144, size=28, kernel=1,
                                         channels_last=True), "channels_last_gemm",
     "channels_last_gemm"),
    ("1x1_channels_last_reducing", dict(n=4, cin=480, cout=112, size=14, kernel=1,
                                        channels_last=True), "floor", "channels_last_gemm"),
    ("stem_channels_last", dict(n=4, cin=3, cout=32, size=56, kernel=3, stride=2, padding=1,
                                channels_last=True, weight_channels_last=True),
     "channels_last_gemm", "channels_last_gemm"),
    # float32 dense channels_last layers: at stride 1 the wgmma kernel up to 16 input channels
    # into 64 outputs with TF32 (KernelBench v0.1's 8 -> 64) and up to 128 channels without
    # (3xTF32); the GEMM up to 32 input channels with TF32 and, without, at stride 2.
    ("kernelbench_v0.1_channels_last", dict(n=4, cin=8, cout=64, size=64, kernel=3,
                                            channels_last=True, weight_channels_last=True),
     "wgmma", "wgmma"),
    ("3x3_channels_last_16ch_to_32", dict(n=4, cin=16, cout=32, size=56, kernel=3, padding=1,
                                          channels_last=True, weight_channels_last=True),
     "channels_last_gemm", "wgmma"),
    ("3x3_channels_last_8ch_to_96", dict(n=4, cin=8, cout=96, size=56, kernel=3, padding=1,
                                         channels_last=True, weight_channels_last=True),
     "wgmma", "wgmma"),
    ("3x3_channels_last_24ch_to_96", dict(n=4, cin=24, cout=96, size=28, kernel=3, padding=1,
                                          channels_last=True, weight_channels_last=True),
     "floor", "wgmma"),
    # Past 3x3 (one 5x5 shape a type measured) the wgmma kernel is not taken: the GEMM's rule.
    ("5x5_channels_last_8ch", dict(n=4, cin=8, cout=64, size=56, kernel=5, padding=2,
                                   channels_last=True, weight_channels_last=True),
     "channels_last_gemm", "channels_last_gemm"),
    ("3x3_channels_last_32ch_strided", dict(n=4, cin=32, cout=64, size=56, kernel=3, stride=2,
                                            padding=1, channels_last=True,
                                            weight_channels_last=True),
     "channels_last_gemm", "channels_last_gemm"),
    ("3x3_channels_last_64ch", dict(n=4, cin=64, cout=64, size=28, kernel=3, padding=1,
                                    channels_last=True, weight_channels_last=True),
     "floor", "wgmma"),
    ("3x3_channels_last_128ch", dict(n=4, cin=128, cout=128, size=28, kernel=3, padding=1,
                                     channels_last=True, weight_channels_last=True),
     "floor", "wgmma"),
    ("3x3_channels_last_256ch", dict(n=4, cin=256, cout=256, size=14, kernel=3, padding=1,
                                     channels_last=True, weight_channels_last=True),
     "floor", "floor"),
    ("3x3_channels_last_128ch_strided", dict(n=4, cin=128, cout=128, size=28, kernel=3,
                                             stride=2, padding=1, channels_last=True,
                                             weight_channels_last=True),
     "floor", "channels_last_gemm"),
    ("5x5_channels_last_128ch_strided", dict(n=4, cin=128, cout=128, size=28, kernel=5,
                                             stride=2, padding=2, channels_last=True,
                                             weight_channels_last=True),
     "floor", "floor"),
    # Without TF32 cuDNN's float32 grouped kernels run on CUDA cores: the grouped kernel in
    # both layouts up to 32 channels per group; with TF32 NCHW up to 16.
    ("grouped_32_per_group", dict(n=4, cin=64, cout=64, size=14, kernel=3, padding=1, groups=2),
     "floor", "grouped"),
    ("grouped_channels_last", dict(n=4, cin=64, cout=64, size=28, kernel=3, padding=1,
                                   groups=8, channels_last=True), "floor", "grouped"),
    ("grouped_64_per_group", dict(n=4, cin=128, cout=128, size=14, kernel=3, padding=1,
                                  groups=2), "floor", "floor"),
]


@pytest.mark.skipif(not HOPPER, reason="the crossovers were measured on Hopper (sm_90)")
@pytest.mark.parametrize("case,args,with_tf32,without_tf32", CROSSOVER_CASES,
                         ids=[c[0] for c in CROSSOVER_CASES])
def test_measured_crossovers(case, args, with_tf32, without_tf32):
    args = _args(**args)
    assert _plan(args, True) == with_tf32, case
    assert _plan(args, False) == without_tf32, case


def test_each_call_plans_once():
    ops = fusedconv.load_extension()
    for args in (_args(**FUSED_CASE), _args(**FLOOR_CASE)):
        before = ops._plan_count()
        ops.conv2d_hardswish_relu(*args)
        assert ops._plan_count() - before == 1
        leaves = [t.clone().requires_grad_() for t in args[:3]]
        before = ops._plan_count()
        y = ops.conv2d_hardswish_relu(*leaves, *args[3:])
        torch.autograd.grad(y.sum(), leaves)
        assert ops._plan_count() - before == 2  # one forward plan, one backward plan


def test_floor_policy_takes_the_floor_everywhere(policy):
    args = _args(**FUSED_CASE)
    x, weight, bias = args[:3]
    y = torch.ops.fusedconv.conv2d_hardswish_relu(*args)
    grad_args = (torch.randn_like(y), x, weight, y) + args[3:] + ([True] * 3,)
    policy("floor")
    assert _plan(args) == "floor"
    assert torch.ops.fusedconv._plan_backward(*grad_args) == "floor"
    names = cuda_kernel_names(lambda: torch.ops.fusedconv.conv2d_hardswish_relu(*args))
    fragments = [f for plan in FUSED_KERNEL_NAMES.values() for f in plan]
    assert not any(f in name for name in names for f in fragments), names


def test_fused_policy_runs_a_fused_kernel_wherever_one_applies(policy):
    policy("fused")
    strided = _args(2, 3, 32, 40, 3, stride=2, padding=1)  # mma.sync's domain, not wgmma's
    assert _plan(strided) == "mma_sync"
    assert _plan(_args(**FLOOR_CASE)) == "floor"  # channels_last: no fused kernel applies
    args = _args(**FUSED_CASE)
    y = torch.ops.fusedconv.conv2d_hardswish_relu(*args)
    grad_args = (torch.randn_like(y),) + args[:2] + (y,) + args[3:] + ([True] * 3,)
    assert torch.ops.fusedconv._plan_backward(*grad_args) == "fused"
    assert torch.ops.fusedconv._plan_backward(*grad_args[:-1], [False] * 3) == "none"


def test_backward_plan_of_layouts_the_fused_kernels_do_not_take():
    args = _args(**FLOOR_CASE)  # channels_last
    y = torch.ops.fusedconv.conv2d_hardswish_relu(*args)
    grad_args = (torch.randn_like(y),) + args[:2] + (y,) + args[3:] + ([True] * 3,)
    assert torch.ops.fusedconv._plan_backward(*grad_args) == "floor_summing_bias"
    assert torch.ops.fusedconv._plan_backward(*grad_args[:-1], [True, True, False]) == "floor"


def test_plan_policy_rejects_unknown_names(policy):
    with pytest.raises(ValueError, match="expected policy to be 'measured', 'fused' or 'floor'"):
        policy("fastest")
    assert torch.ops.fusedconv._plan_policy() in ("measured", "fused", "floor")


# (case, _args' arguments, backward kernel under the default policy on Hopper): the depthwise
# backward's crossover (backward_plan.cu), all three gradients asked for; the floor sums the
# bias in its g pass except for float64.
BACKWARD_CASES = [
    ("depthwise_3x3", dict(n=2, cin=32, cout=32, size=20, kernel=3, padding=1, groups=32),
     "depthwise"),
    ("depthwise_3x3_bf16_strided", dict(n=2, cin=32, cout=32, size=20, kernel=3, stride=2,
                                        groups=32, dtype=torch.bfloat16), "depthwise"),
    # Outside the row kernels' domain ('same' padding) the planes grad_input takes NCHW 5x5,
    # and float16 at stride 2; float16 at stride 1 takes the floor.
    ("depthwise_5x5", dict(n=2, cin=32, cout=32, size=20, kernel=5, groups=32), "depthwise"),
    ("depthwise_5x5_fp16_strided", dict(n=2, cin=32, cout=32, size=20, kernel=5, stride=2,
                                        groups=32, dtype=torch.float16), "depthwise"),
    ("depthwise_5x5_same", dict(n=2, cin=32, cout=32, size=20, kernel=5, padding=2, groups=32),
     "depthwise"),
    ("depthwise_3x3_fp16", dict(n=2, cin=32, cout=32, size=20, kernel=3, groups=32,
                                dtype=torch.float16), "floor_summing_bias"),
    ("depthwise_3x3_fp16_same", dict(n=2, cin=32, cout=32, size=20, kernel=3, padding=1,
                                     groups=32, dtype=torch.float16), "depthwise"),
    # channels_last 3x3 stride 2: depthwise in 16-bit where the sliding weight pass runs
    # (outputs 14 or more wide), in float32 everywhere.
    ("depthwise_3x3_channels_last_strided_bf16", dict(n=2, cin=32, cout=32, size=40, kernel=3,
                                                      stride=2, padding=1, groups=32,
                                                      dtype=torch.bfloat16, channels_last=True),
     "depthwise"),
    ("depthwise_3x3_channels_last_strided_narrow_bf16", dict(
        n=2, cin=32, cout=32, size=20, kernel=3, stride=2, padding=1, groups=32,
        dtype=torch.bfloat16, channels_last=True), "floor_summing_bias"),
    ("depthwise_3x3_channels_last_strided_narrow", dict(
        n=2, cin=32, cout=32, size=20, kernel=3, stride=2, padding=1, groups=32,
        channels_last=True), "depthwise"),
    ("depthwise_3x3_channels_last", dict(n=2, cin=32, cout=32, size=20, kernel=3, groups=32,
                                         dtype=torch.bfloat16, channels_last=True),
     "floor_summing_bias"),
    ("depthwise_5x5_channels_last_strided", dict(n=2, cin=32, cout=32, size=20, kernel=5,
                                                 stride=2, groups=32, channels_last=True),
     "depthwise"),
    ("depthwise_5x5_channels_last", dict(n=2, cin=32, cout=32, size=20, kernel=5, groups=32,
                                         channels_last=True), "floor_summing_bias"),
    ("dense_float64", dict(n=2, cin=8, cout=16, size=12, kernel=3, dtype=torch.float64),
     "floor"),
]


@pytest.mark.parametrize("case,args,expected", BACKWARD_CASES, ids=[c[0] for c in BACKWARD_CASES])
def test_default_backward_plan(case, args, expected):
    args = _args(**args)
    y = torch.ops.fusedconv.conv2d_hardswish_relu(*args)
    grad_args = (torch.randn_like(y),) + args[:2] + (y,) + args[3:] + ([True] * 3,)
    kernel = torch.ops.fusedconv._plan_backward(*grad_args)
    if HOPPER:
        assert kernel == expected, case
    assert kernel in ("depthwise", "floor", "floor_summing_bias"), case


@pytest.mark.skipif(not HOPPER, reason="the crossovers were measured on Hopper (sm_90)")
def test_planes_backward_is_planned_only_with_grad_input():
    # The planes kernel is grad_input's; without it the older weight pass would run alone, which
    # the planes' measurements did not cover: the floor.
    args = _args(n=2, cin=32, cout=32, size=20, kernel=5, groups=32)  # 16 x 16 out: no rows
    y = torch.ops.fusedconv.conv2d_hardswish_relu(*args)
    grad_args = (torch.randn_like(y),) + args[:2] + (y,) + args[3:]
    assert torch.ops.fusedconv._plan_backward(*grad_args, [True, True, True]) == "depthwise"
    assert torch.ops.fusedconv._plan_backward(*grad_args, [False, True, True]) == \
        "floor_summing_bias"
    assert torch.ops.fusedconv._plan_backward(*grad_args, [False, True, False]) == "floor"
