"""The KernelBench deliverable: the single-file ModelNew export (static rules, KernelBench's static
checker, PEP8, weights, CPU and GPU results) and the KernelBench-protocol evaluator."""

import ast
import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

from fusedconv import _build, build_config, kernelbench
from fusedconv.__main__ import main as cli_main
from fusedconv.kernelbench import problems
from fusedconv.kernelbench.exporter import _fold_long_lines
from fusedconv.reference import Model

from conftest import HAS_CUDA

REPOSITORY = Path(__file__).resolve().parents[2]
PROBLEM_DIRECTORY = REPOSITORY / "benchmarks" / "kernelbench"
REFERENCE_FILES = {p.name: PROBLEM_DIRECTORY / problems.problem_file_name(p)
                   for p in problems.KERNELBENCH_PROBLEMS}

# ------------------------------------------------------------------------------------------------
# KernelBench's static checker, mirrored pattern for pattern from ScalingIntelligence/KernelBench
# src/kernelbench/kernel_static_checker.py (commit 0ba2054976f26757afb23270b8c5966129396907):
# strict (errors) = code_bypass, timing_event_patch, thread_injection, lazy_eval and, for the
# "cuda" backend, cuda_impl; warnings = pytorch_wrap, torch_computation_ops, stream_injection and
# precision_downgrade (checked here with precision "fp32", the problem's).
# ------------------------------------------------------------------------------------------------


def _strip_comments(code):
    # The checker's _strip_comments: cut each line at its first '#', then at its first '//'.
    lines = []
    for line in code.split("\n"):
        if "#" in line:
            line = line[:line.index("#")]
        if "//" in line:
            line = line[:line.index("//")]
        lines.append(line)
    return "\n".join(lines)


TRY_EXCEPT_PATTERNS = [r"\btry\s*:", r"\bexcept\s*:", r"\bexcept\s+\w+"]
PASS_PATTERN = r"\bpass\b"
PYTORCH_DISALLOWED_NN_PATTERN = (r"torch\.nn\.(?!(Module|parameter|Parameter|ParameterList|"
                                 r"ParameterDict|ModuleList|ModuleDict|init)\b)")
TORCH_COMPUTATION_OPS = [
    "torch.mm", "torch.bmm", "torch.matmul", "torch.einsum",
    "torch.conv1d", "torch.conv2d", "torch.conv3d", "torch.conv",
    "torch.conv_transpose1d", "torch.conv_transpose2d", "torch.conv_transpose3d",
    "torch.avg_pool1d", "torch.avg_pool2d", "torch.avg_pool3d",
    "torch.max_pool1d", "torch.max_pool2d", "torch.max_pool3d",
    "torch.adaptive_avg_pool1d", "torch.adaptive_avg_pool2d", "torch.adaptive_avg_pool3d",
    "torch.adaptive_max_pool1d", "torch.adaptive_max_pool2d", "torch.adaptive_max_pool3d",
    "torch.relu", "torch.hardtanh", "torch.elu", "torch.selu",
    "torch.leaky_relu", "torch.gelu", "torch.softsign", "torch.softplus",
    "torch.softmax", "torch.log_softmax", "torch.tanh", "torch.sigmoid",
    "torch.hardsigmoid", "torch.silu", "torch.mish",
    "torch.batch_norm", "torch.group_norm", "torch.layer_norm",
    "torch.instance_norm", "torch.rms_norm", "torch.normalize",
    "torch.linear", "torch.cross_entropy", "torch.kl_div", "torch.mse_loss",
    "torch.huber_loss", "torch.triplet_margin_loss", "torch.cosine_similarity",
    "torch.logsumexp", "torch.clamp", "torch.dropout",
]
TORCH_FUNCTIONAL_PATTERNS = [
    r"torch\.nn\.functional\.\w+",
    r"\bnn\.functional\.\w+",
    r"\bF\.(conv|linear|relu|gelu|softmax|batch_norm|layer_norm|dropout|max_pool|avg_pool)",
]
CUDA_COMPILE_PATTERNS = ["load_inline", "cpp_extension"]
CUDA_THREAD_PATTERNS = [r"\bthreadIdx\.", r"\bblockIdx\.", r"\bblockDim\.", r"\bgridDim\."]
CUDA_KERNEL_PATTERNS = [r"__syncthreads\s*\(", r"__shared__\s+", r"__device__\s+",
                        r"atomicAdd\s*\(", r"atomicMax\s*\(", r"atomicMin\s*\("]
