"""The Hopper (sm_90a wgmma) forward on channels_last tensors (csrc/cuda/forward/wgmma/: raw rows
copied as pixels, the epilogue storing each position's channels whole): against float64 on
poisoned outputs, in both float32 precision modes and in float16 / bfloat16, on shapes around its
tile and copy edges; and where the planner takes it."""

import pytest
import torch

import fusedconv
from fusedconv.reference import reference_float64, relative_l2_error

from conftest import (assert_close_with_nonfinite, assert_within_one_ulp, channels_last_wgmma,
                      cuda_kernel_names, poisoned_call)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.usefixtures("fused_kernels"),
    pytest.mark.skipif(not torch.cuda.is_available()
                       or torch.cuda.get_device_capability() != (9, 0),
                       reason="the wgmma kernel runs on compute capability 9.0 only"),
]

CHANNELS_LAST = torch.channels_last

# (batch, in, out, height, width, kernel, padding). Resident: v0.1's rows; 3 channels (rows of
# 4-byte copies, pixels read one channel at a time); odd rows of 5 channels (2-byte elements copied
# one by one in 16 bits); output channels that are no whole 16-byte vector (17, 33: element
# stores) or a partial second and third block (130); 1x1; 2x2 with padding (1, 0), and with
# 'same' padding (one row and column after the image, none before).
RESIDENT_SHAPES = [
    (2, 8, 64, 19, 128, 3, 0),
    (3, 3, 17, 32, 32, 3, 0),
    (1, 5, 17, 23, 67, 3, 1),
    (2, 8, 130, 9, 41, 3, 0),
    (1, 16, 32, 12, 64, 3, 0),
    (1, 8, 64, 7, 5, 2, (1, 0)),
    (1, 8, 64, 9, 13, 2, "same"),
    (2, 13, 33, 11, 70, 1, 0),
]
# Streamed (more than 32 k steps of 8 channels x a tap, or a stage too large): chunks of each
# pixel's channels, a partial last chunk (36, 300), odd rows, more items than SMs.
STREAMED_SHAPES = [
    (2, 32, 64, 20, 56, 3, 1),
    (1, 36, 96, 9, 45, 3, 0),
    (1, 40, 33, 10, 127, 3, 1),
    (2, 128, 128, 11, 28, 1, 0),
    (1, 300, 40, 6, 10, 1, 0),
    (16, 32, 64, 40, 56, 3, 1),
]


def _inputs(shape, seed, dtype=torch.float32, weight_format=CHANNELS_LAST):
    batch, cin, cout, height, width, kernel, padding = shape
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cin, height, width, generator=generator)
    w = torch.randn(cout, cin, kernel, kernel, generator=generator) / (cin * kernel ** 2) ** 0.5
    b = torch.randn(cout, generator=generator)
    x = x.to("cuda", dtype).contiguous(memory_format=CHANNELS_LAST)
    w = w.to("cuda", dtype).contiguous(memory_format=weight_format)
    return x, w, b.to("cuda", dtype), padding


def _checked_call(x, w, b, padding, allow_tf32, kernel):
    """The call's output on poisoned memory, after checking that `kernel` is what ran."""
    def call():
        return fusedconv.conv2d_hardswish_relu(x, w, b, padding=padding, allow_tf32=allow_tf32)

    with channels_last_wgmma("all"):
        names = cuda_kernel_names(call)
        assert any(kernel in name for name in names), names
        assert not any("channels_last_gemm" in name for name in names), names
        out = poisoned_call(call, x.dtype, "cuda")
    assert out.is_contiguous(memory_format=CHANNELS_LAST)
    return out


def _kernel_of(shape):
    return "wgmma_kernel" if shape in RESIDENT_SHAPES else "wgmma_streamed_kernel"


@pytest.mark.parametrize("allow_tf32,tolerance", [(False, 1e-5), (True, 5e-4)], ids=str)
@pytest.mark.parametrize("shape", RESIDENT_SHAPES + STREAMED_SHAPES, ids=str)
def test_float32_against_float64(shape, allow_tf32, tolerance):
    x, w, b, padding = _inputs(shape, seed=5 if shape in RESIDENT_SHAPES else 7)
    out = _checked_call(x, w, b, padding, allow_tf32, _kernel_of(shape))
    expected = reference_float64(x, w, b, padding=padding)
    assert torch.isfinite(out).all()
    assert relative_l2_error(out, expected) < tolerance


