"""Answer figures: per model latency percentiles and speed, per tier request counts.

One home for the figures a status page shows beside the circuit breakers: a
:class:`~magi.runtime.runner.Runner` keeps one (:attr:`Runner.figures`, every answer
it finished) and ``magi serve`` keeps one across all its runners (``/health/models``);
:class:`magi.widgets.HealthView` reads either.

Per model, over its last :data:`LATENCY_WINDOW` stages: the count of stages it
answered, p50 and p95 latency (waiting for the model included: what a caller felt) and
tokens per second (completion tokens over the seconds spent generating them, prompt
processing included, waiting excluded). Per profile and tier: answered requests by the
tier that answered (after any fallback), the routing mix.

Example:
    >>> from magi.runtime.figures import percentile
    >>> percentile([0.1, 0.2, 0.3, 0.4], 0.5), percentile([0.1, 0.2, 0.3, 0.4], 0.95)
    (0.25, 0.4)
"""

from __future__ import annotations

import math
import statistics
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from magi.runtime.trace import RunResult

#: Stages kept per model for the percentiles and the speed.
LATENCY_WINDOW = 1000


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0-1) of ``values``: the median for 0.5, else the nearest rank
    (p95 of fewer than 20 values is the largest); None without values."""
    if not values:
        return None
    if q == 0.5:
        return statistics.median(values)
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class _Stage:
    latency_s: float  # waiting for the model + the stage
    seconds: float  # the stage alone
    tokens: int


class AnswerFigures:
    """Figures of finished answers, thread-safe (:meth:`observe` each :class:`RunResult`)."""

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._stages: dict[str, deque[_Stage]] = {}
        self._answered: dict[str, int] = {}
        self._tiers: dict[str, dict[str, int]] = {}

    def observe(self, result: RunResult) -> None:
        """Count one finished answer: each of its stages on its model, its tier."""
        with self._lock:
            for stage in result.stages:
                window = self._stages.setdefault(stage.model_id, deque(maxlen=self.window))
                window.append(_Stage(stage.wait_s + stage.total_s, stage.total_s, stage.completion_tokens))
                self._answered[stage.model_id] = self._answered.get(stage.model_id, 0) + 1
            tiers = self._tiers.setdefault(result.profile, {})
            tiers[result.tier] = tiers.get(result.tier, 0) + 1

    def model(self, model_id: str) -> dict[str, Any]:
        """``answered`` (stages run on ``model_id``), ``p50_latency_s``, ``p95_latency_s``
        and ``tokens_per_s`` (None before its first stage)."""
        with self._lock:
            window = list(self._stages.get(model_id, ()))
            answered = self._answered.get(model_id, 0)
        latencies = [s.latency_s for s in window]
        seconds = sum(s.seconds for s in window)
        return {
            "answered": answered,
            "p50_latency_s": percentile(latencies, 0.5),
            "p95_latency_s": percentile(latencies, 0.95),
            "tokens_per_s": sum(s.tokens for s in window) / seconds if seconds > 0 else None,
        }

    def routing(self) -> dict[str, dict[str, int]]:
        """Answered requests per profile (its display name) and the tier that answered."""
        with self._lock:
            return {profile: dict(tiers) for profile, tiers in self._tiers.items()}


def model_health(status: Mapping[str, Any], figures: Mapping[str, Any]) -> dict[str, Any]:
    """One model's entry of a status page (``/health/models``, :class:`~magi.widgets.HealthView`):
    a :meth:`Runner.status` entry (the circuit breaker's snapshot, ``loaded``, ``tiers``)
    with the model's :meth:`AnswerFigures.model`. ``requests`` counts circuit verdicts
    (successes and failures)."""
    failures = int(status.get("total_failures", 0))
    return {
        "loaded": bool(status.get("loaded", False)),
        "circuit": status.get("state"),
        "tiers": list(status.get("tiers", [])),
        "last_error": status.get("last_error"),
        "consecutive_failures": int(status.get("consecutive_failures", 0)),
        "retry_in_s": float(status.get("retry_in", 0.0)),
        "requests": int(status.get("total_successes", 0)) + failures,
        "failures": failures,
        "in_flight": int(status.get("in_flight", 0)),
        **figures,
    }
