"""The result schema shared by the host and the phone benchmarks, latency statistics, the machine
description, and the JSON / CSV / Markdown writers (all atomic).

A run document is {"schema_version", "kind", "environment", "settings", "results": [...]}; each
result is one `Result` (one model, form, precision, runtime and thread count). Keeping host and
phone runs in one schema lets plot.py and the README table read either.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import math
import os
import platform
import subprocess
from importlib import metadata
from typing import Any, Iterable, Sequence

import numpy as np

SCHEMA_VERSION = 1
KINDS = ("host", "device")
RUNTIMES = ("litert", "onnxruntime", "litert-torch", "benchmark_model")
FORMS = ("unfused", "fused")
PRECISIONS = ("float32", "int8")
# The peers a row of ours is compared with: timm's model of the same architecture in ONNX Runtime
# (float32), and converted by litert-torch (float32 and int8, timed in LiteRT like ours).
PEER_COLUMNS = {"onnxruntime": "ORT", "litert-torch": "litert-torch"}
_VERSIONED_PACKAGES = (
    "tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert", "numpy", "onnxruntime", "onnx",
    "torch", "timm",
)


class SchemaError(ValueError):
    """A results document that does not follow the schema; the message names the field."""


@dataclasses.dataclass
class Result:
    """One timed configuration. Times in milliseconds, sizes in bytes, memory in MB; None where
    the runtime does not report it (e.g. percentiles from an old benchmark_model).
    xnnpack_partitions and outside_xnnpack ("HARD_SWISH 19, SOFTMAX 1") say how much of a
    TFLite graph ran in XNNPACK: every op outside it runs on TFLite's own kernels."""

    model: str
    family: str
    width: float | None
    form: str
    precision: str
    runtime: str
    threads: int
    image_size: int
    size_bytes: int
    params: int | None
    macs: int | None
    warmup_runs: int
    num_runs: int
    mean_ms: float
    median_ms: float | None = None
    p5_ms: float | None = None
    p95_ms: float | None = None
    std_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    init_ms: float | None = None
    first_ms: float | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    memory_peak_mb: float | None = None
    load_average: float | None = None
    xnnpack_partitions: int | None = None
    outside_xnnpack: str | None = None


FIELDS = tuple(field.name for field in dataclasses.fields(Result))
_REQUIRED_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "family": (str,), "form": (str,), "precision": (str,), "runtime": (str,),
    "threads": (int,), "image_size": (int,), "size_bytes": (int,), "warmup_runs": (int,),
    "num_runs": (int,), "mean_ms": (int, float),
}


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """Mean, median, p5/p95 (linear interpolation), std (population, as benchmark_model),
    min and max of per-run latencies."""
    values = np.asarray(samples_ms, np.float64)
    if values.size == 0:
        raise ValueError("no timed runs to summarize")
    p5, median, p95 = np.percentile(values, [5, 50, 95])
    return {
        "mean_ms": float(values.mean()),
        "median_ms": float(median),
        "p5_ms": float(p5),
        "p95_ms": float(p95),
        "std_ms": float(values.std()),
        "min_ms": float(values.min()),
        "max_ms": float(values.max()),
    }


def validate_result(record: dict) -> Result:
    """Checks one result dict against the schema and returns it as a `Result`."""
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        raise SchemaError(f"unknown result field {unknown[0]!r}")
    for name, types in _REQUIRED_TYPES.items():
        if name not in record:
            raise SchemaError(f"result is missing {name!r}")
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise SchemaError(f"result field {name!r} must be {types[0].__name__}, got {value!r}")
    if not isinstance(record.get("outside_xnnpack"), (str, type(None))):
        raise SchemaError("result field 'outside_xnnpack' must be text or null")
    for name in set(FIELDS) - set(_REQUIRED_TYPES) - {"outside_xnnpack"}:
        value = record.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise SchemaError(f"result field {name!r} must be a number or null, got {value!r}")
    checks = (("form", FORMS), ("precision", PRECISIONS), ("runtime", RUNTIMES))
    for name, allowed in checks:
        if record[name] not in allowed:
            raise SchemaError(f"result field {name!r} must be one of {allowed}, got {record[name]!r}")
    if record["threads"] < 1 or record["num_runs"] < 1:
        raise SchemaError("result fields 'threads' and 'num_runs' must be positive")
    if not math.isfinite(record["mean_ms"]) or record["mean_ms"] <= 0:
        raise SchemaError(f"result field 'mean_ms' must be a positive time, got {record['mean_ms']}")
    return Result(**record)


