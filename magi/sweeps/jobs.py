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

from magi.machine import usable_cores
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
        parallel_jobs: How many jobs run at once on this machine (joblib's ``n_jobs``,
            the batch under submitit's local executor).
        cores: The cores the job's jobs share: the machine's (``None``), or the CPUs
            Ray gave the task.
    """

    output_dir: Path
    overrides: list[str] = field(default_factory=list)
    num: int = 0
    multirun: bool = False
    profile_key: str | None = None
    launcher: str = "python"
    parallel_jobs: int = 1
    cores: int | None = None

    @property
    def label(self) -> str:
        """``job 2 (profile=demo)`` for messages (Hydra's log shows all its overrides)."""
        return f"job {self.num}" + (f" (profile={self.profile_key})" if self.profile_key else "")


def jobs_in_batch(output_dir: Path, num: int) -> int:
    """How many jobs of a sweep start together with job ``num``: the size of its batch.

    submitit's local executor starts every job of a batch at once, and a job is not
    told how many there are; Hydra's basic sweeper saves the sweep's overrides (and
    ``max_batch_size``) in ``multirun.yaml`` in the sweep folder before any job runs,
    so the batches are counted again from there. 1 when there is no such file (another
    sweeper) or it cannot be read.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    for folder in [output_dir, *output_dir.parents][:4]:
        path = folder / "multirun.yaml"
        if path.is_file():
            break
    else:
        return 1
    try:
        saved = OmegaConf.load(path).hydra
        if "BasicSweeper" not in str(saved.sweeper.get("_target_", "")):
            return 1
        params = saved.sweeper.get("params") or {}
        arguments = [f"{key}={value}" for key, value in params.items()]
        arguments += [str(o) for o in saved.overrides.task]
        overrides = OverridesParser.create().parse_overrides(arguments)
        batches = BasicSweeper.split_arguments(overrides, saved.sweeper.get("max_batch_size"))
    except Exception as exc:  # a glob sweep needs the config loader; any doubt: alone
        logger.debug("Could not count the jobs of %s: %s", path, exc)
        return 1
    first = 0
    for batch in batches:
        if num < first + len(batch):
            return len(batch)
        first += len(batch)
    return 1


def _ray_cpus() -> int | None:
    """The CPUs Ray gave the running task (``num_cpus``), outside Ray ``None``."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    return max(int(cpus), 1) if cpus else None


def _launcher(hydra_cfg: Any) -> tuple[str, int, int | None]:
    """Short name of the launcher, how many of its jobs run at once on one machine,
    and the cores they share (``None``: the machine's)."""
    target = str(hydra_cfg.launcher.get("_target_", "")) if hydra_cfg.get("launcher") else ""
    if "joblib" in target.lower():
        n_jobs = int(hydra_cfg.launcher.get("n_jobs", -1) or -1)
        if n_jobs < 0:  # joblib: -1 all cores, -2 all but one, ...
            n_jobs = max(usable_cores() + 1 + n_jobs, 1)
        return "joblib", n_jobs, None
    if "submitit" in target.lower():
        if target.endswith("LocalLauncher"):  # SLURM pins each job to its own CPUs
            num = int(hydra_cfg.job.get("num", 0) or 0)
            return "submitit", jobs_in_batch(Path(hydra_cfg.runtime.output_dir), num), None
        return "submitit", 1, None
    if "ray" in target.lower():
        return "ray", 1, _ray_cpus()
    return "basic", 1, None


def current_job() -> JobInfo:
    """The running Hydra job; outside Hydra, a folder under ``outputs/`` named by time."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        folder = Path("outputs") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
        return JobInfo(output_dir=folder.resolve())
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    launcher, parallel, cores = _launcher(hc) if multirun else ("basic", 1, None)
    num = hc.job.get("num", 0) if multirun else 0
    return JobInfo(
        output_dir=Path(hc.runtime.output_dir),
        overrides=[str(o) for o in hc.overrides.task],
        num=int(num) if num is not None else 0,
        multirun=multirun,
        profile_key=hc.runtime.choices.get("profile"),
        launcher=launcher,
        parallel_jobs=parallel,
        cores=cores,
    )


def fit_threads(config: Any, job: JobInfo) -> Any:
    """Share the cores among jobs that run at once: with ``runtime.n_threads`` /
    ``runtime.n_threads_batch`` unset, ``k`` parallel jobs get ``cores // k`` threads each
    for both decode and prompt processing, instead of each job taking the machine (2 jobs
    x 2 threads on 2 cores runs slower than 2 x 1, and its answers time out), and a Ray
    task gets the CPUs Ray gave it. A single job keeps MAGI's defaults (decode on the
    cores less one: :func:`magi.runtime.resolve.default_threads`). An
    explicit setting is kept."""
    cores = job.cores or usable_cores()
    threads = max(cores // max(job.parallel_jobs, 1), 1)
    if threads >= usable_cores():
        return config
    update = {
        name: threads
        for name in ("n_threads", "n_threads_batch")
        if getattr(config.runtime, name) is None
    }
    if not update:
        return config
    logger.info("%d parallel job(s) on %d core(s): %d thread(s) per model", job.parallel_jobs, cores, threads)
    runtime = config.runtime.model_copy(update=update)
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
