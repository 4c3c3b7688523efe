"""benchmark/device.py: the benchmark_model output parser on recorded outputs, and the adb runner
against a fake `adb` on PATH.

The outputs under benchmark/testdata/ follow, line for line, what benchmark_model prints in its
published versions and capture paths (no phone is attached where these tests run), covering: "INFO: " log prefixes and percentiles (current), bare lines without
percentiles with C++ stream floats such as 1.24027e+06 (older binaries), logcat prefixes with
CRLF line ends and "(all same)" statistics, op-profiling tables with statistics lines of their
own, a summary with every optional line missing, and a failed run.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import device, results_io

TESTDATA = Path(__file__).resolve().parents[1] / "benchmark" / "testdata"


def recorded(name: str) -> str:
    return (TESTDATA / name).read_bytes().decode()


def test_current_format_with_percentiles_and_memory():
    out = device.parse_benchmark_output(recorded("benchmark_model_percentiles.txt"))
    assert (out.init_us, out.first_us, out.warmup_avg_us, out.inference_avg_us) == (
        41267, 9874, 4467.35, 4418.72
    )
    assert out.warmup == device.RunStats(
        count=112, first=9874, curr=4411, min=4302, max=9874, avg=4467.35, std=532,
        p5=4321, median=4402, p95=4718,
    )
    assert out.inference == device.RunStats(
        count=226, first=4433, curr=4390, min=4291, max=6012, avg=4418.72, std=151,
        p5=4305, median=4389, p95=4655,
    )
    assert out.model_size_mb == 9.21183
    assert (out.memory_init_mb, out.memory_overall_mb, out.memory_peak_mb) == (14.0508, 21.1406, 27.6211)
    assert (out.xnnpack_nodes, out.xnnpack_partitions) == ((147, 147), 1)


def test_legacy_format_scientific_notation_single_warmup_run():
    out = device.parse_benchmark_output(recorded("benchmark_model_legacy.txt"))
    assert out.warmup_avg_us == 1.3576e6
    assert out.inference_avg_us == 1.24027e6
    assert out.warmup == device.RunStats(
        count=1, curr=1357602, avg=1357602, first=1357602, min=1357602, max=1357602, std=0.0
    )
    assert out.inference.avg == 1.24027e6
    assert (out.inference.count, out.inference.std) == (50, 2565)
    assert out.inference.median is None and out.inference.p95 is None
    assert (out.memory_init_mb, out.memory_overall_mb, out.memory_peak_mb) == (6.36328, 109.832, None)


def test_logcat_prefixes_crlf_and_all_same_statistics():
    text = recorded("benchmark_model_logcat_crlf.txt")
    assert "\r\n" in text
    out = device.parse_benchmark_output(text)
    assert out.warmup == device.RunStats(
        count=5, curr=2048, avg=2048, first=2048, min=2048, max=2048, std=0.0
    )
    assert out.inference.median == 2031 and out.inference.count == 488
    assert out.inference_avg_us == 2049.11
    # The older "Peak memory footprint" wording of the same numbers.
    assert (out.memory_init_mb, out.memory_overall_mb) == (3.12109, 9.87891)
    assert out.model_size_mb == 2.91307
    # An int8 graph that XNNPACK only partly takes (MobileNetV3's int8 HARD_SWISH stays out).
    assert (out.xnnpack_nodes, out.xnnpack_partitions) == ((126, 147), 21)


def test_op_profiling_tables_do_not_replace_the_run_statistics():
    out = device.parse_benchmark_output(recorded("benchmark_model_op_profiling.txt"))
    assert out.inference.count == 89 and out.inference.avg == 11327.6
    assert out.warmup.count == 44
    assert out.memory_peak_mb == 16.2383


def test_missing_optional_lines_are_none():
    out = device.parse_benchmark_output(recorded("benchmark_model_minimal.txt"))
    assert out.inference_avg_us == 28811 and out.init_us == 5579
    assert out.warmup is None and out.inference is None
    assert out.model_size_mb is None and out.memory_overall_mb is None and out.memory_peak_mb is None
    assert out.xnnpack_partitions is None


def test_failed_run_is_an_error_quoting_the_output():
    with pytest.raises(device.BenchmarkOutputError, match="Benchmarking failed"):
        device.parse_benchmark_output(recorded("benchmark_model_failed.txt"))


def test_result_from_output_falls_back_to_the_average_without_statistics(tmp_path):
    model = _exported(tmp_path, "ghostnet_130")
    output = device.parse_benchmark_output(recorded("benchmark_model_minimal.txt"))
    result = device.to_result(output, model, threads=4, image_size=224, warmup_runs=5, num_runs=30)
    assert result.mean_ms == pytest.approx(28.811)
    assert result.median_ms is None and result.num_runs == 30
    assert (result.family, result.width, result.runtime) == ("GhostNet", 1.3, "benchmark_model")
    assert result.xnnpack_partitions is None and result.outside_xnnpack is None
    partial = device.parse_benchmark_output(recorded("benchmark_model_logcat_crlf.txt"))
    result = device.to_result(partial, model, threads=4, image_size=224, warmup_runs=5, num_runs=30)
    assert (result.xnnpack_partitions, result.outside_xnnpack) == (21, "21 of 147 ops")


# --- the adb runner, against a fake adb -------------------------------------------------------

FAKE_ADB = """\
#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args == ["devices"]:
    print("List of devices attached")
    for line in os.environ.get("FAKE_ADB_DEVICES", "").split(";"):
        if line:
            print(line.replace(":", "\\t"))
    sys.exit(0)
