"""SweepView: a sweep's summary table and plot in the notebook.

A sweep (``python run.py -m profile=a,b task=bench`` or ``magi.sweep(...)``) leaves a
``summary.csv`` (one row per profile variant) and usually a ``summary.png`` in its
folder. This view reads the CSV *generically*: every column is shown, whatever the
benchmark chose to measure, so new metrics need no change here. The plot is the
sweep's own ``summary.png`` when present; otherwise the numeric columns are drawn
with matplotlib (``pip install 'magi[bench]'``), latency-like metrics first. Rows
whose ``status`` is not ``ok`` (a ``partial`` job with failed prompts, a failed job)
are named in the header with their ``error_share``, so they cannot be missed in a
wide table.

Example:
    >>> from magi.widgets import show_sweep
    >>> view = show_sweep("multirun/2025-01-01/12-00-00")   # doctest: +SKIP
    >>> view.columns                                         # doctest: +SKIP
    ['profile', 'status', 'latency_p50_s', ...]
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from magi.errors import MAGIException
from magi.widgets.tables import esc, records_html

SUMMARY_CSV = "summary.csv"
SUMMARY_PNG = "summary.png"

#: Columns that name a row, in order of preference.
LABEL_COLUMNS: tuple[str, ...] = ("profile", "variant", "name", "label", "job", "overrides")
#: Metrics drawn first when the plot is made here (substring match on the column name).
PLOT_PRIORITY: tuple[str, ...] = ("latency", "ttft", "token", "tok_s", "share", "load")
#: Most metric panels in a drawn plot.
MAX_PANELS = 6


class SweepNotFoundError(MAGIException):
    """No ``summary.csv`` where a sweep's summary was expected (404)."""

    status_code = 404


