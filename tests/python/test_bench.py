"""The benchmark CLI's pieces that run without a GPU: case names, the table, the no-GPU error."""

import subprocess
import sys

import pytest
import torch

from fusedconv.bench import format_table, sweep_cases


def test_sweep_cases_are_named_like_the_issue_says():
    names = [case.name for case in sweep_cases()]
    assert names[:2] == ["v0.1", "v0"]
    assert "8x64x128k3n128" in names and "3x32x224k3s2p1n32" in names
    assert "32x64x56k3p1n128" in names and "128x128x28k1n32" in names
    assert len(names) == 2 + 8 * 2 and len(set(names)) == len(names)


def test_format_table_reports_speedups_and_floor_share():
    records = [{"case": "v0", "direction": "fwd", "system": system, "ms": ms, "rel_err": 2e-7,
                "floor_ms": 0.1} for system, ms in (("eager", 1.0), ("compile", 0.5),
                                                    ("fusedconv", 0.25))]
    lines = format_table(records).splitlines()
    assert lines[0].startswith("| case | dir | system | ms | x eager | x compile")
    assert lines[-1] == "| v0 | fwd | fusedconv | 0.2500 | 4.00 | 2.00 | 40% | 2.0e-07 |"


def test_format_table_adds_peak_memory_for_training_steps():
    records = [{"case": "v0", "direction": "fwdbwd", "system": system, "ms": ms,
                "rel_err": 1e-6, "floor_ms": 0.1, "peak_mem_mb": mb}
               for system, ms, mb in (("eager", 2.0, 300.0), ("compile", 1.0, 250.0),
                                      ("fusedconv", 0.5, 120.4))]
    lines = format_table(records).splitlines()
    assert lines[0].endswith("| rel. err | peak MiB |")
    assert lines[-1] == "| v0 | fwdbwd | fusedconv | 0.5000 | 4.00 | 2.00 | 20% | 1.0e-06 | 120 |"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU-only machine")
def test_bench_without_gpu_says_so():
    result = subprocess.run([sys.executable, "-m", "fusedconv", "bench", "--cases", "v0"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "needs a CUDA GPU" in result.stderr
