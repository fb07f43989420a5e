"""Real-network layers benchmark: ``python -m fusedconv bench --suite networks``.

KernelBench's problem is one synthetic shape; this suite asks how the fused operator does on the
convolutions that networks actually run. Each layer of ``LAYERS`` (MobileNetV3-Large, ResNet-50,
EfficientNet-B0 and ResNeXt-50 32x4d, at the spatial sizes of a 224x224 image) runs as
conv -> hardswish -> relu in three systems, timed in one process:

* ``eager``: ``nn.Conv2d``, then ``F.hardswish``, then ``torch.relu``;
* ``compile``: ``torch.compile(dynamic=False)`` of that same eager module, compiled afresh for
  every (layer, mode, direction) so that each timing sees one cache entry and nothing falls back
  to eager at dynamo's recompile limit (the limits are raised for the run as well);
* ``fusedconv``: ``fusedconv.Conv2dHardSwishReLU`` loaded with the eager module's state_dict.

Modes: ``fp32`` (NCHW float32), ``fp32_cl`` (input and module channels_last), ``bf16`` and
``bf16_cl`` (float32 parameters and input, called under ``torch.autocast(..., torch.bfloat16)``,
as mixed-precision training and inference run them). Directions: ``fwd`` (under no_grad) and
``fwdbwd`` (forward, then the gradients of input, weight and bias for a fixed upstream gradient;
autocast covers the forward only, as PyTorch recommends). The input is float32 in every mode by
default, so in the bf16 modes both systems' autocast casts it (a full pass over x per call);
``inputs="network"`` gives every layer but a stem (3 input channels: the image) the bfloat16
input that the previous layer's autocast output would be, as inside a network.

Timing: each system's first call is checked (and, for compile, compiles) and ``repeats`` more are
timed on their own; then the systems are called in turn, call by call, ``_INTERLEAVED_ROUNDS`` x
``repeats`` calls each, and each system's median over those is its time. On CUDA each call is
timed with events around the Python call, on the CPU with perf_counter. The calls rotate over
enough input sets that about ``bench.L2_FLUSH_BYTES`` lie between two uses of one set (at most 16
sets, so memory stays bounded). These layers are host-bound, and the host's per-call time drifts
by up to 1.5x between back-to-back timings of one system (the H200's host): interleaving puts the
drift on every system alike instead of on whichever system a slow stretch fell on.

``floor_ms`` is the memory floor (the bytes that must move, in the mode's element size, over the
measured copy bandwidth; None on the CPU).

Precision: by default the run keeps PyTorch's TF32 flags (cuDNN may use TF32 for float32
convolutions unless told otherwise, and fusedconv's default ``allow_tf32=None`` follows the same
flag), recorded as "tf32" where TF32 is allowed; ``precision="fp32"`` turns TF32 off for the run.
The CPU has no TF32: "fp32". ``compile_s`` is the wall time of the compile system's first call:
its compilation (for ``fwdbwd`` the backward's too) plus one run.

``rel_err`` is the relative L2 error against float64 of the same inputs; in the bf16 modes the
reference takes the bf16-rounded input, weight and bias, which is what autocast feeds the
convolution. For ``fwdbwd`` it is the worst of the output's and the three gradients' errors, the
gradients checked on the output's own activation branches
(``reference.reference_gradients_float64`` says why).
"""

import collections
import contextlib
import json
import logging
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import fusedconv
from fusedconv.bench import L2_FLUSH_BYTES, measure_copy_bandwidth, median_event_ms
from fusedconv.reference import (reference_float64, reference_gradients_float64,
                                 relative_l2_error)

__all__ = ["Layer", "LAYERS", "MODES", "DIRECTIONS", "SYSTEMS", "select_layers", "parse_choices",
           "run", "format_table", "summary_lines", "format_report", "plot", "main", "layer_kind",
           "kernel_time_summary_lines"]

_LOG = logging.getLogger(__name__)

Layer = collections.namedtuple(
    "Layer", "name network in_channels out_channels kernel stride groups size")
Layer.__doc__ = """One convolution of a public network: `size` is its input's height and width at a
224x224 image; padding is kernel // 2 (every layer here pads to keep size / stride)."""

