"""GPU time per call of the depthwise candidate kernels against the kernels they would replace,
the floor path and the memory floor: the A/B behind the candidates' measured rule
(csrc/cuda/common/depthwise_candidates.h; benchmarks/NOTES.md).

For the networks suite's depthwise layers (fusedconv/bench_networks.py) in float32, bfloat16
and float16, NCHW (the row kernels) and channels_last (staged filters, the sliding weight pass),
batch 64: the forward op and the backward op (all three gradients), each with the "fused" plan
and the candidates "none" ("old"), "all" ("new") and "measured" ("rule": the default), and
the "floor" plan (cuDNN plus our passes). Each call is captured 20 times into a CUDA graph and
replayed (median of 15 replays): GPU time without the host's launch work. "mem" is the bytes
that must move once over the measured copy bandwidth: x, W and y forward; grad_y, y, x, grad_x,
W and grad_W backward. Also checks that the new and old results agree (max relative L2 error).
With --planes-shapes: NCHW shapes outside the rows, where the planes kernels run under "all".
Usage (GPU): python benchmarks/depthwise_candidates_kernel_times.py [--batch 64] [--json PATH]
[--planes-shapes]
"""

import argparse
import collections
import itertools
import json

import torch

import fusedconv
from fusedconv.bench import measure_copy_bandwidth
from fusedconv.bench_networks import LAYERS
from fusedconv.reference import relative_l2_error

from forward_kernel_times import graph_us

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# --planes-shapes: NCHW depthwise layers the vector rows leave (odd or 7-wide outputs, odd
# inputs at stride 2), from MobileNetV3's and EfficientNet's last stages and odd-sized planes.
PlanesShape = collections.namedtuple("PlanesShape", "name in_channels kernel stride size")
PLANES_SHAPES = [PlanesShape("c%d %dx%d k%d s%d" % (c, size, size, k, s), c, k, s, size)
                 for c, size, k, s in ((672, 14, 5, 2), (672, 14, 3, 2), (960, 7, 5, 1),
                                       (1152, 7, 3, 1), (1152, 7, 5, 1), (144, 15, 3, 1),
                                       (144, 29, 5, 2), (32, 31, 3, 1), (240, 15, 5, 1))]


def _kernel_us(fn, calls=10):
    """GPU us per call of each kernel fn() launches (torch.profiler), by short name: one switch
    turns several candidates on at once, and this says which kernel gained or lost."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    totals = {}
    for event in profile.key_averages():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            name = event.key.replace("(anonymous namespace)::", "")
            name = name.split("(")[0].split("<")[0].split("::")[-1].split(" ")[-1]
            us = getattr(event, "device_time_total", None)
            us = event.cuda_time_total if us is None else us
            totals[name] = totals.get(name, 0.0) + us / calls
    return totals


def _variants(ops, fn):
    """fn's result, GPU us and per-kernel us under the old kernels, the candidates, the measured
    rule (what a call runs by default, among the fused kernels) and the floor plan."""
    results, times, kernels = {}, {}, {}
    for name, policy, candidates in (("old", "fused", "none"), ("new", "fused", "all"),
                                     ("rule", "fused", "measured"), ("floor", "floor", "none")):
        ops._plan_policy(policy)
        ops._depthwise_candidates(candidates)
        results[name] = fn()
        times[name] = graph_us(fn)
        kernels[name] = _kernel_us(fn)
    return results, times, kernels


def _layer_records(ops, layer, dtype_name, layout, batch, bandwidth):
    dtype = DTYPES[dtype_name]
    channels, k, stride, size = layer.in_channels, layer.kernel, layer.stride, layer.size
    x = torch.randn(batch, channels, size, size, device="cuda", dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, 1, k, k, device="cuda", dtype=dtype) * 0.3
    bias = torch.randn(channels, device="cuda", dtype=dtype)
    geometry = ([stride] * 2, [k // 2] * 4, [1, 1], channels)
    y = ops.conv2d_hardswish_relu(x, weight, bias, *geometry)
    grad_y = torch.randn_like(y)
    element = x.element_size()
    tensors = {"fwd": x.numel() + y.numel() + weight.numel(),
               "bwd": 2 * x.numel() + 2 * y.numel() + 2 * weight.numel()}
    calls = {"fwd": lambda: ops.conv2d_hardswish_relu(x, weight, bias, *geometry),
             "bwd": lambda: ops.conv2d_hardswish_relu_backward(grad_y, x, weight, y, *geometry,
                                                               [True] * 3)}
    records = []
    for direction, fn in calls.items():
        results, times, kernels = _variants(ops, fn)
        old, new = results["old"], results["new"]
        pairs = zip(old, new) if isinstance(old, (list, tuple)) else [(old, new)]
        records.append(dict(
            layer=layer.name, dtype=dtype_name, layout=layout, direction=direction, batch=batch,
            old_us=times["old"], new_us=times["new"], rule_us=times["rule"],
            floor_us=times["floor"],
            memory_us=tensors[direction] * element / bandwidth * 1e6, kernels_us=kernels,
            new_vs_old_error=max(relative_l2_error(b, a) for a, b in pairs)))
    return records


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dtypes", default="fp32,bf16,fp16")
    parser.add_argument("--json", default=None)
    parser.add_argument("--planes-shapes", action="store_true",
                        help="NCHW shapes the vector rows do not take (the planes kernels' "
                        "domain) instead of the networks suite's depthwise layers")
    args = parser.parse_args()
    ops = fusedconv.load_extension()
    bandwidth = measure_copy_bandwidth()
    print("copy bandwidth %.0f GB/s" % (bandwidth / 1e9))
    print("%-20s %-5s %-4s %-4s %9s %9s %9s %9s %9s %7s %7s %7s %7s %8s" % (
        "layer", "dtype", "lay", "dir", "old_us", "new_us", "rule_us", "floor_us", "mem_us",
        "old/new", "rule/new", "flr/new", "new/mem", "error"))
    layers = [layer for layer in LAYERS if layer.groups == layer.in_channels > 1]
    layouts = ("nchw", "channels_last")
    if args.planes_shapes:
        layers, layouts = PLANES_SHAPES, ("nchw",)
    previous = (ops._plan_policy(), ops._depthwise_candidates())
    records = []
    try:
        for layer in layers:
            for dtype_name, layout in itertools.product(args.dtypes.split(","), layouts):
                for r in _layer_records(ops, layer, dtype_name, layout, args.batch, bandwidth):
                    records.append(r)
                    print("%-20s %-5s %-4s %-4s %9.1f %9.1f %9.1f %9.1f %9.1f %6.2fx %6.2fx "
                          "%6.2fx %6.2fx %8.1e" % (
                              r["layer"], r["dtype"], layout[:4], r["direction"], r["old_us"],
                              r["new_us"], r["rule_us"], r["floor_us"], r["memory_us"],
                              r["old_us"] / r["new_us"], r["rule_us"] / r["new_us"],
                              r["floor_us"] / r["new_us"], r["new_us"] / r["memory_us"],
                              r["new_vs_old_error"]))
                    for variant in ("old", "new"):
                        print("    %s: %s" % (variant, ", ".join(
                            "%s %.1f" % item for item in sorted(r["kernels_us"][variant].items()))))
    finally:
        ops._plan_policy(previous[0])
        ops._depthwise_candidates(previous[1])
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(dict(bandwidth=bandwidth, records=records), handle, indent=1)


if __name__ == "__main__":
    main()
