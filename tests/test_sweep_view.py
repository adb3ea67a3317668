"""SweepView on a small summary.csv written here: every column shown, a plot either way."""

from __future__ import annotations

import csv
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from magi.widgets import SweepNotFoundError, SweepView, read_summary, show_sweep
from magi.widgets.sweep import label_columns, metric_columns, row_labels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COLUMNS = [
    "profile",
    "variant",
    "status",
    "prompts",
    "latency_p50_s",
    "latency_p95_s",
    "ttft_p50_s",
    "tokens_per_s",
    "tier_share_fast",
    "tier_share_powerful",
    "loads",
    "error",
]
ROWS = [
    ["demo", "profile=demo", "ok", 12, 0.84, 1.91, 0.021, 88.5, 0.58, 0.42, 1, ""],
    ["demo-single", "profile=demo-single", "ok", 12, 0.41, 0.77, 0.019, 91.2, 1.0, 0.0, 1, ""],
    ["production", "profile=production", "failed", 0, "", "", "", "", "", "", 0, "ModelNotFoundError: x"],
]


def write_summary(folder: Path, rows: list[list[object]] = ROWS, columns: list[str] = COLUMNS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "summary.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def cells(html: str) -> list[str]:
    return [c.strip() for c in re.findall(r"<t[hd](?:\s[^>]*)?>(.*?)</t[hd]>", html)]


def test_table_shows_every_column_and_a_drawn_plot(tmp_path: Path) -> None:
    write_summary(tmp_path / "sweep")
    view = SweepView(tmp_path / "sweep")
    assert view.columns == COLUMNS
    assert len(view.rows) == 3
    shown = cells(view.table.value)
    assert shown[: len(COLUMNS)] == COLUMNS  # the header row: all columns, in file order
    for value in ("demo-single", "0.84", "1.91", "88.5", "ModelNotFoundError: x", "failed"):
        assert value in shown
    assert view.rows[0]["latency_p50_s"] == 0.84 and view.rows[0]["loads"] == 1
    assert view.rows[2]["latency_p50_s"] is None  # a failed job's empty cells
    assert view.plot_source == "matplotlib"
    assert view.png is not None and view.png.startswith(PNG_MAGIC)
    assert view.plot.value == view.png
    assert "3 rows, 12 columns" in view.header.value and "drawn from the table" in view.header.value


def test_the_sweeps_own_png_is_preferred(tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    write_summary(folder)
    png = PNG_MAGIC + b"not really a picture"
    (folder / "summary.png").write_bytes(png)
    view = SweepView(folder / "summary.csv")  # the CSV path works as well as the folder
    assert view.plot_source == "summary.png" and view.png == png


def test_any_csv_columns_work(tmp_path: Path) -> None:
    write_summary(tmp_path, rows=[["a", 1.5, "x"], ["b", 2.5, "y"]], columns=["job", "score", "note"])
    view = SweepView(tmp_path)
    assert view.columns == ["job", "score", "note"]
    assert cells(view.table.value)[:3] == ["job", "score", "note"]
    assert view.png is not None


def test_accepts_a_sweep_result_object_and_rows(tmp_path: Path) -> None:
    write_summary(tmp_path / "out")
    by_folder = SweepView(SimpleNamespace(folder=tmp_path / "out", rows=[]))
    assert by_folder.columns == COLUMNS
    rows = [{"profile": "a", "latency_p50_s": 0.5}, {"profile": "b", "latency_p50_s": 0.7, "loads": 1}]
    by_rows = SweepView(SimpleNamespace(rows=rows))
    assert by_rows.columns == ["profile", "latency_p50_s", "loads"] and by_rows.csv_path is None
    assert SweepView(rows).rows == rows
    with pytest.raises(TypeError, match="sweep folder"):
        SweepView(42)


def test_a_multirun_folder_is_searched_for_the_newest_summary(tmp_path: Path) -> None:
    old = write_summary(tmp_path / "multirun" / "2025-01-01" / "10-00-00")
    new = write_summary(tmp_path / "multirun" / "2025-01-02" / "09-00-00", rows=ROWS[:1])
    past = time.time() - 3600
    os.utime(old, (past, past))
    view = SweepView(tmp_path / "multirun")
    assert view.csv_path == new and len(view.rows) == 1


def test_missing_or_empty_summary_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(SweepNotFoundError, match="No summary.csv in .* run.py -m"):
        SweepView(tmp_path)
    with pytest.raises(SweepNotFoundError, match="neither a folder nor a file"):
        SweepView(tmp_path / "nowhere")
    (tmp_path / "summary.csv").write_text("", encoding="utf-8")
    with pytest.raises(SweepNotFoundError, match="empty"):
        read_summary(tmp_path / "summary.csv")


def test_plot_picks_latency_first_and_labels_rows(tmp_path: Path) -> None:
    write_summary(tmp_path)
    columns, rows = read_summary(tmp_path / "summary.csv")
    assert label_columns(columns, rows) == ["profile", "variant"]
    assert row_labels(columns, rows)[0] == "demo · profile=demo"
    metrics = metric_columns(columns, rows)
    assert metrics[:3] == ["latency_p50_s", "latency_p95_s", "ttft_p50_s"]
    assert len(metrics) <= 6 and "profile" not in metrics and "error" not in metrics


def test_show_sweep_displays_and_returns_the_view(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_summary(tmp_path)
    view = show_sweep(tmp_path, plot=False)
    assert isinstance(view, SweepView) and view.png is None
    assert view.plot.layout.display == "none"
    assert "SweepView" in capsys.readouterr().out  # outside a kernel, display() prints the repr


def test_rows_with_errors_are_named_in_the_header(tmp_path: Path) -> None:
    columns = ["variant", "status", "prompts", "error_share", "latency_p50_s", "error"]
    rows = [
        ["profile=demo", "partial", 4, 0.25, 0.8, "1 of 4 prompts failed: arith: timeout"],
        ["profile=demo-single", "ok", 4, 0.0, 0.4, ""],
        ["profile=production", "failed", "", "", "", "ModelNotFoundError: x"],
    ]
    write_summary(tmp_path, rows=rows, columns=columns)
    view = SweepView(tmp_path, plot=False)
    assert "magi-sweep-errors" in view.header.value
    assert "2 of 3 rows with errors" in view.header.value
    assert "profile=demo (partial, 25% of prompts failed)" in view.header.value
    assert "profile=production (failed)" in view.header.value
    assert "profile=demo-single" not in view.header.value
    write_summary(tmp_path, rows=rows[1:2], columns=columns)
    assert "magi-sweep-errors" not in SweepView(tmp_path, plot=False).header.value