def parse_value(text: str) -> object:
    """A CSV cell as int, float (``inf``/``nan`` too) or the text itself."""
    value = text.strip()
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def find_summary(source: str | Path) -> Path:
    """The ``summary.csv`` of a sweep folder (or the CSV file itself).

    A folder without one at its top is searched below (a Hydra multirun folder holds
    dated subfolders); the newest match wins.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise SweepNotFoundError(f"Sweep summary not found: {path} is neither a folder nor a file.")
    top = path / SUMMARY_CSV
    if top.is_file():
        return top
    found = sorted(path.rglob(SUMMARY_CSV), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SweepNotFoundError(
            f"No {SUMMARY_CSV} in {path} or below. A sweep writes it when all its jobs finish: "
            "run `python run.py -m profile=a,b task=bench` or magi.sweep(...), then point here "
            "at the sweep's folder."
        )
    return found[-1]


def read_summary(path: str | Path) -> tuple[list[str], list[dict[str, object]]]:
    """Columns (in file order) and rows of a summary CSV, numbers parsed."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = [{c: parse_value(r.get(c) or "") for c in columns} for r in reader]
    if not columns:
        raise SweepNotFoundError(f"{path}: the file is empty (no header row).")
    return columns, rows


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def label_columns(columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> list[str]:
    """The columns that name a row: known names first, else the first text column."""
    known = [c for c in LABEL_COLUMNS if c in columns and not all(_is_number(r.get(c)) for r in rows)]
    if known:
        return known[:2]
    text = [c for c in columns if any(isinstance(r.get(c), str) for r in rows)]
    return text[:1]


def row_labels(columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> list[str]:
    """One label per row ("profile · variant"), falling back to the row number."""
    names = label_columns(columns, rows)
    labels = []
    for i, row in enumerate(rows):
        seen: list[str] = []
        for c in names:
            value = row.get(c)
            if value not in (None, "") and str(value) not in seen:
                seen.append(str(value))
        labels.append(" · ".join(seen) or f"row {i + 1}")
    return labels


def metric_columns(columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> list[str]:
    """Numeric columns worth plotting, latency-like ones first, at most :data:`MAX_PANELS`."""
    skip = set(label_columns(columns, rows))
    numeric = [
        c
        for c in columns
        if c not in skip
        and any(_is_number(r.get(c)) and math.isfinite(float(r[c])) for r in rows)  # type: ignore[arg-type]
        and all(r.get(c) is None or _is_number(r.get(c)) for r in rows)
    ]

    def rank(column: str) -> tuple[int, int]:
        lowered = column.lower()
        for i, key in enumerate(PLOT_PRIORITY):
            if key in lowered:
                return (i, columns.index(column))
        return (len(PLOT_PRIORITY), columns.index(column))

    return sorted(numeric, key=rank)[:MAX_PANELS]


def plot_summary(columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> bytes | None:
    """A PNG of small bar charts, one per metric, one bar per row; ``None`` if nothing to draw.

    Uses ``matplotlib.figure.Figure`` directly (no pyplot): no global figure state
    and no GUI backend inside a kernel.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'magi[bench]'``).
    """
    metrics = metric_columns(columns, rows)
    if not metrics or not rows:
        return None
    from matplotlib.figure import Figure

    labels = row_labels(columns, rows)
    ncols = min(len(metrics), 3)
    nrows = math.ceil(len(metrics) / ncols)
    height = max(1.6, 0.35 * len(rows) + 1.0)
    fig = Figure(figsize=(4.2 * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for index, metric in enumerate(metrics):
        ax = axes[index // ncols][index % ncols]
        values = [float(r[metric]) if _is_number(r.get(metric)) else math.nan for r in rows]  # type: ignore[arg-type]
        positions = list(range(len(rows)))
        ax.barh(positions, [0.0 if math.isnan(v) or math.isinf(v) else v for v in values], color="#0969da")
        ax.set_yticks(positions, labels if index % ncols == 0 else [""] * len(rows))
        ax.invert_yaxis()
        ax.set_title(metric, fontsize=10)
        ax.tick_params(labelsize=8)
        for pos, value in zip(positions, values, strict=True):
            if math.isfinite(value):
                ax.annotate(
                    f"{value:.3g}",
                    (value, pos),
                    xytext=(2, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=7,
                )
        ax.margins(x=0.2)
    for index in range(len(metrics), nrows * ncols):
        axes[index // ncols][index % ncols].set_visible(False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def error_rows(columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> list[str]:
    """``"<label> (<status>, 25% of prompts failed)"`` for each row whose ``status`` is
    not ``ok`` or whose ``error_share`` is above 0 (columns a sweep's summary.csv has;
    a CSV without them has no such rows)."""
    labels = row_labels(columns, rows)
    marked = []
    for label, row in zip(labels, rows, strict=True):
        status = row.get("status")
        share = row.get("error_share")
        failing = _is_number(share) and float(share) > 0  # type: ignore[arg-type]
        if (status in (None, "", "ok")) and not failing:
            continue
        what = [str(status)] if status not in (None, "") else []
        if failing:
            what.append(f"{float(share):.0%} of prompts failed")  # type: ignore[arg-type]
        marked.append(f"{label} ({', '.join(what)})")
    return marked


def _source_of(source: Any) -> tuple[Path | None, list[str] | None, list[dict[str, object]] | None]:
    """A folder/CSV path, or the rows of an object like ``magi.sweep(...)``'s result."""
    if isinstance(source, str | Path):
        return Path(source), None, None
    # magi.sweep() returns a SweepSummary whose folder is .sweep_dir
    folder = getattr(source, "folder", None) or getattr(source, "sweep_dir", None)
    if folder is not None:
        return Path(folder), None, None
    rows = getattr(source, "rows", source)
    if isinstance(rows, Sequence) and all(isinstance(r, Mapping) for r in rows):
        columns: list[str] = []
        for r in rows:
            columns += [str(c) for c in r if str(c) not in columns]
        return None, columns, [dict(r) for r in rows]
    raise TypeError(
        f"show_sweep() takes a sweep folder, a summary.csv path, an object with .sweep_dir/.folder or "
        f".rows, or a list of dicts; got {type(source).__name__}"
    )


class SweepView(widgets.VBox):
    """A sweep summary: header, the table with every column, and the plot.

    Args:
        source: A sweep folder, its ``summary.csv``, an object with ``.folder``
            (``magi.sweep(...)``'s result), or rows as a list of dicts.
        plot: Show the plot (``summary.png``, else drawn with matplotlib).

    Attributes: ``columns``, ``rows`` (numbers parsed), ``csv_path``, ``png`` (the
    plot's bytes or ``None``), ``plot_source`` (``"summary.png"``, ``"matplotlib"``
    or ``None``), ``error_rows`` (see :func:`error_rows`), and the ``header``,
    ``table`` and ``plot`` widgets.
    """

    def __init__(self, source: Any, *, plot: bool = True) -> None:
        path, columns, rows = _source_of(source)
        self.csv_path: Path | None = None
        self.folder: Path | None = None
        if path is not None:
            self.csv_path = find_summary(path)
            self.folder = self.csv_path.parent
            columns, rows = read_summary(self.csv_path)
        assert columns is not None and rows is not None
        self.columns: list[str] = columns
        self.rows: list[dict[str, object]] = rows
        self.png: bytes | None = None
        self.plot_source: str | None = None
        note = ""
        if plot:
            own = self.folder / SUMMARY_PNG if self.folder is not None else None
            if own is not None and own.is_file():
                self.png, self.plot_source = own.read_bytes(), SUMMARY_PNG
            else:
                try:
                    self.png = plot_summary(columns, rows)
                    self.plot_source = "matplotlib" if self.png else None
                    if self.png is None:
                        note = "No numeric column to plot."
                except ImportError:
                    note = "Install matplotlib to see a plot: pip install 'magi[bench]'."
        where = f" from <code>{esc(self.csv_path)}</code>" if self.csv_path else ""
        plot_note = {SUMMARY_PNG: "the sweep's summary.png", "matplotlib": "drawn from the table"}.get(
            self.plot_source or "", ""
        )
        self.error_rows = error_rows(columns, rows)
        errors = ""
        if self.error_rows:
            errors = (
                '<div class="magi-sweep-errors" style="color:#cf222e">'
                f"<b>{len(self.error_rows)} of {len(rows)} rows with errors</b>: "
                + "; ".join(esc(r) for r in self.error_rows)
                + " (see the status and error columns)</div>"
            )
        self.header = widgets.HTML(
            f'<div class="magi-sweep-header"><b>Sweep summary</b>{where}: {len(rows)} '
            f"row{'s' if len(rows) != 1 else ''}, {len(columns)} columns"
            + (f"; plot: {esc(plot_note)}" if plot_note else "")
            + (f' <span style="color:#57606a">{esc(note)}</span>' if note else "")
            + errors
            + "</div>"
        )
        self.table = widgets.HTML(
            f'<div style="overflow-x:auto;max-width:100%">{records_html(columns, rows)}</div>'
        )
        self.plot = widgets.Image(
            value=self.png or b"", format="png", layout=widgets.Layout(max_width="100%")
        )
        if not self.png:
            self.plot.layout.display = "none"
        self.table.add_class("magi-sweep-table")
        self.plot.add_class("magi-sweep-plot")
        super().__init__(children=[self.header, self.table, self.plot])
        self.add_class("magi-sweep")


def show_sweep(source: Any, *, plot: bool = True) -> SweepView:
    """Display a sweep's summary (table and plot) in the notebook and return the view."""
    from IPython.display import display

    view = SweepView(source, plot=plot)
    display(view)
    return view
