"""benchmark/plot.py: the latency-accuracy figure (skipped where matplotlib is not installed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from benchmark import plot, results_io  # noqa: E402

from test_benchmark_results import document, result  # noqa: E402


def test_plot_points_choose_configuration_and_accuracy_source():
    rows = [
        result(model="repghostnet_100", width=1.0, median_ms=6.0),
        result(),
        result(threads=4, median_ms=1.0),
        result(precision="int8", median_ms=1.0),
        result(runtime="onnxruntime", median_ms=1.0),
        result(model="ghostnet_050", family="GhostNet", median_ms=None, mean_ms=3.5),
        result(model="repghostnet_wo_050", family="RepGhostNet", median_ms=9.0),  # no top-1
    ]
    series = plot.points(rows, {"ghostnet_050": 65.0}, threads=1, precision="float32", form="fused")
    assert series == {
        "RepGhostNet": [(3.0, 66.9, "0.5x", False), (6.0, 74.2, "1x", False)],
        "GhostNet": [(3.5, 65.0, "0.5x", True)],
    }


@pytest.mark.slow
def test_plot_cli_writes_a_png(tmp_path):
    rows = [result(), result(model="repghostnet_100", width=1.0, median_ms=6.0),
            result(model="ghostnet_050", family="GhostNet", median_ms=3.4)]
    results_io.write_run(tmp_path, document(rows))
    measured = tmp_path / "top1.json"
    measured.write_text(json.dumps({"repghostnet_050": 66.5}))
    completed = subprocess.run(
        [sys.executable, "-m", "benchmark.plot", f"--results={tmp_path / 'results.json'}",
         f"--measured_top1={measured}"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "latency_top1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    completed = subprocess.run(
        [sys.executable, "-m", "benchmark.plot", f"--results={tmp_path / 'results.json'}", "--plot_threads=8"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines()[-1] == (
        "error: no fused float32 results at 8 threads with a known top-1"
    )


def _arm_row(model: str, precision: str, cpu: str = "cortex-a76", millions: float = 30.0) -> dict:
    return {"model": model, "precision": precision, "cpu": cpu,
            "instructions_per_invoke": int(millions * 1e6)}


def test_arm_points_are_per_family_and_precision_on_one_cpu():
    rows = [_arm_row("repghostnet_050", "float32", millions=30.7),
            _arm_row("repghostnet_050", "int8", millions=23.1),
            _arm_row("repghostnet_100", "int8", millions=37.3),
            _arm_row("repghostnet_050", "int8", cpu="cortex-a53", millions=34.9),
            _arm_row("repghostnet_wo_050", "float32")]  # no published top-1
    assert plot.arm_points(rows, {}, "cortex-a76") == {
        "RepGhostNet float32": [(30.7, 66.9, "0.5x", False)],
        "RepGhostNet int8": [(23.1, 66.9, "0.5x", False), (37.3, 74.2, "1x", False)],
    }


@pytest.mark.slow
def test_plot_cli_draws_arm_results_alone(tmp_path):
    arm = {"schema_version": 1, "kind": "arm", "environment": {"qemu": "7.2"}, "settings": {},
           "results": [_arm_row("repghostnet_050", "float32"), _arm_row("ghostnet_050", "int8")]}
    (tmp_path / "arm.json").write_text(json.dumps(arm))
    root = Path(__file__).resolve().parents[1]
    completed = subprocess.run(
        [sys.executable, "-m", "benchmark.plot", f"--results={tmp_path / 'arm.json'}"],
        cwd=root, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "instructions_top1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    results_io.write_run(tmp_path, document([result()]))
    completed = subprocess.run(
        [sys.executable, "-m", "benchmark.plot",
         f"--results={tmp_path / 'arm.json'},{tmp_path / 'results.json'}"],
        cwd=root, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines()[-1] == (
        "error: benchmark.arm results plot instructions, not latency: plot them alone")
