"""Circuit breakers, failover and concurrency through the Runner, on real tiny models.

Failures come from a :class:`FaultInjector` wrapped around the real llama.cpp
backend: the failing model is loaded and run like any other until it raises.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from magi.runtime.runner import NoModelAnsweredError
from magi.runtime.trace import RunResult
from magi.testing.runtime import CODER, FAST, REASONER, FaultInjector, ManualClock, TinyRuntime

COOLDOWN = 30.0  # on the runners' manual clock: passes only when a test advances it


def _state(runner, model_id: str) -> str:
    return str(runner.status()[model_id]["state"])


def test_circuit_opens_goes_half_open_and_closes(tiny_runtime: TinyRuntime) -> None:
    faults = FaultInjector()
    faults.fail(FAST)
    clock = ManualClock()
    overrides = ("runtime.failure_threshold=2", f"runtime.cooldown_seconds={COOLDOWN}")
    with tiny_runtime.runner("fast-only", *overrides, backend_factory=faults, clock=clock) as runner:
        with pytest.raises(NoModelAnsweredError, match="closed \\(1 failure"):
            runner.run("one")
        with pytest.raises(NoModelAnsweredError, match="open \\(2 failures"):
            runner.run("two")
        assert _state(runner, FAST) == "open"

        # open: refused without touching the model, however long that takes in real time
        clock.advance(COOLDOWN - 0.1)
        with pytest.raises(NoModelAnsweredError, match="retry in 0.1s") as info:
            runner.run("three")
        assert faults.calls[FAST] == 2
        assert info.value.status_code == 503

        # after the cooldown one trial goes through; a failed trial opens it again at once
        clock.advance(0.1)
        assert _state(runner, FAST) == "half_open"
        with pytest.raises(NoModelAnsweredError):
            runner.run("trial")
        assert faults.calls[FAST] == 3 and _state(runner, FAST) == "open"
        clock.advance(COOLDOWN - 0.1)
        assert _state(runner, FAST) == "open"  # a full cooldown again, from the failed trial

        # a successful trial closes it
        clock.advance(0.1)
        faults.heal(FAST)
        assert runner.run("healed").model_id == FAST
        assert _state(runner, FAST) == "closed"
        assert runner.status()[FAST]["consecutive_failures"] == 0
        assert faults.calls[FAST] == 4


def test_abandoned_trial_frees_the_half_open_slot(tiny_runtime: TinyRuntime) -> None:
    """A caller that stops reading mid-answer gives no verdict: the next request may try."""
    faults = FaultInjector()
    faults.fail(FAST)
    clock = ManualClock()
    overrides = ("runtime.failure_threshold=1", f"runtime.cooldown_seconds={COOLDOWN}")
    with tiny_runtime.runner("fast-only", *overrides, backend_factory=faults, clock=clock) as runner:
        with pytest.raises(NoModelAnsweredError):
            runner.run("fail")
        clock.advance(COOLDOWN)
        faults.heal(FAST)
        stream = runner.stream("abandoned")
        first = next(e for e in stream if e.kind == "token")
        assert (first.model_id, first.stage) == (FAST, "answer") and first.text
        assert runner.status()[FAST]["trial_in_flight"] is True  # this stream holds the trial
        stream.close()
        assert _state(runner, FAST) == "half_open"
        assert runner.status()[FAST]["trial_in_flight"] is False
        assert runner.run("next").model_id == FAST


def test_failover_within_a_tier_loses_nothing_over_200_requests(tiny_runtime: TinyRuntime) -> None:
    """production: one of the two models always fails. Every request is answered; the
    first few record the failover; then the circuit is open and the model is skipped."""
    faults = FaultInjector()
    faults.fail(REASONER)
    with tiny_runtime.runner("production", "runtime.max_tokens=2", backend_factory=faults) as runner:
        results = [runner.run(f"Question {i}") for i in range(200)]
        state = _state(runner, REASONER)
    assert len(results) == 200 and all(r.text and r.model_id == CODER for r in results)
    with_fallback = [r for r in results if r.fallbacks]
    assert len(with_fallback) == 3  # runtime.failure_threshold
    assert all([f.model_id for f in r.fallbacks] == [REASONER] for r in with_fallback)
    assert "injected failure" in with_fallback[0].fallbacks[0].error
    assert faults.calls == {REASONER: 3, CODER: 200}
    assert state == "open"


def test_failover_to_another_tier(tiny_runtime: TinyRuntime) -> None:
    """development: the fast tier's only model cannot load; an easy prompt is answered
    by the powerful tier, and the trace says why."""
    faults = FaultInjector()
    faults.fail(FAST, kind="load")
    with tiny_runtime.runner("development", backend_factory=faults) as runner:
        result = runner.run("Hi")
    assert (result.routed_tier, result.tier, result.model_id) == ("fast", "powerful", REASONER)
    assert [(f.stage, f.tier, f.model_id) for f in result.fallbacks] == [("answer", "fast", FAST)]
    assert "ModelError" in result.fallbacks[0].error and "at load" in result.fallbacks[0].error
    assert "failed answer fast" in result.explain()


@pytest.mark.timeout(120)
def test_concurrent_requests_are_balanced_and_safe(tiny_runtime: TinyRuntime) -> None:
    threads, per_thread = 8, 50
    results: list[RunResult] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    with tiny_runtime.runner("production", "runtime.max_tokens=2") as runner:

        def work(n: int) -> None:
            try:
                mine = [runner.run(f"Thread {n} question {i}") for i in range(per_thread)]
            except BaseException as exc:  # reported below
                errors.append(exc)
                return
            with lock:
                results.extend(mine)

        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        in_flight = dict(runner.health.in_flight)
        stats = runner.pool.stats
    assert errors == []
    assert len(results) == threads * per_thread
    assert Counter(r.model_id for r in results) == {REASONER: 200, CODER: 200}
    assert all(r.completion_tokens == 2 and not r.fallbacks for r in results)
    assert in_flight == {REASONER: 0, CODER: 0}
    assert stats.loads == 2