def validate_document(document: dict) -> list[Result]:
    """Checks a whole run document; returns its results."""
    if not isinstance(document, dict):
        raise SchemaError("a results document is a JSON object")
    if document.get("schema_version") != SCHEMA_VERSION:
        raise SchemaError(
            f"schema_version must be {SCHEMA_VERSION}, got {document.get('schema_version')!r}"
        )
    if document.get("kind") not in KINDS:
        raise SchemaError(f"kind must be one of {KINDS}, got {document.get('kind')!r}")
    for key in ("environment", "settings"):
        if not isinstance(document.get(key), dict):
            raise SchemaError(f"{key!r} must be an object")
    if not isinstance(document.get("results"), list):
        raise SchemaError("'results' must be a list")
    return [validate_result(record) for record in document["results"]]


def make_document(
    kind: str, environment: dict, settings: dict, results: Iterable[Result]
) -> dict[str, Any]:
    document = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "environment": environment,
        "settings": settings,
        "results": [dataclasses.asdict(result) for result in results],
    }
    validate_document(document)
    return document


def merge_documents(previous: dict, new: dict) -> dict[str, Any]:
    """`previous` with the results of `new` (a run of the same kind) added: a result of the same
    model, form, precision, runtime and thread count is replaced in place, the others are kept,
    new ones go last. The models added and the environment they were timed in are listed under
    environment["merged"], which the Markdown shows next to the original run's."""
    validate_document(previous)
    added = validate_document(new)
    if previous["kind"] != new["kind"]:
        raise SchemaError(f"cannot merge a {new['kind']} run into a {previous['kind']} run")
    replacements = {_configuration(r): r for r in added}
    results = [replacements.pop(_configuration(r), r) for r in validate_document(previous)]
    results += [r for r in added if _configuration(r) in replacements]
    models = list(dict.fromkeys(r.model for r in added))
    environment = dict(previous["environment"])
    environment["merged"] = [
        *environment.get("merged", []),
        {"models": models, **new["environment"],
         "settings": {k: v for k, v in new["settings"].items() if k != "models"}},
    ]
    settings = dict(previous["settings"])
    settings["models"] = list(dict.fromkeys([*settings.get("models", []), *models]))
    return make_document(previous["kind"], environment, settings, results)


def _configuration(result: Result) -> tuple:
    return result.model, result.form, result.precision, result.runtime, result.threads


def load_document(path: str | os.PathLike) -> dict[str, Any]:
    """Reads and validates a results.json."""
    with open(path, encoding="utf-8") as file:
        try:
            document = json.load(file)
        except json.JSONDecodeError as error:
            raise SchemaError(f"{path} is not JSON: {error}") from error
    validate_document(document)
    return document


def to_json(document: dict) -> str:
    return json.dumps(document, indent=2) + "\n"