# float16 / bfloat16 are exact in TF32: exact products, float32 sums, one rounding at the store.
@pytest.mark.parametrize("dtype,l2_tolerance", [(torch.float16, 1e-3), (torch.bfloat16, 8e-3)],
                         ids=str)
@pytest.mark.parametrize("shape", RESIDENT_SHAPES + STREAMED_SHAPES, ids=str)
def test_reduced_precision_against_float64(shape, dtype, l2_tolerance):
    x, w, b, padding = _inputs(shape, seed=11, dtype=dtype)
    out = _checked_call(x, w, b, padding, None, _kernel_of(shape))
    assert_within_one_ulp(out, reference_float64(x, w, b, padding=padding), dtype, l2_tolerance,
                          str(shape))


@pytest.mark.parametrize("shape", [RESIDENT_SHAPES[0], STREAMED_SHAPES[0]], ids=str)
def test_nchw_weight_and_weight_update(shape):
    # The weight is read through its strides (here NCHW-contiguous beside a channels_last input);
    # an in-place update (an optimizer step) shows in the next call.
    x, w, b, padding = _inputs(shape, seed=13, weight_format=torch.contiguous_format)
    for _ in range(2):
        out = _checked_call(x, w, b, padding, False, _kernel_of(shape))
        assert relative_l2_error(out, reference_float64(x, w, b, padding=padding)) < 1e-5
        w.mul_(-0.5)


def test_nan_and_inf_propagate_like_float64():
    x, w, b, padding = _inputs(RESIDENT_SHAPES[0], seed=17)
    x[0, 3, 4, 5] = float("nan")
    x[1, 0, 10, 100] = float("inf")
    x[1, 7, 2, 2] = -float("inf")
    out = _checked_call(x, w, b, padding, False, "wgmma_kernel")
    assert_close_with_nonfinite(out, reference_float64(x, w, b, padding=padding), rtol=1e-4,
                                atol=1e-5)


def test_empty_batch_plans_nothing():
    x, w, b, padding = _inputs(RESIDENT_SHAPES[0], seed=19)
    with channels_last_wgmma("all"):
        args = (x[:0], w, b, [1, 1], [0, 0, 0, 0], [1, 1], 1, None)
        assert torch.ops.fusedconv._plan(*args) == "none"
        out = fusedconv.conv2d_hardswish_relu(x[:0], w, b, padding=padding)
    assert out.shape == (0, 64, 17, 126)
    # The memory format F.conv2d gives an empty batch (contiguous: ATen's "Empty" backend).
    eager = torch.nn.functional.conv2d(x[:0], w, b, padding=padding)
    for memory_format in (CHANNELS_LAST, torch.contiguous_format):
        assert out.is_contiguous(memory_format=memory_format) == \
            eager.is_contiguous(memory_format=memory_format)


def test_plan_follows_the_switch():
    # v0.1's shape in channels_last: the wgmma kernel under "all", never under "none".
    x, w, b, _ = _inputs((2, 8, 64, 128, 128, 3, 0), seed=23)
    args = (x, w, b, [1, 1], [0, 0, 0, 0], [1, 1], 1, True)
    with channels_last_wgmma("all"):
        assert torch.ops.fusedconv._plan(*args) == "wgmma"
    with channels_last_wgmma("none"):
        assert torch.ops.fusedconv._plan(*args) == "channels_last_gemm"
    # Strided calls are not its to take, and NCHW calls plan as they do without it.
    nchw = (x.contiguous(), w.contiguous()) + args[2:]
    with channels_last_wgmma("none"):
        nchw_plan = torch.ops.fusedconv._plan(*nchw)
    with channels_last_wgmma("all"):
        strided = (x, w, b, [2, 2], [0, 0, 0, 0], [1, 1], 1, True)
        assert torch.ops.fusedconv._plan(*strided) != "wgmma"
        assert torch.ops.fusedconv._plan(*nchw) == nchw_plan


def test_switch_rejects_unknown_choices():
    for choice in ("yes", "ALL", ""):
        with pytest.raises(ValueError, match="'measured', 'all' or 'none'"):
            torch.ops.fusedconv._channels_last_wgmma(choice)
    assert torch.ops.fusedconv._channels_last_wgmma() == "none"  # conftest's, unchanged