STREAM_PATTERNS = [r"torch\.cuda\.Stream\s*\(", r"cuda\.Stream\s*\(", r"with\s+torch\.cuda\.stream",
                   r"\.wait_stream\s*\(", r"\.record_stream\s*\("]
THREAD_PATTERNS = [
    r"threading\.Thread\s*\(", r"import\s+threading", r"from\s+threading\s+import",
    r"multiprocessing\.(Process|Pool|Manager|Queue|Pipe)", r"import\s+multiprocessing",
    r"concurrent\.futures", r"ThreadPoolExecutor", r"ProcessPoolExecutor",
]
LAZY_TENSOR_PATTERNS = [r"_make_subclass", r"class\s+\w+.*\(torch\.Tensor\)",
                        r"class\s+\w+.*\(Tensor\)", r"torch\.Tensor\.__new__"]
TIMING_EVENT_PATCH_PATTERNS = [
    r"torch\.cuda\.Event\.record\s*=", r"torch\.cuda\.Event\.elapsed_time\s*=",
    r"torch\.cuda\.synchronize\s*=", r"torch\.cuda\.Event\s*=", r"time\.perf_counter\s*=",
    r"time\.time\s*=",
]
FP32_TO_FP16_PATTERNS = [
    r"__float2half(_rn)?\s*\(", r"\(\s*__half\s*\)\s*[\w\->\.]+",
    r"static_cast\s*<\s*(__half|half)\s*>\s*\(", r"tl\.astype\s*\(\s*[^,]+,\s*tl\.float16\s*\)",
    r"NumericConverter\s*<\s*half_t\s*,\s*float\s*>", r"LinearCombination\s*<\s*half_t",
    r"type_convert\s*<\s*half_t\s*>\s*\(", r"tk::half\s*\(", r"\.half\s*\(", r"\.float16\s*\(",
    r"\.to\s*\(\s*torch\.(float16|half)\b", r"\.to\s*\(\s*dtype\s*=\s*torch\.(float16|half)\b",
]


def _any_pattern(patterns, code):
    return [p for p in patterns if re.search(p, code)]


def kernelbench_static_check(code):
    """(errors, warnings) as the checker's validate_kernel_static(code, "cuda", "fp32") gives."""
    code = _strip_comments(code)
    torch_op_pattern = (r"\b(" + "|".join(re.escape(op) for op in TORCH_COMPUTATION_OPS)
                        + r")(?=\s*\(|\s|$)")
    cuda_impl = []
    if "__global__" not in code:
        cuda_impl.append("missing __global__")
    if not any(p in code for p in CUDA_COMPILE_PATTERNS):
        cuda_impl.append("missing load_inline / cpp_extension")
    if not (_any_pattern(CUDA_THREAD_PATTERNS, code) or _any_pattern(CUDA_KERNEL_PATTERNS, code)):
        cuda_impl.append("missing CUDA thread indexing / kernel features")
    errors = {
        "code_bypass": _any_pattern(TRY_EXCEPT_PATTERNS + [PASS_PATTERN], code),
        "timing_event_patch": _any_pattern(TIMING_EVENT_PATCH_PATTERNS, code),
        "thread_injection": _any_pattern(THREAD_PATTERNS, code),
        "lazy_eval": _any_pattern(LAZY_TENSOR_PATTERNS, code),
        "cuda_impl": cuda_impl,
    }
    warnings = {
        "pytorch_wrap": _any_pattern([PYTORCH_DISALLOWED_NN_PATTERN], code),
        "torch_computation_ops": ([m.group(0) for m in re.finditer(torch_op_pattern, code)]
                                  + _any_pattern(TORCH_FUNCTIONAL_PATTERNS, code)),
        "stream_injection": _any_pattern(STREAM_PATTERNS, code),
        "precision_downgrade": _any_pattern(FP32_TO_FP16_PATTERNS, code),
    }
    return ({k: v for k, v in errors.items() if v}, {k: v for k, v in warnings.items() if v})


def test_the_mirrored_checker_flags_what_kernelbench_flags():
    # The mirror must not pass everything: each rule fires on a snippet that breaks it.
    errors, warnings = kernelbench_static_check(
        "try:\n    x = 1\nexcept Exception:\n    pass\nimport threading\n"
        "torch.cuda.Event.record = None\nclass Lazy(torch.Tensor): ...\n"
        "y = torch.nn.Conv2d(1, 1, 1)\nz = torch.relu(y)\nw = x.half()\ns = torch.cuda.Stream()\n")
    assert set(errors) == {"code_bypass", "timing_event_patch", "thread_injection", "lazy_eval",
                           "cuda_impl"}
    assert set(warnings) == {"pytorch_wrap", "torch_computation_ops", "stream_injection",
                             "precision_downgrade"}
    # Comments are stripped first, as the checker does.
    assert kernelbench_static_check(
        "# try: pass\n// torch.relu(x)\n__global__ void k() { threadIdx.x; }\nload_inline\n"
    ) == ({}, {})


