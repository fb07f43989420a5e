"""Benchmark: ``python -m fusedconv bench``.

For each case, times eager PyTorch, torch.compile of the reference, cuDNN's convolution followed by
one fused activation kernel, and fusedconv (default 3xTF32 and opt-in TF32) in one process, with
CUDA events around each Python call (as KernelBench times), warm-up, and the median of many calls
rotating over enough input sets to defeat the L2 cache. Prints a table and optionally writes JSON
records and a PNG plot.

``--backward`` times a training step instead (forward, then the gradients of input, weight and
bias for a fixed upstream gradient: records with ``"direction": "fwdbwd"``) and reports the step's
peak memory above what was allocated before it (``peak_mem_mb``).
"""

import json
import statistics

import torch
import torch.nn.functional as F

import fusedconv
from fusedconv.kernelbench.problems import KERNELBENCH_V0, KERNELBENCH_V0_1, Problem
from fusedconv.reference import (reference_float64, reference_gradients_float64,
                                 relative_l2_error)

__all__ = ["sweep_cases", "median_event_ms", "run", "format_table", "plot", "main"]

L2_FLUSH_BYTES = 256 * 1024 * 1024  # rotate inputs until this many bytes separate reuses


class Case:
    """A benchmark case: a Problem plus stride/padding and a KernelBench-style name."""

    def __init__(self, name, problem, stride=1, padding=0):
        self.name = name
        self.problem = problem
        self.stride = stride
        self.padding = padding


def _sweep_name(cin, cout, size, kernel, stride, padding, batch):
    name = "%dx%dx%dk%d" % (cin, cout, size, kernel)
    if stride != 1:
        name += "s%d" % stride
    if padding:
        name += "p%d" % padding
    return name + "n%d" % batch


def sweep_cases():
    """KernelBench's two problem sizes, then issue 3's sweep at N = 32 and 128."""
    cases = [Case("v0.1", KERNELBENCH_V0_1), Case("v0", KERNELBENCH_V0)]
    sweep = [(3, 16, 32, 3, 1, 0), (8, 64, 128, 3, 1, 0), (16, 32, 64, 3, 1, 0),
             (32, 64, 56, 3, 1, 1), (64, 64, 56, 3, 1, 1), (3, 32, 224, 3, 2, 1),
             (8, 64, 128, 5, 1, 0), (128, 128, 28, 1, 1, 0)]
    for batch in (32, 128):
        for cin, cout, size, kernel, stride, padding in sweep:
            name = _sweep_name(cin, cout, size, kernel, stride, padding, batch)
            problem = Problem(name, batch, cin, cout, size, size, kernel, "randn")
            cases.append(Case(name, problem, stride, padding))
    return cases


def median_event_ms(fn, inputs, repeats, warmup=10):
    """Median ms of fn(x) over `repeats` calls cycling through `inputs`, CUDA events around each
    call, after `warmup` untimed calls."""
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    torch.cuda.synchronize()
    samples = []
    for i in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        x = inputs[i % len(inputs)]
        start.record()
        fn(x)
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def measure_copy_bandwidth():
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    source = torch.empty(256 * 1024 * 1024, dtype=torch.float32, device="cuda")
    target = torch.empty_like(source)
    ms = median_event_ms(lambda _: target.copy_(source), [None], repeats=20, warmup=3)
    return 2 * source.numel() * 4 / (ms * 1e-3)


def _activation(z):
    return torch.relu(F.hardswish(z))


def _training_step(fn, weight, bias, grad_output):
    """x -> the gradients of fn(x) w.r.t. x, weight and bias for `grad_output`."""
    def step(x):
        x = x.detach().requires_grad_()
        return torch.autograd.grad(fn(x), [x, weight, bias], grad_output)
    return step


