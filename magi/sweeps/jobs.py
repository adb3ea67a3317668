"""What a task knows about the Hydra job it runs in, and how a failed job is recorded.

Tasks take a validated :class:`~magi.config.app.MagiConfig` only; the job's output
folder, its overrides and whether it is one job of a sweep come from Hydra's
``HydraConfig`` and are gathered here once, into a plain :class:`JobInfo`. The
notebook sweep (:func:`magi.sweeps.api.sweep`) builds a ``JobInfo`` itself, so the
same bench code runs with and without ``@hydra.main``.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from magi.sweeps.metrics import STATUS_FAILED, read_metrics, write_metrics

logger = logging.getLogger(__name__)


@dataclass
class JobInfo:
    """One job: where its files go and which overrides made it.

    Attributes:
        output_dir: The job's folder (Hydra's ``hydra.runtime.output_dir``).
        overrides: The job's command-line overrides (``hydra.overrides.task``), e.g.
            ``["profile=demo", "task=bench"]``: what tells sweep variants apart.
        num: The job's number in its sweep (0 outside a sweep).
        multirun: Whether the job is one of a sweep (``python run.py -m``): a failure
            is then recorded and the sweep goes on.
        profile_key: The chosen option of the ``profile`` group, e.g. ``demo``.
        launcher: Short launcher name (``basic``, ``joblib``, ``submitit``, ``ray``, ``python``).
        parallel_jobs: How many jobs run at once on this machine (joblib's ``n_jobs``).
    """

    output_dir: Path
    overrides: list[str] = field(default_factory=list)
    num: int = 0
    multirun: bool = False
    profile_key: str | None = None
    launcher: str = "python"
    parallel_jobs: int = 1

    @property
    def label(self) -> str:
        """``job 2 (profile=demo)`` for messages (Hydra's log shows all its overrides)."""
        return f"job {self.num}" + (f" (profile={self.profile_key})" if self.profile_key else "")


def cpu_count() -> int:
    """Cores this process may use (respects affinity and SLURM's cgroup pinning)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _launcher(hydra_cfg: Any) -> tuple[str, int]:
    """Short name of the launcher and how many of its jobs run at once on one machine."""
    target = str(hydra_cfg.launcher.get("_target_", "")) if hydra_cfg.get("launcher") else ""
    if "joblib" in target.lower():
        n_jobs = int(hydra_cfg.launcher.get("n_jobs", -1) or -1)
        if n_jobs < 0:  # joblib: -1 all cores, -2 all but one, ...
            n_jobs = max(cpu_count() + 1 + n_jobs, 1)
        return "joblib", n_jobs
    for name in ("submitit", "ray"):
        if name in target.lower():
            return name, 1
    return "basic", 1


def current_job() -> JobInfo:
    """The running Hydra job; outside Hydra, a folder under ``outputs/`` named by time."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        folder = Path("outputs") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
        return JobInfo(output_dir=folder.resolve())
    hc = HydraConfig.get()
    launcher, parallel = _launcher(hc)
    multirun = hc.mode == RunMode.MULTIRUN
    num = hc.job.get("num", 0) if multirun else 0
    return JobInfo(
        output_dir=Path(hc.runtime.output_dir),
        overrides=[str(o) for o in hc.overrides.task],
        num=int(num) if num is not None else 0,
        multirun=multirun,
        profile_key=hc.runtime.choices.get("profile"),
        launcher=launcher if multirun else "basic",
        parallel_jobs=parallel if multirun else 1,
    )


def fit_threads(config: Any, job: JobInfo) -> Any:
    """Share the cores among jobs that run at once: with ``runtime.n_threads`` unset,
    ``k`` parallel jobs get ``cores // k`` threads each instead of all cores each
    (2 jobs x 2 threads on 2 cores runs slower than 2 x 1). An explicit
    ``runtime.n_threads`` is kept."""
    if job.parallel_jobs <= 1 or config.runtime.n_threads is not None:
        return config
    threads = max(cpu_count() // job.parallel_jobs, 1)
    logger.info(
        "%d parallel jobs on %d cores: %d thread(s) per model", job.parallel_jobs, cpu_count(), threads
    )
    runtime = config.runtime.model_copy(update={"n_threads": threads})
    return config.model_copy(update={"runtime": runtime})


def failure_record(exc: BaseException, job: JobInfo, **extra: Any) -> dict[str, Any]:
    """The ``metrics.json`` content of a failed job: the error first, then context."""
    error = str(exc).strip() or type(exc).__name__
    return {
        "status": STATUS_FAILED,
        "error": error,
        "error_type": type(exc).__name__,
        "traceback": "".join(traceback.format_exception(exc)[-6:]),
        "overrides": job.overrides,
        "job": {
            "num": job.num,
            "output_dir": str(job.output_dir),
            "launcher": job.launcher,
            "pid": os.getpid(),
        },
        "profile_key": job.profile_key,
        **extra,
    }


def record_failure(exc: BaseException, job: JobInfo, **extra: Any) -> Path | None:
    """Write a failed job's ``metrics.json`` unless the task already wrote one (with
    its partial figures). Never raises: a failure to record must not hide the error."""
    try:
        existing = read_metrics(job.output_dir)
        if existing is not None and existing.get("status") == STATUS_FAILED:
            return job.output_dir
        job.output_dir.mkdir(parents=True, exist_ok=True)
        return write_metrics(job.output_dir, failure_record(exc, job, **extra))
    except OSError as write_error:  # pragma: no cover - disk full, read-only folder
        logger.error("Could not record the failure of %s: %s", job.label, write_error)
        return None


def fail_job(exc: BaseException, job: JobInfo, **extra: Any) -> float:
    """Record a failed sweep job, report it on stderr, and return NaN for the sweeper.

    Hydra's basic sweeper re-raises the first failed job after the batch, which
    would skip the sweep summary; so in a sweep the error is recorded and the job
    returns NaN instead (Optuna and Nevergrad treat NaN as a failed trial). The
    summary callback then lists the job as a failed row and ends the sweep with a
    non-zero exit code.
    """
    from magi.errors import MAGIException

    record_failure(exc, job, **extra)
    if isinstance(exc, MAGIException):  # a user mistake: the message says it all
        logger.info("%s failed", job.label, exc_info=exc)  # the traceback goes to the job's log file
    else:  # a bug: show where
        logger.error("%s failed", job.label, exc_info=exc)
    first = (str(exc).strip() or type(exc).__name__).splitlines()
    print(f"error: {job.label} failed: {first[0] if first else ''}", file=sys.stderr)
    for line in first[1:]:
        print(f"  {line}", file=sys.stderr)
    return math.nan
