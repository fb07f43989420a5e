"""The depthwise candidate kernels, run here with torch.ops.fusedconv._depthwise_candidates("all")
(FUSEDCONV_DEPTHWISE_CANDIDATES=all); by default each runs where its measured rule says
(csrc/cuda/common/depthwise_candidates.h):
- the vector-row kernels (csrc/cuda/common/depthwise_rows.cuh, and the weight pass in
  csrc/cuda/backward/depthwise_backward.cu): dense NCHW, 'same'-padded 3x3 / 5x5 at stride 1 / 2,
  rows of whole 16-, 8- or 4-byte vectors, float32 / float16 / bfloat16;
- the channels_last vector kernels, forward (depthwise.cu) and grad_input
  (depthwise_backward_channels_last.cu), with their filters staged in shared memory
  (common/staged_filters.cuh), and the channels_last weight pass by sliding rows;
- NCHW grad_input and forward by whole planes in shared memory, for what the rows do not take
  (output planes, input planes of the forward, of up to 1024 elements), and the whole NCHW
  backward in one pass by blocks of planes there (under "all" it takes the planes grad_input's
  calls; that one runs here under the measured rule).

Checked: each runs exactly in its domain (the row kernels with the vector width the domain
picks); values against float64 on poisoned outputs; both forwards bitwise equal to the kernels
they replace (the same taps, skipped or not, in the same order); every gradient against float64
and against the gather kernels; NaN positions as the floor; bitwise determinism across
weight-pass slices; the switch's start value from the environment; under "measured", each
candidate runs exactly where the measured rule says."""

import os
import re
import subprocess
import sys

import pytest
import torch

import fusedconv
from fusedconv.reference import (reference_float64, reference_forward,
                                 reference_gradients_float64, relative_l2_error)

from conftest import cuda_kernel_names, depthwise_candidates, poisoned_call, with_floor_policy

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("fused_kernels", "candidate_kernels")]

FORWARD_KERNEL = "depthwise_rows_kernel"
TRANSPOSED_KERNEL = "depthwise_rows_transposed_kernel"
WEIGHT_KERNEL = "depthwise_wgrad_rows_kernel"
ELEMENT_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2}


@pytest.fixture
def candidate_kernels():
    with depthwise_candidates("all"):
        yield


def _without_candidates(fn):
    with depthwise_candidates("none"):
        return fn()


def _vector_bytes(out_width, dtype):
    """The domain's vector (depthwise_rows_domain.h, row_vector_bytes): the widest of 16, 8 and 4
    bytes that splits an output row into whole vectors of at least two elements."""
    for size in (16, 8, 4):
        elements = size // ELEMENT_BYTES[dtype]
        if elements >= 2 and out_width % elements == 0:
            return size
    return 0


def _ran(names, kernel, *arguments):
    """Whether `kernel` ran with these leading template arguments (demangled or mangled)."""
    demangled = kernel + "<"
    mangled = kernel + "I"
    text = ", ".join(str(a).lower() for a in arguments)
    code = "".join("Lb%dE" % a if isinstance(a, bool) else "Li%dE" % a for a in arguments)
    return any((demangled in name and text in name) or (mangled in name and code in name)
               for name in names)


# (kernel, stride, out_height, out_width, channels, multiplier, batch): every instance, vectors
# of 16, 8 and 4 bytes, a row of one vector, odd and single-row planes, partial row groups.
FLOAT32_CASES = [
    (3, 1, 9, 56, 8, 1, 2), (3, 1, 7, 14, 3, 2, 1), (3, 1, 1, 2, 5, 1, 3),
    (3, 2, 5, 28, 8, 1, 2), (3, 2, 4, 14, 3, 3, 1), (3, 2, 1, 8, 2, 1, 2),
    (5, 1, 13, 56, 8, 1, 2), (5, 1, 6, 2, 3, 2, 2), (5, 1, 3, 14, 5, 1, 1),
    (5, 2, 7, 28, 8, 1, 2), (5, 2, 2, 2, 3, 1, 1), (5, 2, 9, 6, 4, 2, 2),
]
HALF_CASES = [
    (3, 1, 9, 64, 8, 1, 2), (3, 1, 7, 12, 3, 2, 1), (3, 1, 5, 6, 5, 1, 2),
    (3, 2, 5, 16, 8, 1, 2), (3, 2, 3, 12, 3, 1, 1), (3, 2, 2, 2, 2, 2, 2),
    (5, 1, 13, 56, 8, 1, 2), (5, 1, 6, 4, 3, 1, 2), (5, 1, 1, 6, 5, 3, 1),
    (5, 2, 7, 28, 8, 1, 2), (5, 2, 4, 12, 3, 1, 1), (5, 2, 9, 2, 4, 1, 2),
]
CASES = ([(torch.float32, c) for c in FLOAT32_CASES] +
         [(dtype, c) for dtype in (torch.float16, torch.bfloat16) for c in HALF_CASES])
BACKWARD_CASES = [(dtype, c) for dtype, c in CASES if c[5] == 1]


