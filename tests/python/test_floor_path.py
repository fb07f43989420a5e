"""The CUDA floor path (csrc/torch/ops_cuda.cpp, floor_forward): where no fused kernel applies
(channels_last, strided views, groups and depthwise, float64, float16/bfloat16 off Hopper's
resident shapes), PyTorch's own convolution plus one in-place activation pass. Checked against
float64 on fresh random inputs, for the kernels it launches (never the generic one), the output's
strides (F.conv2d's), NaN propagation and the backward."""

import pytest
import torch
import torch.nn.functional as F

import fusedconv
from fusedconv.reference import reference_float64, reference_forward, relative_l2_error

from conftest import assert_close_with_nonfinite, cuda_kernel_names

pytestmark = pytest.mark.cuda


@pytest.fixture(autouse=True)
def _floor_policy():
    # The floor wherever it could run (a depthwise call would take the depthwise kernel).
    previous = torch.ops.fusedconv._plan_policy("floor")
    yield
    torch.ops.fusedconv._plan_policy(previous)


# Relative L2 error against float64: float32 with TF32 disallowed as for every other path;
# float16 / bfloat16 within twice eager PyTorch's own error in that dtype (checked separately).
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}

# (batch, in, out, size, kernel, keyword arguments): real-network layer kinds at small sizes.
CONFIGS = [
    (2, 16, 32, 14, 1, {}),                                        # 1x1 expand
    (2, 24, 24, 15, 3, {"padding": 1, "groups": 24}),              # depthwise 3x3
    (2, 16, 32, 15, 5, {"padding": 2, "groups": 16}),              # depthwise, multiplier 2
    (2, 8, 16, 17, 3, {"stride": 2, "padding": 1}),                # strided stem
    (2, 12, 18, 13, 3, {"padding": 2, "dilation": 2, "groups": 3}),  # grouped, dilated
    (1, 6, 20, 12, 4, {"padding": "same"}),                        # asymmetric padding
    (0, 8, 16, 9, 3, {"padding": 1}),                              # empty batch
]
LAYOUTS = ["channels_last", "strided_view"]


def _inputs(config, dtype, layout):
    n, cin, cout, size, kernel, kwargs = config
    groups = kwargs.get("groups", 1)
    x = torch.randn(n, cin, size, size + 3, device="cuda", dtype=dtype)
    weight = torch.randn(cout, cin // groups, kernel, kernel, device="cuda", dtype=dtype) * 0.3
    bias = torch.randn(cout, device="cuda", dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        weight = weight.contiguous(memory_format=torch.channels_last)
    else:  # every other column of a wider tensor: not dense
        wide = torch.randn(n, cin, size, 2 * (size + 3), device="cuda", dtype=dtype)
        x = wide[..., ::2]
    return x, weight, bias, kwargs


def _label(config):
    return "%dx%dx%dx%dk%d%s" % (config[:5] + ("".join(sorted(config[5])),))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("config", CONFIGS, ids=_label)
def test_floor_matches_float64(config, dtype, layout):
    torch.manual_seed(0)
    x, weight, bias, kwargs = _inputs(config, dtype, layout)
    actual = fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)
    expected = reference_float64(x, weight, bias, **kwargs)
    assert actual.dtype == dtype and actual.shape == expected.shape
    # The memory format F.conv2d gives (the fake kernel reports the same).
    assert actual.stride() == reference_forward(x, weight, bias, **kwargs).stride()
    if actual.numel():
        assert relative_l2_error(actual, expected) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("config", CONFIGS[:-1], ids=_label)
def test_floor_half_precision_no_worse_than_eager(config, dtype):
    torch.manual_seed(1)
    x, weight, bias, kwargs = _inputs(config, dtype, "channels_last")
    expected = reference_float64(x, weight, bias, **kwargs)
    ours = relative_l2_error(fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs), expected)
    eager = relative_l2_error(reference_forward(x, weight, bias, **kwargs), expected)
    assert ours <= 2 * eager + 1e-3, (ours, eager)


def test_floor_launches_no_generic_kernel():
    x, weight, bias, kwargs = _inputs(CONFIGS[1], torch.float32, "channels_last")
    names = cuda_kernel_names(lambda: fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs))
    assert any("hardswish_relu_inplace_kernel" in name for name in names), names
    assert not any("generic_kernel" in name for name in names), names


@pytest.mark.parametrize("layout", LAYOUTS)
def test_floor_adds_the_bias_in_its_activation_pass(layout):
    # cuDNN's path in ATen adds the bias in a separate pass; the floor passes the bias to its
    # own activation pass instead: the convolution and one pass, no add kernel.
    x, weight, bias, kwargs = _inputs(CONFIGS[0], torch.float32, layout)
    names = cuda_kernel_names(lambda: fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs))
    assert sum("hardswish_relu_inplace_kernel" in name for name in names) == 1, names
    assert not any("functor_add" in name.lower() for name in names), names


def test_floor_tf32_mode_is_within_tf32_error():
    torch.manual_seed(2)
    x, weight, bias, kwargs = _inputs(CONFIGS[0], torch.float32, "channels_last")
    actual = fusedconv.conv2d_hardswish_relu(x, weight, bias, allow_tf32=True, **kwargs)
    assert relative_l2_error(actual, reference_float64(x, weight, bias, **kwargs)) <= 5e-4


def test_floor_propagates_nan():
    torch.manual_seed(3)
    x, weight, bias, kwargs = _inputs(CONFIGS[1], torch.float32, "channels_last")
    x[0, 3, 4, 5] = float("nan")
    actual = fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)
    expected = reference_float64(x, weight, bias, **kwargs)
    assert_close_with_nonfinite(actual, expected, rtol=1e-4, atol=1e-5)
    eager = torch.relu(F.hardswish(F.conv2d(x, weight, bias, **kwargs)))
    assert torch.equal(actual.isnan(), eager.isnan())


def test_floor_backward_matches_float64():
    torch.manual_seed(4)
    x, weight, bias, kwargs = _inputs(CONFIGS[2], torch.float64, "channels_last")
    x.requires_grad_(True)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    y = fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)
    expected = reference_float64(x, weight, bias, **kwargs)
    grad = torch.randn_like(y)
    actual = torch.autograd.grad(y, (x, weight, bias), grad)
    wanted = torch.autograd.grad(expected, (x, weight, bias), grad)
    for a, e in zip(actual, wanted):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10)
