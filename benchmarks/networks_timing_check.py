"""Why the networks suite measures small layers at ~3x a plain loop (twentieth session, H100):
the same layers in one process, timed by the suite itself (without and with torch.compile in
the process) and by plain loops around each Python call (one input; the suite's rotation of
inputs; back to back without a sync; host time per call). If only the suite's numbers inflate,
the suite adds the time; if the loops inflate after the suite ran, the process state does.
Usage (GPU): python benchmarks/networks_timing_check.py [--layers "mnv3 pw 480-112,r50 pw 256-64"]
[--modes fp32,bf16_cl]"""

import argparse
import time

import torch

import fusedconv
from fusedconv import bench_networks
from fusedconv.bench import median_event_ms


def suite(layers, modes, systems):
    """The suite's own medians (fwd) of `systems` on `layers` x `modes`."""
    records = bench_networks.run(layers=layers, modes=modes, directions=("fwd",),
                                 systems=systems, repeats=30)
    for r in records:
        print("  suite[%s] %-18s %-8s %-9s %.4f ms" % ("+".join(systems), r["case"], r["mode"],
                                                       r["system"], r["ms"]))
    print("  memory_reserved %d MB" % (torch.cuda.memory_reserved() >> 20))


def loops(layers, modes, batch=64, sets=8, calls=200):
    """Plain loops: events around each call on one input, on `sets` rotating inputs, the
    back-to-back rate (sync at the end only) and the host time per call."""
    device = torch.device("cuda")
    for layer in layers:
        for mode in modes:
            memory_format = (torch.channels_last if mode.endswith("_cl")
                             else torch.contiguous_format)
            eager, fused = bench_networks._build_modules(layer, device, memory_format)
            inputs = [torch.randn(batch, layer.in_channels, layer.size, layer.size,
                                  device=device).contiguous(memory_format=memory_format)
                      for _ in range(sets)]
            autocast = bench_networks._autocast(mode, device)
            for name, module in (("eager", eager), ("fusedconv", fused)):
                def forward(x, module=module):
                    with torch.no_grad(), autocast:
                        return module(x)
                one = median_event_ms(forward, inputs[:1], calls)
                rotated = median_event_ms(forward, inputs, calls)
                torch.cuda.synchronize()
                began = time.perf_counter()
                for i in range(calls):
                    forward(inputs[i % sets])
                host = (time.perf_counter() - began) / calls * 1e3
                torch.cuda.synchronize()
                rate = (time.perf_counter() - began) / calls * 1e3
                print("  loop %-18s %-8s %-9s one input %.4f  rotated %.4f  back to back %.4f"
                      "  host %.4f ms" % (layer.name, mode, name, one, rotated, rate, host))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", default="mnv3 pw 480-112,r50 pw 256-64")
    parser.add_argument("--modes", default="fp32,bf16_cl")
    args = parser.parse_args()
    fusedconv.load_extension()
    layers = bench_networks.select_layers(args.layers)
    modes = bench_networks.parse_choices(args.modes, bench_networks.MODES, "mode")
    print(torch.cuda.get_device_name(), "memory_reserved %d MB"
          % (torch.cuda.memory_reserved() >> 20))
    print("== loops, fresh process")
    loops(layers, modes)
    print("== suite: eager, fusedconv")
    suite(layers, modes, ("eager", "fusedconv"))
    print("== loops again")
    loops(layers, modes)
    print("== suite: eager, compile, fusedconv")
    suite(layers, modes, ("eager", "compile", "fusedconv"))
    print("== loops after torch.compile ran in the process")
    loops(layers, modes)


if __name__ == "__main__":
    main()
