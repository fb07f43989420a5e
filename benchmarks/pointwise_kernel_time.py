"""GPU time per call of the pointwise kernel against the floor path, with the memory floor.

Each system's call is captured 20 times into a CUDA graph and replayed (median of 15 replays), so
the time is the GPU's, without the host's launch work; the floor is PyTorch's 1x1 convolution
(cuDNN) plus our in-place bias + activation pass. "mem" is x + W + y bytes over the measured copy
bandwidth. Layers: the 1x1 convolutions of MobileNetV3 / EfficientNet-B0 / ResNet-50 in
channels_last float16 and bfloat16. Usage (GPU): python benchmarks/pointwise_kernel_time.py
[--batch 64]
"""

import argparse

import torch

import fusedconv
from fusedconv.bench import measure_copy_bandwidth

LAYERS = ((16, 64, 112), (64, 16, 112), (24, 144, 56), (144, 24, 56), (40, 240, 28),
          (240, 40, 28), (80, 480, 14), (480, 112, 14), (112, 672, 14), (672, 160, 7),
          (160, 960, 7), (960, 160, 7), (64, 256, 56), (256, 64, 56), (512, 128, 28),
          (1024, 256, 14))


def graph_us(fn, calls=20, replays=15):
    """Median GPU microseconds per fn() over replays of a graph of `calls` calls."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    batch = parser.parse_args().batch
    ops = fusedconv.load_extension()
    bandwidth = measure_copy_bandwidth()
    print("copy bandwidth %.0f GB/s" % (bandwidth / 1e9))
    header = ("layer", "dtype", "fused_us", "floor_us", "mem_us", "gain", "%mem")
    print("%-14s %-9s %9s %9s %9s %7s %6s" % header)
    previous = ops._plan_policy()
    try:
        for cin, cout, size in LAYERS:
            for dtype in (torch.bfloat16, torch.float16):
                x = torch.randn(batch, cin, size, size, device="cuda", dtype=dtype)
                x = x.contiguous(memory_format=torch.channels_last)
                w = torch.randn(cout, cin, 1, 1, device="cuda", dtype=dtype) / cin ** 0.5
                b = torch.randn(cout, device="cuda", dtype=dtype)
                args = (x, w, b, [1, 1], [0] * 4, [1, 1], 1)
                ops._plan_policy("fused")
                if ops._plan(*args) != "pointwise":
                    continue
                fused = graph_us(lambda: ops.conv2d_hardswish_relu(*args))
                ops._plan_policy("floor")
                floor = graph_us(lambda: ops.conv2d_hardswish_relu(*args))
                memory = (x.numel() + w.numel() + batch * cout * size * size) * 2 / bandwidth
                print("%-14s %-9s %9.2f %9.2f %9.2f %6.2fx %5.0f%%" % (
                    "%d-%d %d" % (cin, cout, size), str(dtype)[6:], fused, floor, memory * 1e6,
                    floor / fused, 100 * memory * 1e6 / fused))
    finally:
        ops._plan_policy(previous)


if __name__ == "__main__":
    main()
