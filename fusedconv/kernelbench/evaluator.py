"""KernelBench's evaluation protocol for a single-file ``ModelNew``, on the GPU.

``evaluate()`` follows KernelBench's ``eval_kernel_against_ref`` (src/kernelbench/eval.py) and
``time_execution_with_cuda_event`` (src/kernelbench/timing.py): both models built right after the
same seed, correctness trials on fresh inputs from the reference's ``get_inputs()``, then CUDA-event
timings of ModelNew, eager ``Model`` and ``torch.compile(Model)``.
"""

import importlib.util
import statistics
import time
import types

import torch

from fusedconv.kernelbench.problems import KERNELBENCH_V0_1, PROBLEM_NAME, problem_source

__all__ = ["evaluate", "format_report"]

# KernelBench v0 / v0.1 compare float32 outputs with torch.allclose(atol=1e-2, rtol=1e-2).
TOLERANCE = 1e-2
# KernelBench's clear_l2_cache: write 256 MB before each timed call, more than any GPU's L2.
L2_FLUSH_BYTES = 256 * 1024 * 1024
# Today's time_execution_with_cuda_event flushes L2 before and discards the first timed call;
# KernelBench v0/v0.1's (src/eval.py) did neither: flush_l2=False reproduces that one.
DISCARDED_TRIALS = 1


def _load_module_from_file(path, module_name):
    spec = importlib.util.spec_from_file_location(module_name, str(path))
    if spec is None or spec.loader is None:
        raise ValueError("cannot import %s as a Python module" % path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_module_from_source(source, module_name, filename):
    module = types.ModuleType(module_name)
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)
    return module


def _required(module, name, where):
    value = getattr(module, name, None)
    if value is None:
        raise ValueError("%s defines no %s" % (where, name))
    return value


def _set_seed(seed):
    # KernelBench's set_seed.
    torch.manual_seed(seed)
    torch.cuda.manual_seed(seed)


def _to_device(values, device):
    # KernelBench's _process_input_tensor for float32: tensors to the device as float32.
    return [v.to(device=device, dtype=torch.float32) if isinstance(v, torch.Tensor) else v
            for v in values]


def _stats(samples):
    return {
        "mean": statistics.fmean(samples),
        "median": statistics.median(samples),
        "std": statistics.pstdev(samples),
        "min": min(samples),
        "max": max(samples),
        "num_trials": len(samples),
    }


