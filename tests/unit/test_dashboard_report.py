"""write_report on a fake ledger: 3 methods × 3 sparsities × 3 seeds, one FAILED trial and
one trial retried after a failed attempt."""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from dataclasses import replace

import pytest
from PIL import Image

from dashboards.fake import MemorySource, synthetic_sweep
from dashboards.load import UnknownSweepError
from dashboards.report import write_report

FAILED_ERROR = "DivergenceError: training diverged at step 40: loss is nan"


def _ledger() -> MemorySource:
    src = MemorySource()
    added = synthetic_sweep(src, "sw1", methods=("static", "set", "rigl"))
    attempts = src.runs["sw1"]
    # set, s=0.9, seed 2 never finished; rigl, s=0.8, seed 1 finished on its second attempt
    lost = next(a for a in added if a.swept == {**a.swept, "method": "set", "sparsity": 0.9,
                                                  "seed": 2})  # fmt: skip
    retried = next(a for a in added if a.swept == {**a.swept, "method": "rigl", "sparsity": 0.8,
                                                     "seed": 1})  # fmt: skip
    i = attempts.index(lost)
    attempts[i] = replace(lost, status="FAILED", final_accuracy=None, error=FAILED_ERROR)
    j = attempts.index(retried)
    failed_first = replace(retried, attempt=1, status="FAILED", run_id="run-killed-1",
                           final_accuracy=0.11, error="node lost")  # fmt: skip
    attempts[j : j + 1] = [failed_first, replace(retried, attempt=2)]
    return src


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _expected(src: MemorySource) -> dict[tuple[str, str], list[float]]:
    """Final accuracy of each (method, sparsity) over its trials' FINISHED attempts,
    computed from the raw attempts, not through dashboards.load."""
    by_group: dict[tuple[str, str], list[float]] = {}
    for a in src.runs["sw1"]:
        if a.status == "FINISHED":
            key = (a.params["method.name"], a.params["sparsity"])
            by_group.setdefault(key, []).append(a.metrics["final_accuracy"])
    return by_group


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The fake ledger and its report, written once for the tests that only read it."""
    src = _ledger()
    out = tmp_path_factory.mktemp("report")
    return src, write_report(src, ["sw1"], out), out


def _small() -> MemorySource:
    src = MemorySource()
    synthetic_sweep(src, "sw1", methods=("rigl",), sparsities=(0.9,), seeds=(0, 1))
    return src


def test_report_files_and_summary_numbers_equal_the_raw_runs(written):
    src, report, out = written
    names = sorted(p.name for p in report.files)
    assert names == sorted(
        ["index.html", "summary.csv", "summary.json"]
        + [f"{s}.png" for s in report.figures]
    )  # fmt: skip
    assert report.finished == 26 and report.failed == 1 and report.running == 0
    assert set(report.omitted) == {"fig3_delta_t_alpha"}  # no ΔT × α grid in this sweep
    rows = _rows(out / "summary.csv")
    assert len(rows) == 9 == report.groups
    expected = _expected(src)
    for row in rows:
        values = expected[(row["method"], row["sparsity"])]
        assert int(row["n"]) == len(values)
        assert float(row["final_accuracy_mean"]) == pytest.approx(
            statistics.mean(values), rel=1e-12
        )
        assert float(row["final_accuracy_std"]) == pytest.approx(statistics.stdev(values), rel=1e-9)
        lost = (row["method"], row["sparsity"]) == ("set", "0.9")
        assert int(row["failed"]) == (1 if lost else 0)
        assert row["fewer_seeds"] == str(lost)
    assert {r["delta_t"] for r in rows if r["method"] == "static"} == {""}
    assert {r["delta_t"] for r in rows if r["method"] != "static"} == {"100"}


def test_summary_json_matches_the_csv(written):
    _, _, out = written
    rows = _rows(out / "summary.csv")
    records = json.loads((out / "summary.json").read_text())
    assert [r["group_key"] for r in records] == [r["group_key"] for r in rows]
    for record, row in zip(records, rows, strict=True):
        assert record["final_accuracy_mean"] == float(row["final_accuracy_mean"])
        assert record["n"] == int(row["n"])
        assert (
            record["alpha"] is None
            if row["alpha"] == ""
            else record["alpha"] == float(row["alpha"])
        )


def test_index_html_is_self_contained_links_runs_and_lists_what_was_left_out(written):
    src, _, out = written
    page = (out / "index.html").read_text()
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"""(src|href)=["'](?!#|http://127\.0\.0\.1:5000/#/experiments/)""", page)
    assert "url(http" not in page and "font-face" not in page
    assert page.count("<svg") == 6
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # figures' ids prefixed: no clash on one page
    # each seed's × in figure 1 links to its run
    figure1 = page[page.index('<h2 id="fig1_') : page.index('<h2 id="fig2_')]
    finished = [a.run_id for a in src.runs["sw1"] if a.status == "FINISHED"]
    for run_id in finished:
        assert f'xlink:href="http://127.0.0.1:5000/#/experiments/1/runs/{run_id}"' in figure1
    assert FAILED_ERROR in page
    assert "1 failed or killed, 1 group with fewer seeds than others" in page
    assert "Omitted: no drop-and-grow method was run at two or more (ΔT, α) settings" in page


