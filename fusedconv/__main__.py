"""Command line: ``python -m fusedconv verify`` (the main job), ``python -m fusedconv bench``,
``python -m fusedconv export-kernelbench`` and ``python -m fusedconv kernelbench-eval``.

verify: builds the extension, runs the fused operator on a built-in problem (KernelBench v0.1's
shapes on a GPU, a smaller one on the CPU), compares forward and gradients with the float64
PyTorch reference and with eager PyTorch, and prints a table. Exits non-zero if a check fails.
export-kernelbench: writes the single-file KernelBench ModelNew (generated from csrc/).
kernelbench-eval: evaluates such a file as KernelBench does (correctness, then timings against
eager and torch.compile); exits non-zero if correctness fails.
"""

import argparse
import json
import logging
import statistics
import sys
import time

import torch

import fusedconv
from fusedconv import bench, bench_networks, kernelbench
from fusedconv.kernelbench.problems import KERNELBENCH_V0, KERNELBENCH_V0_1
from fusedconv.reference import (CPU_DEFAULT, Model, reference_gradients_float64,
                                 relative_l2_error)

PROBLEMS = {p.name: p for p in (KERNELBENCH_V0_1, KERNELBENCH_V0, CPU_DEFAULT)}
# fp32 default path: relative L2 error vs float64 (benchmarks/NOTES.md).
FORWARD_TOLERANCE = 1e-5
GRADIENT_TOLERANCE = 1e-5


def _median_ms(fn, device, repeats):
    """Median wall time of fn() in ms: CUDA events on a GPU, perf_counter on the CPU."""
    if device.type == "cuda":
        return bench.median_event_ms(lambda _: fn(), [None], repeats, warmup=3)
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - began) * 1e3)
    return statistics.median(samples)


def _gradients(model, x, grad_output):
    """(output, [grad input, grad weight, grad bias]) of one forward + backward."""
    x = x.detach().clone().requires_grad_()
    model.zero_grad(set_to_none=True)
    y = model(x)
    y.backward(grad_output)
    return y.detach(), [x.grad, model.conv.weight.grad, model.conv.bias.grad]


