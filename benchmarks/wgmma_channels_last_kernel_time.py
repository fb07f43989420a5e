"""GPU time per call of the wgmma forward on channels_last tensors against the kernel the planner
runs without it (the channels_last GEMM, or the floor) and the floor, with the memory floor.

Cases: channels_last_gemm_kernel_time.py's variant set (KernelBench v0.1 at batch 128 in float32
TF32 / 3xTF32, bfloat16 and float16, then the crossover layers at --batch, float32 in both
precisions), those the wgmma kernel takes (stride 1, more than 16 output channels). Each call is
captured 20 times into a CUDA graph and replayed (median of 15 replays). "without" is the planner's
measured choice with the channels_last wgmma switched off; "mem" is x + W + y bytes over the
measured copy bandwidth. --wider: the layers that widen its rule past that set (few input
channels to 96-128 outputs, 3xTF32 at 192-256 channels and 5x5). Usage (GPU):
python benchmarks/wgmma_channels_last_kernel_time.py [--batch 64] [--quick | --wider]
    [--json FILE]
"""

import argparse
import json

import torch

import fusedconv
from fusedconv.bench import measure_copy_bandwidth

from channels_last_gemm_kernel_time import channels_last_call, variant_set_cases
from forward_kernel_times import graph_us


def timed(ops, policy, choice, call):
    """(plan, GPU us) of `call` under the planners' `policy` and the channels_last wgmma
    `choice`, restoring both."""
    previous = ops._plan_policy(policy), ops._channels_last_wgmma(choice)
    try:
        plan = ops._plan(*call)
        return plan, graph_us(lambda: ops.conv2d_hardswish_relu(*call))
    finally:
        ops._plan_policy(previous[0])
        ops._channels_last_wgmma(previous[1])


def wider_cases(batch):
    """(batch, in, out, size, k, stride, padding, dtype, allow_tf32) past the variant set."""
    cases = []
    for cin, cout, size, k in ((3, 96, 112, 3), (8, 96, 112, 3), (8, 128, 56, 3),
                               (16, 128, 56, 3), (16, 96, 56, 5), (4, 48, 112, 3)):
        for dtype, tf32 in ((torch.float32, True), (torch.float32, False),
                            (torch.bfloat16, True), (torch.float16, True)):
            cases.append((batch, cin, cout, size, k, 1, k // 2, dtype, tf32))
    for cin, cout, size, k in ((192, 192, 28, 3), (256, 256, 14, 3), (96, 96, 56, 5)):
        cases.append((batch, cin, cout, size, k, 1, k // 2, torch.float32, False))
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="KernelBench v0.1 only")
    parser.add_argument("--wider", action="store_true", help="the layers past the variant set")
    parser.add_argument("--json", default=None, help="write the records here")
    args = parser.parse_args()
    ops = fusedconv.load_extension()
    bandwidth = measure_copy_bandwidth()
    print("copy bandwidth %.0f GB/s" % (bandwidth / 1e9))
    print("%-44s %9s %9s %-18s %9s %9s %7s %6s" % (
        "case", "wgmma_us", "without", "(its kernel)", "floor_us", "mem_us", "gain", "%mem"))
    cases = variant_set_cases(args.batch)
    if args.quick:
        cases = cases[:4]
    elif args.wider:
        cases = wider_cases(args.batch)
    records = []
    for n, cin, cout, size, k, stride, pad, dtype, tf32 in cases:
        torch.manual_seed(0)
        call = channels_last_call(n, cin, cout, size, k, stride, pad, dtype, tf32)
        previous = ops._plan_policy("fused"), ops._channels_last_wgmma("all")
        applies = ops._plan(*call) == "wgmma"
        ops._plan_policy(previous[0])
        ops._channels_last_wgmma(previous[1])
        if not applies:
            continue
        _, wgmma = timed(ops, "fused", "all", call)
        other_plan, other = timed(ops, "measured", "none", call)
        _, floor = timed(ops, "floor", "none", call)
        out_size = size + 2 * pad - k + 1
        memory_us = (call[0].numel() + call[1].numel() + n * cout * out_size ** 2) * \
            call[0].element_size() / bandwidth * 1e6
        name = "%d-%d %d k%d s%d p%d n%d %s%s" % (
            cin, cout, size, k, stride, pad, n, str(dtype)[6:], "" if tf32 else " 3xtf32")
        print("%-44s %9.2f %9.2f %-18s %9.2f %9.2f %6.2fx %5.0f%%" % (
            name, wgmma, other, other_plan, floor, memory_us, other / wgmma,
            100 * memory_us / wgmma), flush=True)
        records.append(dict(name=name, cin=cin, cout=cout, size=size, k=k, batch=n,
                            dtype=str(dtype)[6:], allow_tf32=tf32, wgmma_us=wgmma,
                            without_us=other, without_plan=other_plan, floor_us=floor,
                            memory_us=memory_us))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
