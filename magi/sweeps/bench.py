"""The benchmark of one profile variant: run a prompt set, grade, measure, write
``metrics.json`` and ``results.jsonl``.

Each answer is graded as it comes (:mod:`magi.sweeps.graders`: the prompt's grader,
or the set's); the per-prompt results file (:data:`RESULTS_FILE`) beside
``metrics.json`` holds every prompt's answer, expected answer, grade and cause, so
quality can be read answer by answer.

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
import dataclasses
import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from magi.config.app import MagiConfig
from magi.config.task import BenchTaskConfig
from magi.errors import ConfigError, MAGIException
from magi.fileio import atomic_write_text
from magi.runtime.pool import ModelPool, shared_pool
from magi.runtime.trace import RunResult
from magi.sweeps.graders import Grade, JudgeAsk, grade_answer
from magi.sweeps.jobs import JobInfo
from magi.sweeps.metrics import (
    STATUS_FAILED,
    STATUS_OK,
    STATUS_PARTIAL,
    describe_failure,
    failure_cause,
    memory_mb,
    pool_delta,
    prompt_failure,
    result_figures,
    write_metrics,
)
from magi.sweeps.prompts import Prompt, PromptSetError, load_prompts

logger = logging.getLogger(__name__)

#: The per-prompt results file a bench job writes beside ``metrics.json``.
RESULTS_FILE = "results.jsonl"


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
    run = _BenchRun()
    load_s = 0.0
    job.output_dir.mkdir(parents=True, exist_ok=True)
    try:
        prompts = load_prompts(settings.prompts, limit=settings.limit)
        base["prompts"] = {"file": str(settings.prompts), "count": len(prompts)}
        with Runner(config, pool=pool) as runner:
            base["n_threads"] = sorted({s.load.n_threads for s in runner.specs.values() if s.load.n_threads})
            base["models"] = {t: list(m) for t, m in runner.tier_members.items()}
            prompts, judge = prepare_judges(runner, prompts, settings)
            if judge is not None:
                base["judges"] = sorted({p.judge for p in prompts if p.judge and p.grader_name == "judge"})
            if settings.preload or settings.warmup:
                t_load = time.perf_counter()
                _prepare(pool, list(runner.specs), warmup=settings.warmup)
                load_s = time.perf_counter() - t_load
            _run_prompts(runner, prompts, settings, label=job.label, run=run, judge=judge)
            answered, failures = run.answered, run.failures
        if not answered:
            first = describe_failure(failures[0]) if failures else "?"
            raise MAGIException(
                f"No prompt of {settings.prompts} could be answered with profile "
                f"'{config.profile.name}'. First error: {first}",
                status_code=503,
            )
    except BaseException as exc:
        answered, failures = run.answered, run.failures
        data = {
            **base,
            "status": STATUS_FAILED,
            "error": str(exc).strip() or type(exc).__name__,
            "error_type": type(exc).__name__,
            **_figures(run, settings, pool, before, t0, load_s),
        }
        if isinstance(exc, Exception):
            write_results(job.output_dir, run.rows)
            write_metrics(job.output_dir, data)
        raise
    write_results(job.output_dir, run.rows)
    data = {
        **base,
        "status": STATUS_PARTIAL if failures else STATUS_OK,
        **_figures(run, settings, pool, before, t0, load_s),
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
    run: _BenchRun,
    settings: BenchTaskConfig,
    pool: ModelPool,
    before: Any,
    t0: float,
    load_s: float,
) -> dict[str, Any]:
    prompts = [p for p, _ in run.answered]
    results = [r for _, r in run.answered]
    figures = result_figures(results, prompts, settings.strong_tier, run.failures, grades=run.grades)
    return {
        **figures,
        "results_file": RESULTS_FILE,
        "grade_s": run.grade_s,
        "pool": pool_delta(before, pool.stats),
        "memory": memory_mb(),
        "load_s": load_s,
        "wall_s": time.perf_counter() - t0,
    }


@dataclasses.dataclass
class _BenchRun:
    """What a bench has so far, kept when it fails midway: the answered prompts and
    their grades, the failed prompts' records, and one results row per prompt."""

    answered: list[tuple[Prompt, RunResult]] = dataclasses.field(default_factory=list)
    grades: list[Grade | None] = dataclasses.field(default_factory=list)
    failures: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    grade_s: float = 0.0


