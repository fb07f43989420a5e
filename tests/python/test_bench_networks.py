"""The real-network layers benchmark (fusedconv/bench_networks.py, ``bench --suite networks``):
its layer table, a tiny run on the CPU (records, errors, dtypes), the report's table and summary
lines on hand-made records, the JSON merging and the CLI."""

import json
import math

import pytest
import torch

from fusedconv import __main__ as cli
from fusedconv import bench_networks
from fusedconv.bench_networks import (LAYERS, format_report, format_table, merge_records,
                                      parse_choices, select_layers, summary_lines)

HAS_MATPLOTLIB = True
try:
    import matplotlib  # noqa: F401
except ImportError:
    HAS_MATPLOTLIB = False

SCHEMA = ("case", "direction", "system", "ms", "rel_err", "floor_ms", "device", "torch", "mode",
          "precision", "batch")
# Two small table layers (a 5x5 depthwise and a groups=32 3x3, both stride 2) at a 32x32 image.
TINY_LAYERS = "mnv3 dw5x5 s2 672,rx50 g32 3x3 s2 256"
TINY = dict(batch=2, repeats=3, image_size=32)


def _record(case, mode, direction, system, ms, floor_ms=None, rel_err=1e-7):
    return {"case": case, "mode": mode, "direction": direction, "system": system, "ms": ms,
            "rel_err": rel_err, "floor_ms": floor_ms, "device": "test", "torch": "x",
            "precision": "fp32", "batch": 64}