command = args[2:]
if command[:1] == ["shell"] and command[1].startswith("getprop "):
    print({{"ro.product.model": "Pixel 7", "ro.product.manufacturer": "Google",
           "ro.soc.model": "GS201", "ro.product.cpu.abi": "arm64-v8a",
           "ro.build.version.release": "14"}}.get(command[1].split()[1], ""))
elif command[:1] == ["shell"] and "benchmark_model --graph=" in command[1]:
    sys.stdout.write(open(os.environ["FAKE_ADB_OUTPUT"]).read())
    sys.exit(int(os.environ.get("FAKE_ADB_EXIT", "0")))
elif command[:1] == ["push"]:
    print(command[1] + ": 1 file pushed")
"""


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """A fake `adb` first on PATH; returns a function reading the argv lists it was called with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "adb"
    script.write_text(FAKE_ADB.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "adb_calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_DEVICES", "R5CT1234:device")
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(TESTDATA / "benchmark_model_percentiles.txt"))

    def calls() -> list[list[str]]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return calls


def _exported(tmp_path, name="repghostnet_050", form="fused", precision="float32"):
    from benchmark.export import Exported

    path = tmp_path / f"{name}-{form}-{precision}.tflite"
    path.write_bytes(b"\0" * 1234)
    return Exported(name, form, precision, str(path), params=2_300_000, macs=43_314_720)


def test_runner_pushes_runs_and_parses(tmp_path, fake_adb):
    binary = tmp_path / "android_aarch64_benchmark_model"
    binary.write_bytes(b"\x7fELF")
    models = [_exported(tmp_path), _exported(tmp_path, precision="int8")]
    adb_path = device.find_adb("adb")
    serial = device.select_device(adb_path, None)
    adb = device.Adb(adb_path, serial)

    results = device.run_on_device(
        adb, str(binary), models, [1, 4], image_size=224, warmup_runs=20, num_runs=100,
        log_dir=str(tmp_path / "logs"), log=lambda _: None,
    )

    calls = fake_adb()
    assert calls[0] == ["devices"]
    assert all(call[:2] == ["-s", "R5CT1234"] for call in calls[1:])
    remote = device.REMOTE_DIR
    assert ["-s", "R5CT1234", "push", str(binary), f"{remote}/benchmark_model"] in calls
    assert ["-s", "R5CT1234", "push", models[1].path, f"{remote}/{Path(models[1].path).name}"] in calls
    runs = [call[3] for call in calls[1:] if call[2] == "shell" and "--graph=" in call[3]]
    assert runs[0] == (
        f"{remote}/benchmark_model --graph={remote}/repghostnet_050-fused-float32.tflite "
        "--num_threads=1 --use_xnnpack=true --warmup_runs=20 --num_runs=100"
    )
    assert len(runs) == 4 and "--num_threads=4" in runs[1] and "int8" in runs[3]

    assert [(r.precision, r.threads) for r in results] == [
        ("float32", 1), ("float32", 4), ("int8", 1), ("int8", 4)
    ]
    first = results[0]
    assert first.runtime == "benchmark_model" and first.size_bytes == 1234
    assert (first.median_ms, first.p5_ms, first.p95_ms) == (4.389, 4.305, 4.655)
    assert first.mean_ms == pytest.approx(4.41872) and first.num_runs == 226
    assert first.memory_peak_mb == 27.6211 and first.init_ms == pytest.approx(41.267)
    assert (first.xnnpack_partitions, first.outside_xnnpack) == (1, "")
    assert (tmp_path / "logs" / "repghostnet_050-fused-int8-t4.txt").read_text().startswith("INFO: STARTING!")
    assert device.device_description(adb) == (
        "Google Pixel 7 (GS201, arm64-v8a), Android 14, serial R5CT1234"
    )


