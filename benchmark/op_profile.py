"""Where the time goes in one model on the host: per-stage latency in LiteRT (XNNPACK) next to
ONNX Runtime's own profile of timm's model of the same architecture, grouped by the same stages.

The Python LiteRT interpreter has no op profiler (benchmark_model's --enable_op_profiling is
the C++ tool's; device.py passes it on phones). Here each stage is timed as the difference
between two prefix models cut at stage boundaries (stem, blocks.0 ... blocks.N, head), each
exported through repghost_tf.export.tflite; the ops each stage adds come from the flatbuffers. ONNX
Runtime times every node itself (SessionOptions.enable_profiling); its per-op-type totals show
which kernels dominate there.

Works for the models whose layers follow the official "blocks.<stage>.<block>" naming
(RepGhostNet, GhostNet).

Usage: python -m benchmark.op_profile --model=repghostnet_050 [--precision=int8] [--num_threads=1]
           [--markdown_output=op_profile.md]
"""

from __future__ import annotations

import collections
import json
import os
import re
import sys
import tempfile

# timm before TensorFlow: see latency.py.
from benchmark import latency  # isort: skip

import keras
from absl import app, flags

import repghost_tf
from benchmark import catalog, common_flags, export, results_io
from repghost_tf.export import tflite
from repghost_tf.atomic_files import write_bytes, write_text

_MODEL = flags.DEFINE_string("model", "repghostnet_050", "Model to profile (RepGhostNet or GhostNet name).")
_PRECISION = flags.DEFINE_enum("precision", "float32", list(results_io.PRECISIONS), "TFLite precision.")
_NUM_THREADS = flags.DEFINE_integer("num_threads", 1, "Threads for both runtimes.", lower_bound=1)
_OUTPUT = flags.DEFINE_string("markdown_output", None, "Also write the tables to this Markdown file.")

_STAGE = re.compile(r"blocks\.(\d+)")


class ProfileError(ValueError):
    """A model this tool cannot cut into stages; one line for the user."""


def stage_of_layer(name: str, seen_blocks: bool) -> str:
    match = _STAGE.match(name)
    if match:
        return f"blocks.{match.group(1)}"
    return "head" if seen_blocks else "stem"


def stage_outputs(model: keras.Model) -> dict[str, keras.KerasTensor]:
    """Stage name -> output tensor of the stage's last top-level layer, in execution order."""
    outputs: dict[str, keras.KerasTensor] = {}
    seen_blocks = False
    for layer in model.layers:
        stage = stage_of_layer(layer.name, seen_blocks)
        seen_blocks = seen_blocks or stage.startswith("blocks.")
        if not isinstance(layer, keras.layers.InputLayer):
            outputs.pop(stage, None)
            outputs[stage] = layer.output
    if not seen_blocks:
        raise ProfileError(f"{model.name} has no 'blocks.<stage>' layers to cut into stages")
    return outputs


def stage_of_onnx_node(name: str) -> str:
    """The stage of an ONNX Runtime node from its exported module path."""
    match = _STAGE.search(name)
    if match:
        return f"blocks.{match.group(1)}"
    if any(part in name for part in ("conv_stem", "/bn1/", "/model/act1/", "/Sub", "/Div")):
        return "stem"
    return "head"


def profile_tflite(
    model: keras.Model, precision: str, threads: int, image_size: int, warmup_runs: int,
    num_runs: int, work_dir: str,
) -> list[dict]:
    """Per stage: the latency it adds (ms) and the TFLite ops it adds. Latencies are the fastest
    of the timed runs: differences of medians drown in scheduling noise on a shared machine."""
    rows, previous_ms, previous_ops = [], 0.0, collections.Counter()
    calibration = [export.random_images(image_size, export.CALIBRATION_IMAGES)] if precision == "int8" else None
    for stage, output in stage_outputs(model).items():
        prefix = keras.Model(model.inputs, output, name=f"{model.name}_to_{stage}")
        data = tflite.convert(
            prefix, "int8" if precision == "int8" else "none", image_size=image_size,
            representative_data=calibration,
        )
        path = os.path.join(work_dir, f"{stage}.tflite")
        write_bytes(path, data)
        fastest = latency.time_tflite(path, threads, warmup_runs, num_runs)["min_ms"]
        ops = collections.Counter(tflite.op_histogram(data))
        added = ops - previous_ops
        rows.append({"stage": stage, "ms": fastest - previous_ms, "ops": dict(added.most_common())})
        previous_ms, previous_ops = fastest, ops
    return rows