def _run_prompts(
    runner: Any,
    prompts: list[Prompt],
    settings: BenchTaskConfig,
    *,
    label: str,
    run: _BenchRun,
    judge: JudgeAsk | None = None,
) -> None:
    """Answer and grade every prompt with a progress bar, into ``run``; an
    unanswerable prompt becomes a :func:`~magi.sweeps.metrics.prompt_failure` record
    (with each model's cause). Grading is not part of an answer's timings."""
    from tqdm.auto import tqdm

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
                run.failures.append(failure)
                run.rows.append(failure_row(item, failure))
                logger.warning("%s: prompt failed: %s", label, describe_failure(failure))
                bar.update()
                continue
            t_grade = time.perf_counter()
            grade = grade_answer(item, result.text, judge=judge)
            grade_s = time.perf_counter() - t_grade
            run.grade_s += grade_s
            run.answered.append((item, result))
            run.grades.append(grade)
            run.rows.append(result_row(item, result, grade, grade_s=grade_s))
            if grade is not None and grade.error and grade.value is None:
                logger.warning("%s: %s: no %s grade: %s", label, item.id, grade.grader, grade.error)
            route = result.routed_tier
            if result.tier != route:  # a fallback: show who answered too
                route += f"->{result.tier}"
            bar.set_postfix_str(f"{route}/{result.model_id[:24]}")
            bar.update()


def result_row(
    item: Prompt, result: RunResult, grade: Grade | None, *, grade_s: float = 0.0
) -> dict[str, Any]:
    """The :data:`RESULTS_FILE` line of an answered prompt (``docs/SWEEPS.md`` lists the fields)."""
    return {
        "id": item.id,
        "label": item.label,
        "prompt": item.prompt,
        "tier": result.routed_tier,
        "answer_tier": result.tier,
        "model_id": result.model_id,
        "models": [s.model_id for s in result.stages],
        "two_stage": result.two_stage,
        "score": result.score,
        "answer": result.text,
        "expected": list(item.expected) or (item.reference if item.reference else None),
        **_grade_fields(item, grade),
        "prompt_tokens": sum(s.prompt_tokens for s in result.stages),
        "completion_tokens": result.completion_tokens,
        "finish_reason": result.finish_reason,
        "ttft_s": result.ttft_s,
        "total_s": result.total_s,
        "grade_s": grade_s,
        "error": None,
    }


def failure_row(item: Prompt, failure: dict[str, Any]) -> dict[str, Any]:
    """The :data:`RESULTS_FILE` line of a prompt no model answered: no answer, grade 0
    when the prompt is graded (a failed prompt is a miss), and the cause."""
    grader = item.grader_name
    grade = Grade(0.0, grader, "no model answered") if grader else None
    return {
        "id": item.id,
        "label": item.label,
        "prompt": item.prompt,
        "tier": failure.get("routed_tier"),
        "answer_tier": None,
        "model_id": None,
        "models": sorted(failure.get("causes") or {}),
        "two_stage": None,
        "score": None,
        "answer": None,
        "expected": list(item.expected) or (item.reference if item.reference else None),
        **_grade_fields(item, grade),
        "prompt_tokens": None,
        "completion_tokens": 0,
        "finish_reason": None,
        "ttft_s": None,
        "total_s": failure.get("elapsed_s"),
        "grade_s": 0.0,
        "error": failure_cause(failure),
        "error_type": failure.get("error_type"),
    }


def _grade_fields(item: Prompt, grade: Grade | None) -> dict[str, Any]:
    if grade is None:
        return {"grade": None, "grader": None, "reason": "", "grade_error": None}
    fields = grade.as_dict()
    if grade.grader == "judge":
        fields["judge"] = item.judge
    return fields


