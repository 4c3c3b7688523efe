"""The paper's Figure 1 for our numbers: ImageNet top-1 against measured latency, one line per
family, from one or more results.json of latency.py (host) or device.py (phone); or, from
benchmark.arm's results.json, against instructions per invoke on an emulated ARM core, one line
per family and precision.

Top-1 is the published value of the official weights unless --measured_top1 gives a value the
user measured (e.g. with our evaluation on converted weights); measured points are drawn hollow.

Usage: python -m benchmark.plot --results=benchmark/results/host/results.json
           [--plot_threads=1] [--plot_precision=float32] [--measured_top1=top1.json] [--output=fig.png]
       python -m benchmark.plot --results=benchmark/results/arm/results.json [--plot_cpu=cortex-a76]
"""

from __future__ import annotations

import collections
import io
import json
import os
import sys
import textwrap
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from absl import app, flags  # noqa: E402

from benchmark import catalog, results_io  # noqa: E402
from benchmark.results_io import Result  # noqa: E402
from repghost_tf.atomic_files import write_bytes  # noqa: E402

_RESULTS = flags.DEFINE_list("results", None, "results.json files of latency.py or device.py runs.")
_MEASURED = flags.DEFINE_string(
    "measured_top1", None,
    'JSON object {"model name": top-1 in %} of measured accuracies; they replace the published ones.',
)
_THREADS = flags.DEFINE_integer("plot_threads", 1, "Thread count whose latencies to plot.", lower_bound=1)
_PRECISION = flags.DEFINE_enum("plot_precision", "float32", list(results_io.PRECISIONS), "Precision to plot.")
_FORM = flags.DEFINE_enum("plot_form", "fused", list(results_io.FORMS), "Model form to plot.")
_CPU = flags.DEFINE_string("plot_cpu", "cortex-a76", "Emulated CPU whose counts to plot (benchmark.arm).")
_OUTPUT = flags.DEFINE_string(
    "output", None, "PNG to write; defaults to latency_top1.png (instructions_top1.png for "
    "benchmark.arm results) beside the first results file."
)
LATENCY_AXIS = "latency (ms, median)"
ARM_FIELDS = frozenset({"model", "precision", "cpu", "instructions_per_invoke"})


class PlotError(ValueError):
    """Nothing to plot, or an unreadable input; the message is one line for the user."""


def points(
    results: Sequence[Result], measured: dict[str, float], threads: int, precision: str, form: str
) -> dict[str, list[tuple[float, float, str, bool]]]:
    """Family -> [(latency ms, top-1 %, width label, measured?)] sorted by latency, for the
    TFLite rows of the chosen configuration that have a top-1."""
    families = collections.defaultdict(list)
    for r in results:
        if r.runtime in results_io.PEER_COLUMNS or (r.threads, r.precision, r.form) != (threads, precision, form):
            continue
        top1 = measured.get(r.model, catalog.published_top1(r.model))
        if top1 is None:
            continue
        latency = r.median_ms if r.median_ms is not None else r.mean_ms
        label = f"{r.width:g}x" if r.width is not None else r.model
        families[r.family].append((latency, top1, label, r.model in measured))
    return {family: sorted(values) for family, values in families.items()}


def arm_points(
    results: Sequence[dict], measured: dict[str, float], cpu: str
) -> dict[str, list[tuple[float, float, str, bool]]]:
    """"Family precision" -> [(M instructions per invoke, top-1 %, width label, measured?)] sorted
    by instructions, for benchmark.arm's rows on `cpu` that have a top-1."""
    series = collections.defaultdict(list)
    for r in results:
        top1 = measured.get(r["model"], catalog.published_top1(r["model"]))
        if r["cpu"] != cpu or top1 is None:
            continue
        info = catalog.describe(r["model"])
        label = f"{info.width:g}x" if info.width is not None else r["model"]
        series[f"{info.family} {r['precision']}"].append(
            (r["instructions_per_invoke"] / 1e6, top1, label, r["model"] in measured))
    return {name: sorted(values) for name, values in series.items()}


