"""Conv2dHardSwishReLU and ModelNew as drop-ins: parameters, initialisation, state_dicts,
every nn.Conv2d argument, training."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fusedconv
from fusedconv.kernelbench.problems import KERNELBENCH_V0_1
from fusedconv.reference import Model, reference_float64, relative_l2_error

from conftest import DEVICES


def _reference_module_forward(conv, x):
    return torch.relu(F.hardswish(conv(x)))


@pytest.mark.parametrize("seed", [0, 1234])
def test_model_new_draws_the_reference_models_weights(seed):
    torch.manual_seed(seed)
    reference = Model(8, 64, 3)
    torch.manual_seed(seed)
    ours = fusedconv.ModelNew(8, 64, 3)
    keys = ["conv.weight", "conv.bias"]
    assert list(ours.state_dict()) == list(reference.state_dict()) == keys
    for key, value in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


def test_model_new_leaves_the_rng_where_the_reference_does():
    torch.manual_seed(7)
    Model(3, 16, 3)
    after_reference = torch.rand(4)
    torch.manual_seed(7)
    fusedconv.ModelNew(3, 16, 3)
    assert torch.equal(torch.rand(4), after_reference)


@pytest.mark.parametrize("device", DEVICES)
def test_model_new_matches_reference_and_state_dicts_move_both_ways(device):
    torch.manual_seed(0)
    reference = Model(3, 16, 3).to(device)
    ours = fusedconv.ModelNew(3, 16, 3).to(device)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(4, 3, 32, 32, device=device)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        ours.conv.weight.mul_(0.5)
    reference.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-5)


MODULE_CONFIGS = [
    dict(in_channels=4, out_channels=6, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, padding=1, bias=False),
    dict(in_channels=6, out_channels=9, kernel_size=3, padding="same", dilation=2, groups=3),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=2, padding_mode="reflect"),
    dict(in_channels=4, out_channels=5, kernel_size=3, padding=(1, 2), padding_mode="circular"),
    dict(in_channels=4, out_channels=5, kernel_size=4, padding="same",
         padding_mode="replicate"),
    # One-element sequences, which nn.Conv2d keeps as given and F.conv2d applies to both axes.
    dict(in_channels=4, out_channels=5, kernel_size=3, stride=[2], padding=(1,), dilation=[2]),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("config", MODULE_CONFIGS, ids=lambda c: str(sorted(c.items()))[:60])
def test_conv2d_hardswish_relu_module_is_an_nn_conv2d_drop_in(device, config):
    torch.manual_seed(3)
    reference = nn.Conv2d(**config).to(device)
    torch.manual_seed(3)
    ours = fusedconv.Conv2dHardSwishReLU(**config).to(device)
    assert isinstance(ours, nn.Conv2d)
    assert list(ours.state_dict()) == list(reference.state_dict())
    for key, value in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    x = torch.randn(2, config["in_channels"], 11, 12, device=device, requires_grad=True)
    out = ours(x)
    expected = _reference_module_forward(reference, x)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    grad = torch.randn_like(out)
    ours_grads = torch.autograd.grad(out, [x] + list(ours.parameters()), grad)
    reference_grads = torch.autograd.grad(expected, [x] + list(reference.parameters()), grad)
    for a, e in zip(ours_grads, reference_grads):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_training_steps_track_the_reference(device):
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Hardswish(), nn.ReLU(),
                              nn.Flatten(), nn.Linear(8 * 10 * 10, 5)).to(device)
    ours = nn.Sequential(fusedconv.Conv2dHardSwishReLU(3, 8, 3, padding=1), nn.Flatten(),
                         nn.Linear(8 * 10 * 10, 5)).to(device)
    ours[0].load_state_dict(reference[0].state_dict())
    ours[2].load_state_dict(reference[4].state_dict())
    opt_ref = torch.optim.SGD(reference.parameters(), lr=0.1)
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.1)
    for _ in range(4):
        x = torch.randn(6, 3, 10, 10, device=device)
        target = torch.randint(0, 5, (6,), device=device)
        for model, opt in ((reference, opt_ref), (ours, opt_ours)):
            opt.zero_grad()
            F.cross_entropy(model(x), target).backward()
            opt.step()
    torch.testing.assert_close(ours[0].weight, reference[0].weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours[0].bias, reference[0].bias, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
def test_kernelbench_v0_1_shape_on_gpu():
    problem = KERNELBENCH_V0_1
    init_inputs = (problem.in_channels, problem.out_channels, problem.kernel_size)
    torch.manual_seed(0)
    model = fusedconv.ModelNew(*init_inputs).cuda()
    x = problem.make_input("cuda")
    out = model(x)
    expected = reference_float64(x, model.conv.weight, model.conv.bias)
    assert relative_l2_error(out, expected) < 1e-5
    reference = Model(*init_inputs).cuda()
    reference.load_state_dict(model.state_dict())
    # KernelBench's own criterion, on top of the float64 check above.
    assert torch.allclose(out, reference(x), atol=1e-2, rtol=1e-2)


class _Doubled(nn.Module):
    def forward(self, weight):
        return 2 * weight


@pytest.mark.parametrize("device", DEVICES)
def test_reparametrized_weights_reach_the_operator(device):
    # The modules read weight and bias from _parameters where they are registered; a
    # parametrization (or weight_norm) moves them, and the module must then use what the
    # attribute computes.
    torch.manual_seed(5)
    module = fusedconv.Conv2dHardSwishReLU(3, 5, 3, padding=1).to(device)
    model = fusedconv.ModelNew(3, 5, 3).to(device)
    x = torch.randn(2, 3, 8, 8, device=device)
    expected = reference_float64(x, 2 * module.weight, module.bias, padding=1)
    expected_model = reference_float64(x, 2 * model.conv.weight, model.conv.bias)
    torch.nn.utils.parametrize.register_parametrization(module, "weight", _Doubled())
    torch.nn.utils.parametrize.register_parametrization(model.conv, "weight", _Doubled())
    for actual, wanted in ((module(x), expected), (model(x), expected_model)):
        assert relative_l2_error(actual, wanted) <= 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("attribute", ["stride", "dilation", "padding"])
def test_attributes_set_as_ints_after_construction(device, attribute):
    # nn.Conv2d accepts `conv.stride = 2` (F.conv2d takes an int); so must the fused modules.
    torch.manual_seed(6)
    conv = nn.Conv2d(4, 6, 3).to(device)
    module = fusedconv.Conv2dHardSwishReLU(4, 6, 3).to(device)
    module.load_state_dict(conv.state_dict())
    model = fusedconv.ModelNew(4, 6, 3).to(device)
    model.conv = conv
    for target in (conv, module):
        setattr(target, attribute, 2)
    x = torch.randn(2, 4, 11, 10, device=device)
    expected = torch.relu(F.hardswish(conv(x)))
    for actual in (module(x), model(x)):
        assert actual.shape == expected.shape
        assert relative_l2_error(actual, expected) <= 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_model_new_follows_a_swapped_convs_padding_mode(device, padding_mode):
    # ModelNew.conv is an nn.Conv2d; one swapped in with another padding mode pads as it would.
    torch.manual_seed(7)
    conv = nn.Conv2d(4, 6, 3, padding=1, padding_mode=padding_mode).to(device)
    reference, model = Model(4, 6, 3).to(device), fusedconv.ModelNew(4, 6, 3).to(device)
    reference.conv, model.conv = conv, conv
    x = torch.randn(2, 4, 8, 9, device=device)
    expected = reference(x)
    actual = model(x)
    assert actual.shape == expected.shape == (2, 6, 8, 9)
    assert relative_l2_error(actual, expected) <= 1e-5
