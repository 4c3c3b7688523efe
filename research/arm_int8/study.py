"""Why int8 depthwise convs do not get cheaper than float32 on ARM (issue #28, part 3).

Runs, with benchmark.arm on emulated cortex-a76 and cortex-a53:
1. single depthwise-conv files (3x3, stride 1, 'same', 56x56, C = 4 ... 64 channels), float32
   and int8, to get XNNPACK's cost per output pixel as a function of C;
2. RepGhostNet 0.5x, GhostNet 0.5x and MobileNetV3-Small 0.75 as benchmark.latency exports
   them, float32 and int8 (float I/O), each depthwise conv matched to its TFLite op (shape, C);
3. two export variants of RepGhostNet 0.5x int8: uint8 I/O (what export_tflite.py writes) and
   per-tensor weights.

Usage, from the repository root, after `python -m benchmark.arm_setup`:
    python -m research.arm_int8.study --output_dir=research/arm_int8/results   # ~6 minutes
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import repghost_tf  # noqa: E402
from benchmark import export  # noqa: E402
from repghost_tf.export import tflite  # noqa: E402

_OUTPUT_DIR = flags.DEFINE_string("output_dir", "research/arm_int8/results", "Results folder.")
CHANNELS = (4, 8, 12, 16, 20, 24, 32, 40, 48, 64)
MODELS = ("repghostnet_050", "ghostnet_050", "mobilenetv3_small_075")
SIDE = 56


def sweep_files(folder: str) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for channels in CHANNELS:
        inputs = keras.Input((SIDE, SIDE, channels), batch_size=1)
        layer = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")
        model = keras.Model(inputs, layer(inputs))
        layer.set_weights([rng.normal(size=(3, 3, channels, 1)).astype("float32"),
                           rng.normal(size=channels).astype("float32")])
        samples = [rng.normal(size=(1, SIDE, SIDE, channels)).astype("float32") for _ in range(8)]
        for precision in ("float32", "int8"):
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
            if precision == "int8":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                converter.representative_dataset = lambda: ([s] for s in samples)
            path = os.path.join(folder, f"dw3x3-{SIDE}-c{channels:03d}-{precision}.tflite")
            with open(path, "wb") as file:
                file.write(converter.convert())
            paths.append(path)
    return paths


def model_files(folder: str) -> list[str]:
    paths = []
    for name in MODELS:
        for item in export.export_model(name, ["fused"], ["float32", "int8"], 224, folder):
            paths.append(item.path)
    model = repghost_tf.fuse(export.build("repghostnet_050"))
    calibration = [export.random_images(224, export.CALIBRATION_IMAGES)]
    from tensorflow.lite.python import convert

    variants = {"int8-uint8io": {}, "int8-uint8io-per_tensor": {"disable_per_channel": True}}
    original = convert.mlir_quantize
    for tag, options in variants.items():
        convert.mlir_quantize = functools.partial(original, **options)
        path = os.path.join(folder, f"repghostnet_050-fused-{tag}.tflite")
        with open(path, "wb") as file:
            file.write(tflite.convert(model, "int8", io_type="uint8",
                                      representative_data=calibration))
        paths.append(path)
    convert.mlir_quantize = original
    return paths


def run_arm(paths: list[str], cpus: str, output_dir: str) -> dict:
    subprocess.run([sys.executable, "-m", "benchmark.arm", "--tflite=" + ",".join(paths),
                    f"--cpus={cpus}", "--processes=2", f"--output_dir={output_dir}"], check=True)
    with open(os.path.join(output_dir, "results.json")) as file:
        return json.load(file)


def depthwise_ops(path: str) -> list[dict]:
    """The DEPTHWISE_CONV_2D ops of a file in execution order: output shape and kernel."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = flatbuffer_utils.read_model(path)
    graph = model.subgraphs[0]
    ops = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if names[max(code.builtinCode, code.deprecatedBuiltinCode)] != "DEPTHWISE_CONV_2D":
            continue
        _, height, width, channels = (int(d) for d in graph.tensors[op.outputs[0]].shape)
        kernel = [int(d) for d in graph.tensors[op.inputs[1]].shape[1:3]]
        ops.append({"height": height, "width": width, "channels": channels,
                    "kernel": kernel, "stride": int(op.builtinOptions.strideH)})
    return ops