def verify(problem, device, repeats):
    torch.backends.cudnn.allow_tf32 = False  # the float64 references and eager stay exact fp32
    torch.manual_seed(0)
    reference = Model(problem.in_channels, problem.out_channels, problem.kernel_size).to(device)
    torch.manual_seed(0)
    ours = fusedconv.ModelNew(problem.in_channels, problem.out_channels,
                              problem.kernel_size).to(device)
    same_weights = all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(),
                                                         reference.state_dict().values()))
    reference64 = Model(problem.in_channels, problem.out_channels,
                        problem.kernel_size).to(device).double()
    reference64.load_state_dict(reference.state_dict())

    x = problem.make_input(device)
    with torch.no_grad():
        y = ours(x)
        y_eager = reference(x)
        y64 = reference64(x.double())
    grad_output = torch.randn_like(y)
    _, grads = _gradients(ours, x, grad_output)
    _, grads_eager = _gradients(reference, x, grad_output)
    # Gradients are checked against float64 on the same activation branches as the output being
    # checked (reference.reference_gradients_float64 says why); eager is measured the same way.
    conv = ours.conv
    grads64 = reference_gradients_float64(x, conv.weight, conv.bias, grad_output, y)
    grads64_eager = reference_gradients_float64(x, conv.weight, conv.bias, grad_output, y_eager)
    _, grads64_plain = _gradients(reference64, x.double(), grad_output.double())

    with torch.no_grad():
        ms_ours = _median_ms(lambda: ours(x), device, repeats)
        ms_eager = _median_ms(lambda: reference(x), device, repeats)

    rows = [("forward: rel. L2 error vs float64", relative_l2_error(y, y64),
             relative_l2_error(y_eager, y64), FORWARD_TOLERANCE)]
    for index, name in enumerate(("input", "weight", "bias")):
        rows.append(("grad %s: rel. L2 error vs float64, same branches" % name,
                     relative_l2_error(grads[index], grads64[index]),
                     relative_l2_error(grads_eager[index], grads64_eager[index]),
                     GRADIENT_TOLERANCE))
    informational = [("grad %s: rel. L2 error vs float64 autograd (kink flips)" % name,
                      relative_l2_error(grads[index], grads64_plain[index]),
                      relative_l2_error(grads_eager[index], grads64_plain[index]))
                     for index, name in enumerate(("input", "weight", "bias"))]
    allclose = torch.allclose(y, y_eager, atol=1e-2, rtol=1e-2)
    failures = [name for name, error, _, tolerance in rows if not error <= tolerance]
    if not allclose:
        failures.append("KernelBench allclose")
    if not same_weights:
        failures.append("same initial weights as Model")

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print("fusedconv %s | torch %s | %s | problem %s (%s, %s inputs)" % (
        fusedconv.__version__, torch.__version__, device_name, problem.name, problem.describe(),
        problem.distribution))
    print("| check | fusedconv | eager PyTorch | limit | ok |")
    print("|---|---|---|---|---|")
    for name, error, eager_error, tolerance in rows:
        verdict = "yes" if error <= tolerance else "NO"
        print("| %s | %.2e | %.2e | %.0e | %s |" % (name, error, eager_error, tolerance, verdict))
    for name, error, eager_error in informational:
        print("| %s | %.2e | %.2e | (info) | |" % (name, error, eager_error))
    print("| KernelBench allclose(atol=rtol=1e-2) vs eager | %s | | | %s |"
          % (allclose, "yes" if allclose else "NO"))
    print("| same initial weights as Model under one seed | %s | | | %s |"
          % (same_weights, "yes" if same_weights else "NO"))
    print("| forward time, ms (median of %d; the benchmark is separate) | %.3f | %.3f | | |"
          % (repeats, ms_ours, ms_eager))
    print("verification %s" % ("FAILED: " + ", ".join(failures) if failures else "passed"))
    return not failures


