"""Benchmark figures of one job, and the ``metrics.json`` file that carries them.

A job's ``metrics.json`` is the one contract between a bench job and the sweep
summary: whatever launcher ran the job (in-process, joblib workers, SLURM, Ray),
the summary only reads these files. A failed job writes one too, with
``status: failed`` and the error, so it shows up as a failed row.

A job whose prompts partly failed is ``status: partial``, never plain ``ok``: every
rate is over *all* its prompts (a failed prompt is a miss and has no tier), the
``error_share`` says how many failed, and ``errors.prompts`` keeps each failure's
cause, down to each model's own error.
"""

from __future__ import annotations

import json
import math
import resource
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from magi.fileio import atomic_write_text

METRICS_FILE = "metrics.json"
STATUS_OK = "ok"
STATUS_PARTIAL = "partial"
"""Some prompts of the job were answered, some failed (see ``errors``)."""
STATUS_FAILED = "failed"
#: Longest prompt text kept in a failure record (bench prompts are short; a prompt
#: that failed for its length need not be copied whole).
PROMPT_TEXT_LIMIT = 1000


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation (numpy's default);
    ``None`` for no values.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
        2.5
    """
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p95, mean and max of ``values`` (``None`` each when empty)."""
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "mean": sum(values) / len(values) if values else None,
        "max": max(values) if values else None,
    }