def test_pngs_are_150_dpi_and_the_report_is_byte_stable(written, tmp_path):
    src, first, _ = written  # drawn by worker processes where there are two cores
    write_report(src, ["sw1"], tmp_path / "b", workers=1)  # drawn in this process
    for path in first.files:
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name
        if path.suffix == ".png":
            with Image.open(path) as image:
                # PNG stores pixels per metre: 150 dpi is 5906 /m, read back as 150.01
                assert image.info["dpi"] == pytest.approx((150, 150), abs=0.05)


def test_the_page_carries_a_time_only_when_given_one(tmp_path):
    write_report(_small(), ["sw1"], tmp_path, generated="2025-02-01 12:00 UTC")
    assert "Generated 2025-02-01 12:00 UTC." in (tmp_path / "index.html").read_text()


def test_link_base_points_runs_at_the_ui_address(tmp_path):
    write_report(_small(), ["sw1"], tmp_path, link_base="http://127.0.0.1:5055")
    page = (tmp_path / "index.html").read_text()
    assert "http://127.0.0.1:5055/#/experiments/1/runs/" in page
    assert "127.0.0.1:5000" not in page


def test_a_sweep_with_no_finished_trial_says_so(tmp_path):
    src = MemorySource()
    added = synthetic_sweep(src, "sw", methods=("rigl",), sparsities=(0.9,), seeds=(0,))
    src.runs["sw"] = [replace(added[0], status="KILLED", error="driver died")]
    report = write_report(src, ["sw"], tmp_path)
    assert report.finished == 0 and report.failed == 1 and report.figures == ()
    page = (tmp_path / "index.html").read_text()
    assert "No trial of these sweeps has finished" in page and "driver died" in page
    (row,) = _rows(tmp_path / "summary.csv")
    assert row["n"] == "0" and row["failed"] == "1" and row["final_accuracy_mean"] == ""


def test_a_figure_omitted_now_leaves_no_stale_png(tmp_path):
    src = MemorySource()
    synthetic_sweep(src, "sw", methods=("rigl",), sparsities=(0.9,), delta_ts=(50, 100), seeds=(0,))
    write_report(src, ["sw"], tmp_path)
    assert (tmp_path / "fig3_delta_t_alpha.png").exists()
    src.runs["sw"] = src.runs["sw"][:1]
    report = write_report(src, ["sw"], tmp_path)
    assert "fig3_delta_t_alpha" in report.omitted
    assert not (tmp_path / "fig3_delta_t_alpha.png").exists()


def test_a_second_report_reads_curves_from_the_cache(tmp_path):
    src = _small()
    write_report(src, ["sw1"], tmp_path / "a", cache_dir=tmp_path / "cache")
    reads = dict(src.calls)
    assert reads["metric_histories"] == 5  # itop, churn, eval acc, FLOPs, drop fraction
    write_report(src, ["sw1"], tmp_path / "b", cache_dir=tmp_path / "cache")
    assert src.calls["metric_histories"] == reads["metric_histories"]
    assert src.calls["read_json"] == reads["read_json"]
    assert src.calls["attempts"] == 2 * reads["attempts"]  # attempts are always read anew


def test_an_unknown_sweep_is_an_error_naming_it(tmp_path):
    with pytest.raises(UnknownSweepError, match="'nope'"):
        write_report(_ledger(), ["nope"], tmp_path)
    assert not any(tmp_path.iterdir())


def test_std_is_empty_in_the_csv_for_a_single_seed(tmp_path):
    src = MemorySource()
    synthetic_sweep(src, "sw", methods=("rigl",), sparsities=(0.9,), seeds=(0,))
    write_report(src, ["sw"], tmp_path)
    (row,) = _rows(tmp_path / "summary.csv")
    assert row["n"] == "1" and row["final_accuracy_std"] == ""
    assert not math.isnan(float(row["final_accuracy_mean"]))
