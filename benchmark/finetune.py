"""Fine-tuning on the built-in transfer task (`synthetic_shapes/transfer`: five shapes the
pretraining never saw, 40 training images each), from the README's main-job run, against a
from-scratch run of the same budget and the linear probe; then QAT and int8 export of the
fine-tuned model. Every number comes from the commands a user runs, run here as subprocesses.

    python train.py --width=0.5                 # the pretrained run, runs/repghostnet_050
    python -m benchmark.finetune --seeds=0,1,2  # writes benchmark/results/finetune/finetune.json

`--variants` picks what runs per seed (finetune, scratch, probe, qat); `--set` overrides recipe
flags of the fine-tuning run, for recipe searches (docs/finetuning.md):

    python -m benchmark.finetune --variants=finetune --set=base_lr=1.6,head_epochs=0 \
        --output=benchmark/results/finetune/search/lr1.6-head0.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags

from repghost_tf.atomic_files import write_json
from repghost_tf.training import FINETUNE_RECIPE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRANSFER = "synthetic_shapes/transfer"
VARIANTS = ("finetune", "scratch", "probe", "qat")

flags.DEFINE_string("pretrained", "runs/repghostnet_050", "The pretrained run directory.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each runs every variant.")
flags.DEFINE_list("variants", list(VARIANTS), f"Of {', '.join(VARIANTS)}.")
flags.DEFINE_list("set", [], "key=value train.py flags for the fine-tuning run (recipe search).")
flags.DEFINE_string("work_dir", "runs/benchmark_finetune", "Where the runs are written.")
flags.DEFINE_string("data_dir", None, "TFDS data directory.")
flags.DEFINE_string("output", "benchmark/results/finetune/finetune.json", "The JSON results.")
FLAGS = flags.FLAGS


def _command(script: str, **arguments) -> list[str]:
    return [sys.executable, os.path.join(ROOT, script),
            *(f"--{key}={value}" for key, value in arguments.items() if value is not None)]


def _run(command: list[str]) -> float:
    """Runs `command`; returns its wall-clock seconds. Raises on failure, with its stderr."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def _summary(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as file:
        return json.load(file)


def _finetune_flags(seed: int) -> dict:
    """The flags of the fine-tuning command, --set included."""
    overrides = dict(item.split("=", 1) for item in FLAGS.set)
    return {"dataset": TRANSFER, "seed": seed, "deterministic": True, "verbose": 0,
            "latest_file": "", "data_dir": FLAGS.data_dir, **overrides}


def measure_seed(seed: int) -> dict:
    work = os.path.join(FLAGS.work_dir, f"seed{seed}")
    results: dict = {"seed": seed}
    finetune_dir = os.path.join(work, "finetune")
    common = _finetune_flags(seed)
    if "finetune" in FLAGS.variants or "qat" in FLAGS.variants:
        seconds = _run(_command("train.py", init_from=FLAGS.pretrained, output_dir=finetune_dir,
                                resume=False, **common))
        summary = _summary(finetune_dir)
        results["finetune"] = {"test_top1": summary["test_top1"], "seconds": seconds,
                               "best_epoch": summary["best_epoch"], "epochs": summary["epochs"]}
    if "probe" in FLAGS.variants:
        probe_dir = os.path.join(work, "probe")
        seconds = _run(_command("train.py", init_from=FLAGS.pretrained, output_dir=probe_dir,
                                resume=False, freeze_backbone=True, **common))
        results["probe"] = {"test_top1": _summary(probe_dir)["test_top1"], "seconds": seconds}
    if "scratch" in FLAGS.variants:
        # The same command and budget (epochs, batch, images) without --init_from: the built-in
        # recipe's learning rate and regularisation for a network trained from scratch.
        scratch_dir = os.path.join(work, "scratch")
        overrides = dict(item.split("=", 1) for item in FLAGS.set)
        budget = {key: overrides.get(key, FINETUNE_RECIPE[key]) for key in ("epochs", "batch_size")}
        seconds = _run(_command(
            "train.py", model=_model(), output_dir=scratch_dir, resume=False, dataset=TRANSFER,
            image_size=_summary(finetune_dir)["image_size"], seed=seed, deterministic=True,
            verbose=0, latest_file="", data_dir=FLAGS.data_dir, **budget))
        results["scratch"] = {"test_top1": _summary(scratch_dir)["test_top1"], "seconds": seconds,
                              **budget}
    if "qat" in FLAGS.variants:
        qat_dir, export_dir = os.path.join(work, "qat"), os.path.join(work, "export")
        seconds = _run(_command("train.py", qat=True, init_from=finetune_dir, output_dir=qat_dir,
                                resume=False, seed=seed, deterministic=True, verbose=0,
                                latest_file="", data_dir=FLAGS.data_dir))
        export_seconds = _run(_command(
            "export_tflite.py", model=os.path.join(qat_dir, "deploy.keras"), quantize="int8",
            output_dir=export_dir, eval_examples=0, data_dir=FLAGS.data_dir))
        report = next(name for name in os.listdir(export_dir) if name.endswith("_int8.json"))
        with open(os.path.join(export_dir, report), encoding="utf-8") as file:
            check = json.load(file)["verification"]
        versus = check["vs_float_model"]
        results["qat"] = {"int8_top1": check["tflite_top1"], "float_top1": versus["float_top1"],
                          "drop_points": versus["accuracy_drop_points"],
                          "examples": check["examples"], "qat_seconds": seconds,
                          "export_seconds": export_seconds}
    return results


def _model() -> str:
    with open(os.path.join(FLAGS.pretrained, "summary.json"), encoding="utf-8") as file:
        return json.load(file)["model"]


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        sys.exit(f"benchmark.finetune: error: unexpected arguments: {' '.join(argv[1:])}")
    unknown = sorted(set(FLAGS.variants) - set(VARIANTS))
    if unknown:
        sys.exit(f"benchmark.finetune: error: unknown --variants {', '.join(unknown)}")
    if not os.path.isfile(os.path.join(FLAGS.pretrained, "summary.json")):
        sys.exit(f"benchmark.finetune: error: --pretrained={FLAGS.pretrained} is not a finished "
                 "run (no summary.json); run python train.py --width=0.5 first")
    seeds = []
    for seed in FLAGS.seeds:
        try:
            seeds.append(measure_seed(int(seed)))
        except (RuntimeError, OSError, ValueError, KeyError) as error:
            sys.exit(f"benchmark.finetune: error: {str(error).splitlines()[0]}")
        print(json.dumps(seeds[-1]), flush=True)
    document = {"pretrained": FLAGS.pretrained, "pretrained_summary": {
        k: v for k, v in _summary(FLAGS.pretrained).items() if k != "history"},
        "dataset": TRANSFER, "finetune_flags": _finetune_flags(0) | {"seed": "per run"},
        "machine": f"{os.cpu_count()} logical CPUs", "seeds": seeds}
    write_json(FLAGS.output, document)
    print(f"Wrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
