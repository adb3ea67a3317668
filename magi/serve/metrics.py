"""``GET /metrics``: the server's figures in Prometheus' text format (prometheus-client).

Counted per answered request (labels are profile, tier and model names, never a key
or a prompt):

* ``magi_requests_total{profile, tier, model, outcome}``: outcome ``ok``, ``ended_early``
  (time budget, stall, repetition), ``cancelled`` (the client went away), or for a
  request that got no answer, refused before its answer started or failed after, by its
  status: ``invalid`` (400, 422), ``unauthorized`` (401), ``not_found`` (404),
  ``too_large`` (413), ``queue_full`` (429), ``client_error`` (another 4xx),
  ``unavailable`` (503), ``error``; tier and model are ``none`` then, and profile too
  when the request named none that can be served (or was refused before it was read);
* ``magi_request_seconds``, ``magi_time_to_first_token_seconds`` and
  ``magi_completion_tokens`` histograms ``{profile, tier}``; ``magi_tokens_total{profile,
  model, kind}`` (prompt and completion tokens);
* ``magi_fallbacks_total{profile, model}``: failed attempts another model took over;
* ``magi_requests_in_flight`` and ``magi_queue_limit``;

and read from the runners when scraped: ``magi_circuit_state{model, state}`` (1 for the
state a model's circuit is in), ``magi_model_loaded{model}``, and the pool's
``magi_model_loads_total{model}`` and ``magi_model_evictions_total``.

Each :class:`ServeMetrics` has its own registry, so servers made in one process (tests)
do not share counters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from magi.routing.health import CircuitState
from magi.runtime.backend import EARLY_FINISH_REASONS
from magi.runtime.figures import AnswerFigures
from magi.runtime.trace import RunResult

#: Content type of :meth:`ServeMetrics.render`.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TOKEN_BUCKETS = (1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def outcome_of(result: RunResult) -> str:
    """``ok``, ``cancelled`` or ``ended_early`` for an answered request."""
    if result.finish_reason == "cancelled":
        return "cancelled"
    return "ended_early" if result.finish_reason in EARLY_FINISH_REASONS else "ok"


#: The outcome label of a request that got no answer, by its HTTP status.
ERROR_OUTCOMES: dict[int, str] = {
    400: "invalid",
    401: "unauthorized",
    404: "not_found",
    413: "too_large",
    422: "invalid",
    429: "queue_full",
    503: "unavailable",
}


def error_outcome(status: int) -> str:
    """The outcome label of a request that got no answer, by its HTTP status
    (:data:`ERROR_OUTCOMES`, else ``client_error`` for a 4xx, ``error``)."""
    if status in ERROR_OUTCOMES:
        return ERROR_OUTCOMES[status]
    return "client_error" if 400 <= status < 500 else "error"


class _RunnerCollector(Collector):
    """Circuit states, loaded models and pool counters, read at scrape time."""

    def __init__(
        self, status: Callable[[], dict[str, dict[str, Any]]], pool_stats: Callable[[], Any]
    ) -> None:
        self._status = status
        self._pool_stats = pool_stats

    def collect(self) -> Iterator[Any]:
        circuit = GaugeMetricFamily(
            "magi_circuit_state",
            "1 for the state each model's circuit breaker is in.",
            labels=["model", "state"],
        )
        loaded = GaugeMetricFamily("magi_model_loaded", "1 while the model is loaded.", labels=["model"])
        for model_id, status in self._status().items():
            for state in CircuitState:
                circuit.add_metric(
                    [model_id, state.value], 1.0 if status.get("state") == state.value else 0.0
                )
            loaded.add_metric([model_id], 1.0 if status.get("loaded") else 0.0)
        yield circuit
        yield loaded
        stats = self._pool_stats()
        loads = CounterMetricFamily("magi_model_loads", "Model loads by the pool.", labels=["model"])
        for model_id, count in sorted(stats.loads_by_model.items()):
            loads.add_metric([model_id], float(count))
        yield loads
        yield CounterMetricFamily(
            "magi_model_evictions", "Models the pool evicted.", value=float(stats.evictions)
        )


class ServeMetrics:
    """The server's Prometheus metrics and the per-model figures of ``/health/models``."""

    def __init__(
        self,
        status: Callable[[], dict[str, dict[str, Any]]],
        pool_stats: Callable[[], Any],
        *,
        queue_limit: int,
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "magi_requests",
            "Requests by profile, tier, model and outcome.",
            ["profile", "tier", "model", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "magi_request_seconds",
            "Time to the whole answer.",
            ["profile", "tier"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "magi_time_to_first_token_seconds",
            "Time to the first token the client saw.",
            ["profile", "tier"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.completion_tokens = Histogram(
            "magi_completion_tokens",
            "Tokens generated per request (all stages).",
            ["profile", "tier"],
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "magi_tokens", "Prompt and completion tokens per model.", ["profile", "model", "kind"], registry=r
        )
        self.fallbacks = Counter(
            "magi_fallbacks", "Failed attempts another model took over.", ["profile", "model"], registry=r
        )
        self.in_flight = Gauge(
            "magi_requests_in_flight", "Requests admitted and not yet answered.", registry=r
        )
        Gauge("magi_queue_limit", "Requests admitted at once (task.max_queue).", registry=r).set(queue_limit)
        r.register(_RunnerCollector(status, pool_stats))
        self._lock = threading.Lock()
        self.figures = AnswerFigures()  # /health/models' latency, speed and routing mix

    def observe(self, result: RunResult) -> None:
        """Count one answered request (its outcome from its finish reason)."""
        profile, tier = result.profile, result.tier
        self.requests.labels(profile, tier, result.model_id, outcome_of(result)).inc()
        self.latency.labels(profile, tier).observe(result.total_s)
        self.ttft.labels(profile, tier).observe(result.ttft_s)
        self.completion_tokens.labels(profile, tier).observe(result.completion_tokens)
        for fallback in result.fallbacks:
            self.fallbacks.labels(profile, fallback.model_id).inc()
        with self._lock:
            for stage in result.stages:
                self.tokens.labels(profile, stage.model_id, "prompt").inc(stage.prompt_tokens)
                self.tokens.labels(profile, stage.model_id, "completion").inc(stage.completion_tokens)
        self.figures.observe(result)

    def observe_error(self, profile: str, status: int) -> None:
        """Count a request that got no answer (its HTTP status gives the outcome)."""
        self.requests.labels(profile, "none", "none", error_outcome(status)).inc()

    def model_figures(self, model_id: str) -> dict[str, Any]:
        """Stages this server ran on ``model_id``, their p50 and p95 latency (wait included,
        seconds) and tokens per second (:meth:`AnswerFigures.model`)."""
        return self.figures.model(model_id)

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)
