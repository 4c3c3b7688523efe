"""benchmark/results_io.py and catalog.py: the result schema, statistics, the JSON / CSV /
Markdown writers and the model names."""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from benchmark import catalog, results_io
from benchmark.results_io import Result


def result(**overrides) -> Result:
    fields = dict(
        model="repghostnet_050", family="RepGhostNet", width=0.5, form="fused", precision="float32",
        runtime="litert", threads=1, image_size=224, size_bytes=9_247_124, params=2_302_956,
        macs=43_314_720, warmup_runs=20, num_runs=200, mean_ms=3.1, median_ms=3.0, p5_ms=2.9,
        p95_ms=3.6, std_ms=0.2, min_ms=2.8, max_ms=4.0, init_ms=12.0, first_ms=5.0,
        xnnpack_partitions=1, outside_xnnpack="",
    )
    return Result(**{**fields, **overrides})


def document(results) -> dict:
    return results_io.make_document(
        "host", {"machine": "test CPU; Linux", "packages": {"ai-edge-litert": "2.3.0"}, "date": "today"},
        {"warmup_runs": 20, "num_runs": 200, "image_size": 224}, results,
    )


def test_summarize_matches_numpy_and_benchmark_model_conventions():
    samples = np.arange(1, 101, dtype=float)  # 1..100 ms
    stats = results_io.summarize(samples)
    assert stats["median_ms"] == 50.5 and stats["mean_ms"] == 50.5
    assert stats["p5_ms"] == pytest.approx(5.95) and stats["p95_ms"] == pytest.approx(95.05)
    assert stats["std_ms"] == pytest.approx(np.std(samples))  # population std, like benchmark_model
    assert (stats["min_ms"], stats["max_ms"]) == (1, 100)
    with pytest.raises(ValueError):
        results_io.summarize([])


def test_document_round_trip_through_every_writer(tmp_path):
    rows = [
        result(),
        result(form="unfused", precision="int8", threads=4, median_ms=None, p5_ms=None, p95_ms=None),
        result(runtime="onnxruntime", size_bytes=9_000_000, params=None, median_ms=2.0,
               xnnpack_partitions=None, outside_xnnpack=None),
    ]
    paths = results_io.write_run(tmp_path, document(rows))
    assert sorted(os.listdir(tmp_path)) == ["results.csv", "results.json", "results.md"]

    loaded = results_io.load_document(paths["json"])
    assert [Result(**r) for r in loaded["results"]] == rows

    with open(paths["csv"], newline="") as file:
        table = list(csv.DictReader(file))
    assert list(table[0]) == list(results_io.FIELDS)
    assert table[1]["median_ms"] == "" and table[1]["threads"] == "4" and table[2]["params"] == ""

    markdown = Path(paths["markdown"]).read_text()
    assert "- machine: test CPU; Linux" in markdown and "ai-edge-litert 2.3.0" in markdown
    lines = [line for line in markdown.splitlines() if line.startswith("| repghostnet_050")]
    # The ORT row is folded into the fused float32 row as a ratio, not listed on its own.
    assert lines == [
        "| repghostnet_050 | fused | float32 | 1 | 9.25 | 43.3 | 3.00 | 2.90 | 3.60 | 3.10 | 0.20 | 2.00 | 1.50 |",
        "| repghostnet_050 | unfused | int8 | 4 | 9.25 | 43.3 | – | – | – | 3.10 | 0.20 |  |  |",
    ]


def test_merge_replaces_same_configuration_and_keeps_the_rest(tmp_path):
    previous = document([result(), result(threads=2, median_ms=1.7), result(model="ghostnet_050")])
    later = results_io.make_document(
        "host", {"date": "tomorrow", "load_average": "2.0 / 2.5", "git": "abc1234"},
        {"models": ["repghostnet_050", "g_ghost_regnetx_002"], "num_runs": 300},
        [result(median_ms=2.5), result(model="g_ghost_regnetx_002", family="G-GhostNet", width=None)],
    )
    merged = results_io.merge_documents(previous, later)
    rows = results_io.validate_document(merged)
    assert [(r.model, r.threads, r.median_ms) for r in rows] == [
        ("repghostnet_050", 1, 2.5), ("repghostnet_050", 2, 1.7), ("ghostnet_050", 1, 3.0),
        ("g_ghost_regnetx_002", 1, 3.0),
    ]
    assert merged["environment"]["date"] == "today"
    assert merged["environment"]["merged"] == [{
        "models": ["repghostnet_050", "g_ghost_regnetx_002"], "date": "tomorrow",
        "load_average": "2.0 / 2.5", "git": "abc1234", "settings": {"num_runs": 300},
    }]
    assert merged["settings"]["models"] == ["repghostnet_050", "g_ghost_regnetx_002"]
    markdown = Path(results_io.write_run(tmp_path, merged)["markdown"]).read_text()
    assert ("- merged in later: repghostnet_050, g_ghost_regnetx_002, run of tomorrow, 300 timed "
            "runs, load average before / after 2.0 / 2.5, code abc1234") in markdown
    with pytest.raises(results_io.SchemaError, match="cannot merge a device run"):
        results_io.merge_documents(previous, {**later, "kind": "device"})


