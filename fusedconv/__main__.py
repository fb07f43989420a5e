"""Command line: ``python -m fusedconv verify`` (the main job).

verify: builds the extension, runs the fused operator on a built-in problem (KernelBench v0.1's
shapes on a GPU, a smaller one on the CPU), compares forward and gradients with the float64
PyTorch reference and with eager PyTorch, and prints a table. Exits non-zero if a check fails.
"""

import argparse
import logging
import statistics
import sys
import time

import torch

import fusedconv
from fusedconv.reference import (CPU_DEFAULT, KERNELBENCH_V0, KERNELBENCH_V0_1, Model,
                                 relative_l2_error)

PROBLEMS = {p.name: p for p in (KERNELBENCH_V0_1, KERNELBENCH_V0, CPU_DEFAULT)}
# fp32 default path: relative L2 error vs float64 (DESIGN.md, "The numbers").
FORWARD_TOLERANCE = 1e-5
GRADIENT_TOLERANCE = 1e-5


def _median_ms(fn, device, repeats):
    """Median wall time of fn() in ms: CUDA events on a GPU, perf_counter on the CPU."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - began) * 1e3)
    return statistics.median(samples)


def _gradients(model, x, grad_output):
    x = x.detach().clone().requires_grad_()
    model.zero_grad(set_to_none=True)
    model(x).backward(grad_output)
    return [x.grad, model.conv.weight.grad, model.conv.bias.grad]


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
    grads = _gradients(ours, x, grad_output)
    grads_eager = _gradients(reference, x, grad_output)
    grads64 = _gradients(reference64, x.double(), grad_output.double())

    with torch.no_grad():
        ms_ours = _median_ms(lambda: ours(x), device, repeats)
        ms_eager = _median_ms(lambda: reference(x), device, repeats)

    rows = [("forward: rel. L2 error vs float64", relative_l2_error(y, y64),
             relative_l2_error(y_eager, y64), FORWARD_TOLERANCE)]
    for name, ours_grad, eager_grad, grad64 in zip(("input", "weight", "bias"), grads,
                                                   grads_eager, grads64):
        rows.append(("grad %s: rel. L2 error vs float64" % name,
                     relative_l2_error(ours_grad, grad64), relative_l2_error(eager_grad, grad64),
                     GRADIENT_TOLERANCE))
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
        print("| %s | %.2e | %.2e | %.0e | %s |" % (name, error, eager_error, tolerance,
                                                   "yes" if error <= tolerance else "NO"))
    print("| KernelBench allclose(atol=rtol=1e-2) vs eager | %s | | | %s |"
          % (allclose, "yes" if allclose else "NO"))
    print("| same initial weights as Model under one seed | %s | | | %s |"
          % (same_weights, "yes" if same_weights else "NO"))
    print("| forward time, ms (median of %d; the benchmark is separate) | %.3f | %.3f | | |"
          % (repeats, ms_ours, ms_eager))
    print("verification %s" % ("FAILED: " + ", ".join(failures) if failures else "passed"))
    return not failures


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fusedconv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")
    verify_parser = commands.add_parser("verify", help="check against the PyTorch reference")
    verify_parser.add_argument("--problem", choices=sorted(PROBLEMS),
                               help="default: v0.1 on a GPU, cpu-small on the CPU")
    verify_parser.add_argument("--device", help="default: cuda if available, else cpu")
    verify_parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["verify"] + list(argv or sys.argv[1:]))

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    problem = PROBLEMS[args.problem or ("v0.1" if device.type == "cuda" else "cpu-small")]
    fusedconv.load_extension()
    return 0 if verify(problem, device, args.repeats) else 1


if __name__ == "__main__":
    sys.exit(main())
