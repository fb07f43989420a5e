"""GPU time per call of the channels_last GEMM against the floor path, with the memory floor.

Each system's call is captured 20 times into a CUDA graph and replayed (median of 15 replays), so
the time is the GPU's, without the host's launch work; the floor is PyTorch's convolution
(cuDNN) plus our in-place bias + activation pass. "mem" is x + W + y bytes over the measured copy
bandwidth. Layers: crossover.py's (the 1x1 convolutions of MobileNetV3 / EfficientNet-B0 /
ResNet-50 and ResNet-50's 3x3 ones; with --stems the 3-channel stems, with --small-channels
dense layers of 4-32 input channels) in channels_last float16, bfloat16 and float32 (TF32, as
PyTorch's default allows for convolutions; with --float32-accuracy float32 only, TF32 disallowed:
the GEMM's 3xTF32 against cuDNN's float32 kernels). --variant-set times the GEMM alone (no floor)
on the set that builds of it are compared on (scripts/variant_round.sh): KernelBench v0.1 at
batch 128 in float32 (TF32 and 3xTF32), bfloat16 and float16, then every layer above at --batch,
float32 in both precisions. Usage (GPU):
python benchmarks/channels_last_gemm_kernel_time.py [--batch 64] [--stems | --small-channels]
    [--float32-accuracy] [--variant-set] [--json FILE]
"""

import argparse
import json

import torch

import fusedconv
from fusedconv.bench import measure_copy_bandwidth

from crossover import (channels_last_gemm_shapes, channels_last_small_channel_shapes,
                       channels_last_stem_shapes)
from forward_kernel_times import graph_us


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--stems", action="store_true", help="the 3-channel stems only")
    parser.add_argument("--small-channels", action="store_true",
                        help="dense layers of 4-32 input channels only")
    parser.add_argument("--float32-accuracy", action="store_true",
                        help="float32 with TF32 disallowed (3xTF32) only")
    parser.add_argument("--variant-set", action="store_true",
                        help="the GEMM alone on KernelBench v0.1 and every layer")
    parser.add_argument("--json", default=None, help="write the records here")
    args = parser.parse_args()
    batch = args.batch
    if args.variant_set:
        time_variant_set(batch, args.json)
        return
    if args.stems:
        shapes = channels_last_stem_shapes()
    elif args.small_channels:
        shapes = channels_last_small_channel_shapes()
    else:
        shapes = channels_last_gemm_shapes()
    if args.float32_accuracy:
        shapes = [shape for shape in shapes if shape[-1] == torch.float32]
    allow_tf32 = not args.float32_accuracy
    records = []
    ops = fusedconv.load_extension()
    bandwidth = measure_copy_bandwidth()
    print("copy bandwidth %.0f GB/s" % (bandwidth / 1e9))
    header = ("layer", "dtype", "fused_us", "floor_us", "mem_us", "gain", "%mem", "TFLOP/s")
    print("%-20s %-9s %9s %9s %9s %7s %6s %8s" % header)
    previous = ops._plan_policy()
    try:
        for cin, cout, size, k, stride, dtype in shapes:
            call = channels_last_call(batch, cin, cout, size, k, stride, k // 2, dtype,
                                      allow_tf32)
            x, w = call[0], call[1]
            ops._plan_policy("fused")
            if ops._plan(*call) != "channels_last_gemm":
                continue
            fused = graph_us(lambda: ops.conv2d_hardswish_relu(*call))
            ops._plan_policy("floor")
            floor = graph_us(lambda: ops.conv2d_hardswish_relu(*call))
            out_size = (size + 2 * (k // 2) - k) // stride + 1
            outputs = batch * cout * out_size * out_size
            memory = (x.numel() + w.numel() + outputs) * x.element_size() / bandwidth
            tflops = 2.0 * outputs * cin * k * k / (fused * 1e-6) / 1e12
            print("%-20s %-9s %9.2f %9.2f %9.2f %6.2fx %5.0f%% %8.1f" % (
                "%d-%d %d k%d s%d" % (cin, cout, size, k, stride), str(dtype)[6:], fused, floor,
                memory * 1e6, floor / fused, 100 * memory * 1e6 / fused, tflops))
            records.append(dict(cin=cin, cout=cout, size=size, k=k, stride=stride, batch=batch,
                                dtype=str(dtype)[6:], allow_tf32=allow_tf32, fused_us=fused,
                                floor_us=floor, memory_us=memory * 1e6))
    finally:
        ops._plan_policy(previous)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


def channels_last_call(batch, cin, cout, size, k, stride, pad, dtype, allow_tf32):
    """The op's arguments for one layer: random x and W in channels_last, a bias."""
    x = torch.randn(batch, cin, size, size, device="cuda", dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(cout, cin, k, k, device="cuda", dtype=dtype) / (cin * k * k) ** 0.5
    w = w.contiguous(memory_format=torch.channels_last)
    b = torch.randn(cout, device="cuda", dtype=dtype)
    return (x, w, b, [stride, stride], [pad] * 4, [1, 1], 1, allow_tf32)


def variant_set_cases(batch):
    """(batch, in_channels, out_channels, size, k, stride, padding, dtype, allow_tf32)."""
    cases = [(128, 8, 64, 128, 3, 1, 0, dtype, tf32)
             for dtype, tf32 in ((torch.float32, True), (torch.float32, False),
                                 (torch.bfloat16, True), (torch.float16, True))]
    for cin, cout, size, k, stride, dtype in (channels_last_gemm_shapes()
                                              + channels_last_small_channel_shapes()
                                              + channels_last_stem_shapes()):
        for tf32 in ((True, False) if dtype == torch.float32 else (True,)):
            case = (batch, cin, cout, size, k, stride, k // 2, dtype, tf32)
            if case not in cases:  # 64 -> 64 at 56 is in two of the lists
                cases.append(case)
    return cases


def time_variant_set(batch, json_path):
    """The GEMM's GPU time alone on each case the planner gives it (fused policy)."""
    ops = fusedconv.load_extension()
    previous = ops._plan_policy("fused")
    records = []
    try:
        for n, cin, cout, size, k, stride, pad, dtype, tf32 in variant_set_cases(batch):
            torch.manual_seed(0)
            call = channels_last_call(n, cin, cout, size, k, stride, pad, dtype, tf32)
            if ops._plan(*call) != "channels_last_gemm":
                continue
            us = graph_us(lambda: ops.conv2d_hardswish_relu(*call))
            name = "%d-%d %d k%d s%d p%d n%d %s%s" % (
                cin, cout, size, k, stride, pad, n, str(dtype)[6:], "" if tf32 else " 3xtf32")
            print("%-44s %9.2f" % (name, us), flush=True)
            records.append(dict(name=name, fused_us=us))
    finally:
        ops._plan_policy(previous)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
