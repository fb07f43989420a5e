"""The Hopper (sm_90a wgmma) forward: that it is the kernel an H100 runs for the KernelBench shapes,
and that it agrees with the mma.sync kernel (FUSEDCONV_DISABLE_WGMMA=1, in a subprocess: the
switch is read once per process) and with float64 on shapes around its tile edges."""

import os
import subprocess
import sys

import pytest
import torch

import fusedconv
from fusedconv.reference import reference_float64, relative_l2_error

from conftest import assert_within_one_ulp, cuda_kernel_names, poisoned_call

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.usefixtures("fused_kernels"),  # the kernel wherever it applies (conftest)
    pytest.mark.skipif(not torch.cuda.is_available()
                       or torch.cuda.get_device_capability() != (9, 0),
                       reason="the wgmma kernel runs on compute capability 9.0 only"),
]

# (batch, in, out, height, width, kernel, padding): v0.1-like rows, odd widths (scalar stores),
# widths that wrap 128-position units mid-row, Cout over 64 (two channel blocks), Cin over 8.
# Cout > 16 throughout: up to 16 output channels the dispatch takes the mma.sync kernel.
RESIDENT_SHAPES = [
    (2, 8, 64, 19, 128, 3, 0),
    (3, 3, 17, 32, 32, 3, 0),
    (1, 5, 17, 23, 67, 3, 1),
    (2, 8, 130, 9, 41, 3, 0),
    (1, 16, 32, 12, 64, 3, 0),
    (1, 8, 64, 7, 5, 2, (1, 0)),
    (2, 13, 33, 11, 70, 1, 0),
]
# More than 32 k steps, or too large a stage for the resident kernel: the streamed kernel (input
# channels in chunks, weights fetched per chunk). The sweep's 56x56 and 1x1 / 128 shapes (small
# planes), a partial last chunk (36 = 4 x 8 + 4), Cout 65 and 96 (a second, partial channel
# block), 16-channel chunks of 2x2 taps, 64-channel chunks of a 1x1 kernel over 300 channels,
# odd and 127-wide rows, and more items than SMs (the stage ring running across items).
STREAMED_SHAPES = [
    (2, 32, 64, 20, 56, 3, 1),
    (1, 64, 64, 13, 30, 3, 1),
    (2, 128, 128, 11, 28, 1, 0),
    (1, 36, 96, 9, 45, 3, 0),
    (1, 40, 33, 10, 127, 3, 1),
    (3, 72, 65, 7, 9, 2, (1, 0)),
    (1, 300, 40, 6, 10, 1, 0),
    (16, 32, 64, 40, 56, 3, 1),
]
SHAPES = RESIDENT_SHAPES + STREAMED_SHAPES

SCRIPT = """
import sys, torch, fusedconv
torch.backends.cudnn.allow_tf32 = False  # float32 accuracy, as the parent test's
inputs = torch.load(sys.argv[1])
outputs = [fusedconv.conv2d_hardswish_relu(x.cuda(), w.cuda(), b.cuda(), padding=p).cpu()
           for x, w, b, p in inputs]
torch.save(outputs, sys.argv[2])
"""


def _inputs(seed, shapes=SHAPES):
    generator = torch.Generator().manual_seed(seed)
    inputs = []
    for batch, cin, cout, height, width, kernel, padding in shapes:
        x = torch.randn(batch, cin, height, width, generator=generator)
        w = torch.randn(cout, cin, kernel, kernel, generator=generator) / (cin * kernel ** 2) ** 0.5
        b = torch.randn(cout, generator=generator)
        inputs.append((x, w, b, padding))
    return inputs


@pytest.mark.parametrize("allow_tf32", [False, True])
def test_kernelbench_v01_runs_the_wgmma_kernel(allow_tf32):
    x = torch.rand(2, 8, 128, 128, device="cuda")
    weight = torch.randn(64, 8, 3, 3, device="cuda") / 72 ** 0.5
    bias = torch.randn(64, device="cuda")
    fusedconv.conv2d_hardswish_relu(x, weight, bias, allow_tf32=allow_tf32)  # warm-up
    names = cuda_kernel_names(
        lambda: fusedconv.conv2d_hardswish_relu(x, weight, bias, allow_tf32=allow_tf32))
    assert any("wgmma_kernel" in name for name in names), names
    assert not any("mma_sync_kernel" in name for name in names), names


