"""Crossover sweep: each fused kernel against the floor path, on the shapes it applies to.

For a grid of float32 NCHW shapes (and bfloat16 where the wgmma kernel takes it), in both
precision modes (TF32 allowed / disallowed by torch.backends.cudnn.allow_tf32, the op following
it), times in one process the forward with the planners' policy set to "fused" (a fused kernel
wherever one applies) and to "floor", and likewise the backward op (all three gradients).
Python-call medians with CUDA events. Writes one JSON record per (shape, precision, direction)
with the kernel the fused policy chose; docs/DESIGN.md's dispatch rule is read off these records
(benchmarks/NOTES.md, "Crossovers"). `--directions depthwise` sweeps the depthwise kernel
(both layouts, float32, bfloat16 and float16) the same way, `--directions grouped` the grouped
kernel (ResNeXt / RegNet / ShuffleNet grouped layers, both layouts, three dtypes),
`--directions depthwise_bwd` the depthwise backward, `--directions channels_last_gemm` the
channels_last GEMM (1x1 and 3x3 layers, float16 / bfloat16 / float32), `--directions
channels_last_stems` the same on 3-channel stems, `--directions fwd16` the NCHW float16 /
bfloat16 forward of few input channels (mma.sync where wgmma does not take it), `--directions
small_bwd` the small-problem backward (float32, TF32 off), `--directions bias_grad` the floor
backward with grad_bias summed in its g pass (the networks suite's layers, both layouts, three
dtypes). Usage (GPU):
python benchmarks/crossover.py --json out.json
"""

import argparse
import itertools
import json
import signal
import time

import torch

import fusedconv
from fusedconv.bench import median_event_ms
from fusedconv.bench_networks import LAYERS

BATCH = 32


def median_ms(fn, repeats):
    """Median ms of fn() over the calls (fusedconv.bench's CUDA-event timer)."""
    return median_event_ms(lambda _: fn(), [None], repeats, warmup=3)


def forward_shapes():
    """(Cin, Cout, H, k, stride, dtype): the fused kernels' float32 NCHW domain, bf16 too."""
    shapes = []
    for cin, cout, k, stride, size in itertools.product(
            (3, 8, 16, 32, 64, 128, 256), (16, 32, 64, 128, 256), (1, 3, 5), (1, 2), (28, 56)):
        if k == 5 and cin > 64:
            continue
        shapes.append((cin, cout, size, k, stride, torch.float32))
    for cin, cout in ((8, 64), (16, 64), (32, 128), (64, 64)):
        shapes.append((cin, cout, 56, 3, 1, torch.bfloat16))
    return shapes


def forward_16bit_shapes():
    """(Cin, Cout, H, k, stride, dtype): NCHW float16 / bfloat16 with few input channels, the
    stems (3 channels at 224, stride 2) among them, and stride-1 layers of 32-128 channels;
    wgmma takes the stride-1 ones past 16 output channels, mma.sync the rest."""
    shapes = [(3, cout, 224, k, 2, dtype) for cout, k, dtype in itertools.product(
        (16, 32, 64), (3, 7), (torch.bfloat16, torch.float16))]
    for cin, cout, k, stride, dtype in itertools.product(
            (3, 4, 8, 16), (16, 32, 64), (3, 5), (1, 2), (torch.bfloat16, torch.float16)):
        shapes.append((cin, cout, 56, k, stride, dtype))
    # Past the resident wgmma kernel's 32 k steps: its streamed variant.
    for (cin, cout), k, size, dtype in itertools.product(
            ((32, 64), (64, 64), (64, 128), (128, 128), (128, 64)), (1, 3), (28, 56),
            (torch.bfloat16, torch.float16)):
        shapes.append((cin, cout, size, k, 1, dtype))
    return shapes


def backward_shapes():
    """(Cin, Cout, H, k): the fused backward's domain (float32 NCHW, stride 1)."""
    return list(itertools.product((3, 8, 16, 32, 64, 128), (16, 32, 64, 128), (28, 56, 112),
                                  (1, 3, 5)))


