"""KernelBench's 69_Conv2d_HardSwish_ReLU shapes in channels_last (issue 20's kernel-time target:
v0.1 within 1.5x of its memory floor): the reference Model (conv2d, hardswish, relu), torch.compile
of it and fusedconv.ModelNew with the same weights, the module and its input channels_last, in
float32 under PyTorch's default flags (TF32 allowed for convolutions), float32 with TF32 off,
and bfloat16 autocast. Python-call medians (CUDA events, all systems in one process) and GPU time
per call (a CUDA graph of 20 calls replayed; eager and fusedconv), beside the memory floor (x, W
and y in the mode's element size at the measured copy bandwidth; bf16's float32 input is cast
inside the call by autocast, in both systems, which the floor does not count).
Usage (GPU): python benchmarks/kernelbench_channels_last.py [--cases v0.1,v0] [--repeats 30]
    [--json PATH]"""

import argparse
import contextlib
import json

import torch

import fusedconv
from fusedconv.bench import measure_copy_bandwidth, median_event_ms
from fusedconv.kernelbench.problems import KERNELBENCH_PROBLEMS
from fusedconv.reference import Model
from forward_kernel_times import graph_us

MODES = ("fp32", "fp32_no_tf32", "bf16")


def _mode_context(mode):
    stack = contextlib.ExitStack()
    if mode == "fp32_no_tf32":
        previous = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        stack.callback(setattr, torch.backends.cudnn, "allow_tf32", previous)
    return stack


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="v0.1,v0")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    fusedconv.load_extension()
    bandwidth = measure_copy_bandwidth()
    print("%s, copy bandwidth %.2f TB/s" % (torch.cuda.get_device_name(), bandwidth / 1e12))
    print("%-5s %-13s %10s %10s %10s %10s %10s %9s %8s" % (
        "case", "mode", "eager_ms", "compile_ms", "fused_ms", "eager_us*", "fused_us*",
        "floor_us", "x floor"))
    wanted = args.cases.split(",")
    records = []
    for problem in [p for p in KERNELBENCH_PROBLEMS if p.name in wanted]:
        torch.manual_seed(0)
        eager = Model(problem.in_channels, problem.out_channels, problem.kernel_size)
        fused = fusedconv.ModelNew(problem.in_channels, problem.out_channels, problem.kernel_size)
        fused.load_state_dict(eager.state_dict())
        eager = eager.cuda().to(memory_format=torch.channels_last)
        fused = fused.cuda().to(memory_format=torch.channels_last)
        compiled = torch.compile(eager)
        x = problem.make_input("cuda").contiguous(memory_format=torch.channels_last)
        for mode in MODES:
            autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if mode == "bf16"
                        else contextlib.nullcontext())
            with _mode_context(mode), torch.no_grad():
                def call(module):
                    def run(inp):
                        with autocast:
                            return module(inp)
                    return run
                ms = {name: median_event_ms(call(module), [x], args.repeats)
                      for name, module in (("eager", eager), ("compile", compiled),
                                           ("fusedconv", fused))}
                gpu = {name: graph_us(lambda module=module: call(module)(x))
                       for name, module in (("eager", eager), ("fusedconv", fused))}
                y = call(fused)(x)
                assert y.is_contiguous(memory_format=torch.channels_last)
            weight_bytes = eager.conv.weight.numel() * y.element_size()
            floor_us = (x.numel() * y.element_size() + weight_bytes +
                        y.numel() * y.element_size()) / bandwidth * 1e6
            print("%-5s %-13s %10.4f %10.4f %10.4f %10.1f %10.1f %9.1f %7.2fx" % (
                problem.name, mode, ms["eager"], ms["compile"], ms["fusedconv"], gpu["eager"],
                gpu["fusedconv"], floor_us, gpu["fusedconv"] / floor_us))
            records.append(dict(case=problem.name, mode=mode, layout="channels_last",
                                eager_ms=ms["eager"], compile_ms=ms["compile"],
                                fusedconv_ms=ms["fusedconv"], eager_gpu_us=gpu["eager"],
                                fusedconv_gpu_us=gpu["fusedconv"], floor_us=floor_us,
                                device=torch.cuda.get_device_name()))
    print("(* GPU time per call, CUDA graph replay)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
