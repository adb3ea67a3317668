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
    STATUS_PARTIAL,
    describe_failure,
    memory_mb,
    pool_delta,
    prompt_failure,
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

    A prompt that no model could answer is recorded under ``errors`` (with each
    model's cause) and the bench goes on; the job is then ``status: partial``, and
    every rate counts the failed prompts (see :func:`result_figures`). If none
    could be answered the bench fails: the figures so far are written with
    ``status: failed`` and the error, then the error is raised again.

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
    failures: list[dict[str, Any]] = []
    prompts: list[Prompt] = []
    load_s = 0.0
    job.output_dir.mkdir(parents=True, exist_ok=True)
    try:
        prompts = load_prompts(settings.prompts, limit=settings.limit)
        base["prompts"] = {"file": str(settings.prompts), "count": len(prompts)}
        with Runner(config, pool=pool) as runner:
            base["n_threads"] = sorted({s.load.n_threads for s in runner.specs.values() if s.load.n_threads})
            base["models"] = {t: list(m) for t, m in runner.tier_members.items()}
            if settings.preload or settings.warmup:
                t_load = time.perf_counter()
                _prepare(pool, list(runner.specs), warmup=settings.warmup)
                load_s = time.perf_counter() - t_load
            answered, failures = _run_prompts(runner, prompts, settings, label=job.label)
        if not answered:
            first = describe_failure(failures[0]) if failures else "?"
            raise MAGIException(
                f"No prompt of {settings.prompts} could be answered with profile "
                f"'{config.profile.name}'. First error: {first}",
                status_code=503,
            )
    except BaseException as exc:
        data = {
            **base,
            "status": STATUS_FAILED,
            "error": str(exc).strip() or type(exc).__name__,
            "error_type": type(exc).__name__,
            **_figures(answered, failures, settings, pool, before, t0, load_s),
        }
        if isinstance(exc, Exception):
            write_metrics(job.output_dir, data)
        raise
    data = {
        **base,
        "status": STATUS_PARTIAL if failures else STATUS_OK,
        **_figures(answered, failures, settings, pool, before, t0, load_s),
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
    failures: list[dict[str, Any]],
    settings: BenchTaskConfig,
    pool: ModelPool,
    before: Any,
    t0: float,
    load_s: float,
) -> dict[str, Any]:
    prompts = [p for p, _ in answered]
    results = [r for _, r in answered]
    return {
        **result_figures(results, prompts, settings.strong_tier, failures),
        "pool": pool_delta(before, pool.stats),
        "memory": memory_mb(),
        "load_s": load_s,
        "wall_s": time.perf_counter() - t0,
    }


def _run_prompts(
    runner: Any, prompts: list[Prompt], settings: BenchTaskConfig, *, label: str
) -> tuple[list[tuple[Prompt, RunResult]], list[dict[str, Any]]]:
    """Answer every prompt with a progress bar; an unanswerable prompt becomes a
    :func:`~magi.sweeps.metrics.prompt_failure` record (with each model's cause)."""
    from tqdm.auto import tqdm

    answered: list[tuple[Prompt, RunResult]] = []
    failures: list[dict[str, Any]] = []
    desc = f"bench {runner.profile.name}"
    with tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not settings.progress) as bar:
        for item in prompts:
            started = time.perf_counter()
            try:
                result = runner.run(item.prompt)
            except ConfigError:
                raise  # the configuration is wrong: every prompt would fail the same way
            except MAGIException as exc:
                failure = prompt_failure(
                    item,
                    exc,
                    routed_tier=_routed_tier(runner, item.prompt),
                    elapsed_s=time.perf_counter() - started,
                )
                failures.append(failure)
                logger.warning("%s: prompt failed: %s", label, describe_failure(failure))
                bar.update()
                continue
            answered.append((item, result))
            route = result.routed_tier
            if result.tier != route:  # a fallback: show who answered too
                route += f"->{result.tier}"
            bar.set_postfix_str(f"{route}/{result.model_id[:24]}")
            bar.update()
    return answered, failures


def _routed_tier(runner: Any, prompt: str) -> str | None:
    """The tier the router sends ``prompt`` to (scoring only: no balancer turn is used),
    for a failed prompt whose error does not say; ``None`` if scoring fails too."""
    try:
        return str(runner.router.tier_for(runner.router.scorer.score(prompt).score))
    except Exception:  # noqa: BLE001 - a record of a failure must not fail
        return None


def headline(metrics: dict[str, Any]) -> str:
    """One line for the console: prompts (and failed ones), p50 latency, strong-tier
    share (of all prompts), loads."""
    status = metrics.get("status")
    if status not in (STATUS_OK, STATUS_PARTIAL):
        return f"failed: {metrics.get('error', '?')}"
    lat = metrics["latency_s"]
    share = metrics.get("strong_share")
    prefix = ""
    if status == STATUS_PARTIAL:
        errors = metrics.get("errors") or {}
        first = (errors.get("first") or ["?"])[0]
        total = (metrics.get("prompts") or {}).get("count") or metrics["answered"] + errors.get("count", 0)
        prefix = (
            f"partial: {metrics['answered']} of {total} prompts answered, {errors.get('count', 0)} failed "
            f"({metrics.get('error_share') or 0:.0%}; first: {first}); "
        )
    return prefix + (
        f"{metrics['answered']} prompts, latency p50 {lat['p50']:.2f} s / p95 {lat['p95']:.2f} s, "
        f"{metrics['tokens']['per_s'] or 0:.1f} tok/s, "
        + (f"{share:.0%} {metrics['strong_tier']}, " if share is not None else "")
        + f"{metrics['pool']['loads']} model load(s)"
    )