def _step_peak_mb(step, x):
    """Peak memory of one call of step(x), above what was allocated before it, in MiB."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = step(x)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del result
    return peak / 2 ** 20


def run(cases, repeats=100, backward=False):
    """Benchmark `cases` (forward, or forward+backward with `backward`); returns JSON-ready
    records."""
    fusedconv.load_extension()
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False  # eager stays float32, as DESIGN.md measured it
    bandwidth = measure_copy_bandwidth()
    device_name = torch.cuda.get_device_name()
    fused_activation = torch.compile(_activation)
    records = []
    for case in cases:
        problem = case.problem
        torch.manual_seed(0)
        model = fusedconv.Conv2dHardSwishReLU(problem.in_channels, problem.out_channels,
                                              problem.kernel_size, stride=case.stride,
                                              padding=case.padding).cuda()
        conv = torch.nn.Conv2d(problem.in_channels, problem.out_channels, problem.kernel_size,
                               stride=case.stride, padding=case.padding).cuda()
        conv.load_state_dict(model.state_dict())
        reference = torch.nn.Sequential(conv, torch.nn.Hardswish(), torch.nn.ReLU())
        compiled = torch.compile(reference)
        weight, bias = model.weight, model.bias
        tf32_model = fusedconv.Conv2dHardSwishReLU(problem.in_channels, problem.out_channels,
                                                   problem.kernel_size, stride=case.stride,
                                                   padding=case.padding).cuda()
        tf32_model.load_state_dict(model.state_dict())
        tf32_model.allow_tf32 = True
        systems = {
            "eager": reference,
            "compile": compiled,
            "cudnn+act": lambda x: fused_activation(F.conv2d(x, weight, bias, case.stride,
                                                             case.padding)),
            "fusedconv": model,
            "fusedconv-tf32": tf32_model,
        }
        x_bytes = problem.batch * problem.in_channels * problem.height * problem.width * 4
        with torch.no_grad():
            y = model(problem.make_input("cuda"))
        y_bytes = y.numel() * 4
        sets = max(1, min(16, L2_FLUSH_BYTES // (x_bytes + y_bytes) + 1))
        inputs = [problem.make_input("cuda") for _ in range(sets)]
        check_inputs = [problem.make_input("cuda"), torch.randn_like(inputs[0])]
        expected = [] if backward else [
            reference_float64(x, weight, bias, case.stride, case.padding) for x in check_inputs]
        if backward:
            parameters = {"eager": conv, "compile": conv, "fusedconv": model,
                          "fusedconv-tf32": tf32_model}
            records += _time_training_steps(case, systems, parameters, y, inputs, check_inputs,
                                            x_bytes, y_bytes, bandwidth, repeats, device_name)
        else:
            floor_ms = (x_bytes + y_bytes + weight.numel() * 4) / bandwidth * 1e3
            for system, fn in systems.items():
                with torch.no_grad():
                    errors = [relative_l2_error(fn(x), e) for x, e in zip(check_inputs, expected)]
                    ms = median_event_ms(fn, inputs, repeats)
                records.append({"case": case.name, "direction": "fwd", "system": system,
                                "ms": ms, "rel_err": max(errors), "floor_ms": floor_ms,
                                "device": device_name, "torch": torch.__version__})
        del inputs, expected, y
        torch.cuda.empty_cache()
    return records


def _time_training_steps(case, systems, parameters, y, inputs, check_inputs, x_bytes, y_bytes,
                         bandwidth, repeats, device_name):
    """The fwdbwd records of one case: time, worst gradient error against float64 autograd (on
    the output's branches, reference.reference_gradients_float64) and the step's peak memory.
    `parameters` maps a system to the module whose weight and bias it trains."""
    # Forward reads x and writes y; backward reads grad_y, y and x and writes grad_x.
    weight_bytes = parameters["fusedconv"].weight.numel() * 4
    floor_ms = (3 * x_bytes + 3 * y_bytes + 2 * weight_bytes) / bandwidth * 1e3
    grad_output = torch.randn_like(y)
    records = []
    for system, fn in systems.items():
        if system not in parameters:
            continue  # cudnn+act: a forward-only baseline
        weight, bias = parameters[system].weight, parameters[system].bias
        step = _training_step(fn, weight, bias, grad_output)
        errors = []
        for x in check_inputs:
            with torch.no_grad():
                output = fn(x)
            expected = reference_gradients_float64(x, weight, bias, grad_output, output,
                                                   case.stride, case.padding)
            errors += [relative_l2_error(a, e) for a, e in zip(step(x), expected)]
        peak_mb = _step_peak_mb(step, inputs[0])
        ms = median_event_ms(step, inputs, repeats)
        records.append({"case": case.name, "direction": "fwdbwd", "system": system, "ms": ms,
                        "rel_err": max(errors), "floor_ms": floor_ms, "peak_mem_mb": peak_mb,
                        "device": device_name, "torch": torch.__version__})
    return records


def format_table(records):
    """The records as a Markdown table: ms, speedups, share of the memory floor, error."""
    eager = {(r["case"], r["direction"]): r["ms"] for r in records if r["system"] == "eager"}
    compiled = {(r["case"], r["direction"]): r["ms"] for r in records
                if r["system"] == "compile"}
    with_memory = any("peak_mem_mb" in r for r in records)
    lines = ["| case | dir | system | ms | x eager | x compile | % of memory floor | rel. err |"
             + (" peak MiB |" if with_memory else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if with_memory else "")]
    for r in records:
        key = (r["case"], r["direction"])
        line = "| %s | %s | %s | %.4f | %.2f | %.2f | %.0f%% | %.1e |" % (
            r["case"], r["direction"], r["system"], r["ms"], eager[key] / r["ms"],
            compiled[key] / r["ms"], 100 * r["floor_ms"] / r["ms"], r["rel_err"])
        if with_memory:
            line += " %s |" % ("%.0f" % r["peak_mem_mb"] if "peak_mem_mb" in r else "")
        lines.append(line)
    return "\n".join(lines)


def plot(records, path):
    """Speedup over eager per case and system, as a PNG (needs matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    direction = records[0]["direction"]
    records = [r for r in records if r["direction"] == direction]
    cases = list(dict.fromkeys(r["case"] for r in records))
    systems = [s for s in dict.fromkeys(r["system"] for r in records) if s != "eager"]
    eager = {r["case"]: r["ms"] for r in records if r["system"] == "eager"}
    figure, axes = plt.subplots(figsize=(max(8, len(cases) * 0.8), 4.5))
    width = 0.8 / len(systems)
    for index, system in enumerate(systems):
        speedups = [eager[c] / next(r["ms"] for r in records
                                    if r["case"] == c and r["system"] == system)
                    for c in cases]
        axes.bar([i + index * width for i in range(len(cases))], speedups, width, label=system)
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))])
    axes.set_xticklabels(cases, rotation=60, ha="right", fontsize=8)
    axes.set_ylabel("speedup over eager PyTorch (%s)"
                    % ("forward" if direction == "fwd" else "forward + backward"))
    axes.set_title("fusedconv, %s, torch %s" % (records[0]["device"], records[0]["torch"]))
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(args):
    """Run the CLI's bench command; returns the report text (the caller prints it)."""
    if not torch.cuda.is_available():
        raise SystemExit("fusedconv bench: needs a CUDA GPU")
    cases = sweep_cases()
    if args.cases:
        wanted = args.cases.split(",")
        unknown = sorted(set(wanted) - {c.name for c in cases})
        if unknown:
            raise SystemExit("fusedconv bench: unknown case(s) %s; known: %s"
                             % (", ".join(unknown), ", ".join(c.name for c in cases)))
        cases = [c for c in cases if c.name in wanted]
    records = run(cases, repeats=args.repeats, backward=args.backward)
    report = format_table(records)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(records, handle, indent=1)
    if args.plot:
        try:
            plot(records, args.plot)
        except ImportError:
            report += "\nfusedconv bench: matplotlib is not installed; no plot written"
    return report
