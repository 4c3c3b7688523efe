"""Latency on an Android phone with the official TFLite `benchmark_model` binary, over adb.

Exports the same models as latency.py, pushes them and the binary to the device, runs

    adb shell benchmark_model --graph=... --num_threads=N --use_xnnpack=true \
        --warmup_runs=W --num_runs=R

for each model and thread count, parses its output and writes the same results.json / .csv /
.md as the host benchmark, plus each raw output under logs/.

benchmark_model is not built here: download the prebuilt Android binary
(android_aarch64_benchmark_model for 64-bit phones, android_arm_benchmark_model for 32-bit) from
the nightly builds linked in the LiteRT docs, "Performance measurement"
(https://ai.google.dev/edge/litert/models/measurement, formerly
tensorflow.org/lite/performance/measurement), and pass its path as --benchmark_model.

Usage: python -m benchmark.device --benchmark_model=./android_aarch64_benchmark_model
           [--serial=SERIAL] [--models=repghostnet_050,ghostnet_050] [--threads=1,4]
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
from typing import TYPE_CHECKING, Callable, Sequence

from absl import flags

from benchmark import common_flags, results_io
from benchmark.results_io import Result
from repghost_tf import cli

if TYPE_CHECKING:
    from benchmark.export import Exported

REMOTE_DIR = "/data/local/tmp/repghost_tf_benchmark"
_PROPERTIES = {
    "manufacturer": "ro.product.manufacturer",
    "model": "ro.product.model",
    "soc": "ro.soc.model",
    "platform": "ro.board.platform",
    "abi": "ro.product.cpu.abi",
    "android": "ro.build.version.release",
}

flags.adopt_module_key_flags(common_flags)
_ADB = flags.DEFINE_string("adb", "adb", "adb executable: a name looked up on PATH, or a path.")
_SERIAL = flags.DEFINE_string(
    "serial", None, "Serial of the device to use (see `adb devices`); needed when several are attached."
)
_BENCHMARK_MODEL = flags.DEFINE_string(
    "benchmark_model", None,
    "Host path of the official Android benchmark_model binary to push and run.",
)
_USE_GPU = flags.DEFINE_boolean(
    "use_gpu", False,
    "Pass --use_gpu=true: run on the TFLite GPU delegate (float models; G-GhostNet's target).",
)
_OP_PROFILING = flags.DEFINE_boolean(
    "enable_op_profiling", False,
    "Pass --enable_op_profiling=true: the logs then show where the time goes per op type.",
)

# A number as C++ streams print it: 123, 123.4, 1.23457e+06, and nan/inf for empty stats.
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_SUMMARY = re.compile(
    rf"Inference timings in us: Init: (?P<init>{_NUMBER}), First inference: (?P<first>{_NUMBER}), "
    rf"Warmup \(avg\): (?P<warmup>{_NUMBER}), Inference \(avg\): (?P<inference>{_NUMBER})"
)
_STAT_LINE = re.compile(r"\bcount=\d+\b")
_CURR = re.compile(r"\bcurr=")
# The op-profiling tables end with statistics lines of their own, which are not the run's.
_OP_PROFILE_STAT = re.compile(r"Timings \(microseconds\)|Memory \(bytes\)")
_STAT_FIELD = re.compile(rf"\b(\w+)=({_NUMBER})")
_RUN_HEADER = re.compile(r"Running benchmark for at least")
_MODEL_SIZE = re.compile(rf"The input model file size \(MB\): ({_NUMBER})")
_MEMORY_DELTA = re.compile(
    rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
    rf"init=({_NUMBER}) overall=({_NUMBER})"
)
_PARTITIONS = re.compile(
    r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(TfLiteXNNPackDelegate\) node, "
    r"yielding (\d+) partitions"
)
_MEMORY_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUMBER})")


class DeviceError(RuntimeError):
    """Anything that stops the phone benchmark; the message is one line for the user."""


class AdbCommandError(DeviceError):
    """An adb command that exited non-zero; `output` keeps what it printed."""

    def __init__(self, message: str, output: str):
        super().__init__(message)
        self.output = output


class BenchmarkOutputError(DeviceError):
    """benchmark_model printed no timing summary (it failed, or this is not its output)."""


@dataclasses.dataclass
class RunStats:
    """One `count=... first=... avg=... std=...` line, in microseconds. A single run or runs of
    identical time print only count and curr; percentiles appear in newer binaries only."""

    count: int
    avg: float
    first: float | None = None
    curr: float | None = None
    min: float | None = None
    max: float | None = None
    std: float | None = None
    p5: float | None = None
    median: float | None = None
    p95: float | None = None


@dataclasses.dataclass
class BenchmarkOutput:
    """What one benchmark_model run reports; times in microseconds, memory in MB."""

    init_us: float
    first_us: float
    warmup_avg_us: float
    inference_avg_us: float
    warmup: RunStats | None = None
    inference: RunStats | None = None
    model_size_mb: float | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    memory_peak_mb: float | None = None
    xnnpack_nodes: tuple[int, int] | None = None  # (replaced by XNNPACK, all)
    xnnpack_partitions: int | None = None


def _parse_stats(line: str) -> RunStats:
    values = {key: float(value) for key, value in _STAT_FIELD.findall(line)}
    count = int(values.pop("count"))
    if "avg" not in values:  # "count=1 curr=9876" or "count=5 curr=9876(all same)"
        same = values["curr"]
        values.update(avg=same, first=same, min=same, max=same, std=0.0)
    fields = {f.name for f in dataclasses.fields(RunStats)}
    return RunStats(count=count, **{k: v for k, v in values.items() if k in fields})


def parse_benchmark_output(text: str) -> BenchmarkOutput:
    """Parses benchmark_model's stdout+stderr, with or without log prefixes ("INFO: ",
    logcat's "I tflite  : ") and carriage returns. The statistics line after the first
    "Running benchmark" header is the warm-up, the one after the second the timed runs; without
    headers, the first and last statistics lines are."""
    summary = None
    sections: list[list[RunStats]] = [[]]
    model_size = memory = peak = partitions = None
    for raw in text.splitlines():
        line = raw.replace("\r", "")
        if _RUN_HEADER.search(line):
            sections.append([])
        elif match := _SUMMARY.search(line):
            summary = match
        elif (match := _STAT_LINE.search(line)) and _CURR.search(line) and not _OP_PROFILE_STAT.search(line):
            sections[-1].append(_parse_stats(line[match.start():]))
        elif match := _MODEL_SIZE.search(line):
            model_size = float(match.group(1))
        elif match := _MEMORY_DELTA.search(line):
            memory = (float(match.group(1)), float(match.group(2)))
        elif match := _MEMORY_PEAK.search(line):
            peak = float(match.group(1))
        elif match := _PARTITIONS.search(line):
            partitions = tuple(int(group) for group in match.groups())
    if summary is None:
        tail = " | ".join(line.strip() for line in text.strip().splitlines()[-3:])
        raise BenchmarkOutputError(
            f"benchmark_model printed no 'Inference timings' summary; it ended with: {tail or '(nothing)'}"
        )
    headed = [stats for section in sections[1:] for stats in section[:1]]
    stats = headed if len(headed) >= 2 else [s for section in sections for s in section]
    return BenchmarkOutput(
        init_us=float(summary["init"]),
        first_us=float(summary["first"]),
        warmup_avg_us=float(summary["warmup"]),
        inference_avg_us=float(summary["inference"]),
        warmup=stats[0] if len(stats) >= 2 else None,
        inference=stats[-1] if stats else None,
        model_size_mb=model_size,
        memory_init_mb=memory[0] if memory else None,
        memory_overall_mb=memory[1] if memory else None,
        memory_peak_mb=peak,
        xnnpack_nodes=partitions[:2] if partitions else None,
        xnnpack_partitions=partitions[2] if partitions else None,
    )


class Adb:
    """adb for one device: every command is `adb -s SERIAL ...`."""

    def __init__(self, executable: str, serial: str):
        self.executable = executable
        self.serial = serial

    def run(self, *args: str) -> str:
        command = [self.executable, "-s", self.serial, *args]
        completed = subprocess.run(command, capture_output=True, text=True)
        output = completed.stdout + completed.stderr
        if completed.returncode != 0:
            lines = output.strip().splitlines()
            raise AdbCommandError(
                f"`{shlex.join(command)}` failed with exit code {completed.returncode}: "
                f"{lines[-1] if lines else 'no output'}",
                output,
            )
        return output

    def shell(self, command: str) -> str:
        return self.run("shell", command)

    def push(self, local: str, remote: str) -> None:
        self.run("push", local, remote)


def find_adb(adb: str) -> str:
    """The adb executable, or DeviceError saying how to get one."""
    found = shutil.which(adb)
    if found is None:
        raise DeviceError(
            f"adb not found ({adb!r}): install Android SDK platform-tools or pass --adb=/path/to/adb"
        )
    return found


def select_device(adb: str, serial: str | None) -> str:
    """The serial to use: `serial` if attached, else the only attached device."""
    completed = subprocess.run([adb, "devices"], capture_output=True, text=True)
    if completed.returncode != 0:
        raise DeviceError(f"`{adb} devices` failed: {completed.stderr.strip() or completed.stdout.strip()}")
    states = {}
    for line in completed.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not line.startswith(("List of devices", "*")):
            states[fields[0]] = fields[1]
    ready = [s for s, state in states.items() if state == "device"]
    if serial is not None:
        if serial not in states:
            raise DeviceError(f"device {serial!r} is not attached; `adb devices` lists: "
                              f"{', '.join(states) or 'none'}")
        if states[serial] != "device":
            raise DeviceError(f"device {serial!r} is {states[serial]}; authorize it or reconnect")
        return serial
    if not ready:
        others = ", ".join(f"{s} ({state})" for s, state in states.items())
        raise DeviceError(
            "no Android device attached" + (f" and ready: {others}" if others else "")
            + "; connect one with USB debugging on, and check `adb devices`"
        )
    if len(ready) > 1:
        raise DeviceError(f"several devices attached ({', '.join(ready)}); choose one with --serial")
    return ready[0]


def device_description(adb: Adb) -> str:
    props = {key: adb.shell(f"getprop {name}").strip() for key, name in _PROPERTIES.items()}
    soc = props["soc"] or props["platform"]
    return (f"{props['manufacturer']} {props['model']} ({soc}, {props['abi']}), "
            f"Android {props['android']}, serial {adb.serial}")


def benchmark_command(
    binary: str, graph: str, threads: int, warmup_runs: int, num_runs: int, op_profiling: bool,
    use_gpu: bool = False,
) -> str:
    arguments = [
        binary, f"--graph={graph}", f"--num_threads={threads}", "--use_xnnpack=true",
        f"--warmup_runs={warmup_runs}", f"--num_runs={num_runs}",
    ]
    if use_gpu:
        arguments.append("--use_gpu=true")
    if op_profiling:
        arguments.append("--enable_op_profiling=true")
    return shlex.join(arguments)


def _ms(microseconds: float | None) -> float | None:
    return None if microseconds is None else microseconds / 1000


def _outside_xnnpack(nodes: tuple[int, int] | None) -> str | None:
    """benchmark_model counts the ops XNNPACK left to TFLite's kernels, without their types."""
    if nodes is None:
        return None
    replaced, total = nodes
    return f"{total - replaced} of {total} ops" if replaced < total else ""


