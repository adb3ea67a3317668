"""Model health: a circuit breaker per model, in-flight counts, and a periodic prober.

A model that keeps failing (crashed load, out of memory, timeouts) should stop
receiving requests for a while instead of failing every one of them, and should be
tried again later without anyone restarting anything. That is the circuit breaker:

* **closed**: requests flow; consecutive failures are counted.
* **open**: after ``failure_threshold`` consecutive failures no request is let
  through until ``cooldown_seconds`` have passed.
* **half-open**: after the cooldown *one* trial request at a time is let through;
  its success closes the circuit, its failure opens it again for another cooldown.

:class:`HealthMonitor` keeps one breaker per model id, counts requests in flight
(the ``least_loaded`` balancer reads them), filters a tier's models down to the
healthy ones, and can probe every model in a background thread every
``interval`` seconds (``profile.load_balancing.health_check_interval``).

Example:
    >>> from magi.routing.health import HealthMonitor
    >>> now = [0.0]
    >>> health = HealthMonitor(["a", "b"], failure_threshold=2, cooldown_seconds=10, clock=lambda: now[0])
    >>> health.record_failure("a", "boom"); health.record_failure("a", "boom")
    >>> health.healthy(["a", "b"])
    ['b']
    >>> health.describe("a")
    "open (2 failures, last: 'boom', retry in 10.0s)"
    >>> now[0] = 10.0
    >>> health.healthy(["a", "b"])  # cooldown over: 'a' may take one trial request
    ['a', 'b']
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from magi.errors import MAGIException

if TYPE_CHECKING:
    from magi.config.app import MagiConfig

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Probe = Callable[[str], object]
"""A health probe: called with a model id; returning means healthy, raising means not."""


class CircuitState(StrEnum):
    """The three states of a circuit breaker (values are used in snapshots and JSON)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    @property
    def label(self) -> str:
        """Human-readable: ``closed``, ``open``, ``half-open``."""
        return self.value.replace("_", "-")