def test_wgmma_matches_mma_sync_kernel_and_float64(tmp_path):
    inputs = _inputs(seed=7)
    torch.save(inputs, tmp_path / "inputs.pt")
    environment = dict(os.environ, FUSEDCONV_DISABLE_WGMMA="1", FUSEDCONV_PLAN="fused")
    subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "inputs.pt"),
                    str(tmp_path / "outputs.pt")], check=True, env=environment, timeout=600)
    mma_sync_outputs = torch.load(tmp_path / "outputs.pt")
    for (x, w, b, padding), mma_sync in zip(inputs, mma_sync_outputs):
        x, w, b = x.cuda(), w.cuda(), b.cuda()
        wgmma = poisoned_call(lambda: fusedconv.conv2d_hardswish_relu(x, w, b, padding=padding),
                              torch.float32, "cuda")
        expected = reference_float64(x, w, b, padding=padding)
        assert torch.isfinite(wgmma).all()
        assert relative_l2_error(wgmma, expected) < 1e-5, (x.shape, w.shape)
        torch.testing.assert_close(wgmma.cpu(), mma_sync, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", RESIDENT_SHAPES, ids=str)
def test_resident_kernel_in_tf32_mode_against_float64(shape):
    # TF32 mode plans its own (one-part) layout, with other tiles than 3xTF32's.
    (x, w, b, padding), = _inputs(seed=19, shapes=[shape])
    x, w, b = x.cuda(), w.cuda(), b.cuda()

    def call():
        return fusedconv.conv2d_hardswish_relu(x, w, b, padding=padding, allow_tf32=True)

    names = cuda_kernel_names(call)
    assert any("wgmma_kernel" in name for name in names), names
    actual = poisoned_call(call, torch.float32, "cuda")
    assert torch.isfinite(actual).all()
    assert relative_l2_error(actual, reference_float64(x, w, b, padding=padding)) < 5e-4


@pytest.mark.parametrize("shape", STREAMED_SHAPES, ids=str)
def test_streamed_kernel_against_float64_in_both_modes(shape):
    # The kernel that runs is the streamed one (its prep kernel splits the weights into the
    # workspace); right on poisoned outputs in 3xTF32 and TF32; and an in-place weight update
    # (an optimizer step) shows in the next call: the split weights are rebuilt on every call.
    (x, w, b, padding), = _inputs(seed=11, shapes=[shape])
    x, w, b = x.cuda(), w.cuda(), b.cuda()
    for allow_tf32, tolerance in ((False, 1e-5), (True, 5e-4)):
        def call():
            return fusedconv.conv2d_hardswish_relu(x, w, b, padding=padding,
                                                   allow_tf32=allow_tf32)
        names = cuda_kernel_names(call)
        assert any("wgmma_streamed_kernel" in name for name in names), names
        assert any("split_streamed_weights" in name for name in names), names
        actual = poisoned_call(call, torch.float32, "cuda")
        assert relative_l2_error(actual, reference_float64(x, w, b, padding=padding)) < tolerance
    w.mul_(-1.5)
    assert relative_l2_error(fusedconv.conv2d_hardswish_relu(x, w, b, padding=padding),
                             reference_float64(x, w, b, padding=padding)) < 1e-5


# float16 and bfloat16 inputs run the resident wgmma kernel in TF32 mode: their values are exact in
# TF32, so the products are exact and the sums float32, and the output is rounded once. Against
# the float64 reference rounded to the same type, at most one unit in the last place apart
# (rtol = eps: one ulp at the top of a binade); the relative L2 error is the rounding's.
REDUCED_PRECISION = [(torch.float16, 1e-3), (torch.bfloat16, 8e-3)]


@pytest.mark.parametrize("dtype,l2_tolerance", REDUCED_PRECISION, ids=str)
@pytest.mark.parametrize("shape", RESIDENT_SHAPES, ids=str)
def test_reduced_precision_runs_the_wgmma_kernel_against_float64(dtype, l2_tolerance, shape):
    (x, w, b, padding), = _inputs(seed=13, shapes=[shape])
    x, w, b = (t.to("cuda", dtype) for t in (x, w, b))

    def call():
        return fusedconv.conv2d_hardswish_relu(x, w, b, padding=padding)

    names = cuda_kernel_names(call)
    assert any("wgmma_kernel" in name for name in names), names
    assert not any("generic" in name for name in names), names
    assert_within_one_ulp(poisoned_call(call, dtype, "cuda"),
                          reference_float64(x, w, b, padding=padding), dtype, l2_tolerance)


# STREAMED_SHAPES in float16 / bfloat16: staged in the input's type (16-byte copies of 8-element
# rows, 4-byte pairs, 2-byte plain copies on odd widths), weights split from it once per call.
@pytest.mark.parametrize("dtype,l2_tolerance", REDUCED_PRECISION, ids=str)
@pytest.mark.parametrize("shape", STREAMED_SHAPES, ids=str)
def test_reduced_precision_streamed_kernel_against_float64(dtype, l2_tolerance, shape):
    (x, w, b, padding), = _inputs(seed=19, shapes=[shape])
    x, w, b = (t.to("cuda", dtype) for t in (x, w, b))

    def call():
        return fusedconv.conv2d_hardswish_relu(x, w, b, padding=padding)

    names = cuda_kernel_names(call)
    assert any("wgmma_streamed_kernel" in name for name in names), names
    assert any("split_streamed_weights" in name for name in names), names
    assert_within_one_ulp(poisoned_call(call, dtype, "cuda"),
                          reference_float64(x, w, b, padding=padding), dtype, l2_tolerance)
    w.mul_(-1.5)  # in place, as an optimizer step: the split is rebuilt on every call
    torch.testing.assert_close(call(), reference_float64(x, w, b, padding=padding).to(dtype),
                               rtol=torch.finfo(dtype).eps, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_reduced_precision_kernelbench_shape_and_weight_update(dtype):
    # v0.1's shape at a small batch, torch.rand inputs as KernelBench draws them; an in-place
    # weight update (an optimizer step) shows in the next call.
    generator = torch.Generator().manual_seed(17)
    x = torch.rand(2, 8, 128, 128, generator=generator).to("cuda", dtype)
    weight = (torch.randn(64, 8, 3, 3, generator=generator) / 72 ** 0.5).to("cuda", dtype)
    bias = torch.randn(64, generator=generator).to("cuda", dtype)
    for _ in range(2):
        actual = poisoned_call(lambda: fusedconv.conv2d_hardswish_relu(x, weight, bias),
                               dtype, "cuda")
        expected = reference_float64(x, weight, bias)
        torch.testing.assert_close(actual, expected.to(dtype), rtol=torch.finfo(dtype).eps,
                                   atol=1e-5)
        weight.mul_(-0.5)
