"""Forward Python-call medians (CUDA events, 30 calls after warm-up) of real-network layer kinds
that take the floor path (and two that take fused kernels), eager beside fusedconv. Usage (GPU):
python benchmarks/floor_layers.py"""

import statistics

import torch
import torch.nn.functional as F
import fusedconv

CASES = [  # name, N, Cin, Cout, H, k, stride, pad, groups, layout, dtype
    ("1x1 112->672 14", 64, 112, 672, 14, 1, 1, 0, 1, "nchw", torch.float32),
    ("1x1 112->672 14", 64, 112, 672, 14, 1, 1, 0, 1, "cl", torch.bfloat16),
    ("3x3 64->64 56 p1", 64, 64, 64, 56, 3, 1, 1, 1, "cl", torch.float32),
    ("3x3 64->64 56 p1", 64, 64, 64, 56, 3, 1, 1, 1, "nchw", torch.float32),
    ("dw3x3 240 14", 64, 240, 240, 14, 3, 1, 1, 240, "nchw", torch.float32),
    ("dw3x3 240 14", 64, 240, 240, 14, 3, 1, 1, 240, "cl", torch.bfloat16),
    ("dw5x5 s2 672 14", 64, 672, 672, 14, 5, 2, 2, 672, "cl", torch.float32),
    ("stem 3->16 s2 224", 64, 3, 16, 224, 3, 2, 1, 1, "nchw", torch.float32),
    ("v0.1 cl", 128, 8, 64, 128, 3, 1, 0, 1, "cl", torch.float32),
]


def median_ms(fn):
    for _ in range(5):
        fn()
    times = []
    for _ in range(30):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    torch.backends.cudnn.allow_tf32 = False
    for name, n, cin, cout, h, k, s, p, g, layout, dtype in CASES:
        x = torch.randn(n, cin, h, h, device="cuda", dtype=dtype)
        w = torch.randn(cout, cin // g, k, k, device="cuda", dtype=dtype) * 0.1
        b = torch.randn(cout, device="cuda", dtype=dtype)
        if layout == "cl":
            x = x.contiguous(memory_format=torch.channels_last)
            w = w.contiguous(memory_format=torch.channels_last)
        eager = median_ms(lambda: torch.relu(F.hardswish(F.conv2d(x, w, b, s, p, 1, g))))
        ours = median_ms(lambda: fusedconv.conv2d_hardswish_relu(x, w, b, s, p, 1, g))
        print("%-20s %-5s %-9s eager %.4f ms  fusedconv %.4f ms  %.2fx"
              % (name, layout, str(dtype)[6:], eager, ours, eager / ours))


if __name__ == "__main__":
    main()
