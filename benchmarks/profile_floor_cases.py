"""Eager vs fusedconv on cases of the networks suite (batch 64): Python-call medians of 200
calls (forward, and a training step) and the CUDA kernels each launches with their GPU times
(torch.profiler), to tell GPU work from host time and see which kernel a step spends it in.
Default: the four host-bound cases of the eighth session; --layers / --modes pick others by the
networks suite's names. --host adds each forward's host time per call (a loop of calls without a
sync: the host's rate where it, not the GPU, is behind) and the CPU ops that take it.
Usage (GPU): python benchmarks/profile_floor_cases.py
[--layers "mnv3 pw 16-64,r50 3x3 64" --modes bf16_cl,fp32_cl] [--host]"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

import fusedconv
from fusedconv.bench import median_event_ms
from fusedconv.bench_networks import MODES, parse_choices, select_layers

# (in, out, kernel, stride, groups, size, mode)
CASES = [(64, 64, 3, 1, 1, 56, "bf16_cl"), (128, 128, 3, 2, 1, 56, "bf16_cl"),
         (144, 40, 1, 1, 1, 28, "fp32_cl"), (480, 112, 1, 1, 1, 14, "bf16")]


def median_ms(fn, calls=200):
    """Median ms of fn() over the calls (fusedconv.bench's CUDA-event timer)."""
    return median_event_ms(lambda _: fn(), [None], calls, warmup=10)


def kernels(fn):
    """(name, GPU us) of each CUDA kernel one call launches."""
    activities = [torch.profiler.ProfilerActivity.CUDA, torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities) as profile:
        fn()
        torch.cuda.synchronize()
    return [(event.name[:70], round(getattr(event, "device_time", None) or event.cuda_time, 1))
            for event in profile.events()
            if event.device_type == torch.autograd.DeviceType.CUDA]


def host_us(fn, calls=200):
    """Host microseconds per call of fn() in a loop without a sync (after a warm-up)."""
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - started
    torch.cuda.synchronize()
    return 1e6 * elapsed / calls


def host_ops(fn, calls=20, top=8):
    """The `top` CPU ops of fn() by self CPU time: (name, us per call)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    averages = sorted(profile.key_averages(), key=lambda a: -a.self_cpu_time_total)[:top]
    return [(a.key[:50], round(a.self_cpu_time_total / calls, 1)) for a in averages]


def cases(layers, modes):
    """CASES, or the named networks-suite layers in each of `modes`."""
    if not layers:
        return CASES
    return [(layer.in_channels, layer.out_channels, layer.kernel, layer.stride, layer.groups,
             layer.size, mode)
            for layer in select_layers(layers) for mode in parse_choices(modes, MODES, "mode")]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", default="", help="networks-suite layer names (comma list)")
    parser.add_argument("--modes", default="", help="with --layers: modes (default: all four)")
    parser.add_argument("--host", action="store_true", help="forward host time and CPU ops")
    args = parser.parse_args()
    fusedconv.load_extension()
    for cin, cout, kernel, stride, groups, size, mode in cases(args.layers, args.modes):
        torch.manual_seed(0)
        conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups).cuda()
        fused = fusedconv.Conv2dHardSwishReLU(cin, cout, kernel, stride, kernel // 2,
                                              groups=groups).cuda()
        fused.load_state_dict(conv.state_dict())
        memory_format = torch.channels_last if mode.endswith("_cl") else torch.contiguous_format
        conv = conv.to(memory_format=memory_format)
        fused = fused.to(memory_format=memory_format)
        x = torch.randn(64, cin, size, size, device="cuda").contiguous(
            memory_format=memory_format)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16,
                                  enabled=mode.startswith("bf16"))

        def eager_forward():
            with torch.no_grad(), autocast:
                return torch.relu(F.hardswish(conv(x)))

        def fused_forward():
            with torch.no_grad(), autocast:
                return fused(x)

        grad_output = torch.randn_like(eager_forward())

        def step(module, forward):
            leaf = x.detach().requires_grad_()
            with autocast:
                y = forward(leaf)
            return torch.autograd.grad(y, [leaf, module.weight, module.bias],
                                       grad_output.to(y.dtype))

        def eager_step():
            return step(conv, lambda t: torch.relu(F.hardswish(conv(t))))

        def fused_step():
            return step(fused, fused)

        print("%s %d->%d k%d s%d: fwd eager %.4f fused %.4f | fwd+bwd eager %.4f fused %.4f ms"
              % (mode, cin, cout, kernel, stride, median_ms(eager_forward),
                 median_ms(fused_forward), median_ms(eager_step), median_ms(fused_step)))
        print("  eager fwd", kernels(eager_forward))
        print("  fused fwd", kernels(fused_forward))
        print("  eager fwd+bwd", kernels(eager_step))
        print("  fused fwd+bwd", kernels(fused_step))
        if args.host:
            print("  host us per fwd call: eager %.1f fused %.1f"
                  % (host_us(eager_forward), host_us(fused_forward)))
            print("  eager fwd CPU ops", host_ops(eager_forward))
            print("  fused fwd CPU ops", host_ops(fused_forward))


if __name__ == "__main__":
    main()