# Layer shapes at a 224x224 input. bias=True throughout: the BatchNorm that follows each of these
# convolutions folds into the convolution's bias at inference, which is the operator's use.
LAYERS = [
    # MobileNetV3-Large (Howard et al. 2019, "Searching for MobileNetV3", Table 1).
    Layer("mnv3 stem 3x3 s2 3-16", "MobileNetV3-Large", 3, 16, 3, 2, 1, 224),  # first conv
    Layer("mnv3 pw 16-64", "MobileNetV3-Large", 16, 64, 1, 1, 1, 112),  # bneck exp 64: expand
    Layer("mnv3 dw3x3 s2 64", "MobileNetV3-Large", 64, 64, 3, 2, 64, 112),  # its depthwise, s2
    Layer("mnv3 dw5x5 120", "MobileNetV3-Large", 120, 120, 5, 1, 120, 28),  # bneck 5x5 exp 120
    Layer("mnv3 pw 480-112", "MobileNetV3-Large", 480, 112, 1, 1, 1, 14),  # bneck exp 480: project
    Layer("mnv3 dw5x5 s2 672", "MobileNetV3-Large", 672, 672, 5, 2, 672, 14),  # bneck 5x5 exp 672
    # ResNet-50 (He et al. 2016; torchvision's v1.5, stride 2 on the bottleneck's 3x3).
    Layer("r50 stem 7x7 s2 3-64", "ResNet-50", 3, 64, 7, 2, 1, 224),  # conv1
    Layer("r50 pw 256-64", "ResNet-50", 256, 64, 1, 1, 1, 56),  # conv2_x: 1x1 reduce
    Layer("r50 3x3 64", "ResNet-50", 64, 64, 3, 1, 1, 56),  # conv2_x: 3x3
    Layer("r50 pw 64-256", "ResNet-50", 64, 256, 1, 1, 1, 56),  # conv2_x: 1x1 expand
    Layer("r50 3x3 s2 128", "ResNet-50", 128, 128, 3, 2, 1, 56),  # conv3_1: 3x3 s2
    Layer("r50 3x3 s2 256", "ResNet-50", 256, 256, 3, 2, 1, 28),  # conv4_1: 3x3 s2
    Layer("r50 3x3 s2 512", "ResNet-50", 512, 512, 3, 2, 1, 14),  # conv5_1: 3x3 s2
    # EfficientNet-B0 (Tan & Le 2019, "EfficientNet", Table 1).
    Layer("effb0 stem 3x3 s2 3-32", "EfficientNet-B0", 3, 32, 3, 2, 1, 224),  # stage 1
    Layer("effb0 dw3x3 32", "EfficientNet-B0", 32, 32, 3, 1, 32, 112),  # stage 2, MBConv1 k3
    Layer("effb0 dw3x3 s2 96", "EfficientNet-B0", 96, 96, 3, 2, 96, 112),  # stage 3, MBConv6 k3
    Layer("effb0 pw 24-144", "EfficientNet-B0", 24, 144, 1, 1, 1, 56),  # stage 4: 1x1 expand
    Layer("effb0 dw5x5 s2 144", "EfficientNet-B0", 144, 144, 5, 2, 144, 56),  # stage 4, k5 s2
    Layer("effb0 pw 144-40", "EfficientNet-B0", 144, 40, 1, 1, 1, 28),  # stage 4: 1x1 project
    # ResNeXt-50 32x4d (Xie et al. 2017), the grouped 3x3 of each stage (torchvision's strides).
    Layer("rx50 g32 3x3 128", "ResNeXt-50 32x4d", 128, 128, 3, 1, 32, 56),  # conv2_x
    Layer("rx50 g32 3x3 s2 256", "ResNeXt-50 32x4d", 256, 256, 3, 2, 32, 56),  # conv3_1
    Layer("rx50 g32 3x3 512", "ResNeXt-50 32x4d", 512, 512, 3, 1, 32, 14),  # conv4_x
    Layer("rx50 g32 3x3 s2 1024", "ResNeXt-50 32x4d", 1024, 1024, 3, 2, 32, 14),  # conv5_1
]