class CircuitBreaker:
    """Stops sending requests to a model after repeated failures, then retries it.

    Args:
        failure_threshold: Consecutive failures that open the circuit (>= 1).
        cooldown_seconds: How long an open circuit refuses requests before it lets
            one trial request through (>= 0).
        clock: Monotonic time source in seconds; inject a fake in tests.
        name: What the breaker protects (a model id), for log messages.

    All methods are thread-safe. Two ways to ask:

    * :meth:`available` only *looks* (used to filter candidates; reserves nothing);
    * :meth:`allow_request` *reserves*: in half-open state it hands out the single
      trial slot, so call it right before actually sending a request and always
      follow it with :meth:`record_success`, :meth:`record_failure` or
      :meth:`cancel`.
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        cooldown_seconds: float = 30.0,
        *,
        clock: Clock = time.monotonic,
        name: str = "",
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1 (got {failure_threshold})")
        if cooldown_seconds < 0:
            raise ValueError(f"cooldown_seconds must be >= 0 (got {cooldown_seconds})")
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = float(cooldown_seconds)
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._consecutive_failures = 0
        self._total_failures = 0
        self._total_successes = 0
        self._last_error: str | None = None
        self._opened_at: float | None = None
        self._trial_in_flight = False

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name or '?'}: {self.describe()})"

    # -- state ---------------------------------------------------------------------
    def _refresh(self, now: float) -> CircuitState:
        """Move open -> half-open once the cooldown is over (caller holds the lock)."""
        if (
            self._state is CircuitState.OPEN
            and self._opened_at is not None
            and now - self._opened_at >= self.cooldown_seconds
        ):
            self._state = CircuitState.HALF_OPEN
            self._trial_in_flight = False
        return self._state

    @property
    def state(self) -> CircuitState:
        """The current state (an open circuit reads half-open once its cooldown ends)."""
        with self._lock:
            return self._refresh(self._clock())

    def available(self) -> bool:
        """Would a request be let through now? Looks only; reserves no trial slot."""
        with self._lock:
            state = self._refresh(self._clock())
            if state is CircuitState.CLOSED:
                return True
            return state is CircuitState.HALF_OPEN and not self._trial_in_flight

    def allow_request(self) -> bool:
        """Let one request through, or refuse it. In half-open state this takes the
        single trial slot: further calls return False until the trial's outcome is
        recorded (or :meth:`cancel` gives the slot back)."""
        with self._lock:
            state = self._refresh(self._clock())
            if state is CircuitState.CLOSED:
                return True
            if state is CircuitState.HALF_OPEN and not self._trial_in_flight:
                self._trial_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        """A request (or probe) succeeded: the circuit closes and the failure streak ends."""
        with self._lock:
            self._state = CircuitState.CLOSED
            self._consecutive_failures = 0
            self._total_successes += 1
            self._opened_at = None
            self._trial_in_flight = False

    def record_failure(self, error: str | None = None) -> None:
        """A request (or probe) failed.

        A half-open circuit opens again at once; a closed one opens on reaching
        ``failure_threshold`` consecutive failures; an open one restarts its cooldown
        (the model is evidently still broken).
        """
        with self._lock:
            now = self._clock()
            state = self._refresh(now)
            self._consecutive_failures += 1
            self._total_failures += 1
            if error is not None:
                self._last_error = error
            self._trial_in_flight = False
            if state is not CircuitState.CLOSED or self._consecutive_failures >= self.failure_threshold:
                if state is not CircuitState.OPEN:
                    logger.warning(
                        "circuit of %s opened after %d consecutive failure(s); last error: %s",
                        self.name or "model",
                        self._consecutive_failures,
                        self._last_error,
                    )
                self._state = CircuitState.OPEN
                self._opened_at = now

    def cancel(self) -> None:
        """Give back a half-open trial slot without a verdict (the request was abandoned,
        e.g. interrupted, before it could succeed or fail)."""
        with self._lock:
            self._trial_in_flight = False

    def reset(self) -> None:
        """Forget everything: closed, no failures (e.g. after the model was reloaded)."""
        with self._lock:
            self._state = CircuitState.CLOSED
            self._consecutive_failures = 0
            self._last_error = None
            self._opened_at = None
            self._trial_in_flight = False

    # -- reporting -------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The breaker's state as plain data (for traces, status pages and errors).

        Keys: ``state`` (``closed``/``open``/``half_open``), ``consecutive_failures``,
        ``failure_threshold``, ``total_failures``, ``total_successes``, ``last_error``,
        ``opened_at`` (clock time, or None), ``retry_in`` (seconds until an open
        circuit allows a trial; 0 otherwise), ``trial_in_flight``.
        """
        with self._lock:
            now = self._clock()
            state = self._refresh(now)
            retry_in = 0.0
            if state is CircuitState.OPEN and self._opened_at is not None:
                retry_in = max(0.0, self._opened_at + self.cooldown_seconds - now)
            return {
                "state": state.value,
                "consecutive_failures": self._consecutive_failures,
                "failure_threshold": self.failure_threshold,
                "total_failures": self._total_failures,
                "total_successes": self._total_successes,
                "last_error": self._last_error,
                "opened_at": self._opened_at,
                "retry_in": retry_in,
                "trial_in_flight": self._trial_in_flight,
            }

    def describe(self) -> str:
        """One line, e.g. ``open (3 failures, last: 'boom', retry in 12.0s)``."""
        return describe_snapshot(self.snapshot())


