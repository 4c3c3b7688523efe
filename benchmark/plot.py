"""The paper's Figure 1 for our numbers: ImageNet top-1 against measured latency, one line per
family, from one or more results.json of latency.py (host) or device.py (phone).

Top-1 is the published value of the official weights unless --measured_top1 gives a value the
user measured (e.g. with our evaluation on converted weights); measured points are drawn hollow.

Usage: python -m benchmark.plot --results=benchmark/results/host/results.json
           [--plot_threads=1] [--plot_precision=float32] [--measured_top1=top1.json] [--output=fig.png]
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
_OUTPUT = flags.DEFINE_string(
    "output", None, "PNG to write; defaults to latency_top1.png beside the first results file."
)


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


def render(
    series: dict[str, list[tuple[float, float, str, bool]]], title: str
) -> bytes:
    """The figure as PNG bytes."""
    figure, axes = plt.subplots(figsize=(7, 5), dpi=120)
    for family, values in sorted(series.items()):
        latencies, accuracies = [v[0] for v in values], [v[1] for v in values]
        (line,) = axes.plot(latencies, accuracies, marker="o", label=family)
        for latency, accuracy, label, was_measured in values:
            if was_measured:
                axes.plot(latency, accuracy, marker="o", markerfacecolor="white",
                          markeredgecolor=line.get_color(), linestyle="none")
            axes.annotate(label, (latency, accuracy), textcoords="offset points", xytext=(4, -10),
                          fontsize=8)
    axes.set_xlabel("latency (ms, median)")
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
    results, machines = [], []
    for path in _RESULTS.value:
        document = results_io.load_document(path)
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


if __name__ == "__main__":
    app.run(main)