MODES = ("fp32", "fp32_cl", "bf16", "bf16_cl")
DIRECTIONS = ("fwd", "fwdbwd")
SYSTEMS = ("eager", "compile", "fusedconv")
# Batch 64 on a GPU (a training batch). On the CPU batch 4 at the same spatial sizes: one call of
# the largest layers (the ResNet-50 3x3s and stem) then takes tens of ms on a few cores rather
# than seconds, and the layer shapes stay those of the networks.
DEFAULT_BATCH = {"cuda": 64, "cpu": 4}
DEFAULT_REPEATS = 50
# Untimed calls after the first (checked) call: the compiled callable is compiled by that first
# call, so one more is enough; eager and fusedconv get a few, as bench.py's timings do.
_WARMUP = {"eager": 3, "compile": 1, "fusedconv": 3}
# The interleaved timing's length, in multiples of `repeats` calls per system (module docstring).
_INTERLEAVED_ROUNDS = 4


class EagerConvHardSwishReLU(nn.Module):
    """The eager baseline: ``torch.relu(F.hardswish(conv(x)))``, as KernelBench's Model."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return torch.relu(F.hardswish(self.conv(x)))


def _padding(layer):
    return layer.kernel // 2


def _scaled_size(layer, image_size):
    return max(1, layer.size * image_size // 224)


def _output_size(size, layer):
    return (size + 2 * _padding(layer) - layer.kernel) // layer.stride + 1


def select_layers(spec, layers=LAYERS):
    """The layers a ``--layers`` value names, in table order: a comma list whose items are exact
    layer names or substrings of them ("r50", "dw5x5"); None or "" means all. An item that matches
    nothing raises ValueError, so that a typo does not silently shrink the run."""
    if not spec:
        return list(layers)
    items = [item.strip() for item in spec.split(",") if item.strip()]
    unmatched = [item for item in items if not any(item in layer.name for layer in layers)]
    if unmatched:
        raise ValueError("unknown layer(s) %s; known: %s" % (
            ", ".join(repr(item) for item in unmatched),
            ", ".join(layer.name for layer in layers)))
    return [layer for layer in layers if any(item in layer.name for item in items)]


def parse_choices(value, allowed, what):
    """A comma list of `allowed` values (None or "": all of them), in the order of `allowed`."""
    if not value:
        return list(allowed)
    items = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise ValueError("unknown %s %s; known: %s" % (what, ", ".join(unknown) or repr(value),
                                                       ", ".join(allowed)))
    return [item for item in allowed if item in items]


def _dynamo():
    import torch._dynamo  # imported when compiling only: it is slow to import
    return torch._dynamo


@contextlib.contextmanager
def _settings(device, precision, cudnn_benchmark, compiling):
    """The run's global switches, restored afterwards: cuDNN benchmark mode, TF32 when
    `precision` is "fp32", and (when compiling) dynamo's recompile limits.

    Dynamo counts recompiles per code object; every case here compiles the same forward, and past
    the limit (8 in recent torch) dynamo silently runs eager. Each case is compiled after a
    dynamo reset anyway; the raised limits, and failing on the limit where torch can, make sure
    no timing labelled "compile" is eager's."""
    saved = []

    def set_attribute(owner, name, value):
        if hasattr(owner, name):
            saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, value)

    try:
        if device.type == "cuda":
            set_attribute(torch.backends.cudnn, "benchmark", bool(cudnn_benchmark))
            if precision == "fp32":
                set_attribute(torch.backends.cudnn, "allow_tf32", False)
                set_attribute(torch.backends.cuda.matmul, "allow_tf32", False)
        if compiling:
            config = _dynamo().config
            for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                         "accumulated_recompile_limit"):
                set_attribute(config, name, 1 << 20)
            set_attribute(config, "fail_on_recompile_limit_hit", True)
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


def _precision_label(device):
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "fp32"  # no TF32 on the CPU


def _device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "CPU (%d threads)" % torch.get_num_threads()


def median_wall_ms(fn, inputs, repeats, warmup=1):
    """CPU counterpart of bench.median_event_ms: perf_counter median of fn(x) over `repeats`
    calls cycling through `inputs`, after `warmup` untimed calls."""
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    samples = []
    for i in range(repeats):
        x = inputs[i % len(inputs)]
        began = time.perf_counter()
        fn(x)
        samples.append((time.perf_counter() - began) * 1e3)
    return statistics.median(samples)


