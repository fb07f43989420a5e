"""The small-problem backward (csrc/cuda/backward/small_backward.cu: grad_input, grad_weight and
grad_bias of the small-problem forward's domain, up to 16 output channels and 32 inputs per
position, in one launch; its 3x3 stride-1 layers by bands of rows, small_backward_bands.cu):
planned up to 2^22 multiply-adds by the measured policy (2^28 by bands), wherever it applies by
the "fused" one (this file's); every gradient against float64 on poisoned outputs, over
compile-time (3x3, 1x1) and run-time geometries, one and many weight-role CTAs per channel, one
and two levels of band sums; which of the two kernels runs; exactly the gradients asked for;
bitwise determinism; and g = 0 where relu is closed, whatever grad_output holds there."""

import itertools

import pytest
import torch
import torch.nn.functional as F

import fusedconv
from fusedconv.reference import reference_gradients_float64, relative_l2_error

from conftest import cuda_kernel_names, poisoned_call

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("fused_kernels")]

KERNEL = "small_backward_kernel"
BANDS_KERNEL = "small_backward_bands_kernel"
TOLERANCE = 1e-5  # float32 FMAs: the float32 bound of the other backward kernels

# (batch, in_channels, out_channels, height, width, kernel, stride, padding, dilation). The
# positions kernel: v0's channels at stride (1, 2) on a smaller batch (the 3x3 instance);
# strided, padded, dilated and rectangular run-time geometries; 1x1 over 32 channels (the 1x1
# instance) and 5x5 over one (kMaxK both); 1x1 at stride 2 (input pixels no output reads); one
# output channel; batches whose positions give each channel many weight-role CTAs, in the 3x3
# (strided) and the 1x1 instance. The bands kernel (3x3, stride 1, no dilation, padding up to 2):
# v0's channels on batch 4, and on batch 64 (512 CTAs); 388 CTAs, two levels of sums with a
# partial last group; padding 2 by rows and 1 by columns; padding 2 on a plane as narrow as the
# kernel; an image of fewer rows than a band's least, and one of 2 rows; 256 CTAs of one level.
# Then planes too wide for a band in shared memory, which the positions kernel takes: 150
# columns, and 404 (a band of all 4 rows needs 49,144 bytes: within 48 KB alone, not with the
# kernel's static 16).
CASES = [
    (4, 3, 16, 32, 32, (3, 3), (1, 2), (0, 0), (1, 1)),
    (3, 2, 5, 17, 23, (3, 3), (2, 1), (1, 0), (1, 1)),
    (2, 5, 7, 13, 11, (2, 3), (1, 2), (1, 1), (2, 1)),
    (2, 32, 16, 9, 10, (1, 1), (1, 1), (0, 0), (1, 1)),
    (2, 1, 9, 12, 12, (5, 5), (3, 3), (2, 2), (1, 1)),
    (3, 8, 4, 9, 9, (1, 1), (2, 2), (0, 0), (1, 1)),
    (1, 3, 1, 8, 40, (3, 3), (1, 1), (1, 1), (2, 2)),
    (64, 3, 16, 32, 32, (3, 3), (1, 2), (1, 1), (1, 1)),
    (40, 32, 16, 20, 20, (1, 1), (1, 1), (0, 0), (1, 1)),
    (4, 3, 16, 32, 32, (3, 3), (1, 1), (0, 0), (1, 1)),
    (64, 3, 16, 32, 32, (3, 3), (1, 1), (1, 1), (1, 1)),
    (97, 3, 16, 16, 16, (3, 3), (1, 1), (1, 1), (1, 1)),
    (5, 1, 2, 12, 4, (3, 3), (1, 1), (2, 1), (1, 1)),
    (2, 2, 3, 4, 3, (3, 3), (1, 1), (2, 2), (1, 1)),
    (1, 3, 2, 3, 4, (3, 3), (1, 1), (1, 1), (1, 1)),
    (3, 2, 4, 2, 5, (3, 3), (1, 1), (1, 1), (1, 1)),
    (16, 3, 16, 64, 64, (3, 3), (1, 1), (1, 1), (1, 1)),
    (2, 3, 16, 6, 150, (3, 3), (1, 1), (1, 1), (1, 1)),
    (1, 1, 4, 4, 404, (3, 3), (1, 1), (1, 1), (1, 1)),
]
BANDS_CASE = CASES[9]
TWO_LEVEL_CASE = CASES[11]  # two levels on GPUs of 78 or more SMs (H100, H200)


def _kernel_of(case):
    """The kernel small_backward.cu launches: bands for 3x3 stride 1, no dilation, padding up to
    2, where a band of at least 4 rows (or the whole plane) fits in 47 KB of shared memory. A
    stand-in for small_backward_bands::applies that holds for CASES (on 78-132 SMs): the two
    planes 150 and 404 wide are the ones that do not fit."""
    batch, cin, cout, height, width, kernel, stride, padding, dilation = case
    fits = width < 100
    if kernel == (3, 3) and stride == (1, 1) and dilation == (1, 1) and max(padding) <= 2 \
            and fits:
        return BANDS_KERNEL
    return KERNEL


