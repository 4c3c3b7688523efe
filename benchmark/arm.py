"""Our TFLite files on the aarch64 build of LiteRT, on emulated ARM cores (QEMU user mode): their
outputs against x86 LiteRT's, and the guest instructions one invoke() executes, by operator.

Instruction counts are not milliseconds: they ignore caches, memory bandwidth and how many
instructions a core issues per cycle. They are exact and repeatable, and they run the kernels
XNNPACK picks for that core (dotprod on cortex-a76, none on cortex-a53), so they rank kernel
paths and graph changes on ARM code, which no host timing does.

Method, per file and CPU: a 1-thread interpreter (XNNPACK), --inputs fixed random images run
once each for the comparison, then --warmup_runs + --repeats invokes counted one by one by
benchmark/qemu/insn_count.c between markers the guest emits around invoke(), of which the
first --warmup_runs counts are dropped. The last one is
also profiled: the plugin splits it at each entry of XNNPACK's xnn_run_operator_with_index (one
segment per XNNPACK operator, in execution order) and gives the instructions per translated
block, which are attributed to functions by the shared libraries' symbol tables (LiteRT's wheel
keeps its full .symtab, so XNNPACK's micro-kernels have their names). Each operator's kind
(depthwise conv, 1x1 conv, ...) is read off the micro-kernels it ran (KINDS): exact per
operator, named by the kernels, not by the TFLite op list (XNNPACK folds PADs into convs, and
ops it does not take run on TFLite's kernels between its operators: split off by name).

Usage: python -m benchmark.arm [--models=repghostnet_050,...] [--tflite=a.tflite,b.tflite]
           [--cpus=cortex-a76,cortex-a53] [--precisions=float32,int8] [--merge]
The model flags are benchmark.latency's (the same default list, MobileNetV3 widths included).
It runs benchmark.arm_setup's setup first (seconds where it is done). Writes results.json and
results.md to --output_dir (default runs/arm/<UTC time>; the committed ones:
--output_dir=benchmark/results/arm).
"""

from __future__ import annotations

import bisect
import collections
import concurrent.futures
import dataclasses
import datetime
import functools
import json
import os
import re
import subprocess
import tempfile
from typing import Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

# repghost_tf before benchmark.export (which imports keras): it filters TensorFlow's start-up logs.
from repghost_tf import cli, litert  # noqa: E402
from repghost_tf.atomic_files import write_text  # noqa: E402
from repghost_tf.export import tflite  # noqa: E402

from benchmark import arm_setup, common_flags, export, results_io  # noqa: E402

GUEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "qemu", "guest.py")
LIBRARY = "libpywrap_litert_common.so"  # LiteRT's interpreter and XNNPACK, in the wheel
SPLIT_SYMBOL = "xnn_run_operator_with_index"
MAGIC = 0x5247_4854_4152_4D31  # "RGHTARM1": the plugin's markers carry it
# Functions that dispatch work rather than do it. libc's named functions are locks and malloc;
# its memcpy and memset are local symbols that Debian strips, so they show as "libc.so.6".
_RUNTIME = re.compile(r"^(xnn_run_operator|xnn_invoke_runtime|xnn_compute_|pthreadpool_|"
                      r"tflite::|python|_ctypes|libc\.so\.6:)")
# Function name -> operator kind, first match wins; an operator gets the first kind in this order
# that any of its functions has (a MEAN's sum before its conversion, a softmax before its
# multiply). XNNPACK runs a conv as a gemm where it is 1x1 with stride 1 and no padding, and as
# an indirect gemm (igemm) otherwise.
KINDS = (
    (re.compile(r"dwconv"), "depthwise conv"),
    (re.compile(r"igemm|conv_hwc"), "conv (igemm: kxk or strided)"),
    (re.compile(r"gemm|spmm"), "conv 1x1 / dense (gemm)"),
    (re.compile(r"raddstoreexpminusmax|rmax|softmax"), "softmax"),
    (re.compile(r"rdsum|rsum|gavgpool|avgpool"), "mean / average pool"),
    (re.compile(r"maxpool"), "max pool"),
    (re.compile(r"hswish"), "hard swish"),
    (re.compile(r"sigmoid"), "sigmoid"),
    (re.compile(r"vadd"), "add"),
    (re.compile(r"vmul"), "mul"),
    (re.compile(r"vclamp|relu"), "clamp / relu"),
    (re.compile(r"transpose"), "transpose"),
    (re.compile(r"_lut_"), "int8 lookup table (elementwise)"),
    (re.compile(r"vcvt|ConvertOp|requant"), "quantize / convert"),
    (re.compile(r"copy|pad|fill|memcpy|memmove|memset|^libc\.so"), "copy / pad (memory moves)"),
)
# TFLite's own kernels, which run the ops XNNPACK does not take (between its partitions).
_TFLITE_KERNEL = re.compile(r"tflite::(ops::builtin|optimized_\w*ops|reference_\w*ops)::")
OUTSIDE_XNNPACK = "outside XNNPACK (TFLite kernels)"