def _interleaved_medians(fns, inputs, calls, device):
    """Median ms of each of `fns` over `calls` calls each, the functions called in turn (their
    order reversed every other turn), every call on the next input set."""
    samples = [[] for _ in fns]
    position = 0
    for turn in range(calls):
        order = list(enumerate(fns))
        for index, fn in (order if turn % 2 == 0 else reversed(order)):
            x = inputs[position % len(inputs)]
            position += 1
            if device.type == "cuda":
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn(x)
                end.record()
                end.synchronize()
                samples[index].append(start.elapsed_time(end))
            else:
                began = time.perf_counter()
                fn(x)
                samples[index].append((time.perf_counter() - began) * 1e3)
    return [statistics.median(s) for s in samples]


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(mode, device):
    if mode.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _build_modules(layer, device, memory_format):
    """(eager module, fusedconv module) with the same parameters, on `device`."""
    torch.manual_seed(0)
    arguments = dict(stride=layer.stride, padding=_padding(layer), groups=layer.groups, bias=True)
    conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel, **arguments)
    fused = fusedconv.Conv2dHardSwishReLU(layer.in_channels, layer.out_channels, layer.kernel,
                                          **arguments)
    fused.load_state_dict(conv.state_dict())  # allow_tf32 left as None: PyTorch's flags
    eager = EagerConvHardSwishReLU(conv)
    return (eager.to(device=device, memory_format=memory_format),
            fused.to(device=device, memory_format=memory_format))


def _measure(system, fn, weight, bias, direction, mode, device, inputs, grad_base, reference,
             repeats, check=True):
    """Time one system on one (layer, mode, direction); returns (ms, rel_err, out_dtype,
    seconds of the first, checked call, which for "compile" is the compilation, and the timed
    callable of one input). Without `check` it skips the float64 references and returns None
    for rel_err."""
    timer = median_event_ms if device.type == "cuda" else median_wall_ms
    warmup = _WARMUP[system] if device.type == "cuda" else 1
    if mode.startswith("bf16"):
        autocast = _autocast(mode, device)

        # One autocast region per call, as one network forward is: autocast caches the bf16
        # copies of the weights for the region, and a region spanning the whole timing loop
        # would take the weight casts out of eager's time. The backward runs outside it.
        def forward(x):
            with autocast:
                return fn(x)
    else:
        forward = fn

    x = inputs[0]
    began = time.perf_counter()
    if direction == "fwd":
        with torch.no_grad():
            y = forward(x)
            _synchronize(device)
            first_s = time.perf_counter() - began
            errors = [relative_l2_error(y, reference["y"])] if check else [None]
            ms = timer(forward, inputs, repeats, warmup)

        def timed(x):
            with torch.no_grad():
                return forward(x)
    else:
        y = forward(x)
        # The upstream gradient in the output's dtype and layout, as a network would pass it.
        grad_output = torch.empty_like(y).copy_(grad_base)
        grads = torch.autograd.grad(y, [x, weight, bias], grad_output)
        _synchronize(device)
        first_s = time.perf_counter() - began
        errors = [None]
        if check:
            expected = reference_gradients_float64(
                reference["x"], reference["weight"], reference["bias"], grad_output, y,
                reference["stride"], reference["padding"], 1, reference["groups"])
            errors = [relative_l2_error(y, reference["y"])]
            errors += [relative_l2_error(a, e) for a, e in zip(grads, expected)]
            del expected
        del grads

        def step(x):
            return torch.autograd.grad(forward(x), [x, weight, bias], grad_output)

        ms = timer(step, inputs, repeats, warmup)
        timed = step
    out_dtype = str(y.dtype).replace("torch.", "")
    return ms, (max(errors) if check else None), out_dtype, first_s, timed


