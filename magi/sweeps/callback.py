"""The Hydra callback that turns a finished sweep into ``summary.csv``/``.md``/``.png``.

Registered in ``conf/config.yaml`` under ``hydra.callbacks`` (Hydra's own plug-in
point for this), so every ``python run.py -m ... task=bench`` ends with one
comparison table, printed and written into the sweep folder:

.. code-block:: yaml

    hydra:
      callbacks:
        sweep_summary:
          _target_: magi.sweeps.callback.SweepSummaryCallback

It reads the jobs' ``metrics.json`` files rather than the launcher's return values,
so it works the same for the basic, joblib, submitit and Ray launchers. Only jobs
of summarised tasks (``bench``) are rows; a sweep of ``task=run`` jobs leaves no
summary.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from magi.errors import EXIT_PARTIAL
from magi.sweeps.metrics import read_metrics
from magi.sweeps.summary import SweepSummary, find_job_dirs

logger = logging.getLogger(__name__)

#: Tasks whose jobs write metrics.json and become summary rows.
SUMMARISED_TASKS = frozenset({"bench"})


def _job_task(job_dir: Path) -> str | None:
    """``task.name`` from the job's saved config (``.hydra/config.yaml``), if readable."""
    path = job_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    task = data.get("task") if isinstance(data, dict) else None
    return str(task.get("name")) if isinstance(task, dict) and task.get("name") else None


def summarise_sweep(sweep_dir: Path | str, *, wall_s: float | None = None) -> SweepSummary:
    """The summary of the bench jobs under ``sweep_dir`` (other tasks' jobs left out)."""
    folder = Path(sweep_dir)
    jobs = []
    for job_dir in find_job_dirs(folder):
        metrics = read_metrics(job_dir)
        task = (metrics or {}).get("task") or _job_task(job_dir)
        if task is None or task in SUMMARISED_TASKS:
            jobs.append((job_dir, metrics))
    if not any(m is not None for _, m in jobs):
        return SweepSummary(rows=[], sweep_dir=folder, wall_s=wall_s)
    return SweepSummary.from_metrics(jobs, folder, wall_s=wall_s)


class SweepSummaryCallback(Callback):
    """At the end of a multirun, summarise its bench jobs in the sweep folder.

    Args:
        fail_on_error: Exit with status 1 after writing the summary when a job failed
            or some of a job's prompts failed (``status: partial``). Jobs record
            their failures instead of stopping the sweep, so this is where a failed
            sweep becomes visible to scripts and CI.
        print_table: Print the table and the files' paths.
    """

    def __init__(self, fail_on_error: bool = True, print_table: bool = True) -> None:
        self.fail_on_error = fail_on_error
        self.print_table = print_table
        self._started: float | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.perf_counter()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        wall = time.perf_counter() - self._started if self._started is not None else None
        sweep_dir = Path(str(config.hydra.sweep.dir))
        summary = summarise_sweep(sweep_dir, wall_s=wall)
        if not summary.rows:
            return
        paths = summary.write(sweep_dir)
        if self.print_table:
            print(f"\nSweep summary ({sweep_dir})\n")
            print(summary.to_text())
            print("\n" + "\n".join(f"  {p}" for p in paths.values()), flush=True)
        n = len(summary.rows)
        level = "error" if self.fail_on_error else "warning"  # only an error ends non-zero
        if summary.failed:
            names = ", ".join(f"job {r['job']} ({r['variant']})" for r in summary.failed)
            print(f"{level}: {len(summary.failed)} of {n} job(s) failed: {names}", file=sys.stderr)
        if summary.partial:
            jobs = [f"job {r['job']} ({r['variant']}): {r['error']}" for r in summary.partial]
            print(
                f"{level}: {len(summary.partial)} of {n} job(s) had failed prompts: " + "\n  ".join(jobs),
                file=sys.stderr,
            )
        if (summary.failed or summary.partial) and self.fail_on_error:
            # Callbacks' exceptions become warnings in Hydra; SystemExit is how a sweep
            # with failed jobs or prompts still ends with a non-zero status, after its summary.
            raise SystemExit(EXIT_PARTIAL)
