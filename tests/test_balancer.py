"""Load-balancing strategies: distributions, tie-breaking, failover order, thread safety."""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from magi.config.profile import STRATEGIES
from magi.errors import ConfigError
from magi.routing.balancer import available_strategies, make_balancer

MODELS = ["m0", "m1", "m2"]


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Make the interpreter switch threads as often as it can, to interleave picks."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def picks(strategy: str, n: int, seed: int = 0, in_flight: dict[str, int] | None = None) -> list[str]:
    balancer = make_balancer(strategy, seed=seed)
    return [balancer.pick(MODELS, in_flight or {}) for _ in range(n)]


def test_every_configurable_strategy_is_registered() -> None:
    assert set(STRATEGIES) | {"first"} == set(available_strategies())


def test_round_robin_is_exactly_even_and_in_tier_order() -> None:
    chosen = picks("round_robin", 300)
    assert chosen[:4] == ["m0", "m1", "m2", "m0"]
    assert Counter(chosen) == {"m0": 100, "m1": 100, "m2": 100}


def test_round_robin_keeps_turning_when_a_model_drops_out() -> None:
    balancer = make_balancer("round_robin")
    chosen = [balancer.pick(["m0", "m2"], {}) for _ in range(10)]
    assert Counter(chosen) == {"m0": 5, "m2": 5}


def test_random_is_reproducible_with_a_seed() -> None:
    assert picks("random", 200, seed=7) == picks("random", 200, seed=7)
    assert picks("random", 200, seed=7) != picks("random", 200, seed=8)


def test_random_is_roughly_even() -> None:
    counts = Counter(picks("random", 3000, seed=0))
    assert set(counts) == set(MODELS)
    for model in MODELS:
        assert 850 <= counts[model] <= 1150, counts  # 1000 expected; > 6 sigma of slack


def test_least_loaded_follows_in_flight_counts() -> None:
    balancer = make_balancer("least_loaded")
    assert balancer.pick(MODELS, {"m0": 3, "m1": 1, "m2": 2}) == "m1"
    assert balancer.pick(MODELS, {"m0": 0, "m1": 1, "m2": 2}) == "m0"
    assert balancer.pick(MODELS, {"m0": 5, "m1": 5}) == "m2"  # missing ids count 0


def test_least_loaded_breaks_ties_round_robin() -> None:
    balancer = make_balancer("least_loaded")
    in_flight = {"m0": 1, "m1": 0, "m2": 0}
    assert [balancer.pick(MODELS, in_flight) for _ in range(4)] == ["m1", "m2", "m1", "m2"]
    assert Counter(balancer.pick(MODELS, {}) for _ in range(300)) == {"m0": 100, "m1": 100, "m2": 100}


def test_least_loaded_spreads_a_simulated_load() -> None:
    # Requests that never finish: each pick must go to an emptiest model, so the load stays level.
    balancer = make_balancer("least_loaded")
    in_flight = {m: 0 for m in MODELS}
    for _ in range(30):
        in_flight[balancer.pick(MODELS, in_flight)] += 1
        assert max(in_flight.values()) - min(in_flight.values()) <= 1
    assert in_flight == {"m0": 10, "m1": 10, "m2": 10}


def test_first_always_takes_the_first_healthy_model() -> None:
    assert set(picks("first", 20)) == {"m0"}
    assert make_balancer("first").pick(["m2", "m1"], {"m2": 9}) == "m2"


@pytest.mark.parametrize("strategy", ["round_robin", "least_loaded", "random", "first"])
def test_order_puts_the_pick_first_then_rotates(strategy: str) -> None:
    balancer = make_balancer(strategy, seed=3)
    for _ in range(10):
        order = balancer.order(MODELS, {})
        assert sorted(order) == MODELS
        start = MODELS.index(order[0])
        assert order == MODELS[start:] + MODELS[:start]


def test_round_robin_order_advances_one_turn_per_call() -> None:
    balancer = make_balancer("round_robin")
    assert balancer.order(MODELS, {}) == ["m0", "m1", "m2"]
    assert balancer.order(MODELS, {}) == ["m1", "m2", "m0"]


def test_empty_candidates() -> None:
    balancer = make_balancer("round_robin")
    assert balancer.order([], {}) == []
    with pytest.raises(ValueError, match="no candidate models"):
        balancer.pick([], {})


def test_unknown_strategy_is_a_config_error_listing_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        make_balancer("round-robin")
    message = str(info.value)
    assert "load_balancing.strategy: unknown strategy 'round-robin'" in message
    assert "Did you mean 'round_robin'?" in message
    assert "Available: first, least_loaded, random, round_robin" in message


@pytest.mark.usefixtures("frequent_thread_switches")
@pytest.mark.parametrize("strategy", ["round_robin", "least_loaded"])
def test_concurrent_picks_are_exactly_balanced(strategy: str) -> None:
    # 8 threads x 500 picks over 4 models: the counter is shared under a lock, so no
    # turn is lost or repeated, whatever the interleaving.
    balancer = make_balancer(strategy)
    models = ["a", "b", "c", "d"]
    counts: Counter[str] = Counter()
    counts_lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        local = Counter()
        barrier.wait()
        for _ in range(500):
            local[balancer.pick(models, {})] += 1
        with counts_lock:
            counts.update(local)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts == {"a": 1000, "b": 1000, "c": 1000, "d": 1000}


@pytest.mark.usefixtures("frequent_thread_switches")
def test_concurrent_random_picks_use_every_model() -> None:
    balancer = make_balancer("random", seed=1)
    results: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        local = [balancer.pick(MODELS, {}) for _ in range(500)]
        with lock:
            results.extend(local)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = Counter(results)
    assert sum(counts.values()) == 4000 and all(1100 <= counts[m] <= 1570 for m in MODELS)


def test_least_loaded_failover_order_follows_the_load() -> None:
    balancer = make_balancer("least_loaded")
    assert balancer.order(["a", "b", "c", "d"], {"a": 3, "b": 0, "c": 2, "d": 1}) == ["b", "d", "c", "a"]