# ------------------------------------------------------------------------------------------------
# The export
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def exported_path(tmp_path_factory):
    """model_new.py written by the CLI, once per session."""
    path = tmp_path_factory.mktemp("kernelbench") / "model_new.py"
    assert cli_main(["export-kernelbench", "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="session")
def exported_source(exported_path):
    return exported_path.read_text()


@pytest.fixture(scope="session")
def exported_module(exported_path):
    """The exported file imported once per session: the one build of its extension (CPU-only,
    ~25 s, without a GPU; cached in TORCH_EXTENSIONS_DIR afterwards)."""
    spec = importlib.util.spec_from_file_location("kernelbench_model_new_under_test",
                                                  str(exported_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_passes_kernelbench_static_checker(exported_source):
    errors, warnings = kernelbench_static_check(exported_source)
    assert errors == {}
    assert warnings == {}


def _dotted_name(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def test_export_python_rules(exported_source):
    tree = ast.parse(exported_source)
    nodes = list(ast.walk(tree))
    assert not [n for n in nodes if isinstance(n, (ast.Try, ast.Pass, ast.Assert))]
    assert not [n for n in nodes if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                and n.func.id in ("print", "exec", "eval")]
    # No testing code: no __main__ block, no test framework.
    assert "__main__" not in exported_source
    imported = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    stdlib = getattr(sys, "stdlib_module_names", {"math", "os"})
    assert all(name.split(".")[0] in stdlib or name.split(".")[0] == "torch"
               for name in imported), imported
    assert not [name for name in imported if name.startswith("torch.nn")]
    # torch.nn only for containers, parameters and init; no torch.nn.functional at all.
    allowed_nn = {"Module", "Parameter", "init"}
    nn_uses = {_dotted_name(n) for n in nodes if isinstance(n, ast.Attribute)}
    nn_uses = {name for name in nn_uses if name and name.startswith("torch.nn.")}
    assert {name.split(".")[2] for name in nn_uses} <= allowed_nn, nn_uses
    names = {n.id for n in nodes if isinstance(n, ast.Name)}
    assert not names & {"F", "nn", "functional"}
    # The kernels are compiled by load_inline with the operator library's own namespace.
    assert "load_inline(" in exported_source and "__global__" in exported_source
    assert "is_python_module=False" in exported_source


def test_export_inlines_every_source_and_header_from_csrc(exported_source):
    root = _build.source_root()
    sources = [root / p for p in build_config.CPU_SOURCES + build_config.CUDA_HOST_SOURCES
               + build_config.CUDA_KERNEL_SOURCES]
    headers = [path for directory in build_config.INCLUDE_DIRS
               for pattern in ("*.h", "*.cuh") for path in (root / directory).rglob(pattern)]
    for path in sources + headers:
        assert "// ---- csrc/%s ----" % path.relative_to(root).as_posix() in exported_source, path
    # No header is left to find on disk, and none is pasted twice into one translation unit.
    assert not re.search(r'^\s*#\s*include\s*"', exported_source, re.MULTILINE)
    assert "#pragma once" not in exported_source
    for unit in ("CPU_SOURCE", "CUDA_KERNEL_SOURCE"):
        body = exported_source.split('%s = r"""' % unit)[1].split('"""')[0]
        banners = re.findall(r"^// ---- (csrc/\S+) ----$", body, re.MULTILINE)
        assert len(banners) == len(set(banners)), unit
    # Every kernel under csrc/cuda is in the export.
    kernel_names = set()
    for pattern in ("*.cu", "*.cuh"):
        for path in sorted((root / "cuda").rglob(pattern)):
            kernel_names.update(
                re.findall(r"__global__[^(]*?(\w+)\s*\(", path.read_text(), re.S))
    assert kernel_names
    for name in kernel_names:
        assert re.search(r"\b%s\b" % name, exported_source), name


def test_export_uses_its_own_operator_namespace(exported_source):
    namespace = kernelbench.EXPORT_NAMESPACE
    code = _strip_comments(exported_source)
    assert "TORCH_LIBRARY(%s, m)" % namespace in code
    assert not re.search(r"TORCH_LIBRARY(_IMPL)?\(fusedconv\s*,", code)
    assert not re.search(r'"fusedconv::', code)
    assert not re.search(r"\bnamespace fusedconv\b", code)
    assert "torch.ops.%s.conv2d_hardswish_relu" % namespace in code


def test_export_takes_flags_and_source_order_from_build_config(exported_source):
    settings = {node.targets[0].id: node.value for node in ast.parse(exported_source).body
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    assert ast.literal_eval(settings["CXX_FLAGS"]) == list(build_config.CXX_FLAGS)
    assert ast.literal_eval(settings["LD_FLAGS"]) == list(build_config.LD_FLAGS)
    # sm_80 + compute_80 PTX through TORCH_CUDA_ARCH_LIST, sm_90a and its define explicitly.
    assert ast.literal_eval(settings["CUDA_ARCH_LIST"]) == "8.0+PTX"
    assert ast.literal_eval(settings["NVCC_FLAGS"]) == list(build_config.NVCC_FLAGS) + [
        "-gencode=arch=compute_90a,code=sm_90a", build_config.SM90A_DEFINE]
    kernel_unit = ast.literal_eval(settings["CUDA_KERNEL_SOURCE"])
    banners = re.findall(r"^// ---- csrc/(\S+) ----$", kernel_unit, re.MULTILINE)
    assert [b for b in banners if b in build_config.CUDA_KERNEL_SOURCES] == list(
        build_config.CUDA_KERNEL_SOURCES)


def test_export_is_generated_from_csrc_at_export_time(tmp_path, monkeypatch):
    copy = tmp_path / "csrc"
    shutil.copytree(_build.source_root(), copy)
    kernel = copy / build_config.CUDA_KERNEL_SOURCES[0]
    kernel.write_text(kernel.read_text() + "\n// marker-only-in-this-copy\n")
    monkeypatch.setattr(_build, "source_root", lambda: copy)
    assert "// marker-only-in-this-copy" in kernelbench.export_source()


def test_export_is_pep8_clean(exported_path):
    pycodestyle = pytest.importorskip("pycodestyle")
    style = pycodestyle.StyleGuide(max_line_length=kernelbench.EXPORT_LINE_LENGTH, quiet=True)
    report = style.check_files([str(exported_path)])
    assert report.total_errors == 0, report.get_statistics()


def test_export_long_line_folding_keeps_code_and_comments_intact():
    long_comment = "  // " + " ".join(["word"] * 30)
    long_code = "  int value = first_term + second_term + " + " + ".join(["term"] * 20) + ";"
    folded = _fold_long_lines("\n".join([long_comment, "  // next", long_code]), 100)
    lines = folded.splitlines()
    assert all(len(line) <= 100 for line in lines)
    comment_words = " ".join(line.strip()[3:] for line in lines if line.lstrip().startswith("//"))
    assert comment_words.split() == (["word"] * 30) + ["next"]
    # What the preprocessor sees once it splices backslash-newlines: the same tokens.
    code = re.sub(r"\\\n", "", "\n".join(
        line for line in lines if not line.lstrip().startswith("//")))
    assert code.split() == long_code.split()


def test_export_without_reduced_precision_storage(exported_source):
    # KernelBench's precision-downgrade patterns flag float16 conversions, so the export leaves
    # out the float16 / bfloat16 storage types and checks that nothing of them remains.
    code = _strip_comments(exported_source)
    assert not re.search(r"\b(__half|__nv_bfloat16|__float2half\w*|__float2bfloat16\w*)\b", code)
    assert "StorageTraits<float>" in code and "StorageTraits<double>" in code


def test_export_draws_the_reference_models_weights(exported_module):
    for seed, shape in ((0, (8, 64, 3)), (42, (3, 16, 3)), (7, (4, 6, (3, 2)))):
        torch.manual_seed(seed)
        reference = Model(*shape)
        after_reference = torch.rand(4)
        torch.manual_seed(seed)
        ours = exported_module.ModelNew(*shape)
        assert torch.equal(torch.rand(4), after_reference)
        assert list(ours.state_dict()) == list(reference.state_dict()) == ["conv.weight",
                                                                           "conv.bias"]
        for key, value in reference.state_dict().items():
            assert torch.equal(ours.state_dict()[key], value), (seed, key)


def _compare_forward_and_backward(model_new, device, batch=2, size=20, dtype=torch.float32):
    torch.manual_seed(3)
    reference = Model(8, 16, 3).to(device, dtype)
    ours = model_new.ModelNew(8, 16, 3).to(device, dtype)
    ours.load_state_dict(reference.state_dict())
    x = torch.rand(batch, 8, size, size, device=device, dtype=dtype, requires_grad=True)
    expected = reference(x)
    actual = ours(x)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    grad = torch.randn_like(expected)
    leaves = [x, reference.conv.weight, reference.conv.bias]
    expected_grads = torch.autograd.grad(expected, leaves, grad)
    actual_grads = torch.autograd.grad(actual, [x, ours.conv.weight, ours.conv.bias], grad)
    for got, want in zip(actual_grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # nn.Conv2d's unbatched (C, H, W) input.
    torch.testing.assert_close(ours(x[0].detach()), reference(x[0].detach()), rtol=1e-4,
                               atol=1e-5)


def test_export_matches_reference_on_cpu(exported_module):
    _compare_forward_and_backward(exported_module, "cpu")
    _compare_forward_and_backward(exported_module, "cpu", dtype=torch.float64)


@pytest.mark.cuda
def test_export_matches_reference_on_cuda(exported_module):
    _compare_forward_and_backward(exported_module, "cuda", batch=4, size=34)


# ------------------------------------------------------------------------------------------------
# Reference problems and the evaluator
# ------------------------------------------------------------------------------------------------


def _load(path):
    spec = importlib.util.spec_from_file_location("kernelbench_problem_under_test", str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_problem_files_are_generated_from_problems(tmp_path):
    # On a failure, regenerate them: problems.write_problem_files("benchmarks/kernelbench").
    written = problems.write_problem_files(tmp_path)
    assert ({path.name: path.read_text() for path in written}
            == {path.name: path.read_text() for path in PROBLEM_DIRECTORY.glob("*.py")})
    assert kernelbench.REFERENCE_V0_1_SOURCE == REFERENCE_FILES["v0.1"].read_text()


@pytest.mark.parametrize("problem", problems.KERNELBENCH_PROBLEMS, ids=lambda p: p.name)
def test_reference_files_state_kernelbench_problem_69(problem):
    module = _load(REFERENCE_FILES[problem.name])
    assert module.get_init_inputs() == [problem.in_channels, problem.out_channels,
                                        problem.kernel_size]
    (x,) = module.get_inputs()
    assert x.shape == (problem.batch, problem.in_channels, problem.height, problem.width)
    assert x.dtype == torch.float32
    # 'rand' is uniform [0, 1); 'randn' has negative values.
    assert (x.min() >= 0).item() == (problem.distribution == "rand")
    torch.manual_seed(5)
    theirs = module.Model(*module.get_init_inputs())
    torch.manual_seed(5)
    ours = Model(*module.get_init_inputs())
    for a, b in zip(theirs.state_dict().values(), ours.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.skipif(HAS_CUDA, reason="checks the message on machines without a GPU")
def test_evaluator_without_gpu_says_so(exported_path):
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        cli_main(["kernelbench-eval", str(exported_path)])


@pytest.mark.cuda
def test_evaluator_passes_the_export_on_v0(exported_path, exported_module, tmp_path):
    # exported_module first: the extension is built before the evaluator imports the file again.
    json_path = tmp_path / "result.json"
    assert cli_main(["kernelbench-eval", str(exported_path), "--reference",
                     str(REFERENCE_FILES["v0"]), "--perf-trials", "5", "--warmup", "1",
                     "--no-compile", "--json", str(json_path)]) == 0
    result = json.loads(json_path.read_text())
    assert result["correct"] and result["same_initial_weights"]
    assert len(result["correctness"]["trials"]) == 5
    assert result["timing"]["model_new"]["num_trials"] == 5
    assert result["speedup"]["eager"] > 0


@pytest.mark.cuda
def test_evaluator_default_reference_and_a_failing_model(exported_path, exported_module,
                                                         tmp_path):
    result = kernelbench.evaluate(exported_path, correct_trials=1, perf_trials=2, warmup=1,
                                  compile_reference=False)
    assert result["correct"] and "v0.1" in result["reference"]
    assert "ModelNew" in kernelbench.format_report(result)
    # A ModelNew that is off by more than the tolerance fails, and the CLI exits non-zero.
    wrong = tmp_path / "wrong_model_new.py"
    wrong.write_text(exported_path.read_text().replace(
        "return y if batched else y.squeeze(0)", "return (y if batched else y.squeeze(0)) + 1"))
    assert cli_main(["kernelbench-eval", str(wrong), "--reference", str(REFERENCE_FILES["v0"]),
                     "--correct-trials", "2", "--no-compile"]) == 1
