"""Hardening: tensors past 2^31 elements, tensors not 16-byte aligned, CUDA graphs over forward
and backward, streams and the device guard, and concurrent builds of the extension cache."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import fusedconv
from fusedconv.reference import reference_float64, reference_gradients_float64
from fusedconv.reference import relative_l2_error

from conftest import poisoned_call

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.mark.cuda
def test_output_past_two_to_the_31_elements():
    # 3 x 26758 x 26758 = 2,147,971,692 outputs > 2^31: offsets past 2^31 must be 64-bit.
    size = 26760
    torch.manual_seed(0)
    x = torch.randn(1, 1, size, size, device="cuda")
    weight = torch.randn(3, 1, 3, 3, device="cuda")
    bias = torch.randn(3, device="cuda")
    y = fusedconv.conv2d_hardswish_relu(x, weight, bias)
    assert y.numel() > 2 ** 31
    assert torch.isfinite(y).all()
    rows = 4
    # First rows, middle rows, and the last rows of the last channel (flat index > 2^31).
    for first in (0, size // 2, size - 2 - rows):
        expected = reference_float64(x[:, :, first:first + rows + 2], weight, bias)
        actual = y[:, :, first:first + rows]
        assert relative_l2_error(actual, expected) < 1e-5, first


@pytest.mark.cuda
@pytest.mark.parametrize("offset_tensor", ["input", "grad_output"])
@pytest.mark.parametrize("shape", [
    (2, 8, 20, 32, 3),   # wgmma on Hopper (mma.sync elsewhere), fused backward
    (2, 3, 16, 16, 3),   # the small-problem kernel
    (2, 40, 12, 48, 3),  # the streamed wgmma kernel (45 k steps)
], ids=["wgmma", "small", "streamed"])
def test_tensors_not_16_byte_aligned(shape, offset_tensor):
    # A dense view one float into its storage: contiguous, but 4 bytes past a 16-byte boundary.
    # The tensor-core kernels' 16-byte copies and float4 loads would fault on it (a sticky CUDA
    # error); such calls take the floor path and the composite backward, with the same values.
    batch, in_channels, size, out_channels, kernel = shape

    def offset_randn(*dims):
        storage = torch.randn(int(torch.tensor(dims).prod()) + 1, device="cuda")
        tensor = storage[1:].view(*dims)
        assert tensor.is_contiguous() and tensor.data_ptr() % 16 != 0
        return tensor

    x_dims = (batch, in_channels, size, size)
    x = offset_randn(*x_dims) if offset_tensor == "input" else torch.randn(*x_dims, device="cuda")
    weight = torch.randn(out_channels, in_channels, kernel, kernel, device="cuda")
    weight /= (in_channels * kernel * kernel) ** 0.5
    bias = torch.randn(out_channels, device="cuda")
    leaves = [t.detach().requires_grad_() for t in (x, weight, bias)]
    assert leaves[0].data_ptr() == x.data_ptr()
    y = poisoned_call(lambda: fusedconv.conv2d_hardswish_relu(*leaves), torch.float32, "cuda")
    assert relative_l2_error(y, reference_float64(x, weight, bias)) < 1e-5
    out_dims = tuple(y.shape)
    grad_out = (offset_randn(*out_dims) if offset_tensor == "grad_output"
                else torch.randn(*out_dims, device="cuda"))
    grads = torch.autograd.grad(y, leaves, grad_out)
    expected = reference_gradients_float64(x, weight, bias, grad_out, y)
    for name, actual, reference in zip(("input", "weight", "bias"), grads, expected):
        # cuDNN's weight gradient (the composite path) varies up to ~1.1e-5 (test_backward.py).
        assert relative_l2_error(actual, reference) < 1e-4, name


@pytest.mark.cuda
# 3 input channels: the small-problem backward (27 inputs per position, 0.69M multiply-adds).
@pytest.mark.parametrize("in_channels,groups", [(8, 1), (3, 1), (16, 16)],
                         ids=["dense", "dense_small", "depthwise"])
def test_cuda_graph_of_forward_and_backward(in_channels, groups):
    torch.manual_seed(0)
    layer = fusedconv.Conv2dHardSwishReLU(in_channels, 16, 3, padding=1, groups=groups).cuda()
    static_x = torch.randn(4, in_channels, 20, 20, device="cuda", requires_grad=True)
    static_grad = torch.randn(4, 16, 20, 20, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # warm-up outside the graph, as torch.cuda.graph requires
            layer(static_x).backward(static_grad)
    torch.cuda.current_stream().wait_stream(side)
    layer.zero_grad(set_to_none=True)
    static_x.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = layer(static_x)
        static_y.backward(static_grad)
    for _ in range(2):
        x = torch.randn_like(static_x)
        grad = torch.randn_like(static_grad)
        with torch.no_grad():
            static_x.copy_(x)
            static_grad.copy_(grad)
        graph.replay()
        torch.cuda.synchronize()
        leaves = [x.clone().requires_grad_(), layer.weight.detach().clone().requires_grad_(),
                  layer.bias.detach().clone().requires_grad_()]
        eager = fusedconv.conv2d_hardswish_relu(*leaves, padding=1, groups=groups)
        expected = torch.autograd.grad(eager, leaves, grad)
        torch.testing.assert_close(static_y, eager)
        # .grad was None at capture, so the captured backward assigns it: each replay rewrites
        # the same graph-owned tensors with this replay's gradients.
        for replayed, eager_grad in zip((static_x.grad, layer.weight.grad, layer.bias.grad),
                                        expected):
            assert relative_l2_error(replayed, eager_grad) < 1e-6
    reference = reference_gradients_float64(x, layer.weight, layer.bias, grad, static_y, padding=1,
                                            groups=groups)
    assert relative_l2_error(static_x.grad, reference[0]) < 1e-5


@pytest.mark.cuda
def test_device_guard_follows_the_input():
    x = torch.randn(2, 3, 9, 9, device="cuda:0")
    weight = torch.randn(4, 3, 3, 3, device="cuda:0")
    with torch.cuda.device(torch.cuda.device_count() - 1):
        y = fusedconv.conv2d_hardswish_relu(x, weight)
    assert y.device == x.device
    assert relative_l2_error(y, reference_float64(x, weight)) < 1e-5


def test_two_processes_building_one_cache_at_once(tmp_path):
    # torch's file lock serialises the two builds of a fresh cache: both must load a working
    # library, neither may see a half-written one.
    script = textwrap.dedent("""
        import sys, torch, fusedconv
        from fusedconv.reference import reference_float64, relative_l2_error
        x = torch.randn(2, 3, 10, 10)
        w = torch.randn(4, 3, 3, 3)
        y = fusedconv.conv2d_hardswish_relu(x, w, padding=1)
        sys.exit(0 if relative_l2_error(y, reference_float64(x, w, padding=1)) < 1e-5 else 3)
    """)
    environment = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path), CUDA_VISIBLE_DEVICES="",
                       PYTHONPATH=str(REPOSITORY))
    processes = [subprocess.Popen([sys.executable, "-c", script], env=environment,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(2)]
    for process in processes:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output