# --models, --mobilenetv3, --precisions, --image_size, --warmup_runs, --output_dir, --model_dir,
# --merge and --reuse_exports are benchmark.latency's (benchmark/common_flags.py).
_TFLITE = flags.DEFINE_list("tflite", [], "TFLite files to run, besides --models.")
_CPUS = flags.DEFINE_list("cpus", ["cortex-a76", "cortex-a53"],
                          f"QEMU CPU models: {', '.join(arm_setup.CPU_MIDR)}.")
_INPUTS = flags.DEFINE_integer("inputs", 4, "Fixed random images compared with x86 LiteRT.",
                               lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Counted invokes per file and CPU.", lower_bound=2)
_PROCESSES = flags.DEFINE_integer("processes", 1, "CPU models emulated at the same time.",
                                  lower_bound=1)


class ArmError(RuntimeError):
    """A file or a guest run that benchmark.arm cannot handle; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Model:
    """One TFLite file to run, and what it is."""

    name: str
    precision: str
    path: str
    macs: int | None = None


@dataclasses.dataclass(frozen=True)
class Reference:
    """x86 LiteRT's raw outputs for the fixed inputs, and how to read them as codes."""

    inputs: np.ndarray
    outputs: list[np.ndarray]
    quantization: list[tuple[float, int] | None]  # (scale, zero point) of int8 outputs


def reference(path: str, count: int) -> Reference:
    """Fixed inputs (export.random_images in the model's input type) and x86 LiteRT's outputs.
    An int8 file with float outputs gets the (scale, zero point) of the DEQUANTIZE in front of
    each, so that its outputs compare as the int8 codes they are."""
    interpreter = litert.make_interpreter(path, num_threads=1)
    if len(interpreter.get_input_details()) != 1:
        raise ArmError(f"{path} has {len(interpreter.get_input_details())} inputs; "
                       "benchmark.arm takes one")
    detail = interpreter.get_input_details()[0]
    images = np.concatenate([litert.quantize_input(image[None], detail)
                             for image in _random_inputs(detail["shape"], count)])
    details = interpreter.get_output_details()
    producers = {int(t): op for op in interpreter._get_ops_details()
                 if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    quantization = []
    for output in details:
        source = output
        op = producers.get(output["index"])
        if np.dtype(output["dtype"]).kind == "f" and op and op["op_name"] == "DEQUANTIZE":
            source = tensors[int(op["inputs"][0])]
        scale, zero_point = source["quantization"]
        quantization.append((float(scale), int(zero_point)) if scale else None)
    outputs = [[] for _ in details]
    for image in images:
        interpreter.set_tensor(detail["index"], image[None])
        interpreter.invoke()
        for index, output in enumerate(details):
            outputs[index].append(interpreter.get_tensor(output["index"])[0].copy())
    return Reference(images, [np.stack(o) for o in outputs], quantization)


def _random_inputs(shape: Sequence[int], count: int) -> np.ndarray:
    """`count` fixed inputs of one batch element of `shape`: export.random_images (pixels in
    [0, 255]) for an image input (1, H, W, 3), standard normal values for any other tensor (a
    single-op file of a study, say)."""
    if len(shape) == 4 and shape[0] == 1 and shape[3] == 3:
        return export.random_images(int(shape[1]), count, seed=2)
    rng = np.random.default_rng(2)
    return rng.standard_normal((count, *map(int, shape[1:]))).astype(np.float32)


def codes(values: np.ndarray, quantization: tuple[float, int]) -> np.ndarray:
    """Integer codes of an int8 tensor, raw or dequantized ((q - zero point) * scale)."""
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    scale, zero_point = quantization
    return np.round(values.astype(np.float64) / scale + zero_point).astype(np.int64)


def agreement(ours: Reference, arm_outputs: Sequence[np.ndarray]) -> dict:
    """ARM against x86: relative error ||a - b|| / ||b|| of float outputs; for int8 outputs,
    how many codes differ, by at most how much, in how many images, and how many distinct codes
    x86 gave (a softmax over random weights' near-equal logits gives one: a trivial match)."""
    result = {"inputs": len(ours.inputs)}
    for x86, arm, quantization in zip(ours.outputs, arm_outputs, ours.quantization):
        if quantization is None:
            error = float(np.linalg.norm((arm - x86).astype(np.float64))
                          / max(np.linalg.norm(x86.astype(np.float64)), 1e-30))
            result["relative_error"] = max(result.get("relative_error", 0.0), error)
            continue
        reference_codes = codes(x86, quantization)
        difference = np.abs(codes(arm, quantization) - reference_codes)
        result["distinct_codes"] = max(result.get("distinct_codes", 0),
                                       len(np.unique(reference_codes)))
        result["codes"] = result.get("codes", 0) + difference.size
        result["codes_differ"] = result.get("codes_differ", 0) + int(np.count_nonzero(difference))
        result["max_code_difference"] = max(result.get("max_code_difference", 0),
                                            int(difference.max()))
        images = int(np.count_nonzero(difference.reshape(len(difference), -1).any(axis=1)))
        result["images_with_differences"] = max(result.get("images_with_differences", 0), images)
    return result


@functools.cache
def symbol_table(path: str) -> tuple[list[int], list[tuple[int, str]]]:
    """(sorted start addresses, (size, name) of each) of the functions of an ELF file, read by
    readelf: .symtab where the library keeps it (LiteRT's does), else .dynsym."""
    listing = subprocess.run(["readelf", "-W", "-s", "-C", path], capture_output=True, text=True,
                             check=False).stdout
    rows = set()
    for line in listing.splitlines():
        fields = line.split(maxsplit=7)
        if len(fields) == 8 and fields[0].endswith(":") and fields[3] in ("FUNC", "IFUNC"):
            size = int(fields[2], 16) if fields[2].startswith("0x") else int(fields[2])
            rows.add((int(fields[1], 16), size, fields[7]))
    ordered = sorted(rows)
    return [row[0] for row in ordered], [row[1:] for row in ordered]


class Symbols:
    """Guest address -> function name (LiteRT's), "library:function" (another library's), or
    "library" where no symbol covers it; from the guest's memory map (guest addresses, host
    paths) and the libraries' symbol tables."""

    def __init__(self, maps_text: str):
        self._ranges = []  # (start, end, path)
        self._bias = {}  # path -> load address (its mapping at file offset 0)
        for line in maps_text.splitlines():
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or not fields[5].startswith("/"):
                continue
            start, end = (int(value, 16) for value in fields[0].split("-"))
            self._ranges.append((start, end, fields[5]))
            if int(fields[2], 16) == 0:
                self._bias.setdefault(fields[5], start)
        self._ranges.sort()
        self._starts = [start for start, _, _ in self._ranges]

    def __call__(self, address: int) -> str:
        index = bisect.bisect_right(self._starts, address) - 1
        if index < 0 or address >= self._ranges[index][1]:
            return "?"
        path = self._ranges[index][2]
        library = os.path.basename(path)
        if path not in self._bias:
            return library
        offset = address - self._bias[path]
        starts, rows = symbol_table(path)
        row = bisect.bisect_right(starts, offset) - 1
        if row >= 0 and offset < starts[row] + max(rows[row][0], 1):
            return rows[row][1] if library == LIBRARY else f"{library}:{rows[row][1]}"
        return library


def kind_of(functions: Sequence[str]) -> str:
    """The kind of an operator that ran `functions` (see KINDS)."""
    for pattern, kind in KINDS:
        if any(pattern.search(name) for name in functions):
            return kind
    return "other"


def profile(segments: dict[int, collections.Counter]) -> dict:
    """Instructions by operator kind, by function, and per XNNPACK operator (its kind, its
    heaviest function), from the profiled invoke's segments (function -> instructions; segment
    0 is the interpreter up to the first operator). TFLite kernels that ran within a segment
    (ops outside XNNPACK) are split off as an operator of their own after it."""
    operators, by_kind, by_function = [], collections.Counter(), collections.Counter()
    for index in sorted(segments):
        by_function.update(segments[index])
        outside = {name: count for name, count in segments[index].items()
                   if _TFLITE_KERNEL.search(name)}
        inside = {name: count for name, count in segments[index].items() if name not in outside}
        working = {name: count for name, count in inside.items() if not _RUNTIME.match(name)}
        if index == 0:
            kind = "interpreter (before the first operator)"
        else:
            kind = kind_of(list(working)) if working else "runtime only"
            operators.append({"index": index, "kind": kind, "function": _heaviest(working),
                              "instructions": sum(inside.values())})
        by_kind[kind] += sum(inside.values())
        if outside:
            operators.append({"index": index, "kind": OUTSIDE_XNNPACK,
                              "function": _heaviest(outside),
                              "instructions": sum(outside.values())})
            by_kind[OUTSIDE_XNNPACK] += sum(outside.values())
    counts = collections.Counter(item["kind"] for item in operators)
    return {
        "by_kind": {kind: {"operators": counts.get(kind, 0), "instructions": count}
                    for kind, count in by_kind.most_common()},
        "by_function": [[name, count] for name, count in by_function.most_common(30)],
        "operators": operators,
    }


def _heaviest(functions: dict[str, int]) -> str:
    return max(functions, key=functions.get) if functions else ""


def run_guest(ready: arm_setup.Setup, cpu: str, models: Sequence[Model],
              references: Sequence[Reference], work: str, warmup_runs: int,
              repeats: int) -> list[dict]:
    """Runs `models` in one emulated process on `cpu`; per model: the raw outputs, the
    instructions of each counted invoke and the profile of the last."""
    folder = os.path.join(work, cpu)
    os.makedirs(folder)
    starts, rows = symbol_table(os.path.join(ready.site, "ai_edge_litert", LIBRARY))
    split_offset = next((start for start, (_, name) in zip(starts, rows) if name == SPLIT_SYMBOL),
                        None)
    if split_offset is None:
        raise arm_setup.SetupError(f"{LIBRARY} has no {SPLIT_SYMBOL} in its symbol table")
    runs = []
    for tag, (model, ours) in enumerate(zip(models, references)):
        inputs = os.path.join(folder, f"inputs-{tag}.npy")
        np.save(inputs, ours.inputs)
        runs.append({"tag": tag, "model": os.path.abspath(model.path), "inputs": inputs,
                     "outputs": os.path.join(folder, f"outputs-{tag}.npz"),
                     "warmup_runs": warmup_runs, "repeats": repeats})
    job = {"magic": MAGIC, "library": LIBRARY, "split_offset": split_offset,
           "maps": os.path.join(folder, "maps.txt"), "runs": runs}
    job_path = os.path.join(folder, "job.json")
    with open(job_path, "w", encoding="utf-8") as file:
        json.dump(job, file)
    counts_path = os.path.join(folder, "counts.txt")
    root = ready.cpu_root(cpu)
    command = [ready.qemu, "-L", root, "-cpu", cpu, "-plugin",
               f"{ready.plugin},out={counts_path},magic={MAGIC}",
               os.path.join(root, "usr", "bin", f"python{arm_setup.GUEST_PYTHON}"), GUEST, job_path]
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ready.site, "PYTHONHASHSEED": "0",
                   "OPENBLAS_NUM_THREADS": "1", "LANG": "C.UTF-8", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()
        raise ArmError(f"the guest on {cpu} failed (exit {done.returncode}): {lines[-1]}")
    with open(job["maps"], encoding="utf-8") as file:
        symbols = Symbols(file.read())
    windows = collections.defaultdict(list)
    segments = collections.defaultdict(lambda: collections.defaultdict(collections.Counter))
    with open(counts_path, encoding="ascii") as file:
        for line in file:
            fields = line.split()
            if fields[0] == "W":
                windows[int(fields[1])].append(int(fields[2]))
            else:
                segments[int(fields[1])][int(fields[2])][symbols(int(fields[3], 16))] += \
                    int(fields[4])
    results = []
    for tag, run in enumerate(runs):
        with np.load(run["outputs"]) as archive:
            outputs = [archive[f"arr_{index}"] for index in range(len(archive.files))]
        results.append({"outputs": outputs, "instructions": windows[tag][warmup_runs:],
                        "profile": profile(segments[tag])})
    return results


def export_models(names: Sequence[str], precisions: Sequence[str], image_size: int,
                  model_dir: str, reuse: bool, log: Callable[[str], None]) -> list[Model]:
    """The fused float32/int8 files of catalog models, exported as benchmark.latency does."""
    return [Model(item.model, item.precision, item.path, item.macs)
            for name in names
            for item in export.export_model(name, ["fused"], precisions, image_size, model_dir,
                                            log, reuse=reuse)]


def given_files(paths: Sequence[str]) -> list[Model]:
    """--tflite files; int8 where any output is an int8 tensor or dequantized from one."""
    models = []
    for path in paths:
        if not os.path.isfile(path):
            raise ArmError(f"--tflite: no file {path}")
        models.append(Model(os.path.splitext(os.path.basename(path))[0], "", path))
    return models


def measure(ready: arm_setup.Setup, models: Sequence[Model], cpus: Sequence[str], *,
            inputs: int = 4, warmup_runs: int = 8, repeats: int = 5, processes: int = 1,
            log: Callable[[str], None] = print) -> list[dict]:
    """One result per model and CPU: agreement with x86, instructions per invoke, profile."""
    references = [reference(model.path, inputs) for model in models]
    models = [dataclasses.replace(model, precision=model.precision or (
        "int8" if any(q is not None for q in ours.quantization) else "float32"))
        for model, ours in zip(models, references)]
    with tempfile.TemporaryDirectory(prefix="benchmark-arm-") as work, \
            concurrent.futures.ThreadPoolExecutor(processes) as pool:
        runs = dict(zip(cpus, pool.map(
            lambda cpu: run_guest(ready, cpu, models, references, work, warmup_runs, repeats),
            cpus)))
    results = []
    for cpu in cpus:
        for model, ours, run in zip(models, references, runs[cpu]):
            counts = np.array(run["instructions"], np.float64)
            median = float(np.median(counts))
            results.append({
                "model": model.name, "precision": model.precision,
                "file": os.path.basename(model.path), "cpu": cpu,
                "image_size": int(ours.inputs.shape[1]),
                "size_bytes": os.path.getsize(model.path), "macs": model.macs,
                "instructions_per_invoke": int(median),
                "spread": float((counts.max() - counts.min()) / median),
                "instructions": run["instructions"],
                "agreement": agreement(ours, run["outputs"]),
                **run["profile"],
            })
            log(f"{model.name} {model.precision} on {cpu}: {median / 1e6:.2f} M instructions per "
                f"invoke (spread {results[-1]['spread']:.4%}), x86 agreement "
                f"{_agreement_text(results[-1]['agreement'])}")
    return results


def _agreement_text(result: dict) -> str:
    parts = []
    if "relative_error" in result:
        parts.append(f"relative error {result['relative_error']:.1e}")
    if "codes" in result:
        parts.append(f"{result['codes_differ']} of {result['codes']} codes differ (max "
                     f"{result['max_code_difference']}, {result['images_with_differences']} of "
                     f"{result['inputs']} images; {result['distinct_codes']} distinct)")
    return ", ".join(parts)


def _key(result: dict) -> tuple:
    return result["file"], result["cpu"]


def markdown(document: dict) -> str:
    """The instructions table (with int8 / float32 where both files of a model ran) and the
    instructions by operator kind of each result."""
    results = document["results"]
    environment, settings = document["environment"], document["settings"]
    floats = {(r["model"], r["cpu"]): r["instructions_per_invoke"]
              for r in results if r["precision"] == "float32"}
    lines = [
        f"# ARM instruction counts, run of {environment['date']}",
        "",
        "Guest instructions per `invoke()` on QEMU's emulated cores: exact and repeatable, but "
        "not milliseconds on a phone (no caches, memory bandwidth or issue width). See "
        "docs/arm.md.",
        "",
        f"- emulator: qemu-user {environment['qemu']} (TCG), guest {environment['guest']}",
        f"- LiteRT: {', '.join(f'{k} {v}' for k, v in environment['wheels'].items() if v)}",
        f"- method: 1 thread, XNNPACK; {settings['inputs']} fixed inputs compared with x86 "
        f"LiteRT, {settings['warmup_runs']} warm-up invokes, {settings['repeats']} counted",
        f"- host: {environment['machine']}; code {environment.get('git')}",
        "",
        "| model | precision | CPU | MMACs | M instructions / invoke | spread | int8 / float32 | "
        "ARM vs x86 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = floats.get((r["model"], r["cpu"]))
        ratio = f"{r['instructions_per_invoke'] / base:.2f}" \
            if r["precision"] == "int8" and base else ""
        macs = "" if r["macs"] is None else f"{r['macs'] / 1e6:.1f}"
        lines.append(f"| {r['model']} | {r['precision']} | {r['cpu']} | {macs} | "
                     f"{r['instructions_per_invoke'] / 1e6:.2f} | {r['spread']:.3%} | {ratio} | "
                     f"{_agreement_text(r['agreement'])} |")
    kinds = list(dict.fromkeys(kind for r in results for kind in r["by_kind"]))
    lines += ["", "Instructions by operator kind (M; operators in brackets):", "",
              "| model | precision | CPU | " + " | ".join(kinds) + " |",
              "|---|---|---|" + "---|" * len(kinds)]
    for r in results:
        cells = []
        for kind in kinds:
            entry = r["by_kind"].get(kind)
            cells.append("" if entry is None else f"{entry['instructions'] / 1e6:.2f}"
                         + (f" ({entry['operators']})" if entry["operators"] else ""))
        lines.append(f"| {r['model']} | {r['precision']} | {r['cpu']} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    unknown = sorted(set(_CPUS.value) - set(arm_setup.CPU_MIDR))
    if unknown:
        raise ArmError(f"unknown --cpus {unknown[0]}; choose from "
                       f"{', '.join(arm_setup.CPU_MIDR)}")
    image_size = common_flags.IMAGE_SIZE.value
    given = common_flags.MODELS.present or not _TFLITE.value
    names = list(common_flags.MODELS.value) if given else []
    if names and common_flags.MOBILENETV3.value == "closest":
        names = export.with_closest_mobilenetv3(names, image_size)
    output_dir = common_flags.output_dir("arm")
    results_path = os.path.join(output_dir, "results.json")
    previous = []
    if common_flags.MERGE.value and os.path.isfile(results_path):
        with open(results_path, encoding="utf-8") as file:
            previous = json.load(file)["results"]
    precisions = [p for p in results_io.PRECISIONS if p in common_flags.PRECISIONS.value]
    export.check_names(names)
    ready = arm_setup.setup()
    models = given_files(_TFLITE.value) + export_models(
        names, precisions, image_size, common_flags.model_dir(output_dir),
        common_flags.REUSE_EXPORTS.value, print)
    results = measure(ready, models, _CPUS.value, inputs=_INPUTS.value,
                      warmup_runs=common_flags.WARMUP_RUNS.value, repeats=_REPEATS.value,
                      processes=_PROCESSES.value)
    replaced = {_key(r) for r in results}
    host = results_io.host_environment()
    document = {
        "schema_version": 1,
        "kind": "arm",
        "environment": {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": host["machine"], "git": host["git"], "qemu": ready.qemu_version,
            "guest": f"Debian {arm_setup.SUITE} arm64, Python {arm_setup.GUEST_PYTHON}",
            "wheels": ready.wheels,
        },
        "settings": {"cpus": _CPUS.value, "image_size": image_size, "threads": 1,
                     "inputs": _INPUTS.value, "warmup_runs": common_flags.WARMUP_RUNS.value,
                     "repeats": _REPEATS.value},
        "results": [r for r in previous if _key(r) not in replaced] + results,
    }
    write_text(results_path, json.dumps(document, indent=1) + "\n")
    write_text(os.path.join(output_dir, "results.md"), markdown(document))
    print(f"wrote {results_path} and results.md")


if __name__ == "__main__":
    cli.run(main, "benchmark.arm",
            (arm_setup.SetupError, export.UnknownModelError, tflite.ExportError, ArmError))