def _layer(case, dtype, seed, bias=True):
    """x, weight, bias and F.conv2d's geometry of a case; the input's height is the output's
    times the stride, less one on every other case (odd input heights at stride 2)."""
    kernel, stride, out_height, out_width, channels, multiplier, batch = case
    generator = torch.Generator(device="cuda").manual_seed(seed)
    in_height = out_height * stride - (seed % 2 if stride == 2 else 0)
    x = torch.randn(batch, channels, in_height, out_width * stride, device="cuda", dtype=dtype,
                    generator=generator)
    weight = torch.randn(channels * multiplier, 1, kernel, kernel, device="cuda", dtype=dtype,
                         generator=generator) * 0.3
    b = (torch.randn(channels * multiplier, device="cuda", dtype=dtype, generator=generator)
         if bias else None)
    return x, weight, b, dict(stride=stride, padding=kernel // 2, groups=channels)


def _op_geometry(kwargs):
    stride, padding = kwargs["stride"], kwargs["padding"]
    return [stride] * 2, [padding] * 4, [1, 1], kwargs["groups"]


def _check_half(actual, expected, baseline, what):
    # As close to float64 as the floor's result, or within one unit in the last place of the
    # float64 result rounded to the type: a float32 sum rounded once can differ from the exact
    # one by that, which on a 4-element bias gradient is a relative L2 error of up to ~4e-3
    # whatever the floor's rounding happened to be.
    assert not actual.isnan().any(), what
    error, base = relative_l2_error(actual, expected), relative_l2_error(baseline, expected)
    if error > 1.2 * base + 1e-3:
        torch.testing.assert_close(actual.double(), expected.to(actual.dtype).double(),
                                   rtol=torch.finfo(actual.dtype).eps, atol=1e-5,
                                   msg=lambda message: "%s %s" % ((what, error, base), message))


@pytest.mark.parametrize("dtype,case", CASES, ids=str)
def test_rows_forward_in_its_domain_against_float64(dtype, case):
    x, weight, bias, kwargs = _layer(case, dtype, seed=sum(case), bias=case[0] == 3)

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)

    out_width = case[3]
    assert _ran(cuda_kernel_names(call), FORWARD_KERNEL, _vector_bytes(out_width, dtype),
                case[0], case[1], False), case
    actual = poisoned_call(call, dtype, "cuda")
    expected = reference_float64(x, weight, bias, **kwargs)
    assert actual.shape == expected.shape and actual.is_contiguous()
    if dtype == torch.float32:
        assert relative_l2_error(actual, expected) <= 1e-6, case
    else:
        _check_half(actual, expected, reference_forward(x, weight, bias, **kwargs), case)
    # The per-row kernel takes the same taps in the same order: the same bits.
    assert torch.equal(actual, _without_candidates(call)), case


@pytest.mark.parametrize("dtype,case", CASES[:12:3], ids=str)
def test_rows_forward_non_finite_as_the_per_row_kernel(dtype, case):
    # NaN / inf inputs, and non-finite weights whose taps fall on the zero padding at the
    # borders (skipped, as PyTorch's depthwise kernels do, so those outputs stay finite).
    x, weight, bias, kwargs = _layer(case, dtype, seed=5)
    x[0, 0, 0, 0] = float("nan")
    x[-1, -1, -1, -1] = float("inf")
    x[0, -1, x.shape[2] // 2, 1] = float("-inf")
    weight[0, 0, 0, 0] = float("inf")
    weight[-1, 0, -1, -1] = float("nan")

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)

    actual = call()
    assert actual.isnan().any() and not actual.isnan().all()
    torch.testing.assert_close(actual, _without_candidates(call), rtol=0, atol=0, equal_nan=True)


def _outside(name):
    """A call just outside the row domain, and the kernel that takes it instead."""
    x, weight, bias, kwargs = _layer((3, 1, 8, 16, 4, 1, 2), torch.float32, seed=3)
    if name == "kernel_7":
        weight = torch.randn(4, 1, 7, 7, device="cuda") * 0.2
        kwargs["padding"] = 3
    elif name == "odd_width":
        x = x[..., :15].contiguous()
    elif name == "odd_width_stride_2":
        x, kwargs["stride"] = x[..., :15].contiguous(), 2
    elif name == "padding_0":
        kwargs["padding"] = 0
    elif name == "dilation_2":
        kwargs.update(padding=2, dilation=2)
    elif name == "float64":
        x, weight, bias = x.double(), weight.double(), bias.double()
    elif name == "misaligned":  # dense, but 4 bytes past a 16-byte boundary
        storage = torch.empty(x.numel() + 1, device="cuda")
        x = storage[1:].view_as(x).copy_(x)
    return x, weight, bias, kwargs


@pytest.mark.parametrize("name", ["kernel_7", "odd_width", "odd_width_stride_2", "padding_0",
                                  "dilation_2", "float64", "misaligned"])
def test_rows_forward_leaves_other_calls_to_the_older_kernels(name):
    x, weight, bias, kwargs = _outside(name)

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)

    names = cuda_kernel_names(call)
    assert not any(FORWARD_KERNEL in n for n in names), (name, names)
    # Planes of 8 x 16 fit a warp: the planes candidate, but for float64 (the per-row kernel).
    other = PER_ROW_KERNEL if name == "float64" else PLANES_FORWARD_KERNEL
    assert any(other in n for n in names), (name, names)
    actual = poisoned_call(call, x.dtype, "cuda")
    tolerance = 1e-12 if x.dtype == torch.float64 else 1e-6
    assert relative_l2_error(actual, reference_float64(x, weight, bias, **kwargs)) <= tolerance


def _backward(grad_y, x, weight, y, kwargs, mask=(True, True, True)):
    return torch.ops.fusedconv.conv2d_hardswish_relu_backward(grad_y, x, weight, y,
                                                              *_op_geometry(kwargs), list(mask))


def _backward_case(dtype, case, seed):
    x, weight, bias, kwargs = _layer(case, dtype, seed)
    y = fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)
    # Seeded, so that the case does not depend on which tests ran before it in the process.
    generator = torch.Generator(device=y.device).manual_seed(seed + 1)
    grad_y = torch.randn(y.shape, device=y.device, dtype=y.dtype, generator=generator)
    assert torch.ops.fusedconv._plan_backward(grad_y, x, weight, y, *_op_geometry(kwargs),
                                              [True] * 3) == "depthwise"
    return x, weight, bias, kwargs, y, grad_y


