"""The benchmark of one profile variant: run a prompt set, measure, write ``metrics.json``.

Shared by ``task=bench`` (``python run.py [-m] task=bench``) and the notebook sweep
(:func:`magi.sweep`). Models come from the process-wide pool
(:func:`~magi.runtime.pool.shared_pool`), so the jobs of a sweep that run in one
process load each model once; the pool's counters before and after the job give
the job's own model loads.

Example:
    >>> import magi
    >>> from magi.sweeps.bench import run_bench
    >>> from magi.sweeps.jobs import JobInfo
    >>> cfg = magi.compose(profile="demo", overrides=["task=bench", "task.limit=2"])
    >>> from pathlib import Path
    >>> metrics = run_bench(cfg, JobInfo(output_dir=Path("outputs/bench")))  # doctest: +SKIP
    >>> metrics["latency_s"]["p50"]                                          # doctest: +SKIP
    0.84
"""

from __future__ import annotations

import copy
import logging
import os
import platform
import time
from datetime import UTC, datetime
from typing import Any

from magi.config.app import MagiConfig
from magi.config.task import BenchTaskConfig
from magi.errors import ConfigError, MAGIException
from magi.runtime.pool import ModelPool, shared_pool
from magi.runtime.trace import RunResult
from magi.sweeps.jobs import JobInfo
from magi.sweeps.metrics import (
    STATUS_FAILED,
    STATUS_OK,
    memory_mb,
    pool_delta,
    result_figures,
    write_metrics,
)
from magi.sweeps.prompts import Prompt, load_prompts

logger = logging.getLogger(__name__)


def bench_settings(config: MagiConfig) -> BenchTaskConfig:
    """The bench settings of ``config`` (those of ``task=bench``, or defaults)."""
    return config.task if isinstance(config.task, BenchTaskConfig) else BenchTaskConfig()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("magi", "llama-cpp-python", "hydra-core"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "?"
    return out


def run_bench(config: MagiConfig, job: JobInfo, *, pool: ModelPool | None = None) -> dict[str, Any]:
    """Benchmark ``config``'s profile on its prompt set and write ``job.output_dir/metrics.json``.

    A prompt that no model could answer is counted under ``errors`` and the bench
    goes on; if none could be answered the bench fails. On failure the partial
    figures are written with ``status: failed`` and the error, then the error is
    raised again.

    Returns:
        The metrics as written (see ``docs/SWEEPS.md`` for the fields).
    """
    from magi.runtime.runner import Runner

    settings = bench_settings(config)
    pool = pool if pool is not None else shared_pool()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    before = copy.deepcopy(pool.stats)
    base: dict[str, Any] = {
        "task": "bench",
        "profile": config.profile.name,
        "profile_key": job.profile_key,
        "overrides": list(job.overrides),
        "job": {
            "num": job.num,
            "output_dir": str(job.output_dir),
            "launcher": job.launcher,
            "parallel_jobs": job.parallel_jobs,
            "pid": os.getpid(),
            "host": platform.node(),
        },
        "scorer": config.scorer,
        "settings": settings.model_dump(mode="json"),
        "started_at": started.isoformat(timespec="seconds"),
    }
    answered: list[tuple[Prompt, RunResult]] = []
    errors: list[str] = []
    prompts: list[Prompt] = []
    load_s = 0.0
    job.output_dir.mkdir(parents=True, exist_ok=True)
    try:
        prompts = load_prompts(settings.prompts, limit=settings.limit)
        base["prompts"] = {"file": str(settings.prompts), "count": len(prompts)}
        with Runner(config, pool=pool) as runner:
            base["n_threads"] = sorted({s.n_threads for s in runner.specs.values()})
            base["models"] = {t: list(m) for t, m in runner.tier_members.items()}
            if settings.preload or settings.warmup:
                t_load = time.perf_counter()
                _prepare(pool, list(runner.specs), warmup=settings.warmup)
                load_s = time.perf_counter() - t_load
            answered, errors = _run_prompts(runner, prompts, settings, label=job.label)
        if not answered:
            raise MAGIException(
                f"No prompt of {settings.prompts} could be answered with profile "
                f"'{config.profile.name}'. First error: {errors[0] if errors else '?'}",
                status_code=503,
            )
    except BaseException as exc:
        data = {
            **base,
            "status": STATUS_FAILED,
            "error": str(exc).strip() or type(exc).__name__,
            "error_type": type(exc).__name__,
            **_figures(answered, errors, settings, pool, before, t0, load_s),
        }
        if isinstance(exc, Exception):
            write_metrics(job.output_dir, data)
        raise
    data = {
        **base,
        "status": STATUS_OK,
        **_figures(answered, errors, settings, pool, before, t0, load_s),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    write_metrics(job.output_dir, data)
    return data


def _prepare(pool: ModelPool, model_ids: list[str], *, warmup: bool) -> None:
    """Load each model (and let it generate one token) before the clock starts.

    A model that fails here is left alone: the timed run fails over from it and
    records the fallback, which is what the bench should measure.
    """
    from magi.runtime.backend import GenerationSettings

    for model_id in model_ids:
        try:
            with pool.lease(model_id) as backend:
                if warmup:
                    for _ in backend.stream("Hello", GenerationSettings(max_tokens=1)):
                        pass
        except MAGIException as exc:
            logger.warning("Could not prepare %s before the bench: %s", model_id, exc)


def _figures(
    answered: list[tuple[Prompt, RunResult]],
    errors: list[str],
    settings: BenchTaskConfig,
    pool: ModelPool,
    before: Any,
    t0: float,
    load_s: float,
) -> dict[str, Any]:
    prompts = [p for p, _ in answered]
    results = [r for _, r in answered]
    return {
        **result_figures(results, prompts, settings.strong_tier),
        "errors": {"count": len(errors), "first": errors[:5]},
        "pool": pool_delta(before, pool.stats),
        "memory": memory_mb(),
        "load_s": load_s,
        "wall_s": time.perf_counter() - t0,
    }


def _run_prompts(
    runner: Any, prompts: list[Prompt], settings: BenchTaskConfig, *, label: str
) -> tuple[list[tuple[Prompt, RunResult]], list[str]]:
    """Answer every prompt with a progress bar; unanswerable prompts become errors."""
    from tqdm.auto import tqdm

    answered: list[tuple[Prompt, RunResult]] = []
    errors: list[str] = []
    desc = f"bench {runner.profile.name}"
    with tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not settings.progress) as bar:
        for item in prompts:
            try:
                result = runner.run(item.prompt)
            except ConfigError:
                raise  # the configuration is wrong: every prompt would fail the same way
            except MAGIException as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                errors.append(f"{item.id}: {first}")
                logger.warning("%s: prompt %s failed: %s", label, item.id, first)
                bar.update()
                continue
            answered.append((item, result))
            bar.set_postfix_str(f"{result.routed_tier}/{result.model_id[:24]}")
            bar.update()
    return answered, errors


def headline(metrics: dict[str, Any]) -> str:
    """One line for the console: prompts, p50 latency, strong-tier share, loads."""
    if metrics.get("status") != STATUS_OK:
        return f"failed: {metrics.get('error', '?')}"
    lat = metrics["latency_s"]
    share = metrics.get("strong_share")
    return (
        f"{metrics['answered']} prompts, latency p50 {lat['p50']:.2f} s / p95 {lat['p95']:.2f} s, "
        f"{metrics['tokens']['per_s'] or 0:.1f} tok/s, "
        + (f"{share:.0%} {metrics['strong_tier']}, " if share is not None else "")
        + f"{metrics['pool']['loads']} model load(s)"
    )
