"""Forward-mode AD and functorch transforms (torch.func.grad, vjp, jacrev, jvp, vmap, per-sample
gradients): the operator decomposes into ATen's differentiable ops under them (a C++ autograd
Function cannot run there), so each transform's result must equal the same transform of the
unfused float64 reference."""

import warnings

import pytest
import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F
from torch.func import functional_call, grad, hessian, jacrev, jvp, vjp, vmap

import fusedconv
from fusedconv.reference import reference_forward

from conftest import DEVICES

# (N, Cin, Cout, H, W, kernel, conv kwargs): plain, strided + grouped, asymmetric 'same' padding.
GEOMETRIES = [
    (2, 3, 5, 7, 6, 3, {"padding": 1}),
    (2, 4, 6, 9, 8, 3, {"stride": 2, "groups": 2, "dilation": (1, 2)}),
    (1, 2, 3, 6, 7, 4, {"padding": "same"}),
]
IDS = ["plain", "strided_grouped", "same_even_kernel"]


def _tensors(geometry, device, dtype=torch.float32):
    n, cin, cout, h, w, kernel, kwargs = geometry
    x = torch.randn(n, cin, h, w, device=device, dtype=dtype)
    weight = torch.randn(cout, cin // kwargs.get("groups", 1), kernel, kernel, device=device,
                         dtype=dtype) / 3
    # A bias that puts outputs on every branch of relu(hardswish): below -3, (-3, 0), (0, 3), > 3.
    bias = torch.randn(cout, device=device, dtype=dtype) * 2
    return x, weight, bias


def _fused(kwargs):
    return lambda x, w, b: fusedconv.conv2d_hardswish_relu(x, w, b, **kwargs)


def _reference64(kwargs):
    return lambda x, w, b: reference_forward(x.double(), w.double(), b.double(), **kwargs)


def _close(actual, expected, dtype):
    assert actual.dtype == dtype
    if dtype == torch.float32:
        tolerance = dict(rtol=1e-4, atol=1e-5)
    else:
        tolerance = dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(actual.double(), expected.double(), **tolerance)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=IDS)
def test_func_grad_matches_reference(device, dtype, geometry):
    x, w, b = _tensors(geometry, device, dtype)
    upstream = torch.randn_like(_fused(geometry[6])(x, w, b))

    def loss(fn):
        return lambda x, w, b: (fn(x, w, b) * upstream.to(dtype)).sum()

    actual = grad(loss(_fused(geometry[6])), argnums=(0, 1, 2))(x, w, b)
    expected = grad(loss(_reference64(geometry[6])), argnums=(0, 1, 2))(x, w, b)
    assert any(e.abs().max() > 0 for e in expected)
    for a, e in zip(actual, expected):
        _close(a, e, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=IDS)
def test_vjp_and_jvp_match_reference(device, geometry):
    x, w, b = _tensors(geometry, device, torch.float64)
    fused, reference = _fused(geometry[6]), _reference64(geometry[6])
    y, pullback = vjp(fused, x, w, b)
    y_ref, pullback_ref = vjp(reference, x, w, b)
    _close(y, y_ref, torch.float64)
    cotangent = torch.randn_like(y)
    for a, e in zip(pullback(cotangent), pullback_ref(cotangent)):
        _close(a, e, torch.float64)
    tangents = tuple(torch.randn_like(t) for t in (x, w, b))
    primal, tangent = jvp(fused, (x, w, b), tangents)
    primal_ref, tangent_ref = jvp(reference, (x, w, b), tangents)
    _close(primal, primal_ref, torch.float64)
    _close(tangent, tangent_ref, torch.float64)
    assert tangent_ref.abs().max() > 0