def test_layer_table_covers_the_four_networks():
    names = [layer.name for layer in LAYERS]
    assert len(names) == len(set(names)) and 20 <= len(names) <= 24
    networks = {}
    for layer in LAYERS:
        networks.setdefault(layer.network, []).append(layer)
    assert sorted(networks) == ["EfficientNet-B0", "MobileNetV3-Large", "ResNeXt-50 32x4d",
                                "ResNet-50"]
    assert all(4 <= len(layers) <= 7 for layers in networks.values())
    by_name = {layer.name: layer for layer in LAYERS}
    # The stems, as the papers have them (channels in/out, kernel, stride, input size).
    assert by_name["mnv3 stem 3x3 s2 3-16"][2:] == (3, 16, 3, 2, 1, 224)
    assert by_name["r50 stem 7x7 s2 3-64"][2:] == (3, 64, 7, 2, 1, 224)
    assert by_name["effb0 stem 3x3 s2 3-32"][2:] == (3, 32, 3, 2, 1, 224)
    for layer in LAYERS:
        assert layer.in_channels % layer.groups == 0 and layer.out_channels % layer.groups == 0
        if layer.name.split()[1].startswith("dw"):  # depthwise: one group per channel
            assert layer.groups == layer.in_channels == layer.out_channels
        if layer.name.split()[1] == "pw":
            assert layer.kernel == 1 and layer.groups == 1
        # Padding kernel // 2 keeps size / stride, as in the networks.
        assert bench_networks._output_size(layer.size, layer) == -(-layer.size // layer.stride)
    mobile = networks["MobileNetV3-Large"] + networks["EfficientNet-B0"]
    depthwise = {(layer.kernel, layer.stride) for layer in mobile
                 if layer.groups == layer.in_channels > 1}
    assert depthwise == {(3, 1), (3, 2), (5, 1), (5, 2)}
    assert {layer.in_channels for layer in networks["ResNet-50"]
            if layer.kernel == 3} == {64, 128, 256, 512}
    assert all(layer.groups == 32 for layer in networks["ResNeXt-50 32x4d"])


def test_select_layers_by_name_substring_and_list():
    assert [layer.name for layer in select_layers("r50 3x3 s2 256")] == ["r50 3x3 s2 256"]
    assert len(select_layers("r50")) == 7
    both = select_layers("rx50,mnv3 stem")
    assert [layer.name for layer in both] == ["mnv3 stem 3x3 s2 3-16"] + [
        layer.name for layer in LAYERS if layer.name.startswith("rx50")]  # table order
    assert select_layers(None) == LAYERS and select_layers("") == LAYERS
    with pytest.raises(ValueError, match="'r51'"):
        select_layers("r50,r51")


def test_parse_choices_keeps_the_canonical_order_and_rejects_unknowns():
    assert parse_choices("bf16_cl,fp32", bench_networks.MODES, "mode(s)") == ["fp32", "bf16_cl"]
    assert parse_choices(None, bench_networks.SYSTEMS, "system(s)") == list(
        bench_networks.SYSTEMS)
    with pytest.raises(ValueError, match="fp16"):
        parse_choices("fp32,fp16", bench_networks.MODES, "mode(s)")


@pytest.fixture(scope="module")
def cpu_records():
    layers = select_layers(TINY_LAYERS)
    return run_tiny(layers, "cpu")


def run_tiny(layers, device, systems=("eager", "fusedconv"), precision="default"):
    return bench_networks.run(layers, device, systems=systems, precision=precision, **TINY)


def test_tiny_cpu_run_has_one_record_per_case(cpu_records):
    assert len(cpu_records) == 2 * 4 * 2 * 2  # layers x modes x directions x systems
    keys = {(r["case"], r["mode"], r["direction"], r["system"]) for r in cpu_records}
    assert len(keys) == len(cpu_records)
    assert {r["mode"] for r in cpu_records} == set(bench_networks.MODES)
    for r in cpu_records:
        for field in SCHEMA:
            assert field in r, field
        assert r["system"] in ("eager", "fusedconv") and "compile_s" not in r
        assert r["ms"] > 0 and math.isfinite(r["ms"])
        assert r["floor_ms"] is None  # no memory floor on the CPU
        assert r["device"].startswith("CPU") and r["torch"] == torch.__version__
        assert r["precision"] == "fp32" and r["batch"] == 2
    depthwise = [r for r in cpu_records if r["case"] == "mnv3 dw5x5 s2 672"]
    assert len(depthwise) == 16
    assert all(r["input"] == [2, 672, 2, 2] for r in depthwise)  # 14 x 32 / 224 = 2
    json.dumps(cpu_records)  # JSON-ready


def test_tiny_cpu_run_is_accurate(cpu_records):
    for r in cpu_records:
        if r["mode"].startswith("fp32"):
            assert r["rel_err"] < 1e-4, r
        else:  # bf16 output rounding, against float64 of the bf16-rounded x, W and b
            assert 1e-5 < r["rel_err"] < 2e-2, r


def test_bf16_modes_run_in_bfloat16_for_every_system(cpu_records):
    # fusedconv's Autocast kernel casts to bfloat16 as the convolution would; without it the
    # operator would silently compute (and be timed) in float32.
    for r in cpu_records:
        expected = "bfloat16" if r["mode"].startswith("bf16") else "float32"
        assert r["out_dtype"] == expected, (r["case"], r["mode"], r["direction"], r["system"])


def test_summary_lines_count_geometric_mean_and_worst_case():
    records = [_record("a", "fp32", "fwd", "eager", 1.0), _record("a", "fp32", "fwd",
                                                                  "fusedconv", 0.5),
               _record("b", "bf16_cl", "fwd", "eager", 1.0),
               _record("b", "bf16_cl", "fwd", "fusedconv", 1.25),
               _record("a", "fp32", "fwdbwd", "eager", 3.0),
               _record("a", "fp32", "fwdbwd", "fusedconv", 1.0),
               _record("c", "fp32", "fwdbwd", "eager", 2.0),  # equal: not slower
               _record("c", "fp32", "fwdbwd", "fusedconv", 2.0)]
    assert summary_lines(records) == [
        "summary fwd: 1 of 2 cases slower than eager; geometric-mean speedup 1.26x; "
        "worst 0.80x (b bf16_cl)",
        "summary fwdbwd: 0 of 2 cases slower than eager; geometric-mean speedup 1.73x; "
        "worst 1.00x (c fp32)",
        "summary all: 1 of 4 cases slower than eager; geometric-mean speedup 1.48x; "
        "worst 0.80x (b bf16_cl fwd)"]
    # sqrt(2 * 0.8) = 1.265, sqrt(3 * 1) = 1.732, (2 * 0.8 * 3 * 1) ** 0.25 = 1.480


def test_layer_kinds_of_the_suite():
    kinds = {layer.name: bench_networks.layer_kind(layer) for layer in LAYERS}
    assert kinds["mnv3 stem 3x3 s2 3-16"] == "stem"
    assert kinds["mnv3 pw 16-64"] == "1x1"
    assert kinds["mnv3 dw5x5 s2 672"] == "depthwise"
    assert kinds["r50 3x3 s2 256"] == "dense"
    assert kinds["rx50 g32 3x3 128"] == "dense"  # grouped, not depthwise
    assert set(kinds.values()) == set(bench_networks.KINDS)


def test_kernel_time_summary_lines_count_within_the_floor_and_speedups():
    def record(case, mode, eager_us, fused_us, floor_us):
        return {"case": case, "mode": mode, "eager_us": eager_us, "fusedconv_us": fused_us,
                "floor_us": floor_us}

    records = [record("mnv3 dw5x5 120", "fp32", 40.0, 20.0, 10.0),      # 2.0x the floor: within
               record("mnv3 dw5x5 120", "bf16_cl", 30.0, 25.0, 5.0),    # 5.0x
               record("mnv3 pw 16-64", "fp32", 100.0, 50.0, 40.0)]      # 1.25x
    assert bench_networks.kernel_time_summary_lines(records) == [
        "1x1: 1 of 1 within 2x of the memory floor (geomean 1.25x the floor); "
        "speedup over eager geomean 2.00x, worst 2.00x (mnv3 pw 16-64 fp32)",
        "depthwise: 1 of 2 within 2x of the memory floor (geomean 3.16x the floor); "
        "speedup over eager geomean 1.55x, worst 1.20x (mnv3 dw5x5 120 bf16_cl)",
        "all: 2 of 3 within 2x of the memory floor (geomean 2.32x the floor); "
        "speedup over eager geomean 1.69x, worst 1.20x (mnv3 dw5x5 120 bf16_cl)"]
    # sqrt(2 * 5) = 3.162, sqrt(2 * 1.2) = 1.549, (2 * 5 * 1.25) ** (1 / 3) = 2.321,
    # (2 * 1.2 * 2) ** (1 / 3) = 1.687


def test_kernel_time_summary_lines_reject_a_case_outside_the_suite():
    records = [{"case": "not a layer", "mode": "fp32", "eager_us": 2.0, "fusedconv_us": 1.0,
                "floor_us": 1.0}]
    with pytest.raises(ValueError, match="case 'not a layer' is not a layer of the suite"):
        bench_networks.kernel_time_summary_lines(records)


def test_summary_lines_without_pairs_say_so():
    records = [_record("a", "fp32", "fwd", "eager", 1.0)]
    assert summary_lines(records) == [
        "summary fwd: no case has both eager and fusedconv times",
        "summary all: no case has both eager and fusedconv times"]


def test_format_table_rows():
    records = [_record("a", "fp32", "fwd", "eager", 1.0, 0.1),
               _record("a", "fp32", "fwd", "compile", 0.5, 0.1),
               _record("a", "fp32", "fwd", "fusedconv", 0.25, 0.1, rel_err=2e-7),
               _record("b", "bf16", "fwdbwd", "eager", 2.0),
               _record("b", "bf16", "fwdbwd", "fusedconv", 4.0, rel_err=3e-3)]
    lines = format_table(records).splitlines()
    assert lines[0] == ("| case | mode | dir | eager ms | compile ms | fusedconv ms | x eager | "
                        "x compile | % of memory floor | fusedconv rel. err |")
    assert lines[1].count("|") == lines[0].count("|")
    assert lines[2:] == [
        "| a | fp32 | fwd | 1.0000 | 0.5000 | 0.2500 | 4.00 | 2.00 | 40% | 2.0e-07 |",
        "| b | bf16 | fwdbwd | 2.0000 | - | 4.0000 | 0.50 | - | - | 3.0e-03 |"]


def test_format_report_ends_with_the_summary_lines():
    records = [_record("a", "fp32", direction, system, ms)
               for direction in ("fwd", "fwdbwd")
               for system, ms in (("eager", 1.0), ("compile", 0.8), ("fusedconv", 0.5))]
    records[1]["compile_s"] = 2.5
    records[4]["compile_s"] = 4.0
    lines = format_report(records).splitlines()
    assert lines[0] == "fusedconv networks bench | test | torch x | batch 64 | precision fp32"
    assert lines[1] == "torch.compile: 2 compilations, 6 s in all, at most 4.0 s"
    assert [line.split(":")[0] for line in lines[-6:]] == [
        "vs compile fwd", "vs compile fwdbwd", "vs compile all",
        "summary fwd", "summary fwdbwd", "summary all"]
    assert lines[-1] == ("summary all: 0 of 2 cases slower than eager; geometric-mean speedup "
                         "2.00x; worst 2.00x (a fp32 fwd)")
    assert lines[-4] == ("vs compile all: 0 of 2 cases slower than compile; geometric-mean "
                         "speedup 1.60x; worst 1.60x (a fp32 fwd)")


def test_merge_records_appends_and_replaces_remeasured():
    old = [_record("a", "fp32", "fwd", "eager", 1.0), _record("b", "fp32", "fwd", "eager", 1.0)]
    new = [_record("a", "fp32", "fwd", "eager", 2.0), _record("c", "fp32", "fwd", "eager", 3.0)]
    merged = merge_records(old, new)
    assert [(r["case"], r["ms"]) for r in merged] == [("b", 1.0), ("a", 2.0), ("c", 3.0)]


def test_settings_are_restored():
    config = bench_networks._dynamo().config
    before_limit = config.cache_size_limit
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark = True, True, False
    with bench_networks._settings(torch.device("cuda"), "fp32", True, compiling=True):
        assert (cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark) == (False, False, True)
        assert config.cache_size_limit >= 1 << 20
    assert (cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark) == (True, True, False)
    assert config.cache_size_limit == before_limit
    with bench_networks._settings(torch.device("cuda"), "default", False, compiling=False):
        assert (cudnn.allow_tf32, cudnn.benchmark) == (True, False)
        assert config.cache_size_limit == before_limit


def _cli(capsys, *arguments):
    code = cli.main(["bench", "--suite", "networks", "--device", "cpu", "--batch", "2",
                     "--image-size", "32", "--repeats", "2", "--systems", "eager,fusedconv"]
                    + list(arguments))
    return code, capsys.readouterr().out


def test_cli_networks_suite_writes_and_appends_json(tmp_path, capsys):
    path = tmp_path / "records.json"
    code, out = _cli(capsys, "--layers", "mnv3 dw5x5 s2", "--modes", "fp32",
                     "--directions", "fwd", "--json", str(path))
    assert code == 0
    assert out.splitlines()[-1].startswith("summary all: ")
    assert "| mnv3 dw5x5 s2 672 | fp32 | fwd | " in out
    first = json.loads(path.read_text())
    assert [(r["case"], r["system"]) for r in first] == [("mnv3 dw5x5 s2 672", "eager"),
                                                         ("mnv3 dw5x5 s2 672", "fusedconv")]
    _cli(capsys, "--layers", "rx50 g32 3x3 s2 256", "--modes", "fp32_cl",
         "--directions", "fwdbwd", "--json", str(path))
    _cli(capsys, "--layers", "mnv3 dw5x5 s2", "--modes", "fp32", "--directions", "fwd",
         "--json", str(path))  # measured again: replaces, does not duplicate
    merged = json.loads(path.read_text())
    assert sorted((r["case"], r["mode"], r["direction"], r["system"]) for r in merged) == [
        ("mnv3 dw5x5 s2 672", "fp32", "fwd", "eager"),
        ("mnv3 dw5x5 s2 672", "fp32", "fwd", "fusedconv"),
        ("rx50 g32 3x3 s2 256", "fp32_cl", "fwdbwd", "eager"),
        ("rx50 g32 3x3 s2 256", "fp32_cl", "fwdbwd", "fusedconv")]


@pytest.mark.skipif(HAS_MATPLOTLIB, reason="checks the message without matplotlib")
def test_cli_plot_without_matplotlib_says_so(tmp_path, capsys):
    code, out = _cli(capsys, "--layers", "mnv3 dw5x5 s2", "--modes", "fp32", "--directions",
                     "fwd", "--plot", str(tmp_path / "plot.png"))
    assert code == 0 and "matplotlib is not installed; no plot written" in out
    assert out.splitlines()[-1].startswith("summary all: ")


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    records = [_record(case, mode, direction, system, ms)
               for case in ("a", "b") for mode in ("fp32", "bf16")
               for direction in ("fwd", "fwdbwd")
               for system, ms in (("eager", 1.0), ("compile", 0.8), ("fusedconv", 0.5))]
    path = tmp_path / "plot.png"
    bench_networks.plot(records, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("arguments, message", [
    (["--layers", "nosuchlayer"], "unknown layer(s) 'nosuchlayer'"),
    (["--modes", "fp16"], "unknown mode(s) fp16"),
    (["--directions", "bwd"], "unknown direction(s) bwd"),
    (["--systems", "tvm"], "unknown system(s) tvm"),
])
def test_cli_rejects_unknown_choices(arguments, message):
    with pytest.raises(SystemExit, match=message.replace("(", r"\(").replace(")", r"\)")):
        cli.main(["bench", "--suite", "networks", "--device", "cpu"] + arguments)


@pytest.mark.parametrize("arguments", [
    ["bench", "--modes", "fp32"],  # networks options need --suite networks
    ["bench", "--device", "cpu"],
    ["bench", "--suite", "networks", "--cases", "v0"],  # kernelbench options need kernelbench
    ["bench", "--suite", "networks", "--backward"],
    ["bench", "--suite", "networks", "--precision", "tf16"],
    ["bench", "--inputs", "network"],
    ["bench", "--suite", "networks", "--inputs", "bfloat16"],
])
def test_cli_rejects_options_of_the_other_suite(arguments, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(arguments)
    assert raised.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU-only machine")
def test_cli_networks_on_cuda_without_gpu_says_so():
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        cli.main(["bench", "--suite", "networks", "--device", "cuda"])


@pytest.mark.cuda
def test_tiny_cuda_run_with_compile():
    records = run_tiny(select_layers("mnv3 dw5x5 s2,rx50 g32 3x3 s2 256"), "cuda",
                       systems=("eager", "compile", "fusedconv"), precision="fp32")
    assert len(records) == 2 * 4 * 2 * 3
    for r in records:
        for field in SCHEMA:
            assert field in r, field
        assert r["precision"] == "fp32" and r["floor_ms"] > 0 and r["ms"] > 0
        assert ("compile_s" in r) == (r["system"] == "compile")
        if r["mode"].startswith("fp32"):
            assert r["rel_err"] < 1e-4, r
        else:
            assert r["rel_err"] < 2e-2, r
            assert r["out_dtype"] == "bfloat16", r
    assert torch.backends.cudnn.benchmark is False


def test_network_inputs_are_bfloat16_in_the_bf16_modes_but_for_stems():
    # inputs="network": a layer inside a network gets the previous layer's autocast output
    # (bfloat16) in the bf16 modes; a stem gets the float32 image. Values still checked.
    layers = select_layers("mnv3 stem 3x3 s2 3-16,mnv3 dw5x5 s2 672")
    records = bench_networks.run(layers, "cpu", modes=("fp32", "bf16"), directions=("fwdbwd",),
                                 systems=("eager", "fusedconv"), inputs="network", **TINY)
    for r in records:
        inside = r["mode"] == "bf16" and "stem" not in r["case"]
        assert r["input_dtype"] == ("bfloat16" if inside else "float32"), r
        assert r["rel_err"] < (2e-2 if r["mode"] == "bf16" else 1e-4), r
    with pytest.raises(ValueError, match="inputs"):
        bench_networks.run(layers, "cpu", inputs="bfloat16", **TINY)


def test_records_of_other_input_dtypes_are_kept_apart():
    old = _record("a", "bf16", "fwd", "eager", 1.0)  # before the key: float32 inputs
    network = dict(_record("a", "bf16", "fwd", "eager", 0.5), input_dtype="bfloat16")
    merged = merge_records([old], [network])
    assert merged == [old, network]
    again = dict(_record("a", "bf16", "fwd", "eager", 0.9), input_dtype="float32")
    assert merge_records(merged, [again]) == [network, again]