def describe_snapshot(snapshot: Mapping[str, Any]) -> str:
    """Render a :meth:`CircuitBreaker.snapshot` as one line for messages and logs."""
    state = CircuitState(snapshot["state"])
    failures = int(snapshot.get("consecutive_failures") or 0)
    error = snapshot.get("last_error")
    facts: list[str] = []
    if failures:
        facts.append(f"{failures} failure{'s' if failures != 1 else ''}")
        if error:
            facts.append(f"last: {_short(error)!r}")
    if state is CircuitState.OPEN:
        facts.append(f"retry in {float(snapshot.get('retry_in') or 0.0):.1f}s")
    elif state is CircuitState.HALF_OPEN:
        facts.append(
            "trial request in flight" if snapshot.get("trial_in_flight") else "next request is a trial"
        )
    in_flight = snapshot.get("in_flight")
    if in_flight:
        facts.append(f"{in_flight} in flight")
    return state.label + (f" ({', '.join(facts)})" if facts else "")


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class NoHealthyModelError(MAGIException):
    """No model of the tiers tried can take the request right now (HTTP 503).

    The message names every model and its circuit state, so the user sees *why*
    (which model failed, with what error, and when it will be retried).

    Args:
        states: Model id -> breaker snapshot (as from :meth:`HealthMonitor.status`).
        tiers: The tiers that were tried, in order.
        headline: Replaces "No healthy model available", e.g. "Every model failed
            this request" when the models were tried but their circuits are not open yet.
    """

    status_code = 503

    def __init__(
        self,
        states: Mapping[str, Mapping[str, Any]],
        tiers: Sequence[str] = (),
        *,
        headline: str | None = None,
    ) -> None:
        self.states = {model_id: dict(snapshot) for model_id, snapshot in states.items()}
        self.tiers = list(tiers)
        where = f" in tier{'s' if len(self.tiers) != 1 else ''} {', '.join(self.tiers)}" if self.tiers else ""
        if self.states:
            lines = [f"  - {model_id}: {describe_snapshot(snap)}" for model_id, snap in self.states.items()]
            message = (
                f"{headline or 'No healthy model available'}{where}:\n"
                + "\n".join(lines)
                + "\nOpen circuits let a trial request through when their cooldown ends "
                "(runtime.cooldown_seconds); fix the errors above or retry later."
            )
        else:
            message = (
                f"No model is assigned{where}: check the profile's enabled_models and "
                "the tier each model belongs to (registry tier or profile.model_tiers)."
            )
        super().__init__(message, details={"models": self.states, "tiers": self.tiers})


class ModelUnavailableError(MAGIException):
    """A model's circuit refused a request (it opened, or another thread holds its
    half-open trial slot) between routing and sending. The caller tries the next model."""

    status_code = 503

    def __init__(self, model_id: str, state: str) -> None:
        self.model_id = model_id
        super().__init__(
            f"Model '{model_id}' is not accepting requests: {state}", details={"model": model_id}
        )