def test_runner_names_the_model_whose_run_failed(tmp_path, fake_adb, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(TESTDATA / "benchmark_model_failed.txt"))
    adb = device.Adb(device.find_adb("adb"), "R5CT1234")
    with pytest.raises(device.BenchmarkOutputError, match="repghostnet_050-fused-float32 with 1 threads"):
        device.run_on_device(adb, __file__, [_exported(tmp_path)], [1], image_size=224,
                             warmup_runs=1, num_runs=1, log=lambda _: None)


def test_runner_reports_a_failing_benchmark_and_keeps_its_output(tmp_path, fake_adb, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(TESTDATA / "benchmark_model_failed.txt"))
    monkeypatch.setenv("FAKE_ADB_EXIT", "1")
    adb = device.Adb(device.find_adb("adb"), "R5CT1234")
    with pytest.raises(device.DeviceError, match=(
        "repghostnet_050-fused-float32 with 1 threads: .* exit code 1: ERROR: Benchmarking failed."
    )):
        device.run_on_device(adb, __file__, [_exported(tmp_path)], [1], image_size=224, warmup_runs=1,
                             num_runs=1, log_dir=str(tmp_path / "logs"), log=lambda _: None)
    log = (tmp_path / "logs" / "repghostnet_050-fused-float32-t1.txt").read_text()
    assert log == recorded("benchmark_model_failed.txt")


@pytest.mark.parametrize(
    "devices, serial, message",
    [
        ("", None, "no Android device attached; connect one"),
        ("R5CT1234:unauthorized", None, r"no Android device attached and ready: R5CT1234 \(unauthorized\)"),
        ("A1:device;B2:device", None, r"several devices attached \(A1, B2\); choose one with --serial"),
        ("A1:device", "B2", "device 'B2' is not attached; `adb devices` lists: A1"),
        ("A1:offline", "A1", "device 'A1' is offline"),
    ],
)
def test_device_selection_errors(fake_adb, monkeypatch, devices, serial, message):
    monkeypatch.setenv("FAKE_ADB_DEVICES", devices)
    with pytest.raises(device.DeviceError, match=message):
        device.select_device(device.find_adb("adb"), serial)


def test_device_selection_picks_the_serial_asked_for(fake_adb, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_DEVICES", "A1:device;B2:device")
    assert device.select_device(device.find_adb("adb"), "B2") == "B2"


def test_missing_adb_is_a_clear_error(tmp_path):
    with pytest.raises(device.DeviceError, match="adb not found .* pass --adb="):
        device.find_adb(str(tmp_path / "no-adb-here"))


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmark.device", *args],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=120,
    )


def test_cli_errors_are_one_line_with_non_zero_exit(tmp_path, fake_adb):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    cases = [
        ((), "pass --benchmark_model=PATH"),
        ((f"--benchmark_model={tmp_path / 'nope'}",), "benchmark_model binary not found"),
        ((f"--benchmark_model={binary}", "--adb=/nonexistent/adb"), "adb not found"),
        ((f"--benchmark_model={binary}", "--models=resnet_050"), "unknown model 'resnet_050'"),
    ]
    for args, message in cases:
        completed = _cli(*args)
        assert completed.returncode == 1, completed.stderr
        last = completed.stderr.strip().splitlines()[-1]
        assert last.startswith(f"benchmark.device: error: {message}"), completed.stderr
    completed = _cli(f"--benchmark_model={binary}", env={"FAKE_ADB_DEVICES": ""})
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines()[-1].startswith(
        "benchmark.device: error: no Android device attached")


def test_device_results_use_the_shared_schema(tmp_path):
    model = _exported(tmp_path)
    output = device.parse_benchmark_output(recorded("benchmark_model_legacy.txt"))
    result = device.to_result(output, model, threads=1, image_size=224, warmup_runs=1, num_runs=50)
    document = results_io.make_document("device", {"machine": "phone"}, {"num_runs": 50}, [result])
    paths = results_io.write_run(tmp_path / "run", document)
    assert results_io.load_document(paths["json"])["results"][0]["mean_ms"] == pytest.approx(1240.27)
    assert "| repghostnet_050 | fused | float32 | 1 |" in Path(paths["markdown"]).read_text()
    assert "ORT" not in Path(paths["markdown"]).read_text()


def test_runner_asks_for_the_gpu_delegate(tmp_path, fake_adb):
    adb_path = device.find_adb("adb")
    adb = device.Adb(adb_path, device.select_device(adb_path, None))
    device.run_on_device(
        adb, __file__, [_exported(tmp_path, name="g_ghost_regnetx_002")], [1], image_size=224,
        warmup_runs=1, num_runs=10, use_gpu=True, log=lambda _: None,
    )
    runs = [call[3] for call in fake_adb()[1:] if call[2] == "shell" and "--graph=" in call[3]]
    assert len(runs) == 1 and runs[0].endswith("--use_gpu=true")
