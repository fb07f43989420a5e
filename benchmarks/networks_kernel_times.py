"""GPU time of the networks suite's forward calls, without the host: each layer x mode of
`fusedconv.bench_networks` called 20 times inside a CUDA graph, the graph replayed (the median
per call), for eager PyTorch (conv, hardswish, relu) and fusedconv, beside the layer's memory
floor. Issue 20's kernel-time target (within 2x of the floor for depthwise and 1x1 layers) is
read here; the suite's own times add each call's host work, which on these layers is most of
them (`networks_timing_check.py`). The bf16 modes run under autocast on float32 inputs, as the
suite does (the cast inside the graph, for both systems), or with --inputs network on the
bfloat16 input a network's inner layer would get.
Usage (GPU): python benchmarks/networks_kernel_times.py [--layers "mnv3,effb0"]
[--modes fp32,bf16_cl] [--inputs float32|network] [--json PATH]"""

import argparse
import json

import torch

import fusedconv
from fusedconv import bench_networks
from fusedconv.bench import measure_copy_bandwidth
from forward_kernel_times import graph_us


def layer_times(layer, mode, batch, bandwidth, inputs):
    """{eager_us, fusedconv_us, floor_us} of one layer in one mode."""
    device = torch.device("cuda")
    memory_format = torch.channels_last if mode.endswith("_cl") else torch.contiguous_format
    eager, fused = bench_networks._build_modules(layer, device, memory_format)
    dtype = bench_networks._input_dtype(layer, mode, inputs)
    x = torch.randn(batch, layer.in_channels, layer.size, layer.size, device=device,
                    dtype=dtype).contiguous(memory_format=memory_format)
    autocast = bench_networks._autocast(mode, device)
    times = {}
    for name, module in (("eager", eager), ("fusedconv", fused)):
        def forward(module=module):
            with torch.no_grad(), autocast:
                return module(x)
        times[name + "_us"] = graph_us(forward)
    floor_ms = bench_networks._floor_ms(layer, batch, layer.size, mode, "fwd", bandwidth)
    times["floor_us"] = floor_ms * 1e3
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", default=None, help="suite layer names or prefixes")
    parser.add_argument("--modes", default=",".join(bench_networks.MODES))
    parser.add_argument("--inputs", default="float32", choices=("float32", "network"))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    fusedconv.load_extension()
    layers = bench_networks.select_layers(args.layers)
    modes = bench_networks.parse_choices(args.modes, bench_networks.MODES, "mode")
    bandwidth = measure_copy_bandwidth()
    print("%s, copy bandwidth %.2f TB/s, batch %d, inputs %s"
          % (torch.cuda.get_device_name(), bandwidth / 1e12, args.batch, args.inputs))
    print("%-24s %-8s %10s %10s %9s %8s %8s" % ("layer", "mode", "eager_us", "fused_us",
                                                "floor_us", "speedup", "x floor"))
    records = []
    for layer in layers:
        for mode in modes:
            t = layer_times(layer, mode, args.batch, bandwidth, args.inputs)
            print("%-24s %-8s %10.1f %10.1f %9.1f %7.2fx %7.2fx"
                  % (layer.name, mode, t["eager_us"], t["fusedconv_us"], t["floor_us"],
                     t["eager_us"] / t["fusedconv_us"], t["fusedconv_us"] / t["floor_us"]))
            records.append(dict(t, case=layer.name, mode=mode, batch=args.batch,
                                inputs=args.inputs, device=torch.cuda.get_device_name(),
                                torch=torch.__version__))
            torch.cuda.empty_cache()
    print("\n".join(bench_networks.kernel_time_summary_lines(records)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
