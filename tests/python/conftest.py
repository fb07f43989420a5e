"""Shared fixtures: devices (GPU cases are marked `cuda` and skipped without a GPU), the poisoned
call helper and the float64 reference."""

import contextlib

import pytest
import torch

import fusedconv
from fusedconv.reference import relative_l2_error

HAS_CUDA = torch.cuda.is_available()

# CPU always; CUDA as a marked parameter so that a machine without a GPU reports it as skipped.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)


@pytest.fixture(scope="session", autouse=True)
def _extension():
    # Build once per session, before any timing-sensitive or compile test runs.
    fusedconv.load_extension()


@pytest.fixture(autouse=True)
def _exact_fp32_references():
    # cuDNN may use TF32 for float32 convolutions (and so for the reference and for ATen's
    # convolution backward, which our autograd hands the activation gradient to); tests compare
    # float32 results with tight tolerances, so they run with TF32 off.
    previous = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


@contextlib.contextmanager
def _switched(op_name, choice):
    # One of launch.h's three-way switches (torch.ops.fusedconv.<op_name>) set to `choice` for
    # the block, restored after; nothing without a GPU (the ops are CUDA-only).
    if not HAS_CUDA:
        yield
        return
    op = getattr(torch.ops.fusedconv, op_name)
    previous = op(choice)
    try:
        yield
    finally:
        op(previous)


def depthwise_candidates(choice):
    """Where the depthwise candidate kernels run (csrc/include/fusedconv/launch.h: "measured",
    "all" or "none") set to `choice` for the block, restored after; nothing without a GPU."""
    return _switched("_depthwise_candidates", choice)


@pytest.fixture(autouse=True)
def _depthwise_candidates_off():
    # The candidates run only in the tests that ask for them, whatever the measured rule or
    # FUSEDCONV_DEPTHWISE_CANDIDATES says: the other depthwise tests name the kernels they expect.
    with depthwise_candidates("none"):
        yield


def channels_last_wgmma(choice):
    """Where the channels_last wgmma forward runs (csrc/include/fusedconv/launch.h: "measured",
    "all" or "none") set to `choice` for the block, restored after; nothing without a GPU."""
    return _switched("_channels_last_wgmma", choice)


@pytest.fixture(autouse=True)
def _channels_last_wgmma_off():
    # Like the depthwise candidates: the channels_last wgmma forward runs only in the tests that
    # ask for it (the channels_last GEMM's tests name that kernel under the fused policy).
    with channels_last_wgmma("none"):
        yield


@pytest.fixture
def fused_kernels():
    """Plans a fused kernel wherever one applies, not only inside its measured crossover (the
    planners' "fused" policy, csrc/include/fusedconv/launch.h): the kernel tests' subject is the
    kernel, whichever way the dispatch rule's crossovers fall. Restores the policy after."""
    if not HAS_CUDA:
        yield
        return
    previous = torch.ops.fusedconv._plan_policy("fused")
    yield
    torch.ops.fusedconv._plan_policy(previous)


def with_floor_policy(fn):
    """fn() with the planners' policy set to "floor" (PyTorch's convolution and our passes, no
    fused kernel): the path a kernel's result is compared with. Restores the policy after."""
    previous = torch.ops.fusedconv._plan_policy("floor")
    try:
        return fn()
    finally:
        torch.ops.fusedconv._plan_policy(previous)


def poisoned_call(fn, dtype, device):
    """Run `fn()` with every fresh allocation NaN-filled, so unwritten output elements show.

    torch's deterministic mode fills memory from `empty` (the operator's own output allocation
    included) with NaN. A probe checks that this torch does so before the call counts.
    """
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        probe = torch.empty(64, dtype=dtype, device=device)
        assert bool(probe.isnan().all()), "this torch does not NaN-fill fresh allocations"
        return fn()
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def cuda_kernel_names(fn):
    """Names of the CUDA kernels `fn()` launches (torch.profiler), to check which path ran."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        fn()
        torch.cuda.synchronize()
    return [event.name for event in profile.events()]


def assert_within_one_ulp(actual, expected, dtype, l2_tolerance, context=""):
    """A float16 / bfloat16 result of one exact-product, float32-sum kernel: finite, of `dtype`,
    within `l2_tolerance` relative L2 of the float64 reference and at most one unit in the last
    place from it rounded to `dtype` (rtol = eps: one ulp at the top of a binade)."""
    assert actual.dtype == dtype, context
    assert torch.isfinite(actual).all(), context
    assert relative_l2_error(actual, expected) < l2_tolerance, context
    torch.testing.assert_close(actual, expected.to(dtype), rtol=torch.finfo(dtype).eps,
                               atol=1e-5, msg=lambda message: "%s\n%s" % (context, message))


def assert_close_with_nonfinite(actual, expected, rtol, atol):
    """NaN and inf where the float64 reference has them; the finite rest within tolerance."""
    assert torch.equal(actual.isnan(), expected.isnan())
    assert torch.equal(actual.isinf(), expected.isinf())
    finite = expected.isfinite()
    torch.testing.assert_close(actual[finite].double(), expected[finite], rtol=rtol, atol=atol)