def to_result(
    output: BenchmarkOutput, model: Exported, threads: int, image_size: int, warmup_runs: int,
    num_runs: int,
) -> Result:
    """A schema Result from a parsed run of the exported `model`."""
    timed = output.inference or RunStats(count=num_runs, avg=output.inference_avg_us)
    return Result(
        model=model.model, family=model.info.family, width=model.info.width, form=model.form,
        precision=model.precision, runtime="benchmark_model", threads=threads,
        image_size=image_size, size_bytes=model.size_bytes, params=model.params, macs=model.macs,
        warmup_runs=warmup_runs, num_runs=timed.count, mean_ms=output.inference_avg_us / 1000,
        median_ms=_ms(timed.median), p5_ms=_ms(timed.p5), p95_ms=_ms(timed.p95),
        std_ms=_ms(timed.std), min_ms=_ms(timed.min), max_ms=_ms(timed.max),
        init_ms=output.init_us / 1000, first_ms=output.first_us / 1000,
        memory_init_mb=output.memory_init_mb, memory_overall_mb=output.memory_overall_mb,
        memory_peak_mb=output.memory_peak_mb,
        xnnpack_partitions=output.xnnpack_partitions,
        outside_xnnpack=_outside_xnnpack(output.xnnpack_nodes),
    )


