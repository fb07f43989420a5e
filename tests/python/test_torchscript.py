"""torch.jit.script of Conv2dHardSwishReLU and ModelNew, as nn.Conv2d scripts: the scripted
module calls torch.ops.fusedconv.conv2d_hardswish_relu with the module's own arguments, and
saves and loads like any TorchScript module."""

import io
import subprocess
import sys

import pytest
import torch

import fusedconv
from fusedconv.reference import reference_float64

from conftest import DEVICES

# nn.Conv2d arguments: every padding form, padding modes, groups, strides and dilation.
MODULES = [
    dict(padding=1),
    dict(padding="same", kernel_size=4),
    dict(padding="valid"),
    dict(padding=(2, 1), stride=(2, 1), dilation=(1, 2)),
    dict(padding=1, padding_mode="reflect", bias=False),
    dict(padding=1, groups=2),
]


def _module(arguments, device):
    arguments = dict(arguments)
    kernel_size = arguments.pop("kernel_size", 3)
    return fusedconv.Conv2dHardSwishReLU(4, 6, kernel_size, **arguments).to(device)


def _expected(module, x):
    # The unfused float64 result of the module's own convolution (padding modes included).
    conv = torch.nn.Conv2d(4, 6, module.kernel_size, stride=module.stride,
                           padding=module.padding, dilation=module.dilation,
                           groups=module.groups, bias=module.bias is not None,
                           padding_mode=module.padding_mode).to(x.device)
    conv.load_state_dict(module.state_dict())
    if module.padding_mode != "zeros":
        x = torch.nn.functional.pad(x, conv._reversed_padding_repeated_twice,
                                    mode=module.padding_mode)
        padding = 0
    else:
        padding = module.padding
    return reference_float64(x, conv.weight, conv.bias, module.stride, padding, module.dilation,
                             module.groups)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arguments", MODULES, ids=lambda a: "-".join(
    "%s=%s" % item for item in a.items()))
def test_scripted_module_matches_float64_reference(device, arguments):
    module = _module(arguments, device)
    scripted = torch.jit.script(module)
    x = torch.randn(2, 4, 11, 10, device=device)
    expected = _expected(module, x)
    actual = scripted(x)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual.double(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(actual, module(x), rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_scripting_takes_the_attribute_forms_nn_conv2d_takes(device):
    # One-element sequences in the constructor, ints set afterwards: the eager module and
    # nn.Conv2d take them; the scripted module gets the pairs, the module keeps its own values.
    constructed = fusedconv.Conv2dHardSwishReLU(4, 6, 3, stride=(2,), padding=(1,),
                                                dilation=[2]).to(device)
    modified = _module(dict(padding=1), device)
    modified.padding, modified.stride = 2, 2
    model = fusedconv.ModelNew(4, 6, 3).to(device)
    model.conv.padding = 1
    x = torch.randn(2, 4, 11, 10, device=device)
    for module in (constructed, modified, model):
        before = {name: getattr(module, name, None) for name in ("stride", "padding")}
        actual = torch.jit.script(module)(x)
        assert {name: getattr(module, name, None) for name in before} == before
        torch.testing.assert_close(actual, module(x), rtol=0, atol=0)
    conv = model.conv
    torch.testing.assert_close(torch.jit.script(model)(x).double(),
                               reference_float64(x, conv.weight, conv.bias, padding=1),
                               rtol=1e-4, atol=1e-5)
    assert model.conv.padding == 1


@pytest.mark.parametrize("device", DEVICES)
def test_scripted_module_takes_unbatched_and_channels_last_inputs(device):
    module = _module(dict(padding=1), device)
    scripted = torch.jit.script(module)
    x = torch.randn(4, 9, 8, device=device)
    torch.testing.assert_close(scripted(x).double(), _expected(module, x[None])[0], rtol=1e-4,
                               atol=1e-5)
    x = torch.randn(2, 4, 9, 8, device=device).contiguous(memory_format=torch.channels_last)
    out = scripted(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.double(), _expected(module, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_scripted_module_backward_matches_the_module(device):
    module = _module(dict(padding=1, groups=2), device)
    scripted = torch.jit.script(module)
    x = torch.randn(2, 4, 7, 7, device=device, requires_grad=True)
    upstream = torch.randn(2, 6, 7, 7, device=device)
    grads = torch.autograd.grad(scripted(x), [x, module.weight, module.bias], upstream)
    expected = torch.autograd.grad(module(x), [x, module.weight, module.bias], upstream)
    assert any(g.abs().max() > 0 for g in expected)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_scripted_model_new_saves_and_loads(device):
    torch.manual_seed(0)
    model = fusedconv.ModelNew(3, 8, 3).to(device)
    model.allow_tf32 = False  # read when scripted
    x = torch.randn(2, 3, 12, 12, device=device)
    scripted = torch.jit.script(model)
    assert ", False, )" in scripted.code  # the constant the op call receives
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer, map_location=device)
    assert list(loaded.state_dict()) == ["conv.weight", "conv.bias"]
    expected = reference_float64(x, model.conv.weight, model.conv.bias)
    torch.testing.assert_close(loaded(x).double(), expected, rtol=1e-4, atol=1e-5)


SCRIPT_FIRST = """
import sys, torch, torch.nn.functional as F, fusedconv
model = torch.jit.script(fusedconv.ModelNew(3, 4, 3).to(sys.argv[1]))
x = torch.randn(1, 3, 6, 6, device=sys.argv[1])
expected = torch.relu(F.hardswish(model.conv(x)))
assert expected.max() > 0 and torch.allclose(model(x), expected, rtol=1e-4, atol=1e-5)
print("ok")
"""


@pytest.mark.parametrize("device", DEVICES)
def test_scripting_first_in_a_fresh_process_loads_the_operator(device):
    # Scripting resolves torch.ops.fusedconv.*: the library loads then (a load of this session's
    # build), even before any forward call.
    result = subprocess.run([sys.executable, "-c", SCRIPT_FIRST, device], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