@pytest.mark.parametrize("device", DEVICES)
def test_jacrev_matches_reference(device):
    x, w, b = _tensors((1, 2, 2, 4, 4, 3, {}), device, torch.float64)
    actual = jacrev(_fused({}), argnums=1)(x, w, b)
    expected = jacrev(_reference64({}), argnums=1)(x, w, b)
    assert actual.shape == (1, 2, 2, 2) + w.shape
    _close(actual, expected, torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_hessian_matches_reference(device):
    x, w, b = _tensors((1, 1, 1, 3, 3, 2, {}), device, torch.float64)
    weights = torch.randn(1, 1, 2, 2, device=device, dtype=torch.float64)
    actual = hessian(lambda x: (_fused({})(x, w, b) * weights).sum())(x)
    expected = hessian(lambda x: (_reference64({})(x, w, b) * weights).sum())(x)
    assert actual.shape == x.shape * 2
    _close(actual, expected, torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grad_enabled", [True, False], ids=["grad_mode", "no_grad"])
def test_forward_mode_ad_carries_the_tangent(device, grad_enabled):
    # torch.autograd.forward_ad (not torch.func): the output's tangent is the reference's, in and
    # out of grad mode, instead of a refusal or a dropped tangent.
    x, w, b = _tensors(GEOMETRIES[0], device, torch.float64)
    tangent = torch.randn_like(x)
    expected = jvp(_reference64(GEOMETRIES[0][6]), (x, w, b),
                   (tangent, torch.zeros_like(w), torch.zeros_like(b)))
    with forward_ad.dual_level(), torch.set_grad_enabled(grad_enabled):
        out = fusedconv.conv2d_hardswish_relu(forward_ad.make_dual(x, tangent), w, b, padding=1)
        primal, out_tangent = forward_ad.unpack_dual(out)
        assert out_tangent is not None
        _close(primal, expected[0], torch.float64)
        _close(out_tangent, expected[1], torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_vmap_over_an_extra_dimension(device, channels_last, capfd):
    geometry = GEOMETRIES[1]
    x, w, b = _tensors(geometry, device)
    stack = torch.stack([x, torch.randn_like(x), torch.randn_like(x)])
    if channels_last:
        w = w.contiguous(memory_format=torch.channels_last)
    # functorch's per-sample fallback warns (a Python warning on newer torch, stderr on 2.1);
    # the operator's batched kernel is the composite, which has batching rules.
    torch._C._functorch._set_vmap_fallback_warning_enabled(True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            actual = vmap(_fused(geometry[6]), in_dims=(0, None, None))(stack, w, b)
    finally:
        torch._C._functorch._set_vmap_fallback_warning_enabled(False)
    fallback = [str(w.message) for w in caught] + [capfd.readouterr().err]
    assert not any("batching rule" in text for text in fallback), fallback
    expected = torch.stack([_reference64(geometry[6])(s, w, b) for s in stack])
    assert actual.shape == expected.shape
    _close(actual, expected, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_vmap_over_weights(device):
    # A batch of filters (an ensemble), and both operands batched.
    geometry = GEOMETRIES[0]
    x, w, b = _tensors(geometry, device)
    weights = torch.stack([w, torch.randn_like(w)])
    biases = torch.stack([b, torch.randn_like(b)])
    inputs = torch.stack([x, torch.randn_like(x)])
    fused, reference = _fused(geometry[6]), _reference64(geometry[6])
    actual = vmap(fused, in_dims=(None, 0, 0))(x, weights, biases)
    _close(actual, torch.stack([reference(x, w_, b_) for w_, b_ in zip(weights, biases)]),
           torch.float32)
    actual = vmap(fused)(inputs, weights, biases)
    _close(actual, torch.stack([reference(*a) for a in zip(inputs, weights, biases)]),
           torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_backward_through_vmap(device):
    # vmap outside autograd: the gradients of a vmapped layer reach its parameters and input.
    torch.manual_seed(0)
    layer = fusedconv.Conv2dHardSwishReLU(2, 3, 3, padding=1).to(device).double()
    reference = torch.nn.Conv2d(2, 3, 3, padding=1).to(device).double()
    reference.load_state_dict(layer.state_dict())
    stack = torch.randn(2, 3, 2, 5, 5, device=device, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 3, 3, 5, 5, device=device, dtype=torch.float64)
    actual = torch.autograd.grad(vmap(layer)(stack), [stack, layer.weight, layer.bias],
                                 upstream)
    expected = torch.autograd.grad(
        torch.relu(F.hardswish(reference(stack.flatten(0, 1)))).unflatten(0, (2, 3)),
        [stack, reference.weight, reference.bias], upstream)
    for a, e in zip(actual, expected):
        _close(a, e, torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_per_sample_gradients_of_the_module(device):
    # The differential-privacy pattern: vmap(grad(loss)) over single samples with
    # functional_call, against a loop of ordinary backward passes through the unfused Model.
    torch.manual_seed(0)
    fused = fusedconv.ModelNew(3, 4, 3).to(device).double()
    reference = fusedconv.reference.Model(3, 4, 3).to(device).double()
    reference.load_state_dict(fused.state_dict())
    x = torch.randn(5, 3, 8, 8, device=device, dtype=torch.float64)
    target = torch.randn(5, 4, 6, 6, device=device, dtype=torch.float64)
    params = {k: v.detach() for k, v in fused.named_parameters()}

    def loss(params, sample, sample_target):
        out = functional_call(fused, params, (sample.unsqueeze(0),))
        return F.mse_loss(out, sample_target.unsqueeze(0))

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, target)
    for i in range(x.shape[0]):
        reference.zero_grad()
        F.mse_loss(reference(x[i:i + 1]), target[i:i + 1]).backward()
        for name, parameter in reference.named_parameters():
            _close(per_sample[name][i], parameter.grad, torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_bad_input_under_a_transform_names_the_argument(device):
    x, w, b = _tensors(GEOMETRIES[0], device)
    with pytest.raises(ValueError, match="bias of shape"):
        grad(lambda x: fusedconv.conv2d_hardswish_relu(x, w, b[:-1]).sum())(x)


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_training_keeps_the_fused_operator(device):
    # AOTAutograd traces without functorch transforms on the stack: the compiled step runs the
    # fused forward and backward ops, not the composite.
    torch._dynamo.reset()
    model = fusedconv.ModelNew(3, 4, 3).to(device)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, 8, 8, device=device, requires_grad=True)
    with torch.profiler.profile() as profile:
        compiled(x).sum().backward()
    names = {event.name for event in profile.events()}
    assert "fusedconv::conv2d_hardswish_relu" in names, sorted(names)
    assert "fusedconv::conv2d_hardswish_relu_backward" in names, sorted(names)
    assert "aten::hardswish" not in names


@pytest.mark.parametrize("device", DEVICES)
def test_outside_transforms_the_autograd_function_still_runs(device):
    # The decomposition is for transforms only: an ordinary backward keeps saving x, W and y
    # (the custom node), not the reference's intermediate tensors.
    x, w, b = _tensors(GEOMETRIES[0], device)
    x.requires_grad_()
    y = fusedconv.conv2d_hardswish_relu(x, w, b, padding=1)
    assert "Conv2dHardSwishReLUFunction" in y.grad_fn.name(), y.grad_fn.name()