def run_on_device(
    adb: Adb,
    binary: str,
    models: Sequence[Exported],
    threads: Sequence[int],
    *,
    image_size: int,
    warmup_runs: int,
    num_runs: int,
    op_profiling: bool = False,
    use_gpu: bool = False,
    log_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> list[Result]:
    """Pushes `binary` and the exported `models`, runs benchmark_model on each at each thread
    count, and returns the parsed results; raw outputs go to `log_dir` when given."""
    from repghost_tf.atomic_files import write_text  # the package loads TensorFlow: only now

    remote_binary = f"{REMOTE_DIR}/benchmark_model"
    adb.shell(f"mkdir -p {REMOTE_DIR}")
    adb.push(binary, remote_binary)
    adb.shell(f"chmod 755 {remote_binary}")
    results = []
    for model in models:
        graph = f"{REMOTE_DIR}/{os.path.basename(model.path)}"
        adb.push(model.path, graph)
        for count in threads:
            command = benchmark_command(
                remote_binary, graph, count, warmup_runs, num_runs, op_profiling, use_gpu
            )
            try:
                text, failure = adb.shell(command), None
            except AdbCommandError as error:
                text, failure = error.output, error
            if log_dir is not None:
                write_text(os.path.join(log_dir, f"{model.stem}-t{count}.txt"), text)
            if failure is not None:
                raise DeviceError(f"{model.stem} with {count} threads: {failure}")
            try:
                output = parse_benchmark_output(text)
            except BenchmarkOutputError as error:
                raise BenchmarkOutputError(f"{model.stem} with {count} threads: {error}") from None
            result = to_result(output, model, count, image_size, warmup_runs, num_runs)
            log(f"{model.stem} threads={count}: mean {result.mean_ms:.2f} ms")
            results.append(result)
        adb.shell(f"rm -f {graph}")
    return results


def main() -> None:
    binary = _BENCHMARK_MODEL.value
    if not binary:
        raise DeviceError("pass --benchmark_model=PATH, the Android benchmark_model binary "
                          "(prebuilt binaries: see this script's docstring)")
    if not os.path.isfile(binary):
        raise DeviceError(f"benchmark_model binary not found: {binary}")
    settings = common_flags.settings()
    output_dir = common_flags.output_dir("device")
    base = common_flags.merge_base(output_dir, "device")
    executable = find_adb(_ADB.value)
    adb = Adb(executable, select_device(executable, _SERIAL.value))
    from benchmark import export  # TensorFlow: only once the cheap checks have passed.

    try:
        export.check_names(settings["models"])
    except export.UnknownModelError as error:
        raise DeviceError(str(error)) from None
    description = device_description(adb)
    print(f"device: {description}")

    names = settings["models"]
    if settings["mobilenetv3"] == "closest":
        names = export.with_closest_mobilenetv3(names, settings["image_size"])
    models = [
        item
        for name in names
        for item in export.export_model(
            name, settings["forms"], settings["precisions"], settings["image_size"],
            common_flags.model_dir(output_dir), reuse=settings["reuse_exports"],
        )
    ]
    results = run_on_device(
        adb, binary, models, settings["threads"], image_size=settings["image_size"],
        warmup_runs=settings["warmup_runs"], num_runs=settings["num_runs"],
        op_profiling=_OP_PROFILING.value, use_gpu=_USE_GPU.value, log_dir=os.path.join(output_dir, "logs"),
    )
    environment = {**results_io.host_environment(), "machine": description}
    document = results_io.make_document("device", environment, {**settings, "models": names}, results)
    if base is not None:
        document = results_io.merge_documents(base, document)
    paths = results_io.write_run(output_dir, document)
    print(results_io.markdown_table(results))
    print("wrote " + ", ".join(paths.values()))


if __name__ == "__main__":
    cli.run(main, "benchmark.device", (DeviceError, common_flags.FlagError))