def _layer(case, seed):
    batch, cin, cout, height, width, kernel, stride, padding, dilation = case
    generator = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(batch, cin, height, width, device="cuda", generator=generator)
    weight = torch.randn(cout, cin, *kernel, device="cuda", generator=generator)
    weight /= (cin * kernel[0] * kernel[1]) ** 0.5
    bias = torch.randn(cout, device="cuda", generator=generator)
    geometry = dict(stride=stride, padding=padding, dilation=dilation)
    y = fusedconv.conv2d_hardswish_relu(x, weight, bias, **geometry)
    grad_y = torch.randn(y.shape, device="cuda", generator=generator)
    return x, weight, bias, y, grad_y, geometry


def _op_arguments(geometry):
    pad_h, pad_w = geometry["padding"]
    return (list(geometry["stride"]), [pad_h, pad_h, pad_w, pad_w], list(geometry["dilation"]),
            1)


def _backward(grad_y, x, weight, y, geometry, mask=(True, True, True)):
    return torch.ops.fusedconv.conv2d_hardswish_relu_backward(
        grad_y, x, weight, y, *_op_arguments(geometry), list(mask))


def _check(grads, expected, grad_y, mask=(True, True, True)):
    for name, wanted, actual, reference in zip(("input", "weight", "bias"), mask, grads,
                                               expected):
        if not wanted:
            assert actual.numel() == 0, name
            continue
        assert actual.shape == reference.shape and not actual.isnan().any(), name
        if name == "bias":  # a sum over every output: held to 1e-5 of its terms' magnitude
            magnitude = 1.5 * grad_y.double().abs().sum(dim=(0, 2, 3))
            assert bool(((actual.double() - reference).abs() <= TOLERANCE * magnitude).all())
        else:
            assert relative_l2_error(actual, reference) <= TOLERANCE, name


@pytest.mark.parametrize("case", CASES, ids=str)
def test_small_backward_against_float64(case):
    x, weight, bias, y, grad_y, geometry = _layer(case, seed=sum(case[:5]))
    plan_arguments = (grad_y, x, weight, y) + _op_arguments(geometry) + ([True] * 3,)
    assert torch.ops.fusedconv._plan_backward(*plan_arguments) == "small_problem"
    names = cuda_kernel_names(lambda: _backward(grad_y, x, weight, y, geometry))
    expected_kernel = _kernel_of(case)
    other_kernel = KERNEL if expected_kernel == BANDS_KERNEL else BANDS_KERNEL
    assert any(expected_kernel in n for n in names), names
    assert not any(other_kernel in n for n in names), names
    assert not any("cudnn" in n.lower() or "hardswish_relu_grad" in n for n in names), names
    grads = poisoned_call(lambda: _backward(grad_y, x, weight, y, geometry), torch.float32,
                          "cuda")
    expected = reference_gradients_float64(x, weight, bias, grad_y, y, **geometry)
    _check(grads, expected, grad_y)


@pytest.mark.parametrize("mask", [m for m in itertools.product([True, False], repeat=3)
                                  if any(m)], ids=str)
@pytest.mark.parametrize("case", [CASES[1], TWO_LEVEL_CASE], ids=str)
def test_small_backward_computes_exactly_the_requested_gradients(mask, case):
    x, weight, bias, y, grad_y, geometry = _layer(case, seed=11)
    grads = poisoned_call(lambda: _backward(grad_y, x, weight, y, geometry, mask),
                          torch.float32, "cuda")
    expected = reference_gradients_float64(x, weight, bias, grad_y, y, **geometry)
    _check(grads, expected, grad_y, mask)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[8], BANDS_CASE, TWO_LEVEL_CASE],
                         ids=str)
def test_small_backward_is_bitwise_deterministic(case):
    x, weight, bias, y, grad_y, geometry = _layer(case, seed=3)
    first = _backward(grad_y, x, weight, y, geometry)
    for _ in range(3):
        again = _backward(grad_y, x, weight, y, geometry)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


@pytest.mark.parametrize("case", [CASES[0], BANDS_CASE], ids=str)
def test_small_backward_zero_where_relu_is_closed_even_for_infinite_grad_output(case):
    x, weight, bias, y, grad_y, geometry = _layer(case, seed=5)
    closed = y <= 0
    assert closed.any() and not closed.all()
    grad_y = torch.where(closed, torch.full_like(grad_y, float("inf")), grad_y)
    grads = _backward(grad_y, x, weight, y, geometry)
    assert all(bool(g.isfinite().all()) for g in grads)
    finite_grad_y = torch.where(closed, torch.zeros_like(grad_y), grad_y)
    expected = reference_gradients_float64(x, weight, bias, finite_grad_y, y, **geometry)
    _check(grads, expected, finite_grad_y)