def sweep(repeats, directions, records):
    """Appends each measured record to `records` as it comes (a run cut short keeps them)."""
    ops = fusedconv.load_extension()

    def add(record):
        if record is not None:
            records.append(record)

    for tf32 in (True, False):
        torch.backends.cudnn.allow_tf32 = tf32
        precision = "tf32" if tf32 else "fp32"
        if "fwd" in directions:
            for cin, cout, size, k, stride, dtype in forward_shapes():
                add(time_forward(ops, cin, cout, size, k, stride, dtype, precision, repeats))
        if "fwd16" in directions and tf32:  # one TF32 product in either mode: exact for 16 bits
            for cin, cout, size, k, stride, dtype in forward_16bit_shapes():
                add(time_forward(ops, cin, cout, size, k, stride, dtype, precision, repeats))
        if "depthwise" in directions:
            for shape in depthwise_shapes():
                add(time_depthwise(ops, *shape, precision, repeats))
        if "channels_last_gemm" in directions:
            for shape in channels_last_gemm_shapes():
                add(time_channels_last_gemm(ops, *shape, precision, repeats))
        if "grouped" in directions:
            for shape in grouped_shapes():
                if tf32 or shape[-2] == torch.float32:  # 16-bit: the same kernels either way
                    add(time_grouped(ops, *shape, precision, repeats))
        if "channels_last_stems" in directions:
            for shape in channels_last_stem_shapes():
                add(time_channels_last_gemm(ops, *shape, precision, repeats))
        if "depthwise_bwd" in directions:
            for shape in depthwise_shapes():
                add(time_depthwise_backward(ops, *shape, precision, repeats))
        if "bias_grad" in directions and tf32:  # cuDNN's share only changes with TF32
            for layer, dtype, channels_last in bias_grad_cases():
                add(time_bias_grad(ops, layer, dtype, channels_last, precision, repeats))
        if "bwd" in directions:
            for cin, cout, size, k in backward_shapes():
                add(time_backward(ops, cin, cout, size, k, precision, repeats))
        if "small_bwd" in directions and not tf32:  # float32 FMAs: TF32 changes cuDNN's only
            for shape in small_backward_shapes():
                add(time_small_backward(ops, *shape, precision, repeats))


def depthwise_shapes():
    """(channels, size, k, stride, dtype, channels_last): the depthwise kernel's domain at the
    sizes networks run it (MobileNetV3 / EfficientNet channel counts and their planes)."""
    pairs = ((32, 112), (64, 56), (96, 112), (120, 28), (144, 56), (240, 28), (672, 14))
    return [(channels, size, k, stride, dtype, channels_last)
            for (channels, size), k, stride, dtype, channels_last in itertools.product(
                pairs, (3, 5), (1, 2), (torch.float32, torch.bfloat16, torch.float16),
                (False, True))]