def test_markdown_compares_each_precision_with_litert_torch():
    rows = [
        result(),
        result(precision="int8", median_ms=4.0),
        result(runtime="litert-torch", params=None, median_ms=2.0, xnnpack_partitions=1),
        result(runtime="litert-torch", precision="int8", params=None, median_ms=5.0),
        result(runtime="onnxruntime", params=None, median_ms=6.0, xnnpack_partitions=None),
    ]
    table = results_io.markdown_table(rows).splitlines()
    assert table[0].endswith(
        "| ORT median (ms) | TFLite / ORT | litert-torch median (ms) | TFLite / litert-torch |")
    assert table[2].endswith("| 3.00 | 2.90 | 3.60 | 3.10 | 0.20 | 6.00 | 0.50 | 2.00 | 1.50 |")
    assert table[3].endswith("| 4.00 | 2.90 | 3.60 | 3.10 | 0.20 |  |  | 5.00 | 0.80 |")
    assert len(table) == 4


def test_markdown_without_a_peer_has_no_ratio_columns():
    table = results_io.markdown_table([result()])
    assert "ORT" not in table and "XNNPACK" not in table and table.count("\n") == 3


def test_markdown_names_the_ops_left_outside_xnnpack():
    rows = [result(), result(model="mobilenetv3_small_075", family="MobileNetV3-Small", width=0.75,
                             precision="int8", xnnpack_partitions=21, outside_xnnpack="HARD_SWISH 19, SOFTMAX 1")]
    table = results_io.markdown_table(rows).splitlines()
    assert table[0].endswith("| outside XNNPACK |")
    assert table[2].endswith("| 0.20 |  |") and table[3].endswith("| 0.20 | HARD_SWISH 19, SOFTMAX 1 |")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"threads": 0}, "'threads' and 'num_runs' must be positive"),
        ({"threads": "1"}, "'threads' must be int"),
        ({"threads": True}, "'threads' must be int"),
        ({"precision": "float64"}, "'precision' must be one of"),
        ({"runtime": "tvm"}, "'runtime' must be one of"),
        ({"mean_ms": float("nan")}, "'mean_ms' must be a positive time"),
        ({"median_ms": "3.0"}, "'median_ms' must be a number or null"),
        ({"macs": "43M"}, "'macs' must be a number or null"),
        ({"outside_xnnpack": 3}, "'outside_xnnpack' must be text or null"),
        ({"latency": 3.0}, "unknown result field 'latency'"),
    ],
)
def test_schema_rejects_bad_results(change, message):
    record = {**dataclasses.asdict(result()), **change}
    with pytest.raises(results_io.SchemaError, match=message):
        results_io.validate_result(record)


def test_schema_rejects_missing_fields_and_bad_documents(tmp_path):
    record = dataclasses.asdict(result())
    del record["model"]
    with pytest.raises(results_io.SchemaError, match="missing 'model'"):
        results_io.validate_result(record)
    good = document([result()])
    for key, value, message in [
        ("schema_version", 2, "schema_version must be 1"),
        ("kind", "cloud", "kind must be one of"),
        ("results", {}, "'results' must be a list"),
        ("settings", None, "'settings' must be an object"),
    ]:
        with pytest.raises(results_io.SchemaError, match=message):
            results_io.validate_document({**good, key: value})
    path = tmp_path / "broken.json"
    path.write_text("{")
    with pytest.raises(results_io.SchemaError, match="is not JSON"):
        results_io.load_document(path)


def test_host_environment_names_cpu_and_runtimes():
    environment = results_io.host_environment()
    assert "logical cores" in environment["machine"] and "Python" in environment["machine"]
    assert "keras" in environment["packages"] and "ai-edge-litert" in environment["packages"]


def test_catalog_describes_names():
    assert catalog.describe("repghostnet_111") == catalog.ModelInfo("repghostnet_111", "RepGhostNet", 1.11)
    assert catalog.describe("mobilenetv3_small_075").family == "MobileNetV3-Small"
    assert catalog.describe("g_ghost_regnetx_002") == catalog.ModelInfo(
        "g_ghost_regnetx_002", "G-GhostNet", None
    )
    assert catalog.timm_name("mobilenetv3_large_100") == "tf_mobilenetv3_large_100"
    assert catalog.timm_name("ghostnet_130") == "ghostnet_130"