@pytest.mark.parametrize("dtype,case", BACKWARD_CASES, ids=str)
def test_rows_backward_in_its_domain_against_float64(dtype, case):
    x, weight, bias, kwargs, y, grad_y = _backward_case(dtype, case, seed=len(case) + case[3])

    def call():
        return _backward(grad_y, x, weight, y, kwargs)

    names = cuda_kernel_names(call)
    vector = _vector_bytes(case[3], dtype)
    kernel, stride = case[0], case[1]
    if stride == 1:
        assert _ran(names, FORWARD_KERNEL, vector, kernel, 1, True), names
    else:
        assert _ran(names, TRANSPOSED_KERNEL, vector, kernel), names
    assert _ran(names, WEIGHT_KERNEL, vector, kernel, stride), names
    grads = poisoned_call(call, dtype, "cuda")
    expected = reference_gradients_float64(x, weight, bias, grad_y, y, stride, kwargs["padding"],
                                           1, kwargs["groups"])
    gather = _without_candidates(call)
    floor = with_floor_policy(call)
    for name, ours, theirs, base, wanted in zip(("input", "weight", "bias"), grads, gather, floor,
                                                expected):
        assert ours.shape == wanted.shape and ours.dtype == dtype, name
        if dtype == torch.float32:
            assert relative_l2_error(ours, wanted) <= 1e-5, (name, case)
            assert relative_l2_error(ours, theirs.double()) <= 1e-5, (name, case)
        else:
            _check_half(ours, wanted, base, (name, case))


@pytest.mark.parametrize("mask", [[True, False, False], [False, True, False], [False, False, True],
                                  [False, True, True]], ids=str)
def test_rows_backward_gradients_not_asked_for(mask):
    x, weight, bias, kwargs, y, grad_y = _backward_case(torch.float32, FLOAT32_CASES[3], seed=2)
    grads = _backward(grad_y, x, weight, y, kwargs, mask)
    everything = _backward(grad_y, x, weight, y, kwargs)
    for wanted, actual, full in zip(mask, grads, everything):
        if wanted:
            assert torch.equal(actual, full)
        else:
            assert actual.numel() == 0


def test_rows_backward_is_bitwise_deterministic_across_slices():
    # 4 x 56 rows of 56 positions: several weight-pass slices per channel on an H200.
    case = (5, 1, 56, 56, 32, 1, 4)
    x, weight, bias, kwargs, y, grad_y = _backward_case(torch.float32, case, seed=9)
    first = _backward(grad_y, x, weight, y, kwargs)
    expected = reference_gradients_float64(x, weight, bias, grad_y, y, 1, 2, 1, 32)
    for actual, wanted in zip(first, expected):
        assert relative_l2_error(actual, wanted) <= 1e-5
    for _ in range(3):
        again = _backward(grad_y, x, weight, y, kwargs)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


def _check_nan_positions_as_the_floor(x, weight, bias, kwargs):
    y = fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)
    grad_y = torch.randn_like(y)
    # A NaN gradient where relu passes it (g there is NaN; where y <= 0 it is an exact 0), away
    # from the borders: near them cuDNN's weight gradient multiplies the zero padding by it
    # (NaN), where ours skips padded taps, as PyTorch's own depthwise kernels do.
    margin = kwargs["padding"]
    interior = torch.zeros_like(y, dtype=torch.bool)
    interior[:, :, margin:y.shape[2] - margin, margin:y.shape[3] - margin] = True
    grad_y[tuple(((y > 0) & interior).nonzero()[-1].tolist())] = float("nan")
    ours = _backward(grad_y, x, weight, y, kwargs)
    floor = with_floor_policy(lambda: _backward(grad_y, x, weight, y, kwargs))
    for a, b in zip(ours, floor):
        assert a.isnan().any()
        assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.isinf(), b.isinf())


@pytest.mark.parametrize("case", [FLOAT32_CASES[0], FLOAT32_CASES[3], FLOAT32_CASES[9]], ids=str)
def test_rows_backward_nan_positions_as_the_floor(case):
    x, weight, bias, kwargs = _layer(case, torch.float32, seed=11)
    x[0, 0, 0, 0] = float("nan")
    x[-1, -1, 2, -1] = float("nan")
    _check_nan_positions_as_the_floor(x, weight, bias, kwargs)


def test_rows_backward_leaves_other_calls_to_the_older_kernels():
    x, weight, bias, kwargs = _outside("kernel_7")
    y = fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)
    grad_y = torch.randn_like(y)
    names = cuda_kernel_names(lambda: _backward(grad_y, x, weight, y, kwargs))
    assert not any("rows" in n for n in names), names
    # Under "all", the other candidate: the one pass by blocks of planes, the planes fitting.
    assert any(ONE_PASS_KERNEL in n for n in names), names
    assert not any("depthwise_wgrad_kernel" in n for n in names), names


PLANES_KERNEL = "depthwise_dgrad_planes_kernel"
ONE_PASS_KERNEL = "depthwise_backward_planes_kernel"

# (batch, channels, in_height, in_width, kernel, stride, padding, dilation): NCHW calls the row
# kernels do not take. The 7x7 output of a 5x5 stride-2 layer on 14x14 planes (MobileNetV3's
# last stages); 'valid' padding at 3x3 / 5x5 and stride 1 / 2; dilation 2; a 7x7 kernel at
# stride 1 and 2; run-time strides of 3 (3x3, 5x5) and unequal strides; an output plane of
# exactly 1024 elements, the most a warp stages (last: the forward's test leaves it out).
PLANES_CASES = [(3, 6, 14, 14, 5, (2, 2), 2, 1), (2, 5, 9, 11, 3, (1, 1), 0, 1),
                (2, 3, 12, 12, 5, (1, 1), 0, 1), (2, 4, 11, 11, 3, (2, 2), 0, 1),
                (2, 4, 10, 10, 3, (1, 1), 2, 2), (2, 3, 8, 8, 7, (1, 1), 3, 1),
                (2, 2, 15, 15, 7, (2, 2), 3, 1), (2, 4, 13, 13, 3, (3, 3), 1, 1),
                (1, 2, 16, 16, 5, (3, 3), 2, 1), (1, 4, 12, 11, 3, (2, 1), 1, 1),
                (1, 2, 34, 34, 3, (1, 1), 0, 1)]