def test_small_backward_through_autograd_matches_float64():
    # The module's training step: autograd's backward node reaches the kernel.
    x, weight, bias, _, _, geometry = _layer(BANDS_CASE, seed=9)
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    y = fusedconv.conv2d_hardswish_relu(*leaves, **geometry)
    grad_y = torch.randn_like(y)
    names = cuda_kernel_names(lambda: torch.autograd.grad(y, leaves, grad_y, retain_graph=True))
    assert any(BANDS_KERNEL in n for n in names), names
    grads = torch.autograd.grad(y, leaves, grad_y)
    _check(grads, reference_gradients_float64(x, weight, bias, grad_y, y, **geometry), grad_y)


@pytest.mark.parametrize("pads", [(0, 2, 1, 0), (2, 0, 0, 2), (1, 2, 2, 1)], ids=str)
def test_bands_with_asymmetric_padding_against_float64(pads):
    # The op's padding is (top, bottom, left, right); the bands kernel takes the bottom and right
    # padding from the output's size alone.
    generator = torch.Generator(device="cuda").manual_seed(sum(pads))
    x = torch.randn(3, 2, 9, 7, device="cuda", generator=generator)
    weight = torch.randn(5, 2, 3, 3, device="cuda", generator=generator) / 18 ** 0.5
    bias = torch.randn(5, device="cuda", generator=generator)
    geometry = ([1, 1], list(pads), [1, 1], 1)
    y = torch.ops.fusedconv.conv2d_hardswish_relu(x, weight, bias, *geometry, None)
    grad_y = torch.randn(y.shape, device="cuda", generator=generator)

    def backward():
        return torch.ops.fusedconv.conv2d_hardswish_relu_backward(grad_y, x, weight, y, *geometry,
                                                                  [True] * 3)
    names = cuda_kernel_names(backward)
    assert any(BANDS_KERNEL in n for n in names), names
    grads = poisoned_call(backward, torch.float32, "cuda")
    top, bottom, left, right = pads
    expected = reference_gradients_float64(F.pad(x, (left, right, top, bottom)), weight, bias,
                                           grad_y, y)
    expected[0] = expected[0][:, :, top:top + x.shape[2], left:left + x.shape[3]]
    _check(grads, expected, grad_y)


def test_small_backward_of_a_sum_reads_the_expanded_grad_output():
    # y.sum()'s gradient is a zero-stride expanded tensor: the operator makes it dense first.
    x, weight, bias, _, _, geometry = _layer(CASES[1], seed=13)
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    y = fusedconv.conv2d_hardswish_relu(*leaves, **geometry)
    grads = torch.autograd.grad(y.sum(), leaves)
    ones = torch.ones_like(y)
    _check(grads, reference_gradients_float64(x, weight, bias, ones, y, **geometry), ones)


def _measured_plan(batch, cin, cout, size, kernel):
    x = torch.randn(batch, cin, size, size, device="cuda")
    weight = torch.randn(cout, cin, kernel, kernel, device="cuda")
    y = fusedconv.conv2d_hardswish_relu(x, weight, None)
    arguments = (torch.randn_like(y), x, weight, y, [1, 1], [0] * 4, [1, 1], 1, [True] * 3)
    previous = torch.ops.fusedconv._plan_policy("measured")
    try:
        return torch.ops.fusedconv._plan_backward(*arguments)
    finally:
        torch.ops.fusedconv._plan_policy(previous)


def test_measured_policy_plans_the_small_backward_up_to_its_crossover():
    # Up to 2^22 multiply-adds (backward_plan.cu): 32 x 32 x 32 positions of 8 -> 16 1x1 is
    # exactly 2^22, one image more is past it. By bands (3x3 stride 1) up to 2^28: KernelBench's
    # v0 (batch 128, 50M) is in, batch 1024 (398M) is past it, and 112 x 112 planes of 16 output
    # channels (no band fits in 48 KB) stop at 2^22.
    assert _measured_plan(32, 8, 16, 32, 1) == "small_problem"
    assert _measured_plan(33, 8, 16, 32, 1).startswith("floor")
    assert _measured_plan(4, 3, 16, 32, 3) == "small_problem"
    assert _measured_plan(128, 3, 16, 32, 3) == "small_problem"
    assert _measured_plan(1024, 3, 16, 32, 3).startswith("floor")
    assert _measured_plan(32, 3, 16, 112, 3).startswith("floor")


def test_small_backward_leaves_wider_problems_to_the_other_kernels():
    # 17 output channels, or 33 inputs per position: outside the domain.
    for cin, cout, kernel in ((3, 17, 3), (4, 16, 3)):
        x = torch.randn(2, cin, 10, 10, device="cuda")
        weight = torch.randn(cout, cin, kernel, kernel, device="cuda")
        y = fusedconv.conv2d_hardswish_relu(x, weight, None)
        arguments = (torch.randn_like(y), x, weight, y, [1, 1], [0] * 4, [1, 1], 1, [True] * 3)
        assert torch.ops.fusedconv._plan_backward(*arguments) != "small_problem"
