"""fusedconv.conv2d_hardswish_relu against the float64 PyTorch reference: forward, backward,
layouts, dtypes, empty batches, the fake kernels and torch.compile."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import fusedconv
from fusedconv.reference import (reference_float64, reference_forward,
                                 reference_gradients_float64, relative_l2_error)

from conftest import DEVICES, poisoned_call

# (N, Cin, Cout, H, W, kernel, conv kwargs): every knob of F.conv2d at least once.
CONFIGS = [
    (2, 3, 16, 17, 19, 3, {}),
    (3, 8, 64, 20, 18, 3, {"padding": 1}),
    (1, 5, 7, 13, 11, (3, 5), {"stride": 2, "padding": (1, 2)}),
    (2, 4, 6, 16, 15, 3, {"dilation": 2, "padding": 2}),
    (2, 6, 9, 12, 14, 3, {"groups": 3, "padding": 1}),
    (1, 8, 8, 10, 9, 3, {"groups": 8}),                      # depthwise
    (2, 4, 6, 11, 12, 4, {"padding": "same"}),              # asymmetric padding
    (2, 4, 6, 11, 12, (2, 5), {"padding": "same", "dilation": (3, 1)}),
    (2, 4, 6, 9, 9, 3, {"padding": "valid"}),
    (1, 3, 5, 23, 29, 7, {"stride": (3, 2), "padding": (3, 0), "dilation": (1, 2)}),
    (4, 16, 32, 7, 7, 1, {}),                               # 1x1
    (1, 2, 3, 5, 5, 5, {}),                                 # kernel == input
]


def _inputs(n, cin, cout, h, w, kernel, groups, device, dtype=torch.float32, bias=True):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = torch.randn(n, cin, h, w, device=device, dtype=dtype)
    fan_in = cin // groups * kh * kw
    weight = torch.randn(cout, cin // groups, kh, kw, device=device, dtype=dtype) / fan_in ** 0.5
    b = torch.randn(cout, device=device, dtype=dtype) if bias else None
    return x, weight, b


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "x".join(map(str, c[:5])) + str(c[6]))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_forward_matches_float64_reference(device, config, bias):
    n, cin, cout, h, w, kernel, kwargs = config
    x, weight, b = _inputs(n, cin, cout, h, w, kernel, kwargs.get("groups", 1), device, bias=bias)
    expected = reference_float64(x, weight, b, **kwargs)
    actual = poisoned_call(lambda: fusedconv.conv2d_hardswish_relu(x, weight, b, **kwargs),
                           torch.float32, device)
    assert actual.shape == expected.shape and actual.dtype == torch.float32
    assert actual.device == x.device
    assert torch.isfinite(actual).all(), "unwritten (NaN-poisoned) output elements"
    assert relative_l2_error(actual, expected) < 1e-5
    torch.testing.assert_close(actual.double(), expected, rtol=1e-4, atol=1e-5)
    # The comparison is not vacuous: the activation passes part of the output (for outputs too
    # small for that to be certain, the other configurations cover it).
    assert expected.numel() < 64 or (expected > 0).any()


@pytest.mark.parametrize("config", CONFIGS[:6], ids=lambda c: "x".join(map(str, c[:5])))
def test_forward_float64_on_cpu(config):
    n, cin, cout, h, w, kernel, kwargs = config
    x, weight, b = _inputs(n, cin, cout, h, w, kernel, kwargs.get("groups", 1), "cpu",
                           dtype=torch.float64)
    actual = fusedconv.conv2d_hardswish_relu(x, weight, b, **kwargs)
    assert actual.dtype == torch.float64
    torch.testing.assert_close(actual, reference_float64(x, weight, b, **kwargs), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,tolerance", [(torch.float16, 2e-3), (torch.bfloat16, 1e-2),
                                             (torch.float64, 1e-12)])
@pytest.mark.parametrize("config", CONFIGS[:7], ids=lambda c: "x".join(map(str, c[:5])))
def test_forward_reduced_and_double_precision_cuda(dtype, tolerance, config):
    n, cin, cout, h, w, kernel, kwargs = config
    x, weight, b = _inputs(n, cin, cout, h, w, kernel, kwargs.get("groups", 1), "cuda",
                           dtype=dtype)
    expected = reference_float64(x, weight, b, **kwargs)
    actual = poisoned_call(lambda: fusedconv.conv2d_hardswish_relu(x, weight, b, **kwargs),
                           dtype, "cuda")
    assert actual.dtype == dtype
    assert torch.isfinite(actual).all()
    # float32 accumulation: the error is the final rounding to the storage type, below eager's.
    assert relative_l2_error(actual, expected) < tolerance
    eager = reference_forward(x, weight, b, **kwargs)
    assert relative_l2_error(actual, expected) <= 2 * relative_l2_error(eager, expected) + 1e-6


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["channels_last_input", "channels_last_weight", "sliced_input",
                                    "transposed_input"])
def test_memory_layouts(device, layout):
    x, weight, b = _inputs(2, 6, 10, 14, 12, 3, 1, device)
    if layout == "channels_last_input":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "channels_last_weight":
        weight = weight.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced_input":
        x = torch.randn(2, 9, 14, 25, device=device)[:, 1:7, :, ::2]
    else:
        x = torch.randn(2, 6, 12, 14, device=device).transpose(2, 3)
    assert layout.startswith("channels_last") or not x.is_contiguous()
    actual = fusedconv.conv2d_hardswish_relu(x, weight, b, padding=1)
    expected = reference_float64(x, weight, b, padding=1)
    torch.testing.assert_close(actual.double(), expected, rtol=1e-4, atol=1e-5)
    if layout == "channels_last_input" or (layout == "channels_last_weight" and device == "cuda"):
        # Same output memory format as F.conv2d gives for these operands.
        eager = F.conv2d(x, weight, b, padding=1)
        for memory_format in (torch.channels_last, torch.contiguous_format):
            assert actual.is_contiguous(memory_format=memory_format) == \
                eager.is_contiguous(memory_format=memory_format)
        assert actual.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_forward_and_backward(device):
    x = torch.randn(0, 4, 9, 9, device=device, requires_grad=True)
    weight = torch.randn(5, 4, 3, 3, device=device, requires_grad=True)
    b = torch.randn(5, device=device, requires_grad=True)
    y = fusedconv.conv2d_hardswish_relu(x, weight, b)
    assert y.shape == (0, 5, 7, 7)
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(weight.grad, torch.zeros_like(weight))
    assert torch.equal(b.grad, torch.zeros_like(b))


@pytest.mark.parametrize("device", DEVICES)
def test_graph_recorded_only_when_a_gradient_is_needed(device):
    # Inference skips the autograd node (and its saved tensors); training records it. Same values.
    x, weight, b = _inputs(2, 3, 4, 8, 8, 3, 1, device)
    weight.requires_grad_()
    with torch.no_grad():
        inference = fusedconv.conv2d_hardswish_relu(x, weight, b, padding=1)
    assert inference.grad_fn is None and not inference.requires_grad
    untracked = fusedconv.conv2d_hardswish_relu(x, weight.detach(), b, padding=1)
    assert untracked.grad_fn is None and not untracked.requires_grad
    training = fusedconv.conv2d_hardswish_relu(x, weight, b, padding=1)
    assert training.grad_fn is not None and training.requires_grad
    assert torch.equal(inference, training.detach()) and torch.equal(untracked, inference)
    training.sum().backward()
    assert weight.grad is not None and bool(weight.grad.abs().sum() > 0)
    torch.testing.assert_close(inference.double(), reference_float64(x, weight, b, padding=1),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_one_element_sequences_stand_for_both_axes(device):
    # F.conv2d takes stride=[2], padding=(1,) and dilation=[1] for both axes.
    x, weight, b = _inputs(2, 3, 4, 9, 8, 3, 1, device)
    geometry = dict(stride=[2], padding=(1,), dilation=[2])
    actual = fusedconv.conv2d_hardswish_relu(x, weight, b, **geometry)
    expected = reference_float64(x, weight, b, stride=2, padding=1, dilation=2)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual.double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_unbatched_input(device):
    x, weight, b = _inputs(1, 3, 4, 8, 8, 3, 1, device)
    actual = fusedconv.conv2d_hardswish_relu(x[0], weight, b, padding=1)
    assert actual.shape == (4, 8, 8)
    torch.testing.assert_close(actual.double(), reference_float64(x[0], weight, b, padding=1),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_nan_and_inf_propagate_like_pytorch(device):
    x, weight, b = _inputs(1, 2, 3, 6, 6, 3, 1, device)
    x[0, 0, 2, 2] = float("nan")
    x[0, 1, 5, 5] = float("inf")
    actual = fusedconv.conv2d_hardswish_relu(x, weight, b)
    expected = reference_forward(x, weight, b)
    assert torch.equal(actual.isnan(), expected.isnan())
    assert actual.isnan().any()
    finite = expected.isfinite()
    torch.testing.assert_close(actual[finite], expected[finite], rtol=1e-4, atol=1e-5)


def _nan_patterns(fn, leaves, grad_out, create_graph=False):
    leaves = [t.detach().clone().requires_grad_() for t in leaves]
    grads = torch.autograd.grad(fn(*leaves), leaves, grad_out, create_graph=create_graph)
    return [g.isnan() for g in grads]


NAN_CASES = [("nchw", torch.float32, "measured"), ("channels_last", torch.float32, "measured"),
             ("nchw", torch.float32, "fused"), ("nchw", torch.float64, "measured")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout,dtype,policy", NAN_CASES,
                         ids=["%s-%s-%s" % (a, str(b)[6:], c) for a, b, c in NAN_CASES])
@pytest.mark.parametrize("create_graph", [False, True], ids=["backward", "double_backward"])
def test_nan_in_the_input_reaches_the_gradients_as_in_pytorch(device, layout, dtype, policy,
                                                              create_graph):
    # Gradient NaN checks (anomaly detection, skip-step logic) rely on propagation: element for
    # element, the NaN pattern of every gradient is eager PyTorch's on the same device (on the
    # CPU its hardswish backward turns a NaN into NaN; on CUDA it passes the gradient through).
    if policy == "fused" and device == "cpu":
        pytest.skip("the planners' policy is a CUDA switch")
    torch.manual_seed(0)
    x = torch.randn(2, 4, 10, 10, dtype=dtype, device=device)
    weight = torch.randn(6, 4, 3, 3, dtype=dtype, device=device)
    bias = torch.randn(6, dtype=dtype, device=device)
    # NaN only: a pre-activation of -inf also gives y = NaN, where eager's gradient is 0; from y
    # alone the two cannot be told apart, and the backward sees y only.
    x[0, 1, 4, 4] = float("nan")
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(2, 6, 8, 8, dtype=dtype, device=device)
    previous = torch.ops.fusedconv._plan_policy(policy) if device == "cuda" else None
    try:
        actual = _nan_patterns(fusedconv.conv2d_hardswish_relu, (x, weight, bias), grad_out,
                               create_graph)
    finally:
        if previous is not None:
            torch.ops.fusedconv._plan_policy(previous)
    expected = _nan_patterns(reference_forward, (x, weight, bias), grad_out, create_graph)
    assert any(bool(e.any()) for e in expected)  # the case does reach the gradients
    for name, a, e in zip(("input", "weight", "bias"), actual, expected):
        assert torch.equal(a, e), "grad %s: %d NaN, eager %d" % (name, a.sum(), e.sum())


@pytest.mark.parametrize("device", DEVICES)
def test_weights_are_read_on_every_call(device):
    # An optimizer step updates the weight in place; the next call must see it.
    x, weight, b = _inputs(2, 3, 4, 9, 9, 3, 1, device)
    before = fusedconv.conv2d_hardswish_relu(x, weight, b)
    with torch.no_grad():
        weight.mul_(-1.5)
        b.add_(0.25)
    after = fusedconv.conv2d_hardswish_relu(x, weight, b)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after.double(), reference_float64(x, weight, b), rtol=1e-4,
                               atol=1e-5)


# ---------------------------------------------------------------------------- backward


def _grads(fn, x, weight, b, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, b)]
    fn(*leaves).backward(grad_out)
    return [t.grad for t in leaves]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "x".join(map(str, c[:5])) + str(c[6]))
def test_backward_matches_float64_reference(device, config):
    torch.manual_seed(0)  # the last check depends on how many pre-activations sit on a kink
    n, cin, cout, h, w, kernel, kwargs = config
    x, weight, b = _inputs(n, cin, cout, h, w, kernel, kwargs.get("groups", 1), device)
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, b)]
    y = fusedconv.conv2d_hardswish_relu(*leaves, **kwargs)
    grad_out = torch.randn_like(y)
    ours = torch.autograd.grad(y, leaves, grad_out)
    expected = reference_gradients_float64(x, weight, b, grad_out, y, **kwargs)
    for name, actual, reference in zip(("input", "weight", "bias"), ours, expected):
        assert actual.dtype == torch.float32, name
        assert relative_l2_error(actual, reference) < 1e-5, name
    # Away from the derivative's jumps, the float64 autograd of PyTorch's own ops agrees too.
    plain = _grads(lambda *t: reference_forward(*t, **kwargs), x.double(), weight.double(),
                   b.double(), grad_out.double())
    # One float32/float64 branch disagreement moves grad_weight of these small problems by ~3e-3.
    assert relative_l2_error(ours[1], plain[1]) < 1e-2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kwargs", [{"padding": 1}, {"stride": 2, "dilation": 2},
                                    {"padding": "same", "groups": 2}],
                         ids=["pad1", "stride2dil2", "same-groups2"])
def test_gradcheck_float64(device, kwargs):
    kernel = (2, 3) if kwargs.get("padding") == "same" else 3
    x, weight, b = _inputs(2, 4, 4, 7, 8, kernel, kwargs.get("groups", 1), device,
                           dtype=torch.float64)
    # Move pre-activations away from the kinks (z = 0, z = 3) where finite differences lie.
    inputs = [t.requires_grad_() for t in (x, weight, b)]
    assert torch.autograd.gradcheck(
        lambda *t: fusedconv.conv2d_hardswish_relu(*t, **kwargs), inputs, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_only_requested_gradients(device):
    x, weight, b = _inputs(2, 3, 4, 8, 8, 3, 1, device)
    weight.requires_grad_()
    y = fusedconv.conv2d_hardswish_relu(x, weight, b)
    (grad_weight,) = torch.autograd.grad(y.sum(), [weight])
    expected = reference_gradients_float64(x, weight, b, torch.ones_like(y), y)[1]
    assert relative_l2_error(grad_weight, expected) < 1e-5
    assert x.grad is None and b.grad is None


@pytest.mark.parametrize("device", DEVICES)
def test_autograd_saves_input_weight_and_output_only(device):
    x, weight, b = _inputs(2, 3, 4, 8, 8, 3, 1, device)
    for t in (x, weight, b):
        t.requires_grad_()
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fusedconv.conv2d_hardswish_relu(x, weight, b)
    assert len(saved) == 3
    assert saved[0] is x or saved[0].data_ptr() == x.data_ptr()
    assert saved[1].data_ptr() == weight.data_ptr()
    assert saved[2].data_ptr() == y.data_ptr()


# ---------------------------------------------------------------------------- fake / compile


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "x".join(map(str, c[:5])) + str(c[6]))
def test_meta_kernel_matches_real_shapes(config):
    n, cin, cout, h, w, kernel, kwargs = config
    x, weight, b = _inputs(n, cin, cout, h, w, kernel, kwargs.get("groups", 1), "cpu")
    real = fusedconv.conv2d_hardswish_relu(x, weight, b, **kwargs)
    meta = fusedconv.conv2d_hardswish_relu(x.to("meta"), weight.to("meta"), b.to("meta"),
                                           **kwargs)
    assert meta.device.type == "meta"
    assert meta.shape == real.shape and meta.stride() == real.stride()
    x_cl = x.contiguous(memory_format=torch.channels_last)
    real_cl = fusedconv.conv2d_hardswish_relu(x_cl, weight, b, **kwargs)
    meta_cl = fusedconv.conv2d_hardswish_relu(x_cl.to("meta"), weight.to("meta"), b.to("meta"),
                                              **kwargs)
    assert meta_cl.stride() == real_cl.stride()


@pytest.mark.skipif(not hasattr(torch.library, "opcheck"),
                    reason="torch.library.opcheck needs torch >= 2.4")
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x, weight, b = _inputs(2, 4, 6, 9, 9, 3, 1, device)
    args = (x, weight, b, [1, 1], [1, 1, 1, 1], [1, 1], 1, False)
    torch.library.opcheck(torch.ops.fusedconv.conv2d_hardswish_relu.default, args)
    y = torch.ops.fusedconv.conv2d_hardswish_relu(*args)
    torch.library.opcheck(torch.ops.fusedconv.hardswish_relu_grad.default,
                          (torch.randn_like(y), y))
    torch.library.opcheck(torch.ops.fusedconv.conv2d_hardswish_relu_backward.default,
                          (torch.randn_like(y), x, weight, y) + args[3:7] + ([True] * 3,))


def _compile_model(backend, dynamic):
    module = fusedconv.Conv2dHardSwishReLU(4, 6, 3, padding=1)
    return module, torch.compile(module, backend=backend, dynamic=dynamic, fullgraph=True)


FIRST_CALL_COMPILED = """
import sys, torch, fusedconv
from fusedconv import ops
assert ops._FORWARD_OP is None  # nothing loaded yet in this process
module = fusedconv.Conv2dHardSwishReLU(3, 8, 3, padding=1).to(sys.argv[1])
x = torch.randn(2, 3, 10, 10, device=sys.argv[1])
compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
y = compiled(x)
torch.testing.assert_close(y, module(x), rtol=1e-6, atol=1e-6)
y.sum().backward()
assert module.weight.grad is not None and bool(module.weight.grad.isfinite().all())
print("ok")
"""


@pytest.mark.parametrize("device", DEVICES)
def test_first_call_inside_fullgraph_compile_in_a_fresh_process(device):
    # A program's first call may be inside torch.compile(fullgraph=True): the library loads at
    # trace time (the build cache this session made is reused: a load, not a build).
    result = subprocess.run([sys.executable, "-c", FIRST_CALL_COMPILED, device],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend,dynamic", [("aot_eager", True), ("inductor", False)])
def test_torch_compile_matches_eager(device, backend, dynamic):
    torch._dynamo.reset()
    module, compiled = _compile_model(backend, dynamic)
    module.to(device)
    for shape in [(2, 4, 10, 11), (3, 4, 13, 9)]:
        x = torch.randn(shape, device=device, requires_grad=True)
        eager = module(x)
        out = compiled(x)
        torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
        grad = torch.randn_like(eager)
        expected = torch.autograd.grad(eager, [x, module.weight, module.bias], grad)
        actual = torch.autograd.grad(out, [x, module.weight, module.bias], grad)
        for a, e in zip(actual, expected):
            torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
def test_cuda_graph_capture_and_replay():
    x, weight, b = _inputs(4, 8, 16, 20, 20, 3, 1, "cuda")
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fusedconv.conv2d_hardswish_relu(static_x, weight, b, padding=1)  # warm-up off-graph
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = fusedconv.conv2d_hardswish_relu(static_x, weight, b, padding=1)
    for _ in range(2):
        new_x = torch.randn_like(x)
        static_x.copy_(new_x)
        graph.replay()
        torch.cuda.synchronize()
        eager = fusedconv.conv2d_hardswish_relu(new_x, weight, b, padding=1)
        torch.testing.assert_close(static_y, eager)
        assert relative_l2_error(static_y, reference_float64(new_x, weight, b, padding=1)) < 1e-5


@pytest.mark.cuda
def test_runs_on_the_current_stream():
    x, weight, b = _inputs(8, 8, 32, 64, 64, 3, 1, "cuda")
    stream = torch.cuda.Stream()
    # The inputs were made on the default stream: without this wait the kernel may read them
    # unfinished (it failed so once, under five concurrent test processes).
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        y = fusedconv.conv2d_hardswish_relu(x, weight, b)
        z = y * 1.0  # ordered after the kernel on `stream` only if the kernel ran there
    stream.synchronize()
    torch.testing.assert_close(z.double(), reference_float64(x, weight, b), rtol=1e-4, atol=1e-5)