def profile_onnxruntime(
    name: str, threads: int, image_size: int, warmup_runs: int, num_runs: int, work_dir: str
) -> tuple[dict[str, float], dict[str, float], float]:
    """(ms per stage, ms per op type, fastest end-to-end ms) of timm's fused model in ORT; the
    stage and op-type times are ORT's own per-node kernel times averaged over the timed runs."""
    import onnxruntime

    path = os.path.join(work_dir, "timm.onnx")
    latency.export_onnx(name, path, image_size)
    total = latency.time_onnxruntime(path, threads, warmup_runs, num_runs)["min_ms"]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(work_dir, "ort_profile")
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {"image": export.random_images(image_size, 1, seed=1).transpose(0, 3, 1, 2).copy()}
    for _ in range(warmup_runs + num_runs):
        session.run(None, feed)
    with open(session.end_profiling(), encoding="utf-8") as file:
        events = json.load(file)
    # Only the node events of the timed runs, i.e. from the start of run number warmup_runs on.
    runs = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    start = runs[warmup_runs]
    stages: dict[str, float] = collections.defaultdict(float)
    op_types: dict[str, float] = collections.defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time") or event["ts"] < start:
            continue
        milliseconds = event["dur"] / 1000 / num_runs
        stages[stage_of_onnx_node(event["name"])] += milliseconds
        op_types[event["args"]["op_name"]] += milliseconds
    return dict(stages), dict(op_types), total


def report(name: str, precision: str, threads: int, tflite_rows: list[dict], ort) -> str:
    lines = [
        f"## Where the time goes: {name}, {precision} TFLite vs ONNX Runtime (timm, fused, float32), "
        f"{threads} thread(s)",
        "",
        "TFLite: fastest run of each prefix model, differenced; ORT: its profiler's mean kernel "
        "time per run (total: fastest end-to-end run).",
        "",
        "| stage | TFLite ms | ORT ms | TFLite / ORT | TFLite ops added |",
        "|---|---|---|---|---|",
    ]
    ort_stages = ort[0] if ort else {}
    for row in tflite_rows:
        theirs = ort_stages.get(row["stage"])
        ratio = f"{row['ms'] / theirs:.2f}" if theirs else ""
        ops = ", ".join(f"{op} {count}" for op, count in row["ops"].items())
        lines.append(f"| {row['stage']} | {row['ms']:.3f} | "
                     f"{'' if theirs is None else f'{theirs:.3f}'} | {ratio} | {ops} |")
    total = sum(row["ms"] for row in tflite_rows)
    lines.append(f"| **total** | {total:.3f} | {'' if not ort else f'{ort[2]:.3f}'} | "
                 f"{'' if not ort else f'{total / ort[2]:.2f}'} | |")
    if ort:
        lines += ["", "ONNX Runtime time per op type (node kernel time, per run):", "",
                  "| op type | ms | share |", "|---|---|---|"]
        node_total = sum(ort[1].values())
        for op, ms in sorted(ort[1].items(), key=lambda item: -item[1]):
            lines.append(f"| {op} | {ms:.3f} | {100 * ms / node_total:.1f}% |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    del argv
    name, precision, threads = _MODEL.value, _PRECISION.value, _NUM_THREADS.value
    try:
        export.check_names([name])
        model = repghost_tf.fuse(export.build(name)) if name in repghost_tf.MODELS else export.build(name)
        stage_outputs(model)
    except (export.UnknownModelError, ProfileError) as error:
        sys.exit(f"error: {error}")
    size, warmup, runs = common_flags.IMAGE_SIZE.value, common_flags.WARMUP_RUNS.value, common_flags.NUM_RUNS.value
    environment = results_io.host_environment()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work_dir:
        rows = profile_tflite(model, precision, threads, size, warmup, runs, work_dir)
        ort = (
            profile_onnxruntime(name, threads, size, warmup, runs, work_dir)
            if latency.peer_available() else None
        )
    text = report(catalog.describe(name).name, precision, threads, rows, ort) + (
        f"\n{environment['date']}; {environment['machine']}; "
        f"{', '.join(f'{k} {v}' for k, v in environment['packages'].items())}; "
        f"{warmup} warm-up and {runs} timed runs per model; 1-minute load average before / after: "
        f"{load_before:.2f} / {os.getloadavg()[0]:.2f}\n"
    )
    print(text)
    if _OUTPUT.value:
        write_text(_OUTPUT.value, text)
        print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