def memory_mb() -> dict[str, float | None]:
    """Resident memory now and the process's peak so far, in MB.

    The peak comes from ``getrusage`` (the kernel's high-water mark, so it covers
    model loads between samples); in a process that runs several sweep jobs it is
    the peak of all jobs so far. psutil (the ``bench`` extra) adds the current RSS.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes vs KiB
    rss_mb: float | None = None
    try:
        import psutil

        rss_mb = psutil.Process().memory_info().rss / (1024 * 1024)
    except ImportError:  # pragma: no cover - psutil is in the bench and dev extras
        pass
    return {"rss_mb": rss_mb, "peak_rss_mb": max(peak_mb, rss_mb or 0.0)}


def mix(names: Sequence[str]) -> dict[str, int]:
    """Counts of each name, most frequent first (ties by name)."""
    counts = Counter(names)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def stage_figures(results: Sequence[Any]) -> dict[str, dict[str, float | int | None]]:
    """Per stage role (``answer``, ``draft``, ``refine``): runs, times and tokens.

    Two-stage profiles spend their time in two places; comparing the draft's and
    the refine's share is what tells whether drafting pays off.
    """
    by_role: dict[str, list[Any]] = {}
    for result in results:
        for stage in result.stages:
            by_role.setdefault(stage.stage, []).append(stage)
    out: dict[str, dict[str, float | int | None]] = {}
    for role, stages in sorted(by_role.items()):
        times = [s.total_s for s in stages]
        tokens = sum(s.completion_tokens for s in stages)
        total = sum(times)
        out[role] = {
            "count": len(stages),
            "total_s": total,
            "p50_s": percentile(times, 50),
            "p95_s": percentile(times, 95),
            "ttft_p50_s": percentile([s.ttft_s for s in stages], 50),
            "tokens": tokens,
            "tokens_per_s": tokens / total if total > 0 else None,
        }
    return out


def pool_delta(before: Any, after: Any) -> dict[str, Any]:
    """Model loads, cache hits and evictions between two pool-stat snapshots."""
    by_model = {
        m: n - before.loads_by_model.get(m, 0)
        for m, n in after.loads_by_model.items()
        if n - before.loads_by_model.get(m, 0)
    }
    return {
        "loads": after.loads - before.loads,
        "loads_by_model": by_model,
        "hits": after.hits - before.hits,
        "evictions": after.evictions - before.evictions,
    }


def result_figures(
    results: Sequence[Any],
    prompts: Sequence[Any],
    strong_tier: str,
    failures: Sequence[Mapping[str, Any]] = (),
    *,
    grades: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """The routing, latency, throughput and quality figures of a bench's prompts.

    ``grades`` are the answered prompts' :class:`~magi.sweeps.graders.Grade` objects
    (same order; ``None`` for a prompt without a grader): ``grades.mean_grade``, the
    quality figure beside ``quality.hit_rate``, is their mean over every graded
    prompt, a failed prompt with a grader counting 0 and a grade that could not be
    given (``value`` ``None``, e.g. an unparseable judgement) left out and counted in
    ``grades.grade_errors`` (see :func:`grade_figures`).

    ``results`` are the answered prompts' :class:`~magi.runtime.trace.RunResult`
    objects and ``prompts`` the matching :class:`~magi.sweeps.prompts.Prompt` objects
    (same order); ``failures`` are the :func:`prompt_failure` records of the prompts
    no model answered. Shares and the hit rate are over all prompts, answered or not:
    a variant that fails more must not look cheaper or better. Latency and tokens
    are of the answered prompts (a failed one has no answer to time).

    ``tier_mix`` counts the tier each answered prompt was *routed* to;
    ``answer_tier_mix`` the tier of the model that answered, which differs after a
    fallback (``rerouted`` lists those prompts).
    """
    n = len(results)
    total = n + len(failures)
    tiers = mix([r.routed_tier for r in results])
    tokens = sum(r.completion_tokens for r in results)
    busy = sum(r.total_s for r in results)
    hits = [p.hit(r.text) for p, r in zip(prompts, results, strict=True)]
    checked = [h for h in hits if h is not None]
    failed_checked = sum(1 for f in failures if f.get("expected"))
    fallbacks = [f for r in results for f in r.fallbacks]
    moved = [(p, r) for p, r in zip(prompts, results, strict=True) if r.tier != r.routed_tier]
    n_checked = len(checked) + failed_checked
    return {
        "answered": n,
        "failed": len(failures),
        "error_share": len(failures) / total if total else None,
        "tier_mix": tiers,
        "answer_tier_mix": mix([r.tier for r in results]),
        "tier_share": {t: c / total for t, c in tiers.items()} if total else {},
        "strong_tier": strong_tier,
        "strong_share": (tiers.get(strong_tier, 0) / total) if total else None,
        "two_stage_share": (sum(1 for r in results if r.two_stage) / total) if total else None,
        "rerouted": {
            "count": len(moved),
            "by_route": mix([f"{r.routed_tier}->{r.tier}" for _, r in moved]),
            "prompts": [
                {"id": p.id, "routed_tier": r.routed_tier, "tier": r.tier, "model_id": r.model_id}
                for p, r in moved
            ],
        },
        "model_mix": mix([s.model_id for r in results for s in r.stages]),
        "final_model_mix": mix([r.model_id for r in results]),
        "score": spread([r.score for r in results]),
        "latency_s": spread([r.total_s for r in results]),
        "ttft_s": spread([r.ttft_s for r in results]),
        "tokens": {
            "completion": tokens,
            "per_prompt": tokens / n if n else None,
            "per_s": tokens / busy if busy > 0 else None,
        },
        "stages": stage_figures(results),
        "fallbacks": {
            "count": len(fallbacks),
            "by_model": mix([f.model_id for f in fallbacks]),
            "first": [f"{f.stage} {f.model_id}: {f.error}" for f in fallbacks[:5]],
        },
        "quality": {
            "checked": n_checked,
            "hits": sum(checked),
            "hit_rate": sum(checked) / n_checked if n_checked else None,
            "failed": failed_checked,
        },
        "grades": grade_figures(grades or [], failures),
        "errors": error_figures(failures, total),
    }


def grade_figures(grades: Sequence[Any], failures: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The mean grade (``mean_grade``, in [0, 1]) of a bench's answers and its parts:
    ``graded`` (grades given, failed prompts with a grader included as 0),
    ``grade_errors`` (answers no grade could be given to), and per grader its count
    and mean (``by_grader``). ``failures`` are :func:`prompt_failure` records; those
    whose prompt has a grader (``grader``) count 0.

    Example:
        >>> from magi.sweeps.graders import Grade
        >>> grades = [Grade(1.0, "number"), Grade(0.5, "judge"), Grade(None, "judge", error="?")]
        >>> grade_figures(grades)["mean_grade"], grade_figures(grades)["grade_errors"]
        (0.75, 1)
    """
    values: dict[str, list[float]] = {}
    errors = 0
    for grade in grades:
        if grade is None:
            continue
        if grade.value is None:
            errors += 1
            continue
        values.setdefault(grade.grader, []).append(float(grade.value))
    for failure in failures:
        if failure.get("grader"):
            values.setdefault(str(failure["grader"]), []).append(0.0)
    every = [v for vs in values.values() for v in vs]
    return {
        "mean_grade": sum(every) / len(every) if every else None,
        "graded": len(every),
        "grade_errors": errors,
        "by_grader": {
            name: {"count": len(vs), "mean": sum(vs) / len(vs)} for name, vs in sorted(values.items())
        },
    }


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def prompt_failure(
    prompt: Any, exc: BaseException, *, routed_tier: str | None = None, elapsed_s: float | None = None
) -> dict[str, Any]:
    """The ``errors.prompts`` record of a prompt no model answered.

    Keeps what tells the cause apart: the error class and status code (503 every
    model failed or was unavailable, 422 the prompt cannot fit, ...), the headline,
    the full message (it names each model's circuit state) and ``causes``, each
    model's own error in this request (``NoModelAnsweredError.details["errors"]``),
    which the headline "No model could answer..." alone would hide.
    """
    details = getattr(exc, "details", None) or {}
    causes = details.get("errors") if isinstance(details, Mapping) else None
    message = str(exc).strip() or type(exc).__name__
    text = prompt.prompt
    if len(text) > PROMPT_TEXT_LIMIT:
        text = text[: PROMPT_TEXT_LIMIT - 1] + "\u2026"
    return {
        "id": prompt.id,
        "prompt": text,
        "expected": bool(prompt.expected),
        "grader": getattr(prompt, "grader_name", None),
        "routed_tier": routed_tier,
        "error_type": type(exc).__name__,
        "status_code": getattr(exc, "status_code", None),
        "error": _first_line(message),
        "causes": {str(m): str(e) for m, e in causes.items()} if isinstance(causes, Mapping) else {},
        "message": message,
        "elapsed_s": elapsed_s,
    }


