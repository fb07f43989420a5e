"""Forward kernel times for the kernel notes (benchmarks/NOTES.md): GPU time of the fused forward
alone, as the median over replays of a CUDA graph of 20 calls (no Python or launch gaps), and
its relative L2 error against float64 on rand and randn inputs. Prints one line per case and
mode; with --json PATH also writes them. FUSEDCONV_DISABLE_WGMMA=1 in the environment times the
mma.sync kernel instead of the Hopper one, FUSEDCONV_DISABLE_DMMA=1 the small-problem FFMA kernel
instead of the DMMA one.

Usage: python benchmarks/forward_kernel_times.py [--cases v0.1,v0,...] [--json PATH]
"""

import argparse
import json
import os
import statistics

import torch

import fusedconv
from fusedconv.bench import sweep_cases
from fusedconv.reference import reference_float64, relative_l2_error

CALLS_PER_GRAPH = 20


def graph_ms(fn, replays=30):
    """Median ms per call over replays of a graph of CALLS_PER_GRAPH calls of fn()."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(CALLS_PER_GRAPH):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    samples = []
    for _ in range(replays):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / CALLS_PER_GRAPH)
    return statistics.median(samples)


def graph_us(fn):
    """Median GPU microseconds per fn() over 15 replays of a CUDA graph of calls (graph_ms)."""
    return graph_ms(fn, replays=15) * 1e3


def kernels_run(fn):
    """Which forward kernel(s) fn() launched: 'direct-dmma', 'direct-ffma', 'wgmma' (resident
    weights), 'wgmma-streamed', 'mma.sync' and/or 'generic'."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        fn()
        torch.cuda.synchronize()
    names = " ".join(event.name for event in profile.events())
    found = [label for label, marker in (("direct-dmma", "direct_dmma_kernel"),
                                         ("direct-ffma", "direct_ffma_kernel"),
                                         ("wgmma", "wgmma_kernel"),
                                         ("wgmma-streamed", "wgmma_streamed_kernel"),
                                         ("mma.sync", "mma_sync_kernel"),
                                         ("generic", "generic_kernel")) if marker in names]
    return "+".join(found) or "none"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="v0.1,v0")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    fusedconv.load_extension()
    torch.backends.cudnn.allow_tf32 = False
    wanted = args.cases.split(",")
    disabled = [name for name in ("WGMMA", "DMMA")
                if os.environ.get("FUSEDCONV_DISABLE_" + name, "0") not in ("", "0")]
    switch = "+".join(name.lower() for name in disabled) + " off" if disabled else "default"
    records = []
    for case in [c for c in sweep_cases() if c.name in wanted]:
        problem = case.problem
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(problem.in_channels, problem.out_channels, problem.kernel_size,
                               stride=case.stride, padding=case.padding).cuda()
        weight, bias = conv.weight.detach(), conv.bias.detach()
        x = problem.make_input("cuda")
        out_elems = fusedconv.conv2d_hardswish_relu(x, weight, bias, case.stride,
                                                    case.padding).numel()
        floor_bytes = (x.numel() + out_elems) * 4
        for allow_tf32 in (False, True):
            def call(x=x, allow_tf32=allow_tf32):
                return fusedconv.conv2d_hardswish_relu(x, weight, bias, case.stride,
                                                       case.padding, allow_tf32=allow_tf32)
            ms = graph_ms(call)
            kernel = kernels_run(call)
            errors = {}
            for draw in ("rand", "randn"):
                xe = getattr(torch, draw)(x.shape, device="cuda")
                expected = reference_float64(xe, weight, bias, stride=case.stride,
                                             padding=case.padding)
                actual = fusedconv.conv2d_hardswish_relu(xe, weight, bias, case.stride,
                                                         case.padding, allow_tf32=allow_tf32)
                errors[draw] = relative_l2_error(actual, expected)
            record = {"case": case.name, "dispatch": switch, "kernel": kernel,
                      "tf32": allow_tf32, "ms": ms,
                      "GB/s": floor_bytes / (ms * 1e-3) / 1e9,
                      "err_rand": errors["rand"], "err_randn": errors["randn"]}
            records.append(record)
            print("%-18s %-9s %-9s tf32=%-5s %8.4f ms %7.0f GB/s  err rand %.2e randn %.2e"
                  % (case.name, switch, kernel, allow_tf32, ms, record["GB/s"], errors["rand"],
                     errors["randn"]), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(records, handle, indent=1)


if __name__ == "__main__":
    main()