def sweep_table(results: dict) -> tuple[str, dict]:
    per_pixel: dict = {}
    for r in results["results"]:
        channels = int(r["file"].split("-c")[1][:3])
        per_pixel.setdefault(r["cpu"], {}).setdefault(channels, {})[r["precision"]] = (
            r["by_kind"]["depthwise conv"]["instructions"] / SIDE**2)
    lines = ["| CPU | C | float32 / pixel | int8 / pixel | int8 / float32 |", "|---|---|---|---|---|"]
    for cpu, table in per_pixel.items():
        for channels, value in sorted(table.items()):
            lines.append(f"| {cpu} | {channels} | {value['float32']:.1f} | {value['int8']:.1f} "
                         f"| {value['int8'] / value['float32']:.2f} |")
    return "\n".join(lines), per_pixel


def plot(per_pixel: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    for cpu, style in (("cortex-a76", "-"), ("cortex-a53", "--")):
        table = per_pixel[cpu]
        channels = sorted(table)
        for precision, marker in (("float32", "o"), ("int8", "s")):
            axis.plot(channels, [table[c][precision] for c in channels], style, marker=marker,
                      label=f"{precision}, {cpu}")
    axis.set_xlabel("channels C (3x3 depthwise, 56x56, stride 1)")
    axis.set_ylabel("instructions per output pixel")
    axis.set_xticks(CHANNELS)
    axis.grid(alpha=0.3)
    axis.legend()
    axis.set_title("XNNPACK depthwise conv on emulated ARM cores (LiteRT 2.3)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def model_tables(results: dict, folder: str) -> str:
    by_file = {(r["file"], r["cpu"]): r for r in results["results"]}
    out = []
    for name in MODELS:
        f32 = by_file[(f"{name}-fused-float32.tflite", "cortex-a76")]
        int8 = by_file[(f"{name}-fused-int8.tflite", "cortex-a76")]
        shapes = depthwise_ops(os.path.join(folder, f32["file"]))
        pairs = zip(shapes, *([o for o in r["operators"] if o["kind"] == "depthwise conv"]
                              for r in (f32, int8)))
        out += [f"\n### {name}, cortex-a76: depthwise convs in execution order\n",
                "| output | C | kernel / stride | float32 | int8 | int8 / float32 |",
                "|---|---|---|---|---|---|"]
        buckets: dict = {}
        for shape, a, b in pairs:
            out.append(f"| {shape['height']}x{shape['width']} | {shape['channels']} | "
                       f"{shape['kernel'][0]}x{shape['kernel'][1]} / {shape['stride']} | "
                       f"{a['instructions']} | {b['instructions']} | "
                       f"{b['instructions'] / a['instructions']:.2f} |")
            key = "C < 16" if shape["channels"] < 16 else (
                "16 <= C < 32" if shape["channels"] < 32 else "C >= 32")
            total = buckets.setdefault(key, [0, 0, 0])
            total[0] += 1
            total[1] += a["instructions"]
            total[2] += b["instructions"]
        out += ["", "| channels | ops | float32 M | int8 M | int8 / float32 |", "|---|---|---|---|---|"]
        for key in ("C < 16", "16 <= C < 32", "C >= 32"):
            if key in buckets:
                n, a, b = buckets[key]
                out.append(f"| {key} | {n} | {a / 1e6:.2f} | {b / 1e6:.2f} | {b / a:.2f} |")
    variants = ["\n### RepGhostNet 0.5x int8 export variants, cortex-a76\n",
                "| file | M instructions | outside XNNPACK (TFLite kernels) M |", "|---|---|---|"]
    for r in results["results"]:
        if r["file"].startswith("repghostnet_050") and r["precision"] == "int8":
            outside = r["by_kind"].get("outside XNNPACK (TFLite kernels)", {}).get("instructions", 0)
            variants.append(f"| {r['file']} | {r['instructions_per_invoke'] / 1e6:.2f} | "
                            f"{outside / 1e6:.2f} |")
    return "\n".join(out + variants)


def main(argv: list[str]) -> None:
    del argv
    output_dir = _OUTPUT_DIR.value
    files = os.path.join(output_dir, "files")
    os.makedirs(files, exist_ok=True)
    sweep = run_arm(sweep_files(files), "cortex-a76,cortex-a53", os.path.join(output_dir, "sweep"))
    models = run_arm(model_files(files), "cortex-a76", os.path.join(output_dir, "models"))
    text, per_pixel = sweep_table(sweep)
    plot(per_pixel, os.path.join(output_dir, "depthwise_per_pixel.png"))
    with open(os.path.join(output_dir, "tables.md"), "w") as file:
        file.write("## Single depthwise convs: instructions per output pixel\n\n" + text + "\n"
                   + model_tables(models, files) + "\n")
    for name in os.listdir(files):
        os.remove(os.path.join(files, name))
    os.rmdir(files)


if __name__ == "__main__":
    app.run(main)