def to_csv(results: Iterable[Result]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for result in results:
        writer.writerow({k: "" if v is None else v for k, v in dataclasses.asdict(result).items()})
    return buffer.getvalue()


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def markdown_table(results: Sequence[Result]) -> str:
    """One row per timed TFLite configuration of ours. Where a peer's time of the same model,
    precision and thread count exists, the fused row also shows it and our median / theirs."""
    peers = {
        (r.runtime, r.model, r.precision, r.threads): r for r in results if r.runtime in PEER_COLUMNS
    }
    runtimes = [runtime for runtime in PEER_COLUMNS if any(key[0] == runtime for key in peers)]
    header = [
        "model", "form", "precision", "threads", "size (MB)", "MMACs", "median (ms)",
        "p5 (ms)", "p95 (ms)", "mean (ms)", "std (ms)",
    ]
    for runtime in runtimes:
        header += [f"{PEER_COLUMNS[runtime]} median (ms)", f"TFLite / {PEER_COLUMNS[runtime]}"]
    fallback = any(r.outside_xnnpack for r in results if r.runtime not in PEER_COLUMNS)
    if fallback:
        header.append("outside XNNPACK")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        if r.runtime in PEER_COLUMNS:
            continue
        row = [
            r.model, r.form, r.precision, str(r.threads), f"{r.size_bytes / 1e6:.2f}",
            "–" if r.macs is None else f"{r.macs / 1e6:.1f}", _ms(r.median_ms), _ms(r.p5_ms),
            _ms(r.p95_ms), _ms(r.mean_ms), _ms(r.std_ms),
        ]
        ours = r.median_ms if r.median_ms is not None else r.mean_ms
        for runtime in runtimes:
            peer = peers.get((runtime, r.model, r.precision, r.threads))
            row += (
                [_ms(peer.median_ms), f"{ours / peer.median_ms:.2f}"]
                if peer is not None and r.form == "fused" else ["", ""]
            )
        if fallback:
            row.append(r.outside_xnnpack or "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def to_markdown(document: dict) -> str:
    """The run's table with the machine, runtimes and method above it."""
    results = validate_document(document)
    env, settings = document["environment"], document["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    lines = [
        f"# Latency, {document['kind']} run of {env.get('date', 'unknown date')}",
        "",
        f"- machine: {env.get('machine', 'unknown')}",
        f"- runtimes: {versions}",
        f"- method: {settings.get('warmup_runs')} warm-up runs, then {settings.get('num_runs')} "
        f"timed runs per configuration, batch 1, {settings.get('image_size')}x"
        f"{settings.get('image_size')} input; XNNPACK on",
    ]
    if env.get("load_average") is not None:
        lines.append(f"- 1-minute load average before / after: {env['load_average']}")
    if env.get("git"):
        lines.append(f"- code: {env['git']}")
    for merged in env.get("merged", []):
        lines.append(
            f"- merged in later: {', '.join(merged.get('models', []))}, run of "
            f"{merged.get('date', 'unknown date')}, {merged.get('settings', {}).get('num_runs')} "
            f"timed runs, load average before / after {merged.get('load_average')}, "
            f"code {merged.get('git')}"
        )
    lines += ["", markdown_table(results)]
    return "\n".join(lines)


def write_run(output_dir: str | os.PathLike, document: dict) -> dict[str, str]:
    """Writes results.json, results.csv and results.md into `output_dir`; returns their paths."""
    from repghost_tf.atomic_files import write_text  # the package loads TensorFlow: only now

    results = validate_document(document)
    paths = {
        "json": os.path.join(output_dir, "results.json"),
        "csv": os.path.join(output_dir, "results.csv"),
        "markdown": os.path.join(output_dir, "results.md"),
    }
    write_text(paths["json"], to_json(document))
    write_text(paths["csv"], to_csv(results))
    write_text(paths["markdown"], to_markdown(document))
    return paths


def _cpu_description() -> str:
    """The CPU as /proc/cpuinfo names it, with family/model (virtual machines often hide the
    marketing name) and the SIMD extensions that decide XNNPACK's kernels."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni") if f in flags]
    return (
        f"{fields.get('model name', platform.machine())} (family {fields.get('cpu family', '?')}, "
        f"model {fields.get('model', '?')}), {os.cpu_count()} logical cores, {' '.join(simd)}"
    )


def _git_revision() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}{' (uncommitted changes)' if dirty else ''}"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def host_environment() -> dict[str, Any]:
    """The facts a latency number means nothing without: CPU, OS, runtime versions, load."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_cpu_description()}; {platform.system()} {platform.release()}; "
                   f"Python {platform.python_version()}",
        "packages": package_versions(),
        "git": _git_revision(),
        "load_average": None,
    }
