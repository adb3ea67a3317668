"""Benchmark figures of one job, and the ``metrics.json`` file that carries them.

A job's ``metrics.json`` is the one contract between a bench job and the sweep
summary: whatever launcher ran the job (in-process, joblib workers, SLURM, Ray),
the summary only reads these files. A failed job writes one too, with
``status: failed`` and the error, so it shows up as a failed row.
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
STATUS_FAILED = "failed"


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


def result_figures(results: Sequence[Any], prompts: Sequence[Any], strong_tier: str) -> dict[str, Any]:
    """The routing, latency, throughput and quality figures of answered prompts.

    ``results`` are :class:`~magi.runtime.trace.RunResult` objects and ``prompts``
    the matching :class:`~magi.sweeps.prompts.Prompt` objects (same order).
    """
    n = len(results)
    tiers = mix([r.routed_tier for r in results])
    tokens = sum(r.completion_tokens for r in results)
    busy = sum(r.total_s for r in results)
    hits = [p.hit(r.text) for p, r in zip(prompts, results, strict=True)]
    checked = [h for h in hits if h is not None]
    fallbacks = [f for r in results for f in r.fallbacks]
    return {
        "answered": n,
        "tier_mix": tiers,
        "tier_share": {t: c / n for t, c in tiers.items()} if n else {},
        "strong_tier": strong_tier,
        "strong_share": (tiers.get(strong_tier, 0) / n) if n else None,
        "two_stage_share": (sum(1 for r in results if r.two_stage) / n) if n else None,
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
            "checked": len(checked),
            "hits": sum(checked),
            "hit_rate": sum(checked) / len(checked) if checked else None,
        },
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
