"""GPU time per call of the grouped kernel against the floor path, with the memory floor.

Each system's call is captured 20 times into a CUDA graph and replayed (median of 15 replays), so
the time is the GPU's, without the host's launch work; the floor is PyTorch's convolution
(cuDNN's grouped kernels) plus our in-place bias + activation pass. "mem" is x + W + y bytes over
the measured copy bandwidth; "TFLOP/s" counts 2 per multiply-add. Layers: crossover.py's grouped
ones (ResNeXt-50's four first), NCHW and channels_last, float32 / bfloat16 / float16.
Usage (GPU): python benchmarks/grouped_kernel_time.py [--batch 64] [--layers 4]
"""

import argparse

import torch

import fusedconv
from fusedconv.bench import measure_copy_bandwidth

from crossover import grouped_shapes
from forward_kernel_times import graph_us


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--layers", type=int, default=0,
                        help="only the first N layers of the list (0: all)")
    args = parser.parse_args()
    batch = args.batch
    shapes = grouped_shapes()
    if args.layers:
        wanted = []
        for shape in shapes:
            if shape[:5] not in wanted:
                wanted.append(shape[:5])
        shapes = [s for s in shapes if s[:5] in wanted[:args.layers]]
    ops = fusedconv.load_extension()
    bandwidth = measure_copy_bandwidth()
    print("copy bandwidth %.0f GB/s" % (bandwidth / 1e9))
    header = ("layer", "dtype", "layout", "fused_us", "floor_us", "mem_us", "gain", "%mem",
              "TFLOP/s")
    print("%-22s %-9s %-6s %9s %9s %9s %7s %6s %8s" % header)
    previous = ops._plan_policy()
    try:
        for channels, groups, size, k, stride, dtype, channels_last in shapes:
            layout = torch.channels_last if channels_last else torch.contiguous_format
            x = torch.randn(batch, channels, size, size, device="cuda", dtype=dtype)
            x = x.contiguous(memory_format=layout)
            cin_g = channels // groups
            w = torch.randn(channels, cin_g, k, k, device="cuda", dtype=dtype) / (
                cin_g * k * k) ** 0.5
            w = w.contiguous(memory_format=layout)
            b = torch.randn(channels, device="cuda", dtype=dtype)
            call_args = (x, w, b, [stride, stride], [k // 2] * 4, [1, 1], groups)
            ops._plan_policy("fused")
            if ops._plan(*call_args) != "grouped":
                continue
            fused = graph_us(lambda: ops.conv2d_hardswish_relu(*call_args))
            ops._plan_policy("floor")
            floor = graph_us(lambda: ops.conv2d_hardswish_relu(*call_args))
            out_size = (size + 2 * (k // 2) - k) // stride + 1
            outputs = batch * channels * out_size * out_size
            memory = (x.numel() + w.numel() + outputs) * x.element_size() / bandwidth
            tflops = 2.0 * outputs * cin_g * k * k / (fused * 1e-6) / 1e12
            print("%-22s %-9s %-6s %9.2f %9.2f %9.2f %6.2fx %5.0f%% %8.1f" % (
                "%d g%d %d k%d s%d" % (channels, groups, size, k, stride), str(dtype)[6:],
                "cl" if channels_last else "nchw", fused, floor, memory * 1e6, floor / fused,
                100 * memory * 1e6 / fused, tflops))
    finally:
        ops._plan_policy(previous)


if __name__ == "__main__":
    main()