def _planes_call(case, dtype, seed):
    batch, channels, height, width, kernel, stride, padding, dilation = case
    generator = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(batch, channels, height, width, device="cuda", dtype=dtype,
                    generator=generator)
    weight = torch.randn(channels, 1, kernel, kernel, device="cuda", dtype=dtype,
                         generator=generator) * 0.3
    bias = torch.randn(channels, device="cuda", dtype=dtype, generator=generator)
    geometry = (list(stride), [padding] * 4, [dilation] * 2, channels)
    y = torch.ops.fusedconv.conv2d_hardswish_relu(x, weight, bias, *geometry)
    grad_y = torch.randn(y.shape, device="cuda", dtype=dtype, generator=generator)

    def call():
        return torch.ops.fusedconv.conv2d_hardswish_relu_backward(grad_y, x, weight, y,
                                                                  *geometry, [True] * 3)
    return x, weight, bias, y, grad_y, call


def _check_planes_gradients(dtype, case, grads, call, x, weight, bias, grad_y, y):
    stride, padding, dilation, channels = case[5], case[6], case[7], case[1]
    expected = reference_gradients_float64(x, weight, bias, grad_y, y, stride, padding,
                                           dilation, channels)
    floor = with_floor_policy(call)
    for name, ours, base, wanted in zip(("input", "weight", "bias"), grads, floor, expected):
        assert ours.shape == wanted.shape and ours.dtype == dtype, name
        if dtype == torch.float32:
            assert relative_l2_error(ours, wanted) <= 1e-5, (name, case)
        else:
            _check_half(ours, wanted, base, (name, case))
    # The gather kernel's taps, order and arithmetic: the same bits.
    assert torch.equal(grads[0], _without_candidates(call)[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", PLANES_CASES, ids=str)
def test_planes_backward_in_one_pass_against_float64_and_the_gather_kernel(dtype, case):
    # Under "all" the one pass by blocks of planes takes every gradient of PLANES_CASES.
    x, weight, bias, y, grad_y, call = _planes_call(case, dtype, seed=sum(case[:5]))
    names = cuda_kernel_names(call)
    assert any(ONE_PASS_KERNEL in n for n in names), names
    assert not any(n.endswith("depthwise_dgrad_kernel") or "depthwise_dgrad_kernel<" in n
                   or PLANES_KERNEL in n or "depthwise_wgrad_kernel" in n for n in names), names
    grads = poisoned_call(call, dtype, "cuda")
    _check_planes_gradients(dtype, case, grads, call, x, weight, bias, grad_y, y)


@pytest.mark.parametrize("mask", [[True, False, False], [False, True, False], [False, False, True],
                                  [False, True, True]], ids=str)
def test_planes_backward_in_one_pass_gradients_not_asked_for(mask):
    x, weight, bias, y, grad_y, _ = _planes_call(PLANES_CASES[0], torch.float32, seed=3)
    geometry = ([2, 2], [2] * 4, [1, 1], PLANES_CASES[0][1])

    def call(wanted):
        return torch.ops.fusedconv.conv2d_hardswish_relu_backward(grad_y, x, weight, y,
                                                                  *geometry, wanted)
    assert any(ONE_PASS_KERNEL in n for n in cuda_kernel_names(lambda: call(mask)))
    everything = call([True] * 3)
    for wanted, actual, full in zip(mask, call(mask), everything):
        if wanted:
            assert torch.equal(actual, full)
        else:
            assert actual.numel() == 0


def test_planes_backward_in_one_pass_is_bitwise_deterministic():
    # 776 planes of 7 x 7: several planes a block, a partial last block.
    x, weight, bias, y, grad_y, call = _planes_call((8, 97, 7, 7, 5, (1, 1), 2, 1),
                                                    torch.float32, seed=4)
    first = call()
    _check_planes_gradients(torch.float32, (8, 97, 7, 7, 5, (1, 1), 2, 1), first, call, x,
                            weight, bias, grad_y, y)
    for _ in range(3):
        assert all(torch.equal(a, b) for a, b in zip(first, call()))


# (case, dtype, kernel) where the measured rule (3x3 / 5x5, stride 1 or 2 on both axes, no
# dilation) runs a planes backward: the one pass on outputs of up to 256 elements, the planes
# grad_input on the rest.
RULE_PLANES_CASES = [(PLANES_CASES[0], torch.float32, ONE_PASS_KERNEL),  # 7 x 7 out, 5x5 s2
                     (PLANES_CASES[0], torch.bfloat16, ONE_PASS_KERNEL),
                     (PLANES_CASES[1], torch.bfloat16, ONE_PASS_KERNEL),  # 3x3 s1
                     (PLANES_CASES[3], torch.float32, ONE_PASS_KERNEL),  # 3x3 s2
                     (PLANES_CASES[3], torch.bfloat16, ONE_PASS_KERNEL),
                     (PLANES_CASES[-1], torch.float32, PLANES_KERNEL),  # 32 x 32 out
                     (PLANES_CASES[-1], torch.bfloat16, PLANES_KERNEL),
                     ((2, 3, 18, 18, 5, (1, 1), 1, 1), torch.float32, ONE_PASS_KERNEL),  # 16^2
                     ((2, 3, 19, 19, 5, (1, 1), 1, 1), torch.float32, PLANES_KERNEL)]  # 17^2


@pytest.mark.parametrize("case,dtype,kernel", RULE_PLANES_CASES, ids=str)
def test_planes_backward_under_the_rule_against_float64_and_the_gather(case, dtype, kernel):
    x, weight, bias, y, grad_y, call = _planes_call(case, dtype, seed=sum(case[:5]))
    with depthwise_candidates("measured"):
        names = cuda_kernel_names(call)
        other = PLANES_KERNEL if kernel == ONE_PASS_KERNEL else ONE_PASS_KERNEL
        assert any(kernel in n for n in names), names
        assert not any(other in n for n in names), names
        grads = poisoned_call(call, dtype, "cuda")
        _check_planes_gradients(dtype, case, grads, call, x, weight, bias, grad_y, y)


def test_planes_grad_input_stops_at_1024_output_elements():
    # 35 x 35 'valid' 3x3: a 33 x 33 output plane, over what a warp stages: the gather kernel.
    *_, call = _planes_call((1, 2, 35, 35, 3, (1, 1), 0, 1), torch.float32, seed=5)
    names = cuda_kernel_names(call)
    assert any("depthwise_dgrad_kernel" in n for n in names), names
    assert not any(PLANES_KERNEL in n or ONE_PASS_KERNEL in n for n in names), names


PLANES_FORWARD_KERNEL = "depthwise_planes_kernel"
PER_ROW_KERNEL = "conv_hardswish_relu_depthwise_kernel"


def _off_boundary(tensor, elements):
    """A copy of `tensor` starting `elements` elements past a 16-byte boundary."""
    storage = torch.empty(tensor.numel() + elements, dtype=tensor.dtype, device=tensor.device)
    return storage[elements:].view_as(tensor).copy_(tensor)


@pytest.mark.parametrize("offsets", [(1, 3, 2), (1, 3, 3)], ids=["apart", "alike"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", [PLANES_CASES[0], PLANES_CASES[5],
                                  (8, 97, 7, 7, 5, (1, 1), 2, 1)], ids=str)
def test_planes_kernels_on_runs_off_16_byte_boundaries(case, dtype, offsets):
    # x, y and grad_y that many elements past a 16-byte boundary: the staging loads 16 bytes at a
    # time from each run's first boundary, or one element at a time where grad_y's and y's
    # boundaries fall apart. Same values, so the same bits as from aligned tensors. 776 planes of
    # 7 x 7: several planes a block, vectors across plane boundaries.
    x, weight, bias, y, grad_y, call = _planes_call(case, dtype, seed=9)
    geometry = (list(case[5]), [case[6]] * 4, [case[7]] * 2, case[1])
    moved_x, moved_y, moved_grad_y = (_off_boundary(t, n) for t, n in zip((x, y, grad_y), offsets))
    forward = torch.ops.fusedconv.conv2d_hardswish_relu
    names = cuda_kernel_names(lambda: forward(moved_x, weight, bias, *geometry))
    assert any(PLANES_FORWARD_KERNEL in n for n in names), names
    assert torch.equal(forward(moved_x, weight, bias, *geometry), y)

    def moved():
        return torch.ops.fusedconv.conv2d_hardswish_relu_backward(
            moved_grad_y, moved_x, weight, moved_y, *geometry, [True] * 3)
    assert any(ONE_PASS_KERNEL in n for n in cuda_kernel_names(moved))
    for actual, expected in zip(moved(), call()):
        assert torch.equal(actual, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", PLANES_CASES[:-1] + [(1, 3, 32, 32, 3, (1, 1), 0, 1)], ids=str)
def test_planes_forward_against_float64_and_the_per_row_kernel(dtype, case):
    # PLANES_CASES' input planes of up to 1024 elements, and one of exactly 1024.
    x, weight, bias, _, _, _ = _planes_call(case, dtype, seed=sum(case[:5]) + 1)
    stride, padding, dilation, channels = case[5], case[6], case[7], case[1]

    def call():
        return torch.ops.fusedconv.conv2d_hardswish_relu(
            x, weight, bias, list(stride), [padding] * 4, [dilation] * 2, channels)
    names = cuda_kernel_names(call)
    assert any(PLANES_FORWARD_KERNEL in n for n in names), names
    assert not any(PER_ROW_KERNEL in n for n in names), names
    actual = poisoned_call(call, dtype, "cuda")
    expected = reference_float64(x, weight, bias, stride, padding, dilation, channels)
    if dtype == torch.float32:
        assert relative_l2_error(actual, expected) <= 1e-6
    else:
        _check_half(actual, expected, with_floor_policy(call), "output")
    # The per-row kernel's taps, order and arithmetic: the same bits.
    assert torch.equal(actual, _without_candidates(call))


@pytest.mark.parametrize("case", PLANES_CASES[:2], ids=str)
def test_planes_forward_non_finite_as_the_per_row_kernel(case):
    # NaN / inf inputs, and non-finite weights whose taps fall on the padding at the borders.
    x, weight, bias, _, _, _ = _planes_call(case, torch.float32, seed=7)
    x[0, 0, 0, 0] = float("nan")
    x[-1, -1, -1, -1] = float("inf")
    weight[0, 0, 0, 0] = float("inf")
    weight[-1, 0, -1, -1] = float("nan")
    stride, padding, dilation, channels = case[5], case[6], case[7], case[1]

    def call():
        return torch.ops.fusedconv.conv2d_hardswish_relu(
            x, weight, bias, list(stride), [padding] * 4, [dilation] * 2, channels)
    assert any(PLANES_FORWARD_KERNEL in n for n in cuda_kernel_names(call))
    actual = call()
    assert actual.isnan().any() and not actual.isnan().all()
    torch.testing.assert_close(actual, _without_candidates(call), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("name,shape", [("over_1024", (1, 2, 33, 32)),
                                        ("multiplier_2", (1, 2, 8, 8)),
                                        ("channels_last", (1, 8, 8, 8))])
def test_planes_forward_leaves_other_calls_to_the_per_row_kernel(name, shape):
    x = torch.randn(shape, device="cuda")
    channels = shape[1]
    out_channels = 2 * channels if name == "multiplier_2" else channels
    weight = torch.randn(out_channels, 1, 3, 3, device="cuda")
    if name == "channels_last":  # a 7x7 kernel: the element kernel, in channels_last
        x = x.contiguous(memory_format=torch.channels_last)
        weight = torch.randn(channels, 1, 7, 7, device="cuda")

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, None, padding=0, groups=channels)
    names = cuda_kernel_names(call)
    assert not any(PLANES_FORWARD_KERNEL in n for n in names), names
    assert any(PER_ROW_KERNEL in n for n in names), names
    expected = reference_float64(x, weight, None, 1, 0, 1, channels)
    assert relative_l2_error(poisoned_call(call, x.dtype, "cuda"), expected) <= 1e-6


VECTOR_KERNEL = "conv_hardswish_relu_depthwise_vector_kernel"
CHANNELS_LAST_DGRAD_KERNEL = "depthwise_dgrad_channels_last_kernel"
SLIDING_KERNEL = "depthwise_wgrad_channels_last_sliding_kernel"


def _filters(names, kernel=VECTOR_KERNEL):
    """A vector kernel's Filters argument (0 per tap, 1 resident, 2 staged) in `names`."""
    found = [re.search(r"Filters\)(\d)>|FiltersE(\d)E", name) for name in names
             if kernel in name]
    assert len(found) == 1 and found[0] is not None, names
    return int(found[0].group(1) or found[0].group(2))


# (channels, kernel, stride, weight kind): channel vectors fewer than a warp's lanes (two of
# 16 half channels), more than a CTA's threads (260 of 1040 float channels: the copy takes
# several rounds; 4 items per thread), weights strided or one element into their storage
# (staged from any strides). All fit 48 KB of shared memory in every dtype.
STAGED_CASES = [(16, 3, 1, "dense"), (24, 5, 2, "dense"), (48, 3, 2, "strided"),
                (40, 5, 1, "misaligned"), (1040, 3, 1, "dense"), (1040, 3, 2, "strided")]


def _staged_layer(channels, kernel, stride, kind, dtype):
    generator = torch.Generator(device="cuda").manual_seed(channels + kernel + stride)
    x = torch.randn(2, channels, 13, 11, device="cuda", dtype=dtype, generator=generator)
    x = x.contiguous(memory_format=torch.channels_last)
    shape = (channels, 1, kernel, kernel + (kind == "strided"))
    weight = torch.randn(*shape, device="cuda", dtype=dtype, generator=generator) * 0.3
    if kind == "strided":  # filters kernel x (kernel + 1) elements apart
        weight = weight[..., :kernel]
    elif kind == "misaligned":  # dense, one element into its storage
        flat = torch.empty(weight.numel() + 1, device="cuda", dtype=dtype)
        weight = flat[1:].view_as(weight).copy_(weight)
    bias = torch.randn(channels, device="cuda", dtype=dtype, generator=generator)
    return x, weight, bias, dict(stride=stride, padding=kernel // 2, groups=channels)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels,kernel,stride,kind", STAGED_CASES, ids=str)
def test_staged_filters_in_channels_last_against_float64(channels, kernel, stride, kind, dtype):
    x, weight, bias, kwargs = _staged_layer(channels, kernel, stride, kind, dtype)

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)

    assert _filters(cuda_kernel_names(call)) == 2
    actual = poisoned_call(call, dtype, "cuda")
    expected = reference_float64(x, weight, bias, **kwargs)
    assert actual.is_contiguous(memory_format=torch.channels_last)
    if dtype == torch.float32:
        assert relative_l2_error(actual, expected) <= 1e-6
    else:
        _check_half(actual, expected, reference_forward(x, weight, bias, **kwargs), kwargs)
    # Per tap or resident, the same weights meet the same inputs in the same order.
    assert torch.equal(actual, _without_candidates(call))


def test_staged_filters_beyond_a_ctas_shared_memory_load_per_tap():
    # 5x5 over 1040 bfloat16 channels: 130 vectors x 25 taps x 16 bytes = 52 KB, over 48 KB.
    x, weight, bias, kwargs = _staged_layer(1040, 5, 1, "dense", torch.bfloat16)

    def call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)

    assert _filters(cuda_kernel_names(call)) == 0
    assert torch.equal(call(), _without_candidates(call))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels,kernel,stride,kind",
                         STAGED_CASES[:4] + [(48, 7, 1, "dense"), (1040, 3, 2, "strided")],
                         ids=str)
def test_staged_and_sliding_channels_last_backward(channels, kernel, stride, kind, dtype):
    x, weight, bias, kwargs = _staged_layer(channels, kernel, stride, kind, dtype)
    y = fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)
    grad_y = torch.randn_like(y)
    assert torch.ops.fusedconv._plan_backward(grad_y, x, weight, y, *_op_geometry(kwargs),
                                              [True] * 3) == "depthwise"

    def call():
        return _backward(grad_y, x, weight, y, kwargs)

    names = cuda_kernel_names(call)
    assert _filters(names, CHANNELS_LAST_DGRAD_KERNEL) == 2
    # The sliding weight pass at 3x3 and 5x5; 7x7 keeps the tap-per-thread one.
    assert any(SLIDING_KERNEL in name for name in names) == (kernel <= 5), names
    grads = poisoned_call(call, dtype, "cuda")
    expected = reference_gradients_float64(x, weight, bias, grad_y, y, stride, kwargs["padding"],
                                           1, channels)
    floor = with_floor_policy(call)
    for name, ours, base, wanted in zip(("input", "weight", "bias"), grads, floor, expected):
        if dtype == torch.float32:
            assert relative_l2_error(ours, wanted) <= 1e-5, name
        else:
            _check_half(ours, wanted, base, name)
    # grad_input: the same weights in the same order as per tap or resident, the same bits.
    # The sliding weight pass sums positions in another order: deterministic, not the same bits.
    old = _without_candidates(call)
    assert torch.equal(grads[0], old[0])
    assert all(torch.equal(a, b) for a, b in zip(grads, call()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sliding_weight_pass_across_slices_and_runs(dtype):
    # 4 x 56 rows of 56 positions over 64 channels: several slices per block of vectors, and
    # several sliding lanes splitting each row (3 for float32's 16 vectors, 9 for bfloat16's 8).
    generator = torch.Generator(device="cuda").manual_seed(21)
    x = torch.randn(4, 64, 56, 56, device="cuda", dtype=dtype, generator=generator)
    x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(64, 1, 3, 3, device="cuda", dtype=dtype, generator=generator) * 0.3
    bias = torch.randn(64, device="cuda", dtype=dtype, generator=generator)
    kwargs = dict(stride=1, padding=1, groups=64)
    y = fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)
    grad_y = torch.randn_like(y)

    def call():
        return _backward(grad_y, x, weight, y, kwargs, (False, True, True))

    assert any(SLIDING_KERNEL in name for name in cuda_kernel_names(call))
    first = call()
    assert first[0].numel() == 0
    expected = reference_gradients_float64(x, weight, bias, grad_y, y, 1, 1, 1, 64)[1:]
    floor = with_floor_policy(call)
    for ours, base, wanted in zip(first[1:], floor[1:], expected):
        if dtype == torch.float32:
            assert relative_l2_error(ours, wanted) <= 1e-5
        else:
            _check_half(ours, wanted, base, "weight")
    for _ in range(3):
        assert all(torch.equal(a, b) for a, b in zip(first, call()))


def test_sliding_weight_pass_nan_positions_as_the_floor():
    x, weight, bias, kwargs = _staged_layer(48, 5, 1, "dense", torch.float32)
    x[0, 3, 0, 0] = float("nan")
    _check_nan_positions_as_the_floor(x, weight, bias, kwargs)


def test_switch_rejects_unknown_choices():
    for choice in ("yes", "ALL", ""):
        with pytest.raises(ValueError, match="'measured', 'all' or 'none'"):
            torch.ops.fusedconv._depthwise_candidates(choice)
    with pytest.raises((RuntimeError, TypeError)):
        torch.ops.fusedconv._depthwise_candidates(True)
    assert torch.ops.fusedconv._depthwise_candidates() == "all"


# (layout, dtype, kernel, stride, size, direction, plan under "all", "none", "measured"): the
# depthwise crossovers ask the switch only where a candidate is what beats the floor.
SWITCH_PLAN_CASES = [
    ("nchw", torch.bfloat16, 3, 1, 12, "fwd", ("depthwise",) * 3),
    ("channels_last", torch.bfloat16, 3, 1, 12, "fwd", ("floor",) * 3),
    ("nchw", torch.float16, 3, 1, 12, "fwd", ("depthwise", "floor", "depthwise")),
    ("channels_last", torch.float32, 5, 1, 12, "fwd", ("depthwise", "floor", "depthwise")),
    ("nchw", torch.float32, 5, 1, 12, "bwd",
     ("depthwise", "floor_summing_bias", "depthwise")),
    ("channels_last", torch.bfloat16, 3, 2, 40, "bwd",
     ("depthwise", "floor_summing_bias", "depthwise")),
    # NCHW 7-wide outputs: the planes grad_input beats the floor, but cuDNN's float16 stride 1.
    ("nchw", torch.float32, 5, 2, 14, "bwd", ("depthwise", "floor_summing_bias", "depthwise")),
    ("nchw", torch.float16, 5, 1, 7, "bwd", ("floor_summing_bias",) * 3),
]


@pytest.mark.parametrize("layout,dtype,kernel,stride,size,direction,expected",
                         SWITCH_PLAN_CASES, ids=lambda value: str(value).replace(" ", ""))
def test_switch_moves_plans_where_candidates_beat_the_floor(layout, dtype, kernel, stride, size,
                                                            direction, expected):
    x = torch.randn(2, 32, size, size, device="cuda", dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(32, 1, kernel, kernel, device="cuda", dtype=dtype)
    bias = torch.randn(32, device="cuda", dtype=dtype)
    geometry = ([stride] * 2, [kernel // 2] * 4, [1, 1], 32)
    previous = torch.ops.fusedconv._plan_policy("measured")
    try:
        plans = []
        for candidates in ("all", "none", "measured"):
            torch.ops.fusedconv._depthwise_candidates(candidates)
            if direction == "fwd":
                plans.append(torch.ops.fusedconv._plan(x, weight, bias, *geometry))
            else:
                y = torch.ops.fusedconv.conv2d_hardswish_relu(x, weight, bias, *geometry)
                plans.append(torch.ops.fusedconv._plan_backward(torch.randn_like(y), x, weight,
                                                                y, *geometry, [True] * 3))
        assert tuple(plans) == expected
    finally:
        torch.ops.fusedconv._plan_policy(previous)
        torch.ops.fusedconv._depthwise_candidates("all")


def test_candidates_switch_starts_from_the_environment():
    script = "import fusedconv, torch; fusedconv.load_extension(); " \
             "print(torch.ops.fusedconv._depthwise_candidates())"
    for value, expected in (("all", "all"), ("none", "none"), ("measured", "measured"),
                            ("1", "measured"), (None, "measured")):
        environment = dict(os.environ)
        environment.pop("FUSEDCONV_DEPTHWISE_CANDIDATES", None)
        if value is not None:
            environment["FUSEDCONV_DEPTHWISE_CANDIDATES"] = value
        result = subprocess.run([sys.executable, "-c", script], env=environment, timeout=600,
                                capture_output=True, text=True, check=True)
        assert result.stdout.strip().splitlines()[-1] == expected, (value, result.stdout)
    assert torch.ops.fusedconv._depthwise_candidates() == "all"  # the fixture's, in this process


# (layout, dtype, kernel, stride, channels, size, the candidates the measured rule runs): the
# rule of csrc/cuda/common/depthwise_candidates.h, case by case, under the "fused" policy so
# that the depthwise family runs whatever the crossovers say.
MEASURED_CASES = [
    ("nchw", torch.float32, 3, 1, 8, 16, {"rows_forward", "rows_backward"}),
    ("nchw", torch.bfloat16, 5, 2, 8, 16, {"rows_forward", "rows_backward"}),
    ("nchw", torch.float16, 3, 2, 8, 16, {"rows_forward", "rows_backward"}),
    # float32 3x3: per-tap forward filters, resident grad_input filters, sliding weight pass.
    ("channels_last", torch.float32, 3, 1, 32, 28, {"sliding"}),
    ("channels_last", torch.bfloat16, 3, 1, 32, 28, {"staged_forward", "sliding"}),
    ("channels_last", torch.float16, 3, 2, 32, 14, {"staged_forward"}),  # 7 wide: no sliding
    ("channels_last", torch.float32, 5, 1, 32, 16,
     {"staged_forward", "staged_grad_input", "sliding"}),
    ("channels_last", torch.float32, 5, 2, 32, 16, {"staged_forward"}),
    ("channels_last", torch.float32, 5, 2, 32, 28, {"staged_forward", "sliding"}),
    # The sliding pass from outputs 14 wide: 13 and 14.
    ("channels_last", torch.float32, 3, 2, 32, 26, set()),
    ("channels_last", torch.float32, 3, 2, 32, 28, {"sliding"}),
    ("channels_last", torch.bfloat16, 5, 2, 32, 16, {"staged_forward", "staged_grad_input"}),
    # 400 channels' 5x5 bfloat16 filters are 20 KB: per tap in the forward.
    ("channels_last", torch.bfloat16, 5, 1, 400, 14, {"staged_grad_input"}),
    ("channels_last", torch.float16, 7, 1, 16, 14, set()),
    # Outside the rows (odd-width NCHW outputs): the planes forward on outputs of up to 1024
    # elements but for 16-bit 3x3 stride 2; the one pass on outputs of up to 256, the planes
    # grad_input on the rest; the older kernels past 1024.
    ("nchw", torch.float32, 5, 2, 8, 14, {"planes_forward", "planes_backward"}),
    ("nchw", torch.float32, 3, 2, 8, 13, {"planes_forward", "planes_backward"}),
    ("nchw", torch.bfloat16, 5, 2, 8, 13, {"planes_forward", "planes_backward"}),
    ("nchw", torch.bfloat16, 3, 2, 8, 13, {"planes_backward"}),
    ("nchw", torch.float16, 3, 1, 8, 15, {"planes_forward", "planes_backward"}),
    ("nchw", torch.float32, 3, 1, 8, 31, {"planes_forward", "planes_grad_input"}),
    ("nchw", torch.float32, 3, 1, 8, 33, set()),
]


def _candidates_that_ran(x, weight, bias, kwargs):
    def forward_call():
        return fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)

    forward = cuda_kernel_names(forward_call)
    y = forward_call()
    grad_y = torch.randn_like(y)
    backward = cuda_kernel_names(lambda: _backward(grad_y, x, weight, y, kwargs))
    for names in (forward, backward):  # our depthwise kernels, not the floor's
        assert any("fusedconv" in name and "depthwise" in name for name in names), names
    ran = set()
    if any(FORWARD_KERNEL in name for name in forward):
        ran.add("rows_forward")
    if any(WEIGHT_KERNEL in name for name in backward):
        assert any(FORWARD_KERNEL in name or TRANSPOSED_KERNEL in name for name in backward)
        ran.add("rows_backward")
    # The vector kernels take 3x3 and 5x5 forward (7x7 runs the element kernel), every size
    # backward.
    if any(VECTOR_KERNEL in name for name in forward) and _filters(forward) == 2:
        ran.add("staged_forward")
    if (any(CHANNELS_LAST_DGRAD_KERNEL in name for name in backward) and
            _filters(backward, CHANNELS_LAST_DGRAD_KERNEL) == 2):
        ran.add("staged_grad_input")
    if any(SLIDING_KERNEL in name for name in backward):
        ran.add("sliding")
    if any(PLANES_FORWARD_KERNEL in name for name in forward):
        ran.add("planes_forward")
    if any(PLANES_KERNEL in name for name in backward):
        ran.add("planes_grad_input")
    if any(ONE_PASS_KERNEL in name for name in backward):
        ran.add("planes_backward")
    return ran


@pytest.mark.parametrize("layout,dtype,kernel,stride,channels,size,expected", MEASURED_CASES,
                         ids=lambda value: "+".join(sorted(value)) if isinstance(value, set)
                         else str(value))
def test_measured_rule_runs_each_candidate_where_it_won(layout, dtype, kernel, stride, channels,
                                                        size, expected):
    x = torch.randn(2, channels, size, size, device="cuda", dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, 1, kernel, kernel, device="cuda", dtype=dtype) * 0.3
    bias = torch.randn(channels, device="cuda", dtype=dtype)
    kwargs = dict(stride=stride, padding=kernel // 2, groups=channels)
    with depthwise_candidates("measured"):
        assert _candidates_that_ran(x, weight, bias, kwargs) == expected
        measured = fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs)
    # Whichever kernel the rule picks, the forward's bits are those of the kernel it replaced.
    with depthwise_candidates("none"):
        assert torch.equal(measured, fusedconv.conv2d_hardswish_relu(x, weight, bias, **kwargs))