def write_results(folder: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``folder/results.jsonl`` atomically: one JSON object per prompt, in order."""
    path = Path(folder) / RESULTS_FILE
    text = "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
    atomic_write_text(path, text)
    return path


def read_results(folder: Path) -> list[dict[str, Any]]:
    """The rows of ``folder/results.jsonl`` (empty if there is none)."""
    path = Path(folder) / RESULTS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def default_judge(runner: Any, settings: BenchTaskConfig) -> str | None:
    """The judge of a ``judge`` prompt that names none: the first model of the bench's
    strong tier (``task.strong_tier``), else of the profile's last tier."""
    members = runner.tier_members.get(settings.strong_tier) or next(
        (m for m in reversed(list(runner.tier_members.values())) if m), []
    )
    return members[0] if members else None


def prepare_judges(
    runner: Any, prompts: list[Prompt], settings: BenchTaskConfig
) -> tuple[list[Prompt], JudgeAsk | None]:
    """Give every ``judge`` prompt its judge model and make sure each is runnable
    (a registry model outside the profile is added to the runner's pool), before any
    prompt runs; then the function that asks a judge.

    Raises:
        PromptSetError: a judge model is not in the registry (did-you-mean), or there
            is no model to judge with (422).
    """
    judged = [p for p in prompts if p.grader_name == "judge"]
    if not judged:
        return prompts, None
    fallback = default_judge(runner, settings)
    if fallback is None and any(p.judge is None for p in judged):
        raise PromptSetError(
            f"{settings.prompts}: 'judge' prompts name no judge model and the profile has none"
        )
    prompts = [
        dataclasses.replace(p, judge=p.judge or fallback) if p.grader_name == "judge" else p for p in prompts
    ]
    registry = None
    for model_id in sorted({p.judge for p in prompts if p.grader_name == "judge" and p.judge}):
        if model_id in runner.pool.model_ids:
            continue
        from magi.runtime.resolve import load_registry, model_spec

        registry = registry if registry is not None else load_registry(runner.config)
        try:
            entry = registry.get(model_id)
        except MAGIException as exc:
            line = next(p.line for p in prompts if p.grader_name == "judge" and p.judge == model_id)
            where = f"{settings.prompts}:{line}" if line else str(settings.prompts)
            raise PromptSetError(
                f"{where}: judge model '{model_id}' (field 'judge'): {exc}",
                details={"path": str(settings.prompts), "line": line, "field": "judge", "model": model_id},
            ) from None
        runner.pool.register(model_spec(entry, runner.config.runtime))
    return prompts, judge_asker(runner.pool)


def judge_asker(pool: ModelPool) -> JudgeAsk:
    """Ask a model of ``pool`` for a judgement with its own sampling settings."""
    from magi.runtime.backend import generate, stage_settings

    def ask(model_id: str, text: str) -> str:
        spec = pool.spec(model_id)
        with pool.lease(model_id) as backend:
            return generate(backend, text, stage_settings(spec.sampling)).text

    return ask


def _routed_tier(runner: Any, prompt: str) -> str | None:
    """The tier the router sends ``prompt`` to (scoring only: no balancer turn is used),
    for a failed prompt whose error does not say; ``None`` if scoring fails too."""
    try:
        return str(runner.router.tier_for(runner.router.scorer.score(prompt).score))
    except Exception:  # noqa: BLE001 - a record of a failure must not fail
        return None


def headline(metrics: dict[str, Any]) -> str:
    """One line for the console: prompts (and failed ones), the mean grade when the
    set is graded, p50 latency, strong-tier share (of all prompts), loads."""
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
    mean_grade = (metrics.get("grades") or {}).get("mean_grade")
    return prefix + (
        f"{metrics['answered']} prompts, "
        + (f"mean grade {mean_grade:.2f}, " if mean_grade is not None else "")
        + f"latency p50 {lat['p50']:.2f} s / p95 {lat['p95']:.2f} s, "
        f"{metrics['tokens']['per_s'] or 0:.1f} tok/s, "
        + (f"{share:.0%} {metrics['strong_tier']}, " if share is not None else "")
        + f"{metrics['pool']['loads']} model load(s)"
    )