def kernelbench_eval(args):
    """Run the KernelBench-protocol evaluator, print its report; 0 if correct, else 1."""
    result = kernelbench.evaluate(args.model_new, args.reference, seed=args.seed,
                                  correct_trials=args.correct_trials,
                                  perf_trials=args.perf_trials, warmup=args.warmup,
                                  compile_reference=not args.no_compile,
                                  flush_l2=not args.no_l2_flush)
    print(kernelbench.format_report(result))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0 if result["correct"] else 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fusedconv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")
    verify_parser = commands.add_parser("verify", help="check against the PyTorch reference")
    verify_parser.add_argument("--problem", choices=sorted(PROBLEMS),
                               help="default: v0.1 on a GPU, cpu-small on the CPU")
    verify_parser.add_argument("--device", help="default: cuda if available, else cpu")
    verify_parser.add_argument("--repeats", type=int, default=20)
    bench_parser = commands.add_parser("bench", help="time against eager and torch.compile")
    bench_parser.add_argument("--suite", choices=("kernelbench", "networks"),
                              default="kernelbench",
                              help="kernelbench (default): KernelBench's shapes and a sweep; "
                              "networks: real-network layers in four modes (bench_networks.py)")
    bench_parser.add_argument("--cases", help="kernelbench: comma-separated case names "
                              "(default: all)")
    bench_parser.add_argument("--repeats", type=int,
                              help="timed calls per measurement (default: kernelbench 100, "
                              "networks 50)")
    bench_parser.add_argument("--backward", action="store_true",
                              help="kernelbench: time forward + backward (a training step) "
                              "instead")
    bench_parser.add_argument("--json", help="write the records to this JSON file (networks: "
                              "appended to the records already there)")
    bench_parser.add_argument("--plot", help="write a PNG plot here (needs matplotlib)")
    networks_group = bench_parser.add_argument_group("networks suite")
    networks_group.add_argument("--device", choices=("cuda", "cpu"),
                                help="default: cuda if available, else cpu")
    networks_group.add_argument("--layers", help="comma list of layer names or substrings of "
                                "them, e.g. mnv3,r50 (default: all)")
    networks_group.add_argument("--modes", help="comma list of fp32, fp32_cl, bf16, bf16_cl "
                                "(default: all)")
    networks_group.add_argument("--directions", help="comma list of fwd, fwdbwd (default: both)")
    networks_group.add_argument("--systems", help="comma list of eager, compile, fusedconv "
                                "(default: all)")
    networks_group.add_argument("--batch", type=int, help="default: 64 on cuda, 4 on cpu")
    networks_group.add_argument("--image-size", type=int,
                                help="scale the layers' spatial sizes from a 224x224 image to "
                                "this one (default 224)")
    networks_group.add_argument("--precision", choices=("default", "fp32"),
                                help="default: PyTorch's current TF32 flags; fp32: TF32 off")
    networks_group.add_argument("--cudnn-benchmark", action="store_true",
                                help="set torch.backends.cudnn.benchmark for the run")
    networks_group.add_argument("--inputs", choices=("float32", "network"),
                                help="float32 (default): float32 inputs in every mode; network: "
                                "in the bf16 modes bfloat16 inputs for every layer but the "
                                "stems, as a previous layer's autocast output")
    export_parser = commands.add_parser(
        "export-kernelbench", help="write the single-file KernelBench ModelNew (from csrc/)")
    export_parser.add_argument("-o", "--output", default="model_new.py",
                               help="file to write (default: model_new.py)")
    eval_parser = commands.add_parser(
        "kernelbench-eval", help="evaluate a ModelNew file with KernelBench's protocol (GPU)")
    eval_parser.add_argument("model_new", help="Python file defining ModelNew")
    eval_parser.add_argument("--reference", help="KernelBench problem file (default: the "
                             "embedded level 2 problem 69 with v0.1 shapes)")
    eval_parser.add_argument("--json", help="write the result dict to this JSON file")
    eval_parser.add_argument("--seed", type=int, default=42)
    eval_parser.add_argument("--correct-trials", type=int, default=5)
    eval_parser.add_argument("--perf-trials", type=int, default=100)
    eval_parser.add_argument("--warmup", type=int, default=3)
    eval_parser.add_argument("--no-compile", action="store_true",
                             help="skip the torch.compile baseline")
    eval_parser.add_argument("--no-l2-flush", action="store_true",
                             help="time as KernelBench v0/v0.1 did: warm L2, no discarded "
                             "first call")
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["verify"] + list(argv or sys.argv[1:]))

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "bench":
        if args.suite == "networks":
            if args.cases or args.backward:
                parser.error("bench: --cases and --backward are for --suite kernelbench")
            print(bench_networks.main(args))
            return 0
        networks_only = [option for option, value in (
            ("--device", args.device), ("--layers", args.layers), ("--modes", args.modes),
            ("--directions", args.directions), ("--systems", args.systems),
            ("--batch", args.batch), ("--image-size", args.image_size),
            ("--precision", args.precision), ("--cudnn-benchmark", args.cudnn_benchmark),
            ("--inputs", args.inputs))
            if value]
        if networks_only:
            parser.error("bench: %s need --suite networks" % ", ".join(networks_only))
        if args.repeats is None:
            args.repeats = 100
        print(bench.main(args))
        return 0
    if args.command == "export-kernelbench":
        print("wrote %s" % kernelbench.export(args.output))
        return 0
    if args.command == "kernelbench-eval":
        return kernelbench_eval(args)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    problem = PROBLEMS[args.problem or ("v0.1" if device.type == "cuda" else "cpu-small")]
    fusedconv.load_extension()
    return 0 if verify(problem, device, args.repeats) else 1


if __name__ == "__main__":
    sys.exit(main())