def failure_cause(failure: Mapping[str, Any]) -> str:
    """Why a prompt failed, on one line: each model's own error (the headline
    "No model could answer..." when no model was tried, e.g. all circuits open).

    Example:
        >>> failure_cause({"error": "No model could answer the answer stage",
        ...                "causes": {"m": "GenerationTimeout: nothing in 6.0 s"}})
        'm: GenerationTimeout: nothing in 6.0 s'
    """
    causes = failure.get("causes") or {}
    if causes:
        return "; ".join(f"{m}: {_first_line(str(c))}" for m, c in causes.items())
    return str(failure.get("error") or failure.get("error_type") or "?")


def describe_failure(failure: Mapping[str, Any]) -> str:
    """One line for a failed prompt: its id and :func:`failure_cause`.

    Example:
        >>> describe_failure({"id": "arith", "error": "No model could answer the answer stage",
        ...                   "causes": {"m": "GenerationTimeout: nothing in 6.0 s"}})
        'arith: m: GenerationTimeout: nothing in 6.0 s'
    """
    return f"{failure.get('id', '?')}: {failure_cause(failure)}"


def error_figures(failures: Sequence[Mapping[str, Any]], total: int) -> dict[str, Any]:
    """``errors`` of ``metrics.json``: count, share of all prompts, count per error
    class, the first five as lines (with their causes), and every failure's record."""
    return {
        "count": len(failures),
        "share": len(failures) / total if total else None,
        "by_type": mix([str(f.get("error_type")) for f in failures]),
        "first": [describe_failure(f) for f in failures[:5]],
        "prompts": list(failures),
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_metrics(folder: Path, data: Mapping[str, Any]) -> Path:
    """Write ``folder/metrics.json`` atomically (a summary never reads half a file)."""
    path = Path(folder) / METRICS_FILE
    atomic_write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")
    return path


def read_metrics(folder: Path) -> dict[str, Any] | None:
    """``folder/metrics.json`` as a dict; ``None`` if absent. An unreadable file reads
    as a failed job whose error says so."""
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return {"status": STATUS_FAILED, "error": f"{path}: unreadable metrics ({exc})"}
    return data if isinstance(data, dict) else {"status": STATUS_FAILED, "error": f"{path}: not an object"}