def _floor_ms(layer, batch, size, mode, direction, bandwidth):
    """Bytes that must move at least once, in the mode's element size, over the copy bandwidth.
    Forward: x, W and y. Training step: bench._time_training_steps' count (forward reads x and
    writes y; backward reads grad_y, y and x and writes grad_x; W read and grad_W written)."""
    if bandwidth is None:
        return None
    element = 2 if mode.startswith("bf16") else 4
    out = _output_size(size, layer)
    x_bytes = batch * layer.in_channels * size * size * element
    y_bytes = batch * layer.out_channels * out * out * element
    w_bytes = layer.out_channels * (layer.in_channels // layer.groups) * layer.kernel ** 2 * element
    if direction == "fwd":
        total = x_bytes + y_bytes + w_bytes
    else:
        total = 3 * x_bytes + 3 * y_bytes + 2 * w_bytes
    return total / bandwidth * 1e3


INPUTS = ("float32", "network")


def _input_dtype(layer, mode, inputs):
    """The dtype a layer's input arrives in: float32, or with inputs "network" in the bf16 modes
    bfloat16 (a previous layer's autocast output) for every layer but a stem (the image)."""
    if inputs == "network" and mode.startswith("bf16") and layer.in_channels != 3:
        return torch.bfloat16
    return torch.float32


def _bench_layer_mode(layer, mode, directions, systems, device, batch, size, repeats, precision,
                      bandwidth, device_name, input_kind="float32"):
    """The records of one layer in one mode: every direction x system (`input_kind`: run's
    `inputs`)."""
    memory_format = torch.channels_last if mode.endswith("_cl") else torch.contiguous_format
    eager, fused = _build_modules(layer, device, memory_format)
    out = _output_size(size, layer)
    x_shape = (batch, layer.in_channels, size, size)
    pair_bytes = (batch * layer.in_channels * size * size
                  + batch * layer.out_channels * out * out) * 4
    sets = max(1, min(16, L2_FLUSH_BYTES // pair_bytes + 1))
    torch.manual_seed(1)
    input_dtype = _input_dtype(layer, mode, input_kind)
    inputs = [torch.randn(x_shape, device=device).to(input_dtype).contiguous(
        memory_format=memory_format) for _ in range(sets)]
    grad_base = torch.randn((batch, layer.out_channels, out, out), device=device)

    conv = eager.conv
    reference = {"x": inputs[0], "weight": conv.weight, "bias": conv.bias,
                 "stride": layer.stride, "padding": _padding(layer), "groups": layer.groups}
    if mode.startswith("bf16"):  # what autocast hands the convolution
        for name in ("x", "weight", "bias"):
            reference[name] = reference[name].detach().to(torch.bfloat16)
    reference["y"] = reference_float64(reference["x"], reference["weight"], reference["bias"],
                                       layer.stride, _padding(layer), 1, layer.groups)

    records = []
    for direction in directions:
        case_inputs = inputs if direction == "fwd" else [
            x.detach().requires_grad_() for x in inputs]
        floor_ms = _floor_ms(layer, batch, size, mode, direction, bandwidth)
        timed = []
        for system in systems:
            module = fused if system == "fusedconv" else eager
            fn = module
            if system == "compile":
                _dynamo().reset()  # one cache entry per timing; see _settings
                fn = torch.compile(eager, dynamic=False)
            ms, error, out_dtype, first_s, timed_fn = _measure(
                system, fn, module.weight if system == "fusedconv" else conv.weight,
                module.bias if system == "fusedconv" else conv.bias, direction, mode, device,
                case_inputs, grad_base, reference, repeats)
            record = {"case": layer.name, "direction": direction, "system": system, "ms": ms,
                      "rel_err": error, "floor_ms": floor_ms, "device": device_name,
                      "torch": torch.__version__, "mode": mode, "precision": precision,
                      "batch": batch, "network": layer.network, "input": list(x_shape),
                      "input_dtype": str(input_dtype).replace("torch.", ""),
                      "out_dtype": out_dtype}
            if system == "compile":
                record["compile_s"] = first_s
            timed.append(timed_fn)
            records.append(record)
            _LOG.info("%-22s %-7s %-6s %-9s %9.4f ms  rel. err %.1e%s", layer.name, mode,
                      direction, system, ms, error,
                      "  compile %.1f s" % first_s if system == "compile" else "")
        medians = _interleaved_medians(timed, case_inputs, _INTERLEAVED_ROUNDS * repeats, device)
        for record, ms in zip(records[-len(systems):], medians):
            record["ms"] = ms
        del timed
    return records


def run(layers=None, device="cuda", modes=MODES, directions=DIRECTIONS, systems=SYSTEMS,
        batch=None, repeats=DEFAULT_REPEATS, precision="default", cudnn_benchmark=False,
        image_size=224, progress=None, inputs="float32"):
    """Benchmark `layers` (default: all of LAYERS) in every mode x direction x system; returns
    JSON-ready records, one per (layer, mode, direction, system).

    precision "default" runs under PyTorch's current TF32 flags (recorded as "tf32" where cuDNN
    may use TF32, else "fp32"); "fp32" turns TF32 off for the run. `image_size` scales every
    layer's spatial size from 224 (smaller for quick runs). `progress(records)` is called after
    each (layer, mode) with all records so far (the CLI checkpoints its JSON file there).
    `inputs`: "float32" (every mode) or "network" (the module docstring)."""
    device = torch.device(device)
    layers = list(LAYERS if layers is None else layers)
    batch = batch or DEFAULT_BATCH[device.type]
    if precision not in ("default", "fp32"):
        raise ValueError("precision must be 'default' or 'fp32', got %r" % (precision,))
    if inputs not in INPUTS:
        raise ValueError("inputs must be one of %s, got %r" % (", ".join(INPUTS), inputs))
    if "fusedconv" in systems:
        fusedconv.load_extension()
    records = []
    with _settings(device, precision, cudnn_benchmark, "compile" in systems):
        precision_label = _precision_label(device)
        bandwidth = measure_copy_bandwidth() if device.type == "cuda" else None
        device_name = _device_name(device)
        for layer in layers:
            size = _scaled_size(layer, image_size)
            for mode in modes:
                records += _bench_layer_mode(layer, mode, directions, systems, device, batch,
                                             size, repeats, precision_label, bandwidth,
                                             device_name, inputs)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                if progress is not None:
                    progress(records)
    return records


def _grouped(records):
    """{(case, mode, direction): {system: record}}, in first-seen order."""
    groups = collections.OrderedDict()
    for r in records:
        groups.setdefault((r["case"], r["mode"], r["direction"]), {})[r["system"]] = r
    return groups


def format_table(records):
    """One Markdown row per (case, mode, direction): each system's ms, fusedconv's speedups over
    eager and compile, the share of the memory floor fusedconv reaches and its error."""
    lines = ["| case | mode | dir | eager ms | compile ms | fusedconv ms | x eager | x compile "
             "| % of memory floor | fusedconv rel. err |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (case, mode, direction), by_system in _grouped(records).items():
        def ms(system):
            return by_system[system]["ms"] if system in by_system else None

        fused = by_system.get("fusedconv")
        cells = [case, mode, direction]
        cells += ["%.4f" % ms(s) if ms(s) is not None else "-" for s in SYSTEMS]
        for baseline in ("eager", "compile"):
            cells.append("%.2f" % (ms(baseline) / fused["ms"])
                         if fused is not None and ms(baseline) is not None else "-")
        floor = fused.get("floor_ms") if fused is not None else None
        cells.append("%.0f%%" % (100 * floor / fused["ms"]) if floor is not None else "-")
        cells.append("%.1e" % fused["rel_err"] if fused is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _comparison_line(records, baseline, direction, prefix):
    """fusedconv against `baseline` over the cases of `direction` (None: all directions)."""
    label = direction or "all"
    pairs = []
    for (case, mode, case_direction), by_system in _grouped(records).items():
        if direction is not None and case_direction != direction:
            continue
        if baseline in by_system and "fusedconv" in by_system:
            name = "%s %s" % (case, mode)
            if direction is None:
                name += " " + case_direction
            pairs.append((name, by_system[baseline]["ms"], by_system["fusedconv"]["ms"]))
    if not pairs:
        return "%s %s: no case has both %s and fusedconv times" % (prefix, label, baseline)
    slower = sum(1 for _, base_ms, fused_ms in pairs if fused_ms > base_ms)
    speedups = [(base_ms / fused_ms, name) for name, base_ms, fused_ms in pairs]
    geometric_mean = math.exp(statistics.mean(math.log(s) for s, _ in speedups))
    worst, worst_name = min(speedups, key=lambda item: item[0])
    return ("%s %s: %d of %d cases slower than %s; geometric-mean speedup %.2fx; worst %.2fx (%s)"
            % (prefix, label, slower, len(pairs), baseline, geometric_mean, worst, worst_name))


def summary_lines(records, baseline="eager", prefix="summary"):
    """One line per direction (in record order) and one over all of them, e.g. ``summary fwd: 2
    of 88 cases slower than eager; geometric-mean speedup 1.31x; worst 0.97x (mnv3 dw5x5 s2 672
    bf16_cl)``; "slower" means fusedconv's ms above the baseline's."""
    directions = list(dict.fromkeys(r["direction"] for r in records))
    return [_comparison_line(records, baseline, direction, prefix)
            for direction in directions + [None]]


KINDS = ("stem", "1x1", "depthwise", "dense")


def layer_kind(layer):
    """The family issue 20 sets targets by: "depthwise" (groups == in_channels), "stem" (an
    image's few channels), "1x1", or "dense" (3x3 and wider, grouped or not)."""
    if layer.groups > 1 and layer.groups == layer.in_channels:
        return "depthwise"
    if layer.in_channels <= 4:
        return "stem"
    return "1x1" if layer.kernel == 1 else "dense"


def kernel_time_summary_lines(records, layers=None, within=2.0):
    """Per layer kind, then over all, of GPU-time records (`benchmarks/networks_kernel_times.py`:
    case, mode, eager_us, fusedconv_us, floor_us): how many cases run within `within` x of the
    memory floor, the geometric means of fusedconv / floor and of eager / fusedconv, and the
    smallest speedup, e.g. ``depthwise: 10 of 24 within 2x of the memory floor (geomean 2.62x
    the floor); speedup over eager geomean 2.00x, worst 1.20x (mnv3 dw5x5 s2 672 bf16_cl)``."""
    kinds = {layer.name: layer_kind(layer) for layer in (LAYERS if layers is None else layers)}
    groups = collections.defaultdict(list)
    for record in records:
        if record["case"] not in kinds:
            raise ValueError("records: case %r is not a layer of the suite" % (record["case"],))
        groups[kinds[record["case"]]].append(record)
        groups["all"].append(record)

    def geometric_mean(values):
        return math.exp(statistics.mean(math.log(v) for v in values))

    lines = []
    for kind in [k for k in KINDS if k in groups] + ["all"]:
        group = groups[kind]
        if not group:
            continue
        over_floor = [r["fusedconv_us"] / r["floor_us"] for r in group]
        speedups = [(r["eager_us"] / r["fusedconv_us"], "%s %s" % (r["case"], r["mode"]))
                    for r in group]
        worst, worst_name = min(speedups)
        lines.append("%s: %d of %d within %gx of the memory floor (geomean %.2fx the floor); "
                     "speedup over eager geomean %.2fx, worst %.2fx (%s)"
                     % (kind, sum(v <= within for v in over_floor), len(group), within,
                        geometric_mean(over_floor), geometric_mean([s for s, _ in speedups]),
                        worst, worst_name))
    return lines


def format_report(records):
    """Title, table, the comparisons with compile, and last the summary lines against eager."""
    def values(key):
        return "/".join(str(v) for v in dict.fromkeys(r.get(key) for r in records))

    lines = ["fusedconv networks bench | %s | torch %s | batch %s | precision %s"
             % (values("device"), values("torch"), values("batch"), values("precision"))]
    compile_times = [r["compile_s"] for r in records if r.get("compile_s") is not None]
    if compile_times:
        lines.append("torch.compile: %d compilations, %.0f s in all, at most %.1f s"
                     % (len(compile_times), sum(compile_times), max(compile_times)))
    lines += ["", format_table(records), ""]
    if any(r["system"] == "compile" for r in records):
        lines += summary_lines(records, "compile", "vs compile")
    lines += summary_lines(records)
    return "\n".join(lines)


def plot(records, path):
    """Speedup over eager of compile and fusedconv, one panel per (direction, mode), as a PNG
    (needs matplotlib: ImportError without it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _grouped(records)
    panels = list(dict.fromkeys((direction, mode) for (_, mode, direction) in groups))
    cases = list(dict.fromkeys(case for case, _, _ in groups))
    figure, axes = plt.subplots(len(panels), 1, figsize=(max(10, 0.45 * len(cases)),
                                                         2.6 * len(panels)),
                                squeeze=False, sharex=True)
    width = 0.4
    for axis, (direction, mode) in zip(axes[:, 0], panels):
        for index, system in enumerate(("compile", "fusedconv")):
            positions, speedups = [], []
            for i, case in enumerate(cases):
                by_system = groups.get((case, mode, direction), {})
                if "eager" in by_system and system in by_system:
                    positions.append(i + (index - 0.5) * width)
                    speedups.append(by_system["eager"]["ms"] / by_system[system]["ms"])
            if positions:
                axis.bar(positions, speedups, width, label=system,
                         color="tab:blue" if system == "fusedconv" else "tab:orange")
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_ylabel("x eager")
        axis.set_title("%s, %s" % (direction, mode), fontsize=9)
        axis.legend(fontsize=7)
    bottom = axes[-1, 0]
    bottom.set_xticks(range(len(cases)))
    bottom.set_xticklabels(cases, rotation=60, ha="right", fontsize=8)
    first = records[0]
    figure.suptitle("conv + hardswish + relu, batch %s, %s, torch %s, precision %s"
                    % (first["batch"], first["device"], first["torch"], first["precision"]))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _record_key(record):
    return tuple(record.get(k) for k in ("case", "mode", "direction", "system", "batch",
                                         "precision", "device", "torch")) + (
        record.get("input_dtype", "float32"),)  # records from before the key: float32


def _read_records(path):
    """The records already in `path` (a JSON list), [] if it does not exist."""
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        try:
            existing = json.load(handle)
        except ValueError as error:
            raise SystemExit("fusedconv bench: %s is not a JSON list of records (%s)"
                             % (path, error))
    if not isinstance(existing, list):
        raise SystemExit("fusedconv bench: %s is not a JSON list of records" % path)
    return existing


def merge_records(existing, new):
    """`existing` with `new` appended; an existing record measured again (same case, mode,
    direction, system, batch, precision, device, torch and input dtype) is replaced."""
    keys = {_record_key(r) for r in new}
    return [r for r in existing if _record_key(r) not in keys] + list(new)


def _write_records(path, records):
    # Write whole, then rename: a run killed mid-write leaves the previous file intact.
    temporary = "%s.tmp%d" % (path, os.getpid())
    with open(temporary, "w") as handle:
        json.dump(records, handle, indent=1)
    os.replace(temporary, path)


def main(args):
    """Run the CLI's ``bench --suite networks``; returns the report text (the caller prints it).

    ``--json PATH`` appends: records already in PATH stay (those measured again are replaced), so
    a suite split over several calls collects in one file; it is rewritten after each layer and
    mode, so a run stopped early keeps what it measured. ``--plot`` draws every record in that
    file (or this run's records without ``--json``)."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("fusedconv bench --suite networks: --device cuda needs a CUDA GPU "
                         "(use --device cpu)")
    try:
        layers = select_layers(args.layers)
        modes = parse_choices(args.modes, MODES, "mode(s)")
        directions = parse_choices(args.directions, DIRECTIONS, "direction(s)")
        systems = parse_choices(args.systems, SYSTEMS, "system(s)")
    except ValueError as error:
        raise SystemExit("fusedconv bench: %s" % error)
    existing = []
    if args.json:  # read and rewrite now: a bad or unwritable path fails before the run
        existing = _read_records(args.json)
        try:
            _write_records(args.json, existing)
        except OSError as error:
            raise SystemExit("fusedconv bench: cannot write %s (%s)" % (args.json, error))

    def checkpoint(records):
        _write_records(args.json, merge_records(existing, records))

    records = run(layers, device, modes, directions, systems, batch=args.batch,
                  repeats=args.repeats or DEFAULT_REPEATS, precision=args.precision or "default",
                  cudnn_benchmark=args.cudnn_benchmark, image_size=args.image_size or 224,
                  progress=checkpoint if args.json else None, inputs=args.inputs or "float32")
    notes = []
    everything = records
    if args.json:
        everything = merge_records(existing, records)
        _write_records(args.json, everything)
        notes.append("wrote %d records to %s (%d in the file)"
                     % (len(records), args.json, len(everything)))
    if args.plot:
        try:
            plot(everything, args.plot)
            notes.append("wrote the plot to %s" % args.plot)
        except ImportError:
            notes.append("fusedconv bench: matplotlib is not installed; no plot written")
    return "\n".join(notes + [format_report(records)])
