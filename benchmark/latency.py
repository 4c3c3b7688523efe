"""Host latency of the exported TFLite models in the LiteRT interpreter (XNNPACK on), with the
same architectures from timm as the peers a user would otherwise deploy: in ONNX Runtime, and
converted to TFLite by litert-torch (--litert_torch_python; it needs its own environment, see
benchmark/litert_torch_export.py).

Method as benchmark_model's: for each model and thread count, create the interpreter (init time),
one first run, --warmup_runs untimed runs, then --num_runs timed runs of invoke() on a fixed
random input; report median, p5/p95, mean and std of the timed runs. Everything is exported
before anything is timed, so that conversion threads do not disturb the timings.

Usage: python -m benchmark.latency [--models=repghostnet_050,ghostnet_050] [--threads=1,4]
           [--precisions=float32,int8] [--output_dir=runs/host/NAME]
Writes results.json, results.csv and results.md in the run directory (--merge: adds to the run
already there); the flatbuffers and ONNX files timed go to --model_dir (default: models/ in the
run directory).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import subprocess
import sys
import time
from typing import Callable, Sequence

# timm imports triton, whose native library crashes the process when it loads after
# TensorFlow's; the PyTorch stack of the ONNX peer must therefore load first.
with contextlib.suppress(ImportError):
    import timm  # noqa: F401

import numpy as np
from absl import app, flags

from benchmark import catalog, common_flags, export, results_io
from benchmark.results_io import Result
from repghost_tf import litert
from repghost_tf.export import tflite
from repghost_tf.atomic_files import write_bytes

PEER_PACKAGES = ("torch", "timm", "onnx", "onnxruntime")
ONNX_OPSET = 17

flags.adopt_module_key_flags(common_flags)
_PEER = flags.DEFINE_boolean(
    "peer", True,
    "Also time the same architecture from timm, fused and exported to ONNX, in ONNX Runtime "
    "(where torch, timm, onnx and onnxruntime are installed).",
)
_LITERT_TORCH_PYTHON = flags.DEFINE_string(
    "litert_torch_python", None,
    "Python of a virtual environment with benchmark/requirements-litert-torch.txt installed: "
    "also time timm's fused model converted by litert-torch, at each precision of ours.",
)
LITERT_TORCH_EXPORT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                   "litert_torch_export.py")


def time_runs(
    run: Callable[[], object], warmup_runs: int, num_runs: int
) -> tuple[float, dict[str, float]]:
    """(first run in ms, summary of the timed runs) of `run`, after `warmup_runs` untimed runs."""
    start = time.perf_counter_ns()
    run()
    first_ms = (time.perf_counter_ns() - start) / 1e6
    for _ in range(warmup_runs):
        run()
    samples = np.empty(num_runs)
    for index in range(num_runs):
        start = time.perf_counter_ns()
        run()
        samples[index] = (time.perf_counter_ns() - start) / 1e6
    return first_ms, results_io.summarize(samples)


def time_tflite(path: str, threads: int, warmup_runs: int, num_runs: int) -> dict:
    """Init, first-run and timed-run statistics of one flatbuffer in LiteRT with XNNPACK, and
    how XNNPACK partitioned it."""
    start = time.perf_counter_ns()
    interpreter = litert.make_interpreter(path, num_threads=threads)
    init_ms = (time.perf_counter_ns() - start) / 1e6
    export.set_random_image(interpreter)
    first_ms, stats = time_runs(interpreter.invoke, warmup_runs, num_runs)
    partitions, left = litert.delegation(interpreter)
    return {
        "init_ms": init_ms, "first_ms": first_ms, **stats, "xnnpack_partitions": partitions,
        "outside_xnnpack": ", ".join(f"{op} {count}" for op, count in left.items()),
    }


def peer_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in PEER_PACKAGES)


def export_onnx(name: str, path: str, image_size: int) -> None:
    """timm's model of the same architecture, re-parameterized (fused) and behind the same
    [0, 255] pixel normalisation as ours, exported to ONNX with batch 1."""
    import timm
    import torch

    class RawPixels(torch.nn.Module):
        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.model((images - self.mean) / self.std)

    model = timm.create_model(catalog.timm_name(name), pretrained=False)
    model = RawPixels(timm.utils.reparameterize_model(model.eval())).eval()
    buffer = io.BytesIO()
    # The TorchScript exporter (dynamo=False) needs no onnxscript and keeps the module paths in
    # the node names, by which op_profile.py groups ONNX Runtime's profile into stages.
    with torch.no_grad():
        torch.onnx.export(
            model, (torch.zeros(1, 3, image_size, image_size),), buffer, dynamo=False,
            opset_version=ONNX_OPSET, input_names=["image"], output_names=["logits"],
        )
    write_bytes(path, buffer.getvalue())


def export_litert_torch(python: str, name: str, precision: str, path: str, image_size: int) -> None:
    """timm's fused model converted by litert-torch, run in the environment of `python`."""
    command = [python, LITERT_TORCH_EXPORT, f"--model={catalog.timm_name(name)}",
               f"--output={path}", f"--precision={precision}", f"--image_size={image_size}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not os.path.isfile(path):
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise tflite.ExportError(f"litert-torch could not convert {name}: {lines[-1]}")


def litert_torch_version(python: str) -> str:
    """The litert-torch version installed in the environment of `python`."""
    try:
        done = subprocess.run(
            [python, "-c", "from importlib import metadata; print(metadata.version('litert-torch'))"],
            capture_output=True, text=True, check=False,
        )
    except OSError:
        done = None
    if done is None or done.returncode != 0:
        raise common_flags.FlagError(
            f"--litert_torch_python={python} has no litert-torch; install "
            "benchmark/requirements-litert-torch.txt into its environment"
        )
    return done.stdout.strip()


def time_onnxruntime(path: str, threads: int, warmup_runs: int, num_runs: int) -> dict[str, float]:
    """Like time_tflite, for an ONNX file in ONNX Runtime's CPU provider with all graph
    optimizations (which fold the remaining BatchNorms) and `threads` intra-op threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    start = time.perf_counter_ns()
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    init_ms = (time.perf_counter_ns() - start) / 1e6
    size = session.get_inputs()[0].shape[2]
    feed = {"image": export.random_images(size, 1, seed=1).transpose(0, 3, 1, 2).copy()}
    first_ms, stats = time_runs(lambda: session.run(None, feed), warmup_runs, num_runs)
    return {"init_ms": init_ms, "first_ms": first_ms, **stats}


def _load_average() -> float:
    return round(os.getloadavg()[0], 2)


def _timed(fields: dict, measure: Callable[[], dict[str, float]]) -> Result:
    """A Result from the configuration `fields` and the statistics `measure` returns, with the
    load average the measurement started under."""
    return Result(**fields, load_average=_load_average(), **measure())


def benchmark(
    names: Sequence[str],
    *,
    forms: Sequence[str],
    precisions: Sequence[str],
    threads: Sequence[int],
    image_size: int,
    warmup_runs: int,
    num_runs: int,
    model_dir: str,
    peer: bool,
    litert_torch_python: str | None = None,
    reuse_exports: bool = False,
    log: Callable[[str], None] = print,
) -> list[Result]:
    """Exports every model (and its peers) into `model_dir`, or reuses the files there, then
    times each at each thread count, each peer right after the row of ours it is compared with."""
    exported = [
        item
        for name in names
        for item in export.export_model(
            name, forms, precisions, image_size, model_dir, log, reuse=reuse_exports
        )
    ]
    peers = {}  # (runtime, model, precision) -> file
    if (peer or litert_torch_python) and "fused" in forms:
        import timm

        for name in dict.fromkeys(item.model for item in exported):
            if not timm.is_model(catalog.timm_name(name)):
                log(f"no peer for {name}: timm has no {catalog.timm_name(name)}")
                continue
            wanted = []
            if peer and "float32" in precisions:
                wanted.append(("onnxruntime", "float32", f"{name}-timm.onnx"))
            if litert_torch_python:
                wanted += [("litert-torch", precision, f"{name}-litert-torch-{precision}.tflite")
                           for precision in precisions]
            for runtime, precision, filename in wanted:
                path = peers[runtime, name, precision] = os.path.join(model_dir, filename)
                if reuse_exports and os.path.isfile(path):
                    log(f"reused {path}")
                elif runtime == "onnxruntime":
                    export_onnx(name, path, image_size)
                    log(f"exported {catalog.timm_name(name)} (timm, fused) to ONNX")
                else:
                    export_litert_torch(litert_torch_python, name, precision, path, image_size)
                    log(f"converted {catalog.timm_name(name)} (timm, fused) with litert-torch, "
                        f"{precision}")

    results = []
    for item in exported:
        for count in threads:
            common = dict(
                model=item.model, family=item.info.family, width=item.info.width, threads=count,
                image_size=image_size, macs=item.macs, warmup_runs=warmup_runs, num_runs=num_runs,
            )
            ours = _timed(
                {**common, "form": item.form, "precision": item.precision, "runtime": "litert",
                 "size_bytes": item.size_bytes, "params": item.params},
                lambda: time_tflite(item.path, count, warmup_runs, num_runs),
            )
            results.append(ours)
            log(f"{item.stem} threads={count}: median {ours.median_ms:.2f} ms "
                f"(p5 {ours.p5_ms:.2f}, p95 {ours.p95_ms:.2f})")
            if item.form != "fused":
                continue
            for runtime in results_io.PEER_COLUMNS:
                path = peers.get((runtime, item.model, item.precision))
                if path is None:
                    continue
                # Right after ours, so that both see the same machine conditions.
                measure = time_onnxruntime if runtime == "onnxruntime" else time_tflite
                theirs = _timed(
                    {**common, "form": "fused", "precision": item.precision, "runtime": runtime,
                     "size_bytes": os.path.getsize(path), "params": None},
                    lambda: measure(path, count, warmup_runs, num_runs),
                )
                results.append(theirs)
                log(f"{item.model} ({runtime}, {item.precision}) threads={count}: median "
                    f"{theirs.median_ms:.2f} ms, ours / theirs {ours.median_ms / theirs.median_ms:.2f}")
    return results


def main(argv: list[str]) -> None:
    del argv
    try:
        settings = common_flags.settings()
        export.check_names(settings["models"])
        output_dir = common_flags.output_dir("host")
        base = common_flags.merge_base(output_dir, "host")
    except (common_flags.FlagError, export.UnknownModelError) as error:
        sys.exit(f"error: {error}")
    peer = _PEER.value and peer_available()
    if _PEER.value and not peer:
        print(f"ONNX Runtime peer skipped: it needs {', '.join(PEER_PACKAGES)} installed")
    names = settings["models"]
    if settings["mobilenetv3"] == "closest":
        names = export.with_closest_mobilenetv3(names, settings["image_size"])
    environment = results_io.host_environment()
    if _LITERT_TORCH_PYTHON.value:
        try:
            version = litert_torch_version(_LITERT_TORCH_PYTHON.value)
        except common_flags.FlagError as error:
            sys.exit(f"error: {error}")
        environment["packages"]["litert-torch"] = version
    load_before = _load_average()
    try:
        results = benchmark(
            names, forms=settings["forms"], precisions=settings["precisions"],
            threads=settings["threads"], image_size=settings["image_size"],
            warmup_runs=settings["warmup_runs"], num_runs=settings["num_runs"],
            model_dir=common_flags.model_dir(output_dir), peer=peer,
            litert_torch_python=_LITERT_TORCH_PYTHON.value, reuse_exports=settings["reuse_exports"],
        )
    except tflite.ExportError as error:
        sys.exit(f"error: {error}")
    environment["load_average"] = f"{load_before} / {_load_average()}"
    document = results_io.make_document(
        "host", environment,
        {**settings, "models": names, "peer": peer,
         "litert_torch": bool(_LITERT_TORCH_PYTHON.value)}, results
    )
    if base is not None:
        document = results_io.merge_documents(base, document)
    paths = results_io.write_run(output_dir, document)
    print(results_io.markdown_table(results))
    print("wrote " + ", ".join(paths.values()))


if __name__ == "__main__":
    app.run(main)
