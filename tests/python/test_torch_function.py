"""__torch_function__ of the arguments, as F.conv2d honours it: torch.fx.symbolic_trace records
the fused call as one node (the modules and the functional), and tensor subclasses come back as
themselves."""

import pytest
import torch
from torch import nn

import fusedconv
from fusedconv.reference import reference_float64

from conftest import DEVICES


def _fused_nodes(graph_module):
    return [node for node in graph_module.graph.nodes
            if node.op == "call_function" and node.target is fusedconv.conv2d_hardswish_relu]


class _UserNet(nn.Module):
    """A network that calls the functional in its own forward."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 2, 3, 3) / 3)
        self.bias = nn.Parameter(torch.randn(6))

    def forward(self, x):
        return fusedconv.conv2d_hardswish_relu(x, self.weight, self.bias, stride=2,
                                               padding="valid", groups=2).flatten(1)


@pytest.mark.parametrize("device", DEVICES)
def test_fx_symbolic_trace_records_one_fused_call(device):
    layer = fusedconv.Conv2dHardSwishReLU(4, 6, 4, padding="same", groups=2)
    model = fusedconv.ModelNew(4, 6, 3)
    cases = [(layer, lambda x: reference_float64(x, layer.weight, layer.bias, padding="same",
                                                 groups=2)),
             (model, lambda x: reference_float64(x, model.conv.weight, model.conv.bias)),
             (nn.Sequential(layer, nn.Flatten()),
              lambda x: reference_float64(x, layer.weight, layer.bias, padding="same",
                                          groups=2).flatten(1))]
    net = _UserNet()
    cases.append((net, lambda x: reference_float64(x, net.weight, net.bias, stride=2,
                                                   groups=2).flatten(1)))
    for module, reference in cases:
        module.to(device)
        traced = torch.fx.symbolic_trace(module)
        assert len(_fused_nodes(traced)) == 1, traced.code
        x = torch.randn(2, 4, 9, 10, device=device)
        actual = traced(x)
        torch.testing.assert_close(actual.double(), reference(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(actual, module(x), rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_subclass_comes_back_as_itself(device):
    class Tagged(torch.Tensor):
        pass

    layer = fusedconv.Conv2dHardSwishReLU(3, 5, 3, padding=1).to(device)
    x = torch.randn(2, 3, 6, 6, device=device)
    for out in (layer(x.as_subclass(Tagged)),
                fusedconv.conv2d_hardswish_relu(x.as_subclass(Tagged), layer.weight, layer.bias,
                                                padding=1)):
        assert type(out) is Tagged
        torch.testing.assert_close(out.as_subclass(torch.Tensor).double(),
                                   reference_float64(x, layer.weight, layer.bias, padding=1),
                                   rtol=1e-4, atol=1e-5)
