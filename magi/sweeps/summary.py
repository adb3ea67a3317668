"""The sweep summary: one row per job's ``metrics.json``, as CSV, Markdown, text and a plot.

Every launcher leaves the same files behind (a folder per job with ``metrics.json``
and Hydra's ``.hydra/overrides.yaml``), so the summary is built from the sweep
folder alone: :meth:`SweepSummary.from_sweep_dir`. Each row is labelled with the
overrides that tell its job apart from the others (``profile=demo-single``), not
with every override of the command line. A job that failed is a row with
``status: failed`` and its error; a job that left no ``metrics.json`` at all (its
process was killed) is a failed row saying so. A job some of whose prompts failed
is ``status: partial``: its ``error_share`` is shown in every table (the ``error %``
column), its ``error`` cell names the first failed prompt and each model's cause,
and the plot draws it as a red ``X`` labelled with its error share.

Quality is each job's mean grade (``grades.mean_grade`` of its ``metrics.json``, in
[0, 1]; blank for a job whose prompts have no grader): the ``quality`` column, and
the plot's second panel, quality against the share of prompts sent to the strongest
tier (the cost), one labelled point per job, the jobs of one profile joined as a curve.

Example:
    >>> from magi.sweeps.summary import SweepSummary
    >>> summary = SweepSummary.from_sweep_dir("multirun/2025-01-01/12-00-00")  # doctest: +SKIP
    >>> print(summary.to_markdown())                                          # doctest: +SKIP
    >>> summary.rows[0]["latency_p50_s"]                                      # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from magi.sweeps.metrics import METRICS_FILE, STATUS_FAILED, STATUS_OK, STATUS_PARTIAL, read_metrics

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
SUMMARY_PNG = "summary.png"
#: Characters of a row's error shown in the tables (summary.csv keeps it whole).
ERROR_WIDTH = 140
NO_METRICS = "no metrics.json: the job crashed or was killed before it could record anything"


def parse_override(text: str) -> tuple[str, str]:
    """``"profile=demo"`` → ``("profile", "demo")``; ``"~key"`` → ``("~key", "")``."""
    key, sep, value = text.partition("=")
    return (key.strip(), value.strip()) if sep else (key.strip(), "")


def variant_labels(overrides: Sequence[Sequence[str]]) -> list[str]:
    """Label each job by the overrides whose values differ between jobs (a job
    alone is labelled by its ``profile=`` override).

    Example:
        >>> variant_labels([["profile=a", "task=bench"], ["profile=b", "task=bench"]])
        ['profile=a', 'profile=b']
    """
    parsed = [dict(parse_override(o) for o in job) for job in overrides]
    keys: list[str] = []
    for job in parsed:
        keys += [k for k in job if k not in keys]
    varying = [k for k in keys if len({job.get(k) for job in parsed}) > 1]
    labels = []
    for job in parsed:
        shown = [f"{k}={job[k]}" if job[k] or not k.startswith("~") else k for k in varying if k in job]
        # nothing varies (a single job): name the profile, the most telling override
        fallback = f"profile={job['profile']}" if job.get("profile") else "(defaults)"
        labels.append(" ".join(shown) or fallback)
    return labels


def short_labels(labels: Sequence[str]) -> list[str]:
    """Plot labels: each override's key cut to its last part(s) while the labels stay
    distinct (``profile.tier_config.0.max_score=2`` → ``max_score=2``).

    Example:
        >>> short_labels(["profile.tier_config.0.max_score=2", "profile.tier_config.0.max_score=5"])
        ['max_score=2', 'max_score=5']
    """
    for depth in (1, 2, 3):

        def cut(label: str, depth: int = depth) -> str:
            parts = []
            for token in label.split(" "):
                key, sep, value = token.partition("=")
                parts.append(".".join(key.split(".")[-depth:]) + sep + value)
            return " ".join(parts)

        short = [cut(label) for label in labels]
        keys_distinct = all(
            len({t.partition("=")[0] for t in label.split(" ")}) == len(label.split(" ")) for label in short
        )
        if keys_distinct and len(set(short)) == len(set(labels)):
            return short
    return list(labels)


def _fmt(value: Any, spec: str = ".2f", scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value * scale if scale != 1.0 else value, spec)


def _mix_text(mix: dict[str, int] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (mix or {}).items())


def _first_line(text: str, width: int = 100) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "\u2026"


def _error_figures(metrics: dict[str, Any]) -> tuple[str, int | None, float | None, str]:
    """Status, failed prompts, error share and error text of a job's row.

    ``metrics.json`` files written before jobs could be ``partial`` said ``ok`` with
    ``errors.count`` failed prompts: they read as ``partial`` here too, with the
    share derived from the counts.
    """
    status = metrics.get("status", STATUS_FAILED)
    errors = metrics.get("errors") or {}
    count = metrics.get("prompts", {}).get("count") if isinstance(metrics.get("prompts"), dict) else None
    failed = metrics.get("failed", errors.get("count"))
    share = metrics.get("error_share")
    if share is None and failed is not None and count:
        share = failed / count
    if status == STATUS_OK and failed:
        status = STATUS_PARTIAL
    if status == STATUS_OK:
        return status, failed, share, ""
    if status == STATUS_PARTIAL:
        first = (errors.get("first") or ["?"])[0]
        return (
            status,
            failed,
            share,
            f"{failed} of {count if count is not None else '?'} prompts failed: {first}",
        )
    return status, failed, share, metrics.get("error", "")


def flatten(metrics: dict[str, Any], job_dir: Path | None, label: str) -> dict[str, Any]:
    """One summary row (flat, CSV-ready) from one job's metrics.

    ``strong_share`` and ``hit_rate`` are over all prompts (failed ones are misses),
    ``error_share`` the share of prompts no model answered; ``tier_mix`` is where
    answered prompts were routed and ``answer_tier_mix`` which tier answered them
    (``rerouted`` counts the prompts where the two differ).
    """
    lat = metrics.get("latency_s") or {}
    ttft = metrics.get("ttft_s") or {}
    pool = metrics.get("pool") or {}
    memory = metrics.get("memory") or {}
    quality = metrics.get("quality") or {}
    grades = metrics.get("grades") or {}
    job = metrics.get("job") or {}
    status, failed, error_share, error = _error_figures(metrics)
    row: dict[str, Any] = {
        "job": job.get("num"),
        "variant": label,
        "status": status,
        "profile": metrics.get("profile") or metrics.get("profile_key") or "",
        "prompts": (metrics.get("prompts") or {}).get("count"),
        "answered": metrics.get("answered"),
        "failed": failed,
        "error_share": error_share,
        "strong_tier": metrics.get("strong_tier"),
        "strong_share": metrics.get("strong_share"),
        "tier_mix": _mix_text(metrics.get("tier_mix")),
        "answer_tier_mix": _mix_text(metrics.get("answer_tier_mix")),
        "rerouted": (metrics.get("rerouted") or {}).get("count"),
        "model_mix": _mix_text(metrics.get("model_mix")),
        "latency_p50_s": lat.get("p50"),
        "latency_p95_s": lat.get("p95"),
        "ttft_p50_s": ttft.get("p50"),
        "ttft_p95_s": ttft.get("p95"),
        "tokens_per_s": (metrics.get("tokens") or {}).get("per_s"),
        "tokens_per_prompt": (metrics.get("tokens") or {}).get("per_prompt"),
        "quality": grades.get("mean_grade"),
        "graded": grades.get("graded") if grades.get("mean_grade") is not None else None,
    }
    for role, figures in (metrics.get("stages") or {}).items():
        row[f"{role}_p50_s"] = figures.get("p50_s")
        row[f"{role}_total_s"] = figures.get("total_s")
    row.update(
        {
            "fallbacks": (metrics.get("fallbacks") or {}).get("count"),
            "errors": (metrics.get("errors") or {}).get("count"),
            "model_loads": pool.get("loads"),
            "loads_by_model": _mix_text(pool.get("loads_by_model")),
            "load_s": metrics.get("load_s"),
            "peak_rss_mb": memory.get("peak_rss_mb"),
            "hit_rate": quality.get("hit_rate"),
            "wall_s": metrics.get("wall_s"),
            "pid": job.get("pid"),
            "overrides": " ".join(metrics.get("overrides") or []),
            "error": error,
            "dir": str(job_dir) if job_dir else "",
        }
    )
    return row


def _read_overrides(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in data] if isinstance(data, list) else []


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Folders of a sweep's jobs: those with Hydra's ``.hydra/overrides.yaml`` or a
    ``metrics.json`` (in job-number order when the folder names are numbers)."""
    found = {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    found |= {p.parent for p in sweep_dir.rglob(METRICS_FILE)}
    found.discard(sweep_dir)

    def key(path: Path) -> tuple[int, int | str]:
        rel = path.relative_to(sweep_dir).as_posix()
        return (0, int(rel)) if rel.isdigit() else (1, rel)

    return sorted(found, key=key)


_FIGURE_CLASS: type | None = None


def _figure_class() -> type:
    """A matplotlib ``Figure`` that Jupyter shows as PNG even when pyplot (and with it
    the inline backend's display hook) was never imported."""
    global _FIGURE_CLASS
    if _FIGURE_CLASS is None:
        from matplotlib.figure import Figure

        class SummaryFigure(Figure):
            def _repr_png_(self) -> bytes:
                buffer = io.BytesIO()
                self.savefig(buffer, format="png")
                return buffer.getvalue()

        _FIGURE_CLASS = SummaryFigure
    return _FIGURE_CLASS


@dataclass
class SweepSummary:
    """A sweep's results: ``rows`` (one dict per job) plus text, Markdown, CSV and a plot.

    Attributes:
        rows: One flat dict per job (see :func:`flatten` for the keys).
        sweep_dir: Where the summary files go by default.
        wall_s: The sweep's wall time, when known.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    sweep_dir: Path | None = None
    wall_s: float | None = None

    # -- building ---------------------------------------------------------------------
    @classmethod
    def from_metrics(
        cls,
        jobs: Iterable[tuple[Path | None, dict[str, Any] | None]],
        sweep_dir: Path | None = None,
        *,
        overrides: Sequence[Sequence[str]] | None = None,
        wall_s: float | None = None,
    ) -> SweepSummary:
        """Rows from ``(job folder, metrics or None)`` pairs; ``None`` is a crashed job."""
        pairs = list(jobs)
        if overrides is None:
            overrides = [
                list((m or {}).get("overrides") or (_read_overrides(d) if d else [])) for d, m in pairs
            ]
        labels = variant_labels(overrides)
        rows = []
        for i, ((folder, metrics), label, ovr) in enumerate(zip(pairs, labels, overrides, strict=True)):
            data = metrics if metrics is not None else {"status": STATUS_FAILED, "error": NO_METRICS}
            data = {"overrides": list(ovr), **data}
            row = flatten(data, folder, label)
            if row["job"] is None:
                row["job"] = i
            rows.append(row)
        return cls(rows=rows, sweep_dir=sweep_dir, wall_s=wall_s)

    @classmethod
    def from_sweep_dir(cls, sweep_dir: Path | str, *, wall_s: float | None = None) -> SweepSummary:
        """Rows from every job folder under ``sweep_dir`` (see :func:`find_job_dirs`)."""
        folder = Path(sweep_dir)
        jobs = [(d, read_metrics(d)) for d in find_job_dirs(folder)]
        return cls.from_metrics(jobs, folder, wall_s=wall_s)

    # -- reading ----------------------------------------------------------------------
    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == STATUS_OK]

    @property
    def partial(self) -> list[dict[str, Any]]:
        """Rows of jobs that finished with some prompts failed (``status: partial``)."""
        return [r for r in self.rows if r["status"] == STATUS_PARTIAL]

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Rows of jobs that failed as a whole (or left no ``metrics.json``)."""
        return [r for r in self.rows if r["status"] not in (STATUS_OK, STATUS_PARTIAL)]

    @property
    def strong_tier(self) -> str:
        return next((r["strong_tier"] for r in self.rows if r.get("strong_tier")), "powerful")

    @property
    def model_loads(self) -> int:
        """Model loads of all jobs together (in-process sweeps: one per model)."""
        return sum(r.get("model_loads") or 0 for r in self.rows)

    @property
    def loads_by_model(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for row in self.rows:
            for part in filter(None, (row.get("loads_by_model") or "").split(", ")):
                model, _, count = part.rpartition(" ")
                totals[model] = totals.get(model, 0) + int(count)
        return totals

    @property
    def columns(self) -> list[str]:
        """Every key of every row, in first-seen order (the CSV header)."""
        cols: list[str] = []
        for row in self.rows:
            cols += [k for k in row if k not in cols]
        return cols

    # -- rendering --------------------------------------------------------------------
    def _display(self) -> tuple[list[str], list[list[str]]]:
        strong = self.strong_tier
        roles = [r for r in ("draft", "refine", "answer") if any(f"{r}_p50_s" in row for row in self.rows)]
        headers = ["#", "variant", "status", "profile", "prompts", "error %", f"{strong} %", "p50 s", "p95 s"]
        headers += ["TTFT p50 ms", "tok/s", *[f"{r} p50 s" for r in roles], "fallbacks", "errors", "loads"]
        headers += ["peak MB"]
        headers += ["quality", "hits", "error"]
        body = []
        for row in self.rows:
            body.append(
                [
                    str(row["job"]),
                    row["variant"],
                    row["status"],
                    row["profile"],
                    _fmt(row.get("prompts"), "d"),
                    _fmt(row.get("error_share"), ".0f", 100),
                    _fmt(row.get("strong_share"), ".0f", 100),
                    _fmt(row.get("latency_p50_s")),
                    _fmt(row.get("latency_p95_s")),
                    _fmt(row.get("ttft_p50_s"), ".0f", 1000),
                    _fmt(row.get("tokens_per_s"), ".1f"),
                    *[_fmt(row.get(f"{r}_p50_s")) for r in roles],
                    _fmt(row.get("fallbacks"), "d"),
                    _fmt(row.get("errors"), "d"),
                    _fmt(row.get("model_loads"), "d"),
                    _fmt(row.get("peak_rss_mb"), ".0f"),
                    "" if row.get("quality") is None else _fmt(row["quality"], ".2f"),
                    _fmt(row.get("hit_rate"), ".0%"),
                    _first_line(row.get("error") or "", ERROR_WIDTH),
                ]
            )
        # Leave out optional columns no row has a value in (no grader, hits without
        # 'expected', no errors); an ungraded row's quality is blank.
        optional = ("quality", "hits", "error", "fallbacks", "errors")
        keep = [
            i
            for i, h in enumerate(headers)
            if h not in optional or any(r[i] not in ("-", "", "0") for r in body)
        ]
        return [headers[i] for i in keep], [[r[i] for i in keep] for r in body]

    def footer(self) -> str:
        """Jobs ok/failed, model loads (per model) and processes, wall time."""
        loads = ", ".join(f"{m} {n}" for m, n in self.loads_by_model.items()) or "none"
        processes = len({r["pid"] for r in self.rows if r.get("pid")})
        text = f"{len(self.ok)} of {len(self.rows)} job(s) ok"
        if self.partial:
            text += f", {len(self.partial)} with failed prompts (partial)"
        if self.failed:
            text += f", {len(self.failed)} failed"
        text += f"; model loads across the sweep: {self.model_loads} ({loads}) in {processes} process(es)"
        if self.wall_s is not None:
            text += f"; wall time {self.wall_s:.1f} s"
        return text

    def to_text(self) -> str:
        """A plain-text table for the terminal, with the footer."""
        from magi.render import table

        headers, body = self._display()
        return table(headers, body) + "\n\n" + self.footer()

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table with the footer below it."""
        headers, body = self._display()

        def cells(values: Sequence[str]) -> str:
            return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

        lines = [cells(headers), "| " + " | ".join("---" for _ in headers) + " |"]
        lines += [cells(r) for r in body]
        return "\n".join(lines) + "\n\n" + self.footer() + "\n"

    def _repr_markdown_(self) -> str:  # Jupyter shows the table
        return self.to_markdown()

    def __str__(self) -> str:
        return self.to_text()

    def to_csv(self, path: Path | str | None = None) -> str:
        """All columns as CSV; written to ``path`` when given. Returns the text."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        text = buffer.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @property
    def graded(self) -> list[dict[str, Any]]:
        """Rows of finished jobs with a quality figure (a mean grade)."""
        return [
            r
            for r in self.rows
            if r["status"] in (STATUS_OK, STATUS_PARTIAL) and r.get("quality") is not None
        ]

    def plot(self, path: Path | str | None = None) -> Any:
        """Latency p50 (bar up to p95) against the strong tier's share, one labelled
        point per variant; saved as PNG to ``path`` when given. A variant with failed
        prompts is a red ``X`` whose label gives its error share; failed jobs are
        named in the title. When some jobs were graded, a second panel (``axes[1]``)
        plots quality (mean grade) against the same share, the cost of routing:
        one labelled point per graded job, the jobs of one profile joined in order
        of share (a threshold sweep's curve). Returns the matplotlib ``Figure`` (made
        without pyplot, so no global state and no display backend is touched;
        Jupyter shows it when it is the cell's value).
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        graded = self.graded
        fig = _figure_class()(figsize=(13.0 if graded else 7.5, 4.8), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 2, 1) if graded else fig.add_subplot()
        strong = self.strong_tier
        finished = (STATUS_OK, STATUS_PARTIAL)
        points = [r for r in self.rows if r["status"] in finished and r.get("latency_p50_s") is not None]
        labels = short_labels([r["variant"] for r in points])
        for i, (row, label) in enumerate(zip(points, labels, strict=True)):
            x = 100 * (row.get("strong_share") or 0.0)
            y = row["latency_p50_s"]
            p95 = row.get("latency_p95_s")
            share = row.get("error_share") or 0.0
            style = (
                {"fmt": "X", "color": "#cf222e", "markersize": 9}
                if share
                else {"fmt": "o", "markersize": 7, "color": f"C{i % 10}"}
            )
            ax.errorbar([x], [y], yerr=[[0], [max((p95 or y) - y, 0)]], capsize=4, **style)  # type: ignore[arg-type]
            if share:
                label += f" ({share:.0%} errors)"
            offset = (7, 6) if i % 2 == 0 else (7, -12)  # neighbours' labels do not overlap
            ax.annotate(
                label,
                (x, y),
                textcoords="offset points",
                xytext=offset,
                fontsize=8,
                color="#cf222e" if share else None,
            )
        if not points:
            ax.text(0.5, 0.5, "no job finished", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlim(-5, 105)
        ax.set_ylim(bottom=0)
        ax.set_xlabel(f"prompts routed to the '{strong}' tier and answered (% of all prompts)")
        ax.set_ylabel("latency p50 (s); bar up to p95")
        title = f"MAGI sweep: {len(self.rows)} variant(s)"
        if self.partial:
            title += f", {len(self.partial)} with failed prompts (X)"
        if self.failed:
            title += f", {len(self.failed)} failed: " + ", ".join(r["variant"] for r in self.failed)[:60]
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        if graded:  # a job keeps its colour in both panels
            colours = {id(row): f"C{i % 10}" for i, row in enumerate(points)}
            self._plot_quality(fig.add_subplot(1, 2, 2), graded, colours)
        fig.tight_layout()
        if path is not None:
            fig.savefig(str(path))
        return fig

    def _plot_quality(self, ax: Any, rows: list[dict[str, Any]], colours: dict[int, str]) -> None:
        """Quality (mean grade) against the strong tier's share: the cost–quality panel."""
        strong = self.strong_tier
        labels = short_labels([r["variant"] for r in rows])
        curves: dict[str, list[tuple[float, float]]] = {}
        for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
            x, y = 100 * (row.get("strong_share") or 0.0), row["quality"]
            curves.setdefault(row.get("profile") or "", []).append((x, y))
            share = row.get("error_share") or 0.0
            if share:
                ax.plot([x], [y], "X", color="#cf222e", markersize=9)
                label += f" ({share:.0%} errors)"
            else:
                ax.plot([x], [y], "o", markersize=7, color=colours.get(id(row)))
            ax.annotate(
                label,
                (x, y),
                textcoords="offset points",
                xytext=(7, 6) if i % 2 == 0 else (7, -12),
                fontsize=8,
                color="#cf222e" if share else None,
            )
        for points in curves.values():
            if len(points) > 1:
                xs, ys = zip(*sorted(points), strict=True)
                ax.plot(xs, ys, "-", color="#8c959f", linewidth=1, zorder=0)
        ax.set_xlim(-5, 105)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel(f"cost: prompts routed to the '{strong}' tier (% of all prompts)")
        ax.set_ylabel("quality: mean grade (0-1)")
        ax.set_title(f"quality against cost: {len(rows)} graded variant(s)", fontsize=10)
        ax.grid(True, alpha=0.3)

    def write(self, folder: Path | str | None = None) -> dict[str, Path]:
        """Write ``summary.csv``, ``summary.md`` and ``summary.png`` into ``folder``
        (default ``sweep_dir``). The plot is skipped, with a note in the Markdown,
        when matplotlib (the ``bench`` extra) is missing."""
        target = Path(folder) if folder is not None else self.sweep_dir
        if target is None:
            raise ValueError("SweepSummary.write needs a folder (this summary has no sweep_dir)")
        target.mkdir(parents=True, exist_ok=True)
        paths = {"csv": target / SUMMARY_CSV, "md": target / SUMMARY_MD}
        self.to_csv(paths["csv"])
        markdown = f"# MAGI sweep summary\n\n{self.to_markdown()}"
        try:
            self.plot(target / SUMMARY_PNG)
            paths["png"] = target / SUMMARY_PNG
            what = "latency and quality" if self.graded else "latency"
            markdown += f"\n![{what} vs {self.strong_tier} share]({SUMMARY_PNG})\n"
        except ImportError:
            markdown += "\n(no plot: install matplotlib, e.g. pip install -e '.[bench]')\n"
        paths["md"].write_text(markdown, encoding="utf-8")
        return paths