def time_depthwise(ops, channels, size, k, stride, dtype, channels_last, precision, repeats):
    x = torch.randn(BATCH, channels, size, size, device="cuda", dtype=dtype)
    w = torch.randn(channels, 1, k, k, device="cuda", dtype=dtype) / k
    b = torch.randn(channels, device="cuda", dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        w = w.contiguous(memory_format=torch.channels_last)
    args = (x, w, b, [stride, stride], [k // 2] * 4, [1, 1], channels)
    record = _forward_record(ops, args, repeats)
    if record is not None:
        record.update(cin=channels, cout=channels, size=size, k=k, stride=stride,
                      dtype=str(dtype)[6:], precision=precision, groups=channels,
                      layout="channels_last" if channels_last else "nchw")
    return record


def grouped_shapes():
    """(channels, groups, size, k, stride, dtype, channels_last): grouped layers of ResNeXt-50
    32x4d (the networks suite's), ResNeXt-101 32x8d, RegNetX-style 3x3s of 8 / 16 / 24 channels
    per group and ShuffleNet-style grouped 1x1s, at their input planes, in both layouts and the
    three dtypes."""
    layers = ((128, 32, 56, 3, 1), (256, 32, 56, 3, 2), (512, 32, 14, 3, 1),
              (1024, 32, 14, 3, 2), (256, 32, 56, 3, 1), (512, 32, 28, 3, 2),
              (64, 8, 56, 3, 1), (96, 6, 28, 3, 2), (240, 10, 14, 3, 1), (240, 3, 28, 1, 1),
              (480, 8, 14, 1, 1))
    return [layer + (dtype, channels_last) for layer, dtype, channels_last in itertools.product(
        layers, (torch.float32, torch.bfloat16, torch.float16), (False, True))]


def time_grouped(ops, channels, groups, size, k, stride, dtype, channels_last, precision,
                 repeats):
    x, w, b = _tensors(channels, channels, size, k, dtype, groups)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        w = w.contiguous(memory_format=torch.channels_last)
    args = (x, w, b, [stride, stride], [k // 2] * 4, [1, 1], groups)
    record = _forward_record(ops, args, repeats)
    if record is not None:
        record.update(cin=channels, cout=channels, size=size, k=k, stride=stride,
                      dtype=str(dtype)[6:], precision=precision, groups=groups,
                      layout="channels_last" if channels_last else "nchw")
    return record


def channels_last_gemm_shapes():
    """(in_channels, out_channels, size, k, stride, dtype): the 1x1 layers of MobileNetV3 /
    EfficientNet-B0 / ResNet-50 (expanding and projecting) and ResNet-50's 3x3 layers (stride 1
    and 2) at their input planes, channels_last float16 / bfloat16 / float32 (float32 takes
    the kernel with TF32 allowed only)."""
    layers = ((16, 64, 112, 1, 1), (64, 16, 112, 1, 1), (24, 144, 56, 1, 1),
              (144, 24, 56, 1, 1), (40, 240, 28, 1, 1), (240, 40, 28, 1, 1), (80, 480, 14, 1, 1),
              (480, 112, 14, 1, 1), (112, 672, 14, 1, 1), (672, 160, 7, 1, 1),
              (160, 960, 7, 1, 1), (960, 160, 7, 1, 1), (64, 256, 56, 1, 1), (256, 64, 56, 1, 1),
              (512, 128, 28, 1, 1), (1024, 256, 14, 1, 1), (64, 64, 56, 3, 1),
              (128, 128, 28, 3, 1), (256, 256, 14, 3, 1), (512, 512, 7, 3, 1),
              (128, 128, 56, 3, 2), (256, 256, 28, 3, 2), (512, 512, 14, 3, 2))
    return [layer + (dtype,) for layer, dtype in itertools.product(
        layers, (torch.bfloat16, torch.float16, torch.float32))]


def channels_last_stem_shapes():
    """(in_channels, out_channels, size, k, stride, dtype): stems (3 input channels, in no
    whole 16-byte vector, so the GEMM stages runs of kernel_w x C elements) of MobileNetV3,
    EfficientNet-B0 and ResNet-50 at 224 and two stride-1 variants, channels_last float16 /
    bfloat16 / float32 (float32 takes the kernel with TF32 allowed only)."""
    layers = ((3, 16, 224, 3, 2), (3, 24, 224, 3, 2), (3, 32, 224, 3, 2), (3, 64, 224, 7, 2),
              (3, 32, 112, 3, 1), (3, 64, 112, 3, 1))
    return [layer + (dtype,) for layer, dtype in itertools.product(
        layers, (torch.bfloat16, torch.float16, torch.float32))]


def channels_last_small_channel_shapes():
    """(in_channels, out_channels, size, k, stride, dtype): dense convolutions of few input
    channels in whole 16-byte vectors (4-32: KernelBench v0.1's 8 -> 64 at 128, the first
    layers of segmentation and super-resolution networks at full resolution), where cuDNN's
    channels_last kernels may be as slow as on the 3-channel stems; 64 -> 64 as the known loss.
    channels_last float16 / bfloat16 / float32 (the kernel with TF32 allowed only)."""
    layers = ((8, 64, 128, 3, 1), (4, 32, 224, 3, 2), (8, 32, 112, 3, 1), (16, 16, 112, 3, 1),
              (16, 32, 112, 3, 1), (16, 64, 56, 3, 1), (24, 24, 56, 3, 1), (32, 32, 112, 3, 1),
              (32, 64, 56, 3, 1), (32, 64, 112, 3, 2), (16, 32, 112, 5, 1), (8, 64, 112, 7, 2),
              (64, 64, 56, 3, 1))
    return [layer + (dtype,) for layer, dtype in itertools.product(
        layers, (torch.bfloat16, torch.float16, torch.float32))]


def time_channels_last_gemm(ops, cin, cout, size, k, stride, dtype, precision, repeats):
    x, w, b = _tensors(cin, cout, size, k, dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    w = w.contiguous(memory_format=torch.channels_last)
    args = (x, w, b, [stride, stride], [k // 2] * 4, [1, 1], 1)
    record = _forward_record(ops, args, repeats)
    if record is not None:
        record.update(cin=cin, cout=cout, size=size, k=k, stride=stride, dtype=str(dtype)[6:],
                      precision=precision, layout="channels_last")
    return record


def time_depthwise_backward(ops, channels, size, k, stride, dtype, channels_last, precision,
                            repeats):
    """The backward op (all three gradients) of a depthwise layer, fused policy against floor
    (both layouts; the weight in the input's format, as a converted model has it); None where
    the depthwise backward does not apply."""
    x = torch.randn(BATCH, channels, size, size, device="cuda", dtype=dtype)
    w = torch.randn(channels, 1, k, k, device="cuda", dtype=dtype) / k
    b = torch.randn(channels, device="cuda", dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        w = w.contiguous(memory_format=torch.channels_last)
    geometry = ([stride, stride], [k // 2] * 4, [1, 1], channels)
    record = _backward_record(ops, x, w, b, geometry, "depthwise", repeats)
    if record is not None:
        record.update(cin=channels, cout=channels, size=size, k=k, stride=stride,
                      dtype=str(dtype)[6:], precision=precision, groups=channels,
                      layout="channels_last" if channels_last else "nchw")
    return record


def bias_grad_cases():
    """(networks-suite layer, dtype, channels_last): the floor backward's bias gradient summed
    in its g pass against ATen's reduction, at the layers networks train."""
    return list(itertools.product(LAYERS, (torch.float32, torch.bfloat16, torch.float16),
                                  (False, True)))


def time_bias_grad(ops, layer, dtype, channels_last, precision, repeats):
    """The backward op (all three gradients) where the fused policy's plan is the floor with
    the bias summed in its g pass, against the floor policy's (ATen's reduction); None where
    the fused policy plans another kernel."""
    cin, cout, k, stride, groups, size = (layer.in_channels, layer.out_channels, layer.kernel,
                                          layer.stride, layer.groups, layer.size)
    x = torch.randn(BATCH, cin, size, size, device="cuda", dtype=dtype)
    fan_in = cin // groups * k * k
    w = torch.randn(cout, cin // groups, k, k, device="cuda", dtype=dtype) / fan_in ** 0.5
    b = torch.randn(cout, device="cuda", dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        w = w.contiguous(memory_format=torch.channels_last)
    geometry = ([stride, stride], [k // 2] * 4, [1, 1], groups)
    record = _backward_record(ops, x, w, b, geometry, "floor_summing_bias", repeats)
    if record is not None:
        record.update(layer=layer.name, cin=cin, cout=cout, size=size, k=k, stride=stride,
                      groups=groups, dtype=str(dtype)[6:], precision=precision,
                      layout="channels_last" if channels_last else "nchw")
    return record


def _tensors(cin, cout, size, k, dtype, groups=1):
    x = torch.randn(BATCH, cin, size, size, device="cuda", dtype=dtype)
    w = torch.randn(cout, cin // groups, k, k, device="cuda", dtype=dtype) / (
        cin // groups * k * k) ** 0.5
    b = torch.randn(cout, device="cuda", dtype=dtype)
    return x, w, b


def _with_policy(ops, policy, fn):
    previous = ops._plan_policy(policy)
    try:
        return fn()
    finally:
        ops._plan_policy(previous)


def _record(ops, direction, kernel, call, args, repeats):
    """call(*args) timed with the fused policy and with the floor, as a record."""
    fused = _with_policy(ops, "fused", lambda: median_ms(lambda: call(*args), repeats))
    floor = _with_policy(ops, "floor", lambda: median_ms(lambda: call(*args), repeats))
    return {"direction": direction, "kernel": kernel, "fused_ms": fused, "floor_ms": floor,
            "batch": BATCH}


def _forward_record(ops, args, repeats):
    """The forward op on `args` timed with the fused policy's kernel and with the floor; None
    where no fused kernel applies."""
    kernel = _with_policy(ops, "fused", lambda: ops._plan(*args))
    if kernel == "floor":
        return None
    return _record(ops, "fwd", kernel, ops.conv2d_hardswish_relu, args, repeats)


def _backward_record(ops, x, w, b, geometry, kernel, repeats):
    """The backward op (all three gradients, a random grad_output) timed with the fused policy
    and with the floor; None where the fused policy does not plan `kernel`."""
    y = ops.conv2d_hardswish_relu(x, w, b, *geometry)
    args = (torch.randn_like(y), x, w, y) + tuple(geometry) + ([True, True, True],)
    if _with_policy(ops, "fused", lambda: ops._plan_backward(*args)) != kernel:
        return None
    return _record(ops, "bwd", kernel, ops.conv2d_hardswish_relu_backward, args, repeats)


def time_forward(ops, cin, cout, size, k, stride, dtype, precision, repeats):
    x, w, b = _tensors(cin, cout, size, k, dtype)
    pad = k // 2
    args = (x, w, b, [stride, stride], [pad] * 4, [1, 1], 1)
    record = _forward_record(ops, args, repeats)
    if record is not None:
        record.update(cin=cin, cout=cout, size=size, k=k, stride=stride, dtype=str(dtype)[6:],
                      precision=precision)
    return record


def time_backward(ops, cin, cout, size, k, precision, repeats):
    x, w, b = _tensors(cin, cout, size, k, torch.float32)
    geometry = ([1, 1], [k // 2] * 4, [1, 1], 1)
    record = _backward_record(ops, x, w, b, geometry, "fused", repeats)
    if record is not None:
        record.update(cin=cin, cout=cout, size=size, k=k, stride=1, dtype="float32",
                      precision=precision)
    return record


def small_backward_shapes():
    """(Cin, Cout, H, k, stride): the small-problem backward's domain (float32 NCHW, up to 16
    output channels and 32 inputs per position), KernelBench's v0 (3 -> 16, 3x3) among them."""
    shapes = [(cin, cout, size, 3, stride)
              for cin, cout, size, stride in itertools.product(
                  (1, 3), (4, 8, 16), (32, 64, 112, 224), (1, 2))]
    shapes += [(cin, 16, size, 1, 1) for cin in (8, 32) for size in (32, 112)]
    return shapes


def time_small_backward(ops, cin, cout, size, k, stride, precision, repeats):
    x, w, b = _tensors(cin, cout, size, k, torch.float32)
    geometry = ([stride, stride], [0] * 4, [1, 1], 1)
    record = _backward_record(ops, x, w, b, geometry, "small_problem", repeats)
    if record is not None:
        record.update(cin=cin, cout=cout, size=size, k=k, stride=stride, dtype="float32",
                      precision=precision)
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", required=True)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--directions", default="fwd,bwd",
                        help="comma list of fwd, bwd (dense sweeps), fwd16, depthwise, "
                        "depthwise_bwd, grouped, channels_last_gemm, channels_last_stems, "
                        "bias_grad and small_bwd")
    args = parser.parse_args()
    started = time.perf_counter()
    records = []
    # A `timeout` (SIGTERM) ends the sweep, not the process: the records so far are still written.
    signal.signal(signal.SIGTERM, _stop)
    try:
        sweep(args.repeats, args.directions.split(","), records)
    except SystemExit:
        print("stopped early: %d records" % len(records))
    with open(args.json, "w") as handle:
        json.dump(records, handle, indent=0)
    for r in records:
        print("%s %-8s %-9s %3d->%-3d g%-3d %3d k%d s%d %-13s %-13s fused %.4f floor %.4f  %.2fx"
              % (r["direction"], r["precision"], r["dtype"], r["cin"], r["cout"],
                 r.get("groups", 1), r["size"], r["k"], r["stride"], r["kernel"],
                 r.get("layout", "nchw"), r["fused_ms"],
                 r["floor_ms"],
                 r["floor_ms"] / r["fused_ms"]))
    for line in summary_lines(records):
        print(line)
    print("%d records in %.0f s" % (len(records), time.perf_counter() - started))


def _stop(signum, _frame):
    raise SystemExit(128 + signum)


def summary_lines(records):
    """One line per (direction, kernel, dtype, layout, kernel size, stride): how many shapes the
    fused kernel won against the floor and the range of floor / fused, the dispatch rule's
    evidence at a glance."""
    groups = {}
    for r in records:
        key = (r["direction"], r["kernel"], r["dtype"], r.get("layout", "nchw"), r["k"],
               r["stride"])
        groups.setdefault(key, []).append(r["floor_ms"] / r["fused_ms"])
    return ["summary %s %s %s %s k%d s%d: won %d of %d, %.2f-%.2fx"
            % (key + (sum(g > 1.0 for g in gains), len(gains), min(gains), max(gains)))
            for key, gains in sorted(groups.items())]


if __name__ == "__main__":
    main()
