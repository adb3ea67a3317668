"""Circuit breakers (with an injected clock), the health monitor, and the prober thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from magi.config.app import MagiConfig
from magi.errors import MAGIException
from magi.routing.health import (
    CircuitBreaker,
    CircuitState,
    HealthMonitor,
    ModelUnavailableError,
    NoHealthyModelError,
    describe_snapshot,
)
from magi.testing.runtime import ManualClock


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def breaker(clock: ManualClock) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, cooldown_seconds=30.0, clock=clock, name="m")


# -- circuit breaker states --------------------------------------------------------------
def test_closed_until_the_threshold_then_open(breaker: CircuitBreaker) -> None:
    assert breaker.state is CircuitState.CLOSED
    breaker.record_failure("boom")
    breaker.record_failure("boom")
    assert breaker.state is CircuitState.CLOSED and breaker.allow_request()
    breaker.record_failure("boom 3")
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow_request() and not breaker.available()
    snap = breaker.snapshot()
    assert snap["consecutive_failures"] == 3 and snap["last_error"] == "boom 3"
    assert snap["opened_at"] == 1000.0 and snap["retry_in"] == 30.0


def test_success_ends_the_failure_streak(breaker: CircuitBreaker) -> None:
    breaker.record_failure("x")
    breaker.record_failure("x")
    breaker.record_success()
    breaker.record_failure("x")
    breaker.record_failure("x")
    assert breaker.state is CircuitState.CLOSED
    assert breaker.snapshot()["total_failures"] == 4


def test_half_open_after_the_cooldown_allows_one_trial(breaker: CircuitBreaker, clock: ManualClock) -> None:
    for _ in range(3):
        breaker.record_failure("boom")
    clock.advance(29.9)
    assert breaker.state is CircuitState.OPEN
    assert breaker.snapshot()["retry_in"] == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.available()  # looking reserves nothing
    assert breaker.available()
    assert breaker.allow_request()  # the trial
    assert not breaker.allow_request() and not breaker.available()  # one at a time
    assert breaker.snapshot()["trial_in_flight"] is True


def test_successful_trial_closes_the_circuit(breaker: CircuitBreaker, clock: ManualClock) -> None:
    for _ in range(3):
        breaker.record_failure("boom")
    clock.advance(30)
    assert breaker.allow_request()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
    snap = breaker.snapshot()
    assert snap["consecutive_failures"] == 0 and snap["opened_at"] is None and snap["retry_in"] == 0.0
    assert breaker.allow_request() and breaker.allow_request()


def test_failed_trial_reopens_for_a_full_cooldown(breaker: CircuitBreaker, clock: ManualClock) -> None:
    for _ in range(3):
        breaker.record_failure("boom")
    clock.advance(30)
    assert breaker.allow_request()
    breaker.record_failure("still broken")
    assert breaker.state is CircuitState.OPEN
    snap = breaker.snapshot()
    assert snap["opened_at"] == 1030.0 and snap["retry_in"] == 30.0 and snap["last_error"] == "still broken"
    clock.advance(30)
    assert breaker.state is CircuitState.HALF_OPEN


def test_cancel_gives_the_trial_slot_back(breaker: CircuitBreaker, clock: ManualClock) -> None:
    for _ in range(3):
        breaker.record_failure("boom")
    clock.advance(30)
    assert breaker.allow_request()
    breaker.cancel()
    assert breaker.state is CircuitState.HALF_OPEN and breaker.allow_request()


def test_failure_while_open_restarts_the_cooldown(breaker: CircuitBreaker, clock: ManualClock) -> None:
    for _ in range(3):
        breaker.record_failure("boom")
    clock.advance(20)
    breaker.record_failure("late failure")
    assert breaker.snapshot()["retry_in"] == 30.0


def test_zero_cooldown_goes_straight_to_half_open(clock: ManualClock) -> None:
    breaker = CircuitBreaker(1, 0.0, clock=clock)
    breaker.record_failure("x")
    assert breaker.state is CircuitState.HALF_OPEN and breaker.allow_request()


def test_reset_forgets_everything(breaker: CircuitBreaker) -> None:
    for _ in range(3):
        breaker.record_failure("boom")
    breaker.reset()
    assert breaker.state is CircuitState.CLOSED and breaker.snapshot()["last_error"] is None


@pytest.mark.parametrize(("threshold", "cooldown"), [(0, 1.0), (1, -1.0)])
def test_invalid_settings_are_refused(threshold: int, cooldown: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(threshold, cooldown)


def test_describe(breaker: CircuitBreaker, clock: ManualClock) -> None:
    assert breaker.describe() == "closed"
    breaker.record_failure("boom")
    assert breaker.describe() == "closed (1 failure, last: 'boom')"
    breaker.record_failure("boom")
    breaker.record_failure("boom")
    clock.advance(18)
    assert breaker.describe() == "open (3 failures, last: 'boom', retry in 12.0s)"
    clock.advance(12)
    assert breaker.describe() == "half-open (3 failures, last: 'boom', next request is a trial)"
    breaker.allow_request()
    assert breaker.describe().endswith("trial request in flight)")


def test_concurrent_half_open_allows_exactly_one_trial(clock: ManualClock) -> None:
    breaker = CircuitBreaker(1, 5.0, clock=clock)
    breaker.record_failure("x")
    clock.advance(5)
    granted: list[bool] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        granted.append(breaker.allow_request())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted.count(True) == 1


def test_concurrent_failures_are_all_counted(clock: ManualClock) -> None:
    breaker = CircuitBreaker(10_000, 5.0, clock=clock)

    def worker() -> None:
        for _ in range(500):
            breaker.record_failure("x")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert breaker.snapshot()["total_failures"] == 4000


# -- health monitor ---------------------------------------------------------------------------
@pytest.fixture
def health(clock: ManualClock) -> HealthMonitor:
    return HealthMonitor(["a", "b", "c"], failure_threshold=2, cooldown_seconds=10.0, clock=clock)


def test_healthy_keeps_the_order_and_drops_open_circuits(health: HealthMonitor, clock: ManualClock) -> None:
    health.record_failure("b", "boom")
    health.record_failure("b", RuntimeError("out of memory"))
    assert health.healthy(["c", "b", "a"]) == ["c", "a"]
    assert health.status()["b"]["last_error"] == "RuntimeError: out of memory"
    clock.advance(10)
    assert health.healthy(["c", "b", "a"]) == ["c", "b", "a"]


def test_unknown_models_are_watched_on_first_use(health: HealthMonitor) -> None:
    assert health.healthy(["new"]) == ["new"]
    assert health.model_ids == ["a", "b", "c", "new"]


def test_track_counts_in_flight_requests_even_on_errors(health: HealthMonitor) -> None:
    view = health.in_flight
    with health.track("a"):
        with health.track("a"):
            assert view["a"] == 2
        with pytest.raises(RuntimeError), health.track("b"):
            assert view["b"] == 1
            raise RuntimeError("x")
        assert view == {"a": 1, "b": 0, "c": 0}
    assert health.status()["a"]["in_flight"] == 0


def test_attempt_records_success_and_failure(health: HealthMonitor) -> None:
    with health.attempt("a"):
        assert health.in_flight["a"] == 1
    assert health.status()["a"]["total_successes"] == 1
    for _ in range(2):
        with pytest.raises(ValueError), health.attempt("a"):
            raise ValueError("bad output")
    status = health.status()["a"]
    assert status["state"] == "open" and status["last_error"] == "ValueError: bad output"
    assert status["in_flight"] == 0
    with pytest.raises(ModelUnavailableError) as info, health.attempt("a"):
        pytest.fail("an open circuit must not run the block")
    assert (
        info.value.status_code == 503 and "'a'" in str(info.value) and "open (2 failures" in str(info.value)
    )


def test_attempt_interrupted_releases_the_trial_without_a_verdict(
    health: HealthMonitor, clock: ManualClock
) -> None:
    class Interrupted(BaseException):
        pass

    health.record_failure("a", "x")
    health.record_failure("a", "x")
    clock.advance(10)
    with pytest.raises(Interrupted), health.attempt("a"):
        raise Interrupted
    status = health.status()["a"]
    assert status["state"] == "half_open" and status["trial_in_flight"] is False
    assert status["consecutive_failures"] == 2


def test_from_config_uses_runtime_and_profile_settings() -> None:
    config = MagiConfig.model_validate(
        {
            "profile": {
                "name": "P",
                "enabled_models": ["x", "y"],
                "tier_config": [{"name": "fast"}],
                "load_balancing": {"enabled": True, "health_check_interval": 7},
            },
            "runtime": {"failure_threshold": 5, "cooldown_seconds": 12.5},
        }
    )
    health = HealthMonitor.from_config(config)
    assert health.model_ids == ["x", "y"] and health.interval == 7.0
    assert health.breaker("x").failure_threshold == 5 and health.breaker("x").cooldown_seconds == 12.5


# -- errors ------------------------------------------------------------------------------------
def test_no_healthy_model_error_names_each_models_state(health: HealthMonitor, clock: ManualClock) -> None:
    health.record_failure("deepseek_r10528qwen3_8p0b_q4km_powerful", "OOM")
    health.record_failure("deepseek_r10528qwen3_8p0b_q4km_powerful", "OOM")
    clock.advance(10)
    assert health.acquire("deepseek_r10528qwen3_8p0b_q4km_powerful")  # its trial is in flight
    for _ in range(3):
        health.record_failure("qwen3_4p0b_q4km_fast", "boom")
    error = health.no_healthy_error(
        ["qwen3_4p0b_q4km_fast", "deepseek_r10528qwen3_8p0b_q4km_powerful"], tiers=["fast", "powerful"]
    )
    assert isinstance(error, MAGIException) and isinstance(error, NoHealthyModelError)
    assert error.status_code == 503
    message = str(error)
    assert message.startswith("No healthy model available in tiers fast, powerful:")
    assert "  - qwen3_4p0b_q4km_fast: open (3 failures, last: 'boom', retry in 10.0s)" in message
    deepseek = "deepseek_r10528qwen3_8p0b_q4km_powerful"
    assert f"  - {deepseek}: half-open (2 failures, last: 'OOM', trial request in flight)" in message
    assert error.details["tiers"] == ["fast", "powerful"]
    assert set(error.details["models"]) == {"qwen3_4p0b_q4km_fast", "deepseek_r10528qwen3_8p0b_q4km_powerful"}


def test_no_healthy_model_error_retry_in_follows_the_clock(clock: ManualClock) -> None:
    health = HealthMonitor(["m"], failure_threshold=3, cooldown_seconds=30, clock=clock)
    for _ in range(3):
        health.record_failure("m", "boom")
    clock.advance(18)
    assert "m: open (3 failures, last: 'boom', retry in 12.0s)" in str(
        health.no_healthy_error(["m"], ["fast"])
    )


def test_no_healthy_model_error_without_models() -> None:
    message = str(NoHealthyModelError({}, ["fast"]))
    assert "No model is assigned in tier fast" in message and "model_tiers" in message


def test_describe_snapshot_shortens_long_errors() -> None:
    text = describe_snapshot(
        {"state": "open", "consecutive_failures": 1, "last_error": "x" * 500, "retry_in": 1}
    )
    assert len(text) < 200 and "\u2026" in text


# -- the prober thread ---------------------------------------------------------------------------
def test_prober_records_failures_and_stops_promptly() -> None:
    probed: list[str] = []

    def probe(model_id: str) -> None:
        probed.append(model_id)
        if model_id == "bad":
            raise ConnectionError("refused")

    health = HealthMonitor(
        ["good", "bad"], failure_threshold=2, cooldown_seconds=60, probe=probe, interval=0.01
    )
    health.start()
    try:
        assert health.running
        assert wait_until(lambda: health.status()["bad"]["state"] == "open")
    finally:
        assert health.stop(timeout=10.0)  # how fast it stops: test_stop_does_not_wait_for_the_interval
    assert not health.running
    status = health.status()
    assert status["good"]["state"] == "closed" and status["good"]["total_successes"] >= 2
    assert status["bad"]["last_error"] == "probe failed: ConnectionError: refused"
    assert status["bad"]["last_probe"]["ok"] is False and status["good"]["last_probe"]["ok"] is True
    count = len(probed)
    time.sleep(0.2)  # 20 intervals
    assert len(probed) == count  # nothing probes after stop()


def test_stop_does_not_wait_for_the_interval() -> None:
    """The prober sleeps on an event: stop() wakes it instead of waiting out the 60 s
    interval (the bound is half the interval, so a busy machine cannot fail it)."""
    health = HealthMonitor(["m"], probe=lambda m: None, interval=60.0)
    health.start()
    started = time.monotonic()
    assert health.stop(timeout=45.0)
    assert time.monotonic() - started < 30.0


def test_start_is_idempotent_and_restartable() -> None:
    health = HealthMonitor(["m"], probe=lambda m: None, interval=60.0)
    health.start()
    thread = health._thread
    health.start()
    assert health._thread is thread
    assert health.stop()
    health.start()
    assert health.running
    assert health.stop()
    assert health.stop()  # stopping twice is harmless


def test_context_manager_runs_the_prober() -> None:
    with HealthMonitor(["m"], probe=lambda m: None, interval=60.0) as health:
        assert health.running
    assert not health.running


def test_start_without_a_probe_is_refused() -> None:
    with pytest.raises(ValueError, match="no probe"):
        HealthMonitor(["m"]).start()


def test_successful_probe_closes_an_open_circuit(clock: ManualClock) -> None:
    health = HealthMonitor(["m"], failure_threshold=1, cooldown_seconds=60, clock=clock, probe=lambda m: None)
    health.record_failure("m", "crash")
    assert health.healthy(["m"]) == []
    assert health.probe_all() == {"m": True}
    assert health.healthy(["m"]) == ["m"]


def test_busy_models_are_not_probed(clock: ManualClock) -> None:
    probed: list[str] = []
    health = HealthMonitor(["busy", "idle"], clock=clock, probe=probed.append)
    with health.track("busy"):
        assert health.probe_all() == {"idle": True}
    assert probed == ["idle"]
    health.skip_busy = False
    with health.track("busy"):
        health.probe_all()
    assert probed == ["idle", "busy", "idle"]


def test_probe_all_without_a_probe_does_nothing(health: HealthMonitor) -> None:
    assert health.probe_all() == {}


def test_invalid_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        HealthMonitor(["m"], interval=0)


def test_no_healthy_model_error_headline_can_say_every_model_failed(health: HealthMonitor) -> None:
    health.record_failure("a", "bad answer")
    message = str(health.no_healthy_error(["a"], ["fast"], headline="Every model failed this request"))
    assert message.startswith("Every model failed this request in tier fast:\n  - a: closed (1 failure")


def test_probe_all_works_after_the_prober_stopped() -> None:
    probed: list[str] = []
    health = HealthMonitor(["m"], probe=probed.append, interval=60.0)
    health.start()
    assert health.stop()
    assert health.probe_all() == {"m": True} and probed == ["m"]


def test_health_check_interval_inf_means_no_prober_and_huge_finite_values_are_refused() -> None:
    """``.inf`` turns periodic probing off (balancing and circuits still work); a finite
    interval past a day is a typo, refused naming the field, not a prober thread that
    dies of OverflowError in ``Event.wait``."""
    import magi
    from magi.errors import ConfigError

    field = "profile.load_balancing.health_check_interval"
    for huge in ("1e10", "86401"):
        with pytest.raises(ConfigError) as info:
            magi.compose(profile="production", overrides=[f"{field}={huge}"])
        assert "profile.load_balancing.health_check_interval" in str(info.value) and ".inf" in str(info.value)
    cfg = magi.compose(profile="production", overrides=["profile.load_balancing.health_check_interval=inf"])
    monitor = HealthMonitor.from_config(cfg, ["a", "b"], probe=lambda model_id: None)
    monitor.start()
    try:
        assert not monitor.running
    finally:
        monitor.stop()