def render(
    series: dict[str, list[tuple[float, float, str, bool]]], title: str,
    x_label: str = LATENCY_AXIS,
) -> bytes:
    """The figure as PNG bytes."""
    figure, axes = plt.subplots(figsize=(7, 5), dpi=120)
    colors: dict[str, str] = {}
    for family, values in sorted(series.items()):
        latencies, accuracies = [v[0] for v in values], [v[1] for v in values]
        # An ARM series is "Family precision": one color per family, int8 dashed.
        family_name = family.rsplit(" ", 1)[0] if family.endswith((" float32", " int8")) else family
        style = "--" if family.endswith(" int8") else "-"
        (line,) = axes.plot(latencies, accuracies, style, marker="o", label=family,
                            color=colors.get(family_name))
        colors.setdefault(family_name, line.get_color())
        for latency, accuracy, label, was_measured in values:
            if was_measured:
                axes.plot(latency, accuracy, marker="o", markerfacecolor="white",
                          markeredgecolor=line.get_color(), linestyle="none")
            axes.annotate(label, (latency, accuracy), textcoords="offset points", xytext=(4, -10),
                          fontsize=8)
    axes.set_xlabel(x_label)
    axes.set_ylabel("ImageNet top-1 (%)")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def main(argv: list[str]) -> None:
    del argv
    try:
        _main()
    except (PlotError, results_io.SchemaError, OSError) as error:
        sys.exit(f"error: {error}")


def _load_measured(path: str | None) -> dict[str, float]:
    if path is None:
        return {}
    with open(path, encoding="utf-8") as file:
        measured = json.load(file)
    if not isinstance(measured, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in measured.values()
    ):
        raise PlotError(f"{path} must be a JSON object of model name -> top-1 in %")
    return measured


def _main() -> None:
    if not _RESULTS.value:
        raise PlotError("pass --results=path/to/results.json[,more.json]")
    documents = [_read(path) for path in _RESULTS.value]
    arm = [document.get("kind") == "arm" for document in documents]
    if any(arm):
        if not all(arm):
            raise PlotError("benchmark.arm results plot instructions, not latency: plot them alone")
        _plot_arm(documents)
        return
    results, machines = [], []
    for document in documents:
        results += results_io.validate_document(document)
        machines.append(document["environment"].get("machine", "unknown machine").split(";")[0])
    series = points(results, _load_measured(_MEASURED.value), _THREADS.value, _PRECISION.value, _FORM.value)
    if not series:
        raise PlotError(
            f"no {_FORM.value} {_PRECISION.value} results at {_THREADS.value} threads with a known top-1"
        )
    title = textwrap.fill(
        f"{_PRECISION.value}, {_THREADS.value} thread(s), TFLite/LiteRT + XNNPACK on "
        f"{'; '.join(dict.fromkeys(machines))}", width=75,
    )
    output = _OUTPUT.value or os.path.join(os.path.dirname(_RESULTS.value[0]), "latency_top1.png")
    write_bytes(output, render(series, title))
    print(f"wrote {output}")


def _read(path: str) -> dict:
    """A results.json: benchmark.arm's (kind "arm", its own rows) or a validated latency run."""
    with open(path, encoding="utf-8") as file:
        try:
            document = json.load(file)
        except json.JSONDecodeError as error:
            raise PlotError(f"{path} is not JSON: {error}") from error
    if isinstance(document, dict) and document.get("kind") == "arm":
        rows = document.get("results")
        if not isinstance(rows, list) or not all(
                isinstance(row, dict) and ARM_FIELDS <= row.keys() for row in rows):
            raise PlotError(f"{path}: 'results' must be a list of rows with "
                            f"{', '.join(sorted(ARM_FIELDS))}")
        return document
    results_io.validate_document(document)
    return document


def _plot_arm(documents: Sequence[dict]) -> None:
    rows = [r for document in documents for r in document.get("results", [])]
    series = arm_points(rows, _load_measured(_MEASURED.value), _CPU.value)
    if not series:
        raise PlotError(f"no benchmark.arm results on {_CPU.value} with a known top-1")
    qemu = documents[0].get("environment", {}).get("qemu", "?")
    title = textwrap.fill(
        f"1 thread, LiteRT + XNNPACK on emulated {_CPU.value} (qemu-user {qemu}): exact "
        "instruction counts, not phone milliseconds; top-1 of the float weights", width=75)
    output = _OUTPUT.value or os.path.join(os.path.dirname(_RESULTS.value[0]),
                                           "instructions_top1.png")
    write_bytes(output, render(series, title, x_label=f"M instructions per invoke ({_CPU.value})"))
    print(f"wrote {output}")


if __name__ == "__main__":
    app.run(main)