def _time_cuda_events(fn, inputs, device, warmup, trials, flush_l2):
    """KernelBench's time_execution_with_cuda_event: ms per call, one event pair per call."""
    for _ in range(warmup):
        fn(*inputs)
        torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    scratch = torch.empty(L2_FLUSH_BYTES // 8, dtype=torch.int64, device=device) \
        if flush_l2 else None
    discarded = DISCARDED_TRIALS if flush_l2 else 0
    samples = []
    for trial in range(trials + discarded):
        torch.cuda.synchronize(device)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        if scratch is not None:
            scratch.fill_(42)
        start.record()
        fn(*inputs)
        end.record()
        torch.cuda.synchronize(device)
        if trial >= discarded:
            samples.append(start.elapsed_time(end))
    return samples


def _check_correctness(reference, model_new, get_inputs, seed, trials, device):
    """KernelBench's run_and_check_correctness: per-trial seeds drawn from `seed`."""
    torch.manual_seed(seed)
    trial_seeds = [torch.randint(0, 2 ** 32 - 1, (1,)).item() for _ in range(trials)]
    records = []
    with torch.no_grad():
        for trial_seed in trial_seeds:
            _set_seed(trial_seed)
            inputs = _to_device(get_inputs(), device)
            expected = reference(*inputs)
            actual = model_new(*inputs)
            torch.cuda.synchronize(device)
            record = {"seed": trial_seed, "shape_ok": actual.shape == expected.shape}
            if record["shape_ok"]:
                difference = (actual - expected).abs()
                record["passed"] = bool(torch.allclose(expected, actual, atol=TOLERANCE,
                                                       rtol=TOLERANCE))
                record["max_abs_diff"] = difference.max().item()
                record["mean_abs_diff"] = difference.mean().item()
            else:
                record["passed"] = False
                record["expected_shape"] = list(expected.shape)
                record["actual_shape"] = list(actual.shape)
            records.append(record)
    return records


def evaluate(model_new_path, reference_path=None, seed=42, correct_trials=5, perf_trials=100,
             warmup=3, compile_reference=True, flush_l2=True):
    """Evaluate a KernelBench ``ModelNew`` file against a reference problem on the GPU.

    `reference_path` is a KernelBench problem file (``Model``, ``get_inputs``,
    ``get_init_inputs``); None means the embedded level-2 problem 69, v0.1 shapes. Returns a
    JSON-serialisable dict; ``result["correct"]`` says whether every correctness trial passed.
    Raises SystemExit without a CUDA GPU.
    """
    if not torch.cuda.is_available():
        raise SystemExit("kernelbench-eval: needs a CUDA GPU (KernelBench evaluates and times on "
                         "the GPU), and torch.cuda.is_available() is False here")
    device = torch.device("cuda", torch.cuda.current_device())
    if reference_path is None:
        reference_name = "embedded: KernelBench level 2, %s (%s)" % (
            PROBLEM_NAME, KERNELBENCH_V0_1.name)
        reference_module = _load_module_from_source(
            problem_source(KERNELBENCH_V0_1), "kernelbench_reference", "<%s>" % reference_name)
    else:
        reference_name = str(reference_path)
        reference_module = _load_module_from_file(reference_path, "kernelbench_reference")
    Model = _required(reference_module, "Model", reference_name)
    get_inputs = _required(reference_module, "get_inputs", reference_name)
    get_init_inputs = _required(reference_module, "get_init_inputs", reference_name)

    # eval_kernel_against_ref: init inputs under the seed, Model under the seed, then ModelNew's
    # module (its extension builds here) and ModelNew under the same seed.
    _set_seed(seed)
    init_inputs = _to_device(get_init_inputs(), device)
    with torch.no_grad():
        _set_seed(seed)
        reference = Model(*init_inputs)
    started = time.perf_counter()
    model_new_module = _load_module_from_file(model_new_path, "kernelbench_model_new")
    load_seconds = time.perf_counter() - started
    ModelNew = _required(model_new_module, "ModelNew", str(model_new_path))
    with torch.no_grad():
        _set_seed(seed)
        model_new = ModelNew(*init_inputs)
    same_weights = _same_tensors(reference.state_dict().values(), model_new.state_dict().values())
    reference = reference.to(device=device, dtype=torch.float32)
    model_new = model_new.to(device=device, dtype=torch.float32)

    trials = _check_correctness(reference, model_new, get_inputs, seed, correct_trials, device)
    correct = all(record["passed"] for record in trials)
    result = {
        "model_new": str(model_new_path),
        "reference": reference_name,
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "seed": seed,
        "model_new_load_seconds": load_seconds,
        "same_initial_weights": same_weights,
        "tf32": {"cudnn": torch.backends.cudnn.allow_tf32,
                 "matmul": torch.backends.cuda.matmul.allow_tf32},
        "correctness": {"atol": TOLERANCE, "rtol": TOLERANCE, "trials": trials},
        "correct": correct,
    }
    if not correct:
        return result

    # As KernelBench times: one input set drawn under the seed, grad mode as it is (enabled).
    _set_seed(seed)
    inputs = _to_device(get_inputs(), device)
    timing = {"warmup": warmup, "trials": perf_trials, "l2_flushed": flush_l2,
              "discarded_first": DISCARDED_TRIALS if flush_l2 else 0, "unit": "ms"}
    timing["model_new"] = _stats(_time_cuda_events(model_new, inputs, device, warmup,
                                                   perf_trials, flush_l2))
    timing["eager"] = _stats(_time_cuda_events(reference, inputs, device, warmup, perf_trials,
                                               flush_l2))
    speedup = {"eager": timing["eager"]["mean"] / timing["model_new"]["mean"]}
    if compile_reference:
        compiled = torch.compile(reference)
        started = time.perf_counter()
        compiled(*inputs)  # compiles; the warm-up calls then run the compiled code
        torch.cuda.synchronize(device)
        timing["torch_compile_first_call_seconds"] = time.perf_counter() - started
        timing["torch_compile"] = _stats(_time_cuda_events(compiled, inputs, device, warmup,
                                                           perf_trials, flush_l2))
        speedup["torch_compile"] = timing["torch_compile"]["mean"] / timing["model_new"]["mean"]
    result["timing"] = timing
    result["speedup"] = speedup
    return result


def _same_tensors(first, second):
    first, second = list(first), list(second)
    return len(first) == len(second) and all(
        a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, second))


def format_report(result):
    """The evaluator's result as a short text report (the CLI prints it)."""
    trials = result["correctness"]["trials"]
    passed = sum(record["passed"] for record in trials)
    lines = [
        "KernelBench eval | %s | torch %s | CUDA %s" % (result["device"], result["torch"],
                                                        result["cuda"]),
        "ModelNew: %s (module load incl. extension build: %.1f s)"
        % (result["model_new"], result["model_new_load_seconds"]),
        "reference: %s" % result["reference"],
        "same initial weights under seed %d: %s"
        % (result["seed"], "yes" if result["same_initial_weights"] else "NO"),
    ]
    worst = max((r.get("max_abs_diff", float("nan")) for r in trials), default=float("nan"))
    lines.append("correctness: %s (%d/%d trials, allclose atol=rtol=%g; max |diff| %.3g)"
                 % ("PASS" if result["correct"] else "FAIL", passed, len(trials),
                    result["correctness"]["atol"], worst))
    for index, record in enumerate(trials):
        if not record["shape_ok"]:
            lines.append("  trial %d: output shape %s, expected %s"
                         % (index, record["actual_shape"], record["expected_shape"]))
    timing = result.get("timing")
    if timing is None:
        lines.append("timing: skipped (correctness failed)")
        return "\n".join(lines)
    lines.append("timing: CUDA events, %d warm-up + %d timed calls, %s, ms"
                 % (timing["warmup"], timing["trials"],
                    "L2 flushed before each call" if timing["l2_flushed"] else "warm L2"))
    lines.append("| model | mean | median | std | min | max | ModelNew speedup |")
    lines.append("|---|---|---|---|---|---|---|")
    rows = [("ModelNew", "model_new", None), ("eager Model", "eager", "eager"),
            ("torch.compile(Model)", "torch_compile", "torch_compile")]
    for label, key, speedup_key in rows:
        if key not in timing:
            continue
        stats = timing[key]
        speedup = "" if speedup_key is None else "%.2fx" % result["speedup"][speedup_key]
        lines.append("| %s | %.4f | %.4f | %.4f | %.4f | %.4f | %s |"
                     % (label, stats["mean"], stats["median"], stats["std"], stats["min"],
                        stats["max"], speedup))
    return "\n".join(lines)