class HealthMonitor:
    """Health bookkeeping for a set of models: breakers, in-flight counts, probing.

    Args:
        model_ids: Models to watch from the start (others are added on first use).
        failure_threshold: Consecutive failures that open a model's circuit
            (``runtime.failure_threshold``).
        cooldown_seconds: Seconds an open circuit waits before a trial request
            (``runtime.cooldown_seconds``).
        clock: Monotonic time source, shared by all breakers; inject a fake in tests.
        probe: Optional health probe ``probe(model_id)``; returning means healthy,
            raising means unhealthy. Used by :meth:`probe_all` and the prober thread.
        interval: Seconds between probe rounds of the prober thread
            (``profile.load_balancing.health_check_interval``).
        skip_busy: Do not probe a model that has requests in flight: live traffic is
            already reporting its health, and a probe would queue behind it (a
            llama.cpp model runs one request at a time).

    Thread-safe throughout. Typical use by a runner::

        with health.attempt(model_id):      # reserves, counts in-flight, records outcome
            answer = call_model(model_id, prompt)
    """

    def __init__(
        self,
        model_ids: Iterable[str] = (),
        *,
        failure_threshold: int = 3,
        cooldown_seconds: float = 30.0,
        clock: Clock = time.monotonic,
        probe: Probe | None = None,
        interval: float = 30.0,
        skip_busy: bool = True,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds (got {interval})")
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self.probe = probe
        self.interval = float(interval)
        self.skip_busy = skip_busy
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._in_flight: dict[str, int] = {}
        self._last_probe: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.add(model_ids)

    @classmethod
    def from_config(
        cls,
        config: MagiConfig,
        model_ids: Iterable[str] | None = None,
        *,
        probe: Probe | None = None,
        clock: Clock = time.monotonic,
    ) -> HealthMonitor:
        """A monitor set up from ``runtime.failure_threshold``/``cooldown_seconds`` and
        ``profile.load_balancing.health_check_interval``; watches the profile's
        enabled models unless ``model_ids`` is given."""
        return cls(
            config.profile.enabled_models if model_ids is None else model_ids,
            failure_threshold=config.runtime.failure_threshold,
            cooldown_seconds=config.runtime.cooldown_seconds,
            clock=clock,
            probe=probe,
            interval=config.profile.load_balancing.health_check_interval,
        )

    # -- models and breakers -------------------------------------------------------------
    def add(self, model_ids: Iterable[str]) -> None:
        """Start watching ``model_ids`` (already watched ones are left as they are)."""
        with self._lock:
            for model_id in model_ids:
                if model_id not in self._breakers:
                    self._breakers[model_id] = CircuitBreaker(
                        self.failure_threshold, self.cooldown_seconds, clock=self._clock, name=model_id
                    )
                    self._in_flight.setdefault(model_id, 0)

    @property
    def model_ids(self) -> list[str]:
        """Watched models, in the order they were added."""
        with self._lock:
            return list(self._breakers)

    def breaker(self, model_id: str) -> CircuitBreaker:
        """The breaker of ``model_id`` (created, closed, on first use)."""
        breaker = self._breakers.get(model_id)
        if breaker is None:
            self.add([model_id])
            breaker = self._breakers[model_id]
        return breaker

    # -- routing queries -------------------------------------------------------------
    def available(self, model_id: str) -> bool:
        """Would ``model_id``'s circuit let a request through now? (Reserves nothing.)"""
        return self.breaker(model_id).available()

    def healthy(self, candidates: Iterable[str]) -> list[str]:
        """The candidates whose circuit would let a request through, in their order."""
        return [model_id for model_id in candidates if self.breaker(model_id).available()]

    @property
    def in_flight(self) -> Mapping[str, int]:
        """Live, read-only view of requests in flight per model id (no copy: balancers
        read it on every pick)."""
        return MappingProxyType(self._in_flight)

    # -- request bookkeeping ------------------------------------------------------------
    @contextmanager
    def track(self, model_id: str) -> Iterator[None]:
        """Count a request as in flight on ``model_id`` for the duration of the block."""
        self.breaker(model_id)
        with self._lock:
            self._in_flight[model_id] = self._in_flight.get(model_id, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[model_id] -= 1

    def acquire(self, model_id: str) -> bool:
        """Ask ``model_id``'s circuit to let one request through (takes the half-open
        trial slot if that is the state). Follow with a ``record_*`` call or :meth:`cancel`."""
        return self.breaker(model_id).allow_request()

    def record_success(self, model_id: str) -> None:
        """A request to ``model_id`` succeeded."""
        self.breaker(model_id).record_success()

    def record_failure(self, model_id: str, error: str | BaseException | None = None) -> None:
        """A request to ``model_id`` failed; ``error`` is kept for status and messages."""
        if isinstance(error, BaseException):
            error = f"{type(error).__name__}: {error}"
        self.breaker(model_id).record_failure(error)

    def cancel(self, model_id: str) -> None:
        """Abandon an acquired request without a verdict (frees a half-open trial slot)."""
        self.breaker(model_id).cancel()

    @contextmanager
    def attempt(self, model_id: str) -> Iterator[None]:
        """Run one request on ``model_id`` with full bookkeeping.

        Acquires the circuit (raising :class:`ModelUnavailableError` if it refuses),
        counts the request in flight, and records success when the block exits
        normally or failure (with the exception's text) when it raises an
        ``Exception``, which is re-raised. ``KeyboardInterrupt`` and other
        non-``Exception`` exits only release the trial slot: they say nothing about
        the model.

        Errors that are not the model's fault (a prompt longer than the context,
        say) should be caught inside the block, or use :meth:`acquire`,
        :meth:`track` and the ``record_*`` calls directly.
        """
        breaker = self.breaker(model_id)
        if not breaker.allow_request():
            raise ModelUnavailableError(model_id, breaker.describe())
        try:
            with self.track(model_id):
                yield
        except Exception as exc:
            self.record_failure(model_id, exc)
            raise
        except BaseException:
            breaker.cancel()
            raise
        else:
            breaker.record_success()

    # -- status ----------------------------------------------------------------------
    def status(self) -> dict[str, dict[str, Any]]:
        """Model id -> breaker snapshot, plus ``in_flight`` and ``last_probe``
        (``{"at": clock time, "ok": bool, "error": str | None}`` or None)."""
        with self._lock:
            items = list(self._breakers.items())
            in_flight = dict(self._in_flight)
            probes = {k: dict(v) for k, v in self._last_probe.items()}
        result: dict[str, dict[str, Any]] = {}
        for model_id, breaker in items:
            snapshot = breaker.snapshot()
            snapshot["in_flight"] = in_flight.get(model_id, 0)
            snapshot["last_probe"] = probes.get(model_id)
            result[model_id] = snapshot
        return result

    def describe(self, model_id: str) -> str:
        """One line about ``model_id``'s circuit, e.g. ``open (3 failures, ...)``."""
        return self.breaker(model_id).describe()

    def no_healthy_error(
        self, model_ids: Iterable[str], tiers: Sequence[str] = (), *, headline: str | None = None
    ) -> NoHealthyModelError:
        """The error to raise when none of ``model_ids`` (the tiers' members) could answer."""
        wanted = list(dict.fromkeys(model_ids))
        status = self.status()
        for model_id in wanted:
            if model_id not in status:
                status[model_id] = self.breaker(model_id).snapshot()
        return NoHealthyModelError({m: status[m] for m in wanted}, tiers, headline=headline)

    # -- probing ---------------------------------------------------------------------------
    def probe_all(self) -> dict[str, bool]:
        """Probe every watched model once, now, recording each outcome.

        A probe that returns closes the model's circuit (the model answered, so it
        need not wait out a cooldown); one that raises counts as a failure. Models with
        requests in flight are skipped when ``skip_busy``. Returns model id -> ok for
        the models probed. Without a ``probe`` this does nothing.
        """
        return self._probe_round(None)

    def _probe_round(self, stop: threading.Event | None) -> dict[str, bool]:
        results: dict[str, bool] = {}
        probe = self.probe
        if probe is None:
            return results
        for model_id in self.model_ids:
            if stop is not None and stop.is_set():
                break
            if self.skip_busy and self._in_flight.get(model_id, 0) > 0:
                continue
            error: str | None = None
            try:
                probe(model_id)
            except Exception as exc:
                error = f"probe failed: {type(exc).__name__}: {exc}"
                self.record_failure(model_id, error)
            else:
                self.record_success(model_id)
            with self._lock:
                self._last_probe[model_id] = {"at": self._clock(), "ok": error is None, "error": error}
            results[model_id] = error is None
        return results

    def start(self) -> None:
        """Start the prober thread: a daemon that runs :meth:`probe_all` every
        ``interval`` seconds (first round after one interval). No-op if running, or
        when ``interval`` is infinite (no periodic probes).

        Raises:
            ValueError: no ``probe`` was given.
        """
        if self.probe is None:
            raise ValueError("HealthMonitor.start(): no probe function was given")
        if math.isinf(self.interval):  # health_check_interval: .inf, no periodic probes
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="magi-health-prober", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the prober thread and wait up to ``timeout`` seconds for it.

        The thread sleeps on an event, so it wakes at once; a probe that is running
        is allowed to finish. Returns True when the thread has ended (or never ran).
        """
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("health prober did not stop within %.1fs (a probe is still running)", timeout)
            return False
        self._thread = None
        return True

    @property
    def running(self) -> bool:
        """Is the prober thread alive?"""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def __enter__(self) -> HealthMonitor:
        if self.probe is not None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._probe_round(self._stop)
            except Exception:  # never let the prober die silently
                logger.exception("health probe round failed")
