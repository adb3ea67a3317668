"""The routing decision: tier thresholds, two-stage policy, candidates, failover, validation."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from magi.config.app import MagiConfig
from magi.config.profile import ModelProfile
from magi.errors import ConfigError
from magi.routing import (
    ComplexityScore,
    HealthMonitor,
    NoHealthyModelError,
    Router,
    Scorer,
    get_scorer,
    register_scorer,
)


@register_scorer("test-fixed")
class FixedScorer:
    """A test scorer: every prompt gets the same score (or the number the prompt spells)."""

    name = "test-fixed"

    def __init__(self, score: float | None = None) -> None:
        self.fixed = score

    def score(self, prompt: str) -> ComplexityScore:
        value = self.fixed if self.fixed is not None else float(prompt)
        return ComplexityScore(value, {"fixed_value": value}, {"fixed": value}, scorer=self.name)


def make_profile(**overrides: Any) -> ModelProfile:
    data: dict[str, Any] = {
        "name": "Three tiers",
        "enabled_models": ["f1", "f2", "m1", "p1", "p2"],
        "tier_config": [
            {"name": "fast", "max_score": 3.0},
            {"name": "medium", "max_score": 6.0},
            {"name": "powerful", "max_score": 8.0},
        ],
    }
    data.update(overrides)
    return ModelProfile.model_validate(data)


MEMBERS = {"fast": ["f1", "f2"], "medium": ["m1"], "powerful": ["p1", "p2"]}


def make_router(
    profile: ModelProfile | None = None,
    members: Mapping[str, Sequence[str]] = MEMBERS,
    scorer: Scorer | None = None,
    health: HealthMonitor | None = None,
    seed: int = 0,
) -> Router:
    profile = profile or make_profile()
    return Router(
        profile,
        members,
        scorer or get_scorer("test-fixed"),
        health or HealthMonitor(failure_threshold=1, cooldown_seconds=60),
        seed=seed,
    )


# -- tiers by threshold ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("score", "tier"),
    [
        (0.0, "fast"),
        (3.0, "fast"),  # equal to max_score: stays in that tier
        (math.nextafter(3.0, math.inf), "medium"),  # just above: the next tier
        (6.0, "medium"),
        (math.nextafter(6.0, math.inf), "powerful"),
        (8.0, "powerful"),
        (9.5, "powerful"),  # above the last finite threshold: the last tier
        (10.0, "powerful"),
    ],
)
def test_tier_by_threshold_at_the_boundaries(score: float, tier: str) -> None:
    router = make_router(scorer=get_scorer("test-fixed", score=score))
    decision = router.decide("anything")
    assert decision.tier == tier
    assert decision.score.score == score and decision.score.scorer == "test-fixed"
    assert router.tier_for(score) == tier == make_profile().tier_for_score(score).name


def test_infinite_last_threshold_catches_everything() -> None:
    profile = make_profile(tier_config=[{"name": "fast", "max_score": 5.0}, {"name": "powerful"}])
    router = make_router(profile, {"fast": ["f1"], "powerful": ["p1"]})
    assert [router.decide(s).tier for s in ("5", "5.01", "10")] == ["fast", "powerful", "powerful"]


# -- two-stage policy ----------------------------------------------------------------------------
TWO_STAGE = {"enabled": True, "stage1_tier": "fast", "stage2_tier": "powerful", "stage1_max_tokens": 123}


def test_two_stages_when_routed_to_the_stage2_tier() -> None:
    router = make_router(make_profile(two_stage=TWO_STAGE))
    decision = router.decide("7")
    assert decision.tier == "powerful" and decision.two_stage
    draft, refine = decision.stages
    assert (draft.role, draft.tier, draft.max_tokens) == ("draft", "fast", 123)
    assert (refine.role, refine.tier, refine.max_tokens) == ("refine", "powerful", None)
    assert decision.draft is draft and decision.final is refine
    assert draft.model == "f1" and refine.model == "p1"


@pytest.mark.parametrize("score", ["1", "5"])
def test_other_tiers_answer_alone(score: str) -> None:
    decision = make_router(make_profile(two_stage=TWO_STAGE)).decide(score)
    assert not decision.two_stage and decision.draft is None
    assert [s.role for s in decision.stages] == ["answer"]
    assert decision.final.tier == decision.tier


def test_disabled_two_stage_answers_in_one_stage() -> None:
    decision = make_router(make_profile(two_stage={**TWO_STAGE, "enabled": False})).decide("9")
    assert decision.tier == "powerful" and not decision.two_stage and len(decision.stages) == 1


# -- candidates and balancing -------------------------------------------------------------------
def test_balancing_disabled_means_first_healthy_model() -> None:
    router = make_router()
    assert router.strategy == "first"
    assert [router.decide("9").final.candidates for _ in range(3)] == [("p1", "p2")] * 3


def test_round_robin_rotates_the_pick_and_keeps_the_rest_for_failover() -> None:
    router = make_router(make_profile(load_balancing={"enabled": True, "strategy": "round_robin"}))
    assert router.strategy == "round_robin"
    assert [router.candidates("fast") for _ in range(3)] == [["f1", "f2"], ["f2", "f1"], ["f1", "f2"]]
    assert Counter(router.decide("1").final.model for _ in range(100)) == {"f1": 50, "f2": 50}


def test_each_tier_has_its_own_balancer() -> None:
    router = make_router(make_profile(load_balancing={"enabled": True, "strategy": "round_robin"}))
    assert router.candidates("fast")[0] == "f1"
    assert router.candidates("powerful")[0] == "p1"  # not advanced by the fast tier's pick
    assert router.balancers["fast"] is not router.balancers["powerful"]


def test_least_loaded_follows_the_monitors_in_flight_counts() -> None:
    health = HealthMonitor()
    router = make_router(
        make_profile(load_balancing={"enabled": True, "strategy": "least_loaded"}), health=health
    )
    with health.track("p1"):
        assert router.candidates("powerful") == ["p2", "p1"]
    with health.track("p2"), health.track("p2"):
        assert router.candidates("powerful") == ["p1", "p2"]


def test_random_balancing_is_reproducible_with_the_seed() -> None:
    profile = make_profile(load_balancing={"enabled": True, "strategy": "random"})

    def run(seed: int) -> list[str | None]:
        router = make_router(profile, seed=seed)
        return [router.decide("1").final.model for _ in range(50)]

    assert run(3) == run(3)
    assert set(run(3)) == {"f1", "f2"}


def test_open_circuits_are_left_out() -> None:
    health = HealthMonitor(failure_threshold=1, cooldown_seconds=60)
    router = make_router(health=health)
    health.record_failure("p1", "boom")
    assert router.decide("9").final.candidates == ("p2",)
    health.record_failure("p2", "boom")
    decision = router.decide("9")
    assert decision.final.candidates == () and decision.final.model is None
    assert "no healthy model" in decision.explain()


def test_every_member_is_registered_with_the_health_monitor() -> None:
    health = HealthMonitor()
    make_router(health=health)
    assert set(health.model_ids) == {"f1", "f2", "m1", "p1", "p2"}


def test_concurrent_decisions_are_balanced() -> None:
    router = make_router(make_profile(load_balancing={"enabled": True, "strategy": "round_robin"}))
    counts: Counter[str | None] = Counter()
    lock = threading.Lock()

    def worker() -> None:
        local = Counter(router.decide("9").final.model for _ in range(500))
        with lock:
            counts.update(local)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts == {"p1": 2000, "p2": 2000}


# -- failover across tiers ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tier", "fallbacks"),
    [("fast", ["medium", "powerful"]), ("medium", ["powerful", "fast"]), ("powerful", ["medium", "fast"])],
)
def test_fallback_tiers_go_up_first_then_down(tier: str, fallbacks: list[str]) -> None:
    assert make_router().fallback_tiers(tier) == fallbacks


def test_attempts_try_the_stage_then_the_fallback_tiers() -> None:
    health = HealthMonitor(failure_threshold=1, cooldown_seconds=60)
    router = make_router(health=health)
    health.record_failure("f2", "boom")
    stage = router.decide("1").final
    assert list(router.attempts(stage)) == [
        ("fast", "f1"),
        ("medium", "m1"),
        ("powerful", "p1"),
        ("powerful", "p2"),
    ]
    assert list(router.attempts(stage, fallback=False)) == [("fast", "f1")]


def test_attempts_reflect_health_when_a_fallback_tier_is_reached() -> None:
    health = HealthMonitor(failure_threshold=1, cooldown_seconds=60)
    router = make_router(health=health)
    attempts = router.attempts(router.decide("1").final)
    assert next(attempts) == ("fast", "f1")
    health.record_failure("m1", "died meanwhile")
    assert [pair for pair in attempts if pair[0] == "medium"] == []


def test_no_healthy_error_names_every_model_of_the_tiers() -> None:
    health = HealthMonitor(failure_threshold=1, cooldown_seconds=60)
    router = make_router(health=health)
    for model_id in ("f1", "f2", "m1"):
        health.record_failure(model_id, f"{model_id} crashed")
    error = router.no_healthy_error(["fast", "medium"])
    assert isinstance(error, NoHealthyModelError) and error.status_code == 503
    message = str(error)
    for model_id in ("f1", "f2", "m1"):
        assert f"  - {model_id}: open (1 failure, last: '{model_id} crashed', retry in 60.0s)" in message
    assert "p1" not in message
    assert set(router.no_healthy_error().states) == {"f1", "f2", "m1", "p1", "p2"}


def test_empty_tier_is_skipped_to_its_fallbacks() -> None:
    router = make_router(members={"fast": [], "powerful": ["p1"]})
    stage = router.decide("1").final
    assert stage.tier == "fast" and stage.candidates == ()
    assert list(router.attempts(stage)) == [("powerful", "p1")]
    assert "No model is assigned in tier medium" in str(router.no_healthy_error(["medium"]))


def test_unknown_tier_in_queries_names_the_tiers() -> None:
    router = make_router()
    with pytest.raises(KeyError, match="tiers: fast, medium, powerful"):
        router.candidates("fastest")
    with pytest.raises(KeyError, match="no tier 'fastest'"):
        router.fallback_tiers("fastest")


# -- validation ---------------------------------------------------------------------------------------
def test_tier_members_are_validated_against_the_profile() -> None:
    with pytest.raises(ConfigError) as info:
        make_router(members={"fsat": ["f1"], "powerful": ["p1", "ghost"]})
    error = info.value
    assert len(error.problems) == 2
    assert (
        "tier_members: tier 'fsat' is not in profile 'Three tiers'. Did you mean 'fast'?" in error.problems[0]
    )
    assert "tier_members.powerful: model 'ghost' is not in the profile's enabled_models" in error.problems[1]
    assert str(error).startswith("Cannot route profile 'Three tiers' (2 problems)")


def test_duplicate_members_are_tried_once() -> None:
    assert make_router(members={"fast": ["f1", "f1", "f2"]}).members["fast"] == ("f1", "f2")


# -- the real scorer, configs, traces ------------------------------------------------------------------
def development_config() -> MagiConfig:
    return MagiConfig.model_validate(
        {
            "profile": {
                "profile": {"name": "Development", "description": "seed profile"},
                "enabled_models": ["qwen3_4p0b_q4km_fast", "deepseek_r10528qwen3_8p0b_q4km_powerful"],
                "tier_config": [
                    {"name": "fast", "max_score": 5.0, "expected_time_seconds": 2},
                    {"name": "powerful", "max_score": math.inf, "expected_time_seconds": 10},
                ],
                "two_stage": {"enabled": True, "stage1_tier": "fast", "stage2_tier": "powerful"},
                "load_balancing": {"enabled": False},
            },
            "runtime": {"seed": 11},
        }
    )


def test_from_config_routes_with_the_configured_scorer() -> None:
    config = development_config()
    router = Router.from_config(
        config,
        {"fast": ["qwen3_4p0b_q4km_fast"], "powerful": ["deepseek_r10528qwen3_8p0b_q4km_powerful"]},
    )
    assert router.scorer.name == "heuristic" and router.seed == 11 and router.strategy == "first"
    easy = router.decide("Hi! What is the capital of France?")
    assert easy.tier == "fast" and not easy.two_stage
    assert easy.final.candidates == ("qwen3_4p0b_q4km_fast",)
    hard = router.decide(
        "Design a rate limiter for a distributed API gateway that must handle 100k requests per second. "
        "Explain the consistency trade-offs and how you would test it."
    )
    assert hard.tier == "powerful" and hard.two_stage
    assert [s.model for s in hard.stages] == [
        "qwen3_4p0b_q4km_fast",
        "deepseek_r10528qwen3_8p0b_q4km_powerful",
    ]
    assert hard.stages[0].max_tokens == 500


def test_from_config_with_an_unknown_scorer_is_a_config_error() -> None:
    config = development_config().model_copy(update={"scorer": "heuristics"})
    with pytest.raises(ConfigError, match="Did you mean 'heuristic'"):
        Router.from_config(config, {})


def test_decision_trace_is_explainable_and_serialisable() -> None:
    router = make_router(make_profile(two_stage=TWO_STAGE))
    started = time.perf_counter()
    decision = router.decide("7")
    elapsed = time.perf_counter() - started
    assert decision.explain().startswith(
        "score 7.00 -> powerful (two-stage: draft on fast [f1, f2], refine on"
    )
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["tier"] == "powerful" and data["two_stage"] is True
    assert [s["role"] for s in data["stages"]] == ["draft", "refine"]
    assert data["score"]["scorer"] == "test-fixed"
    assert 0 < decision.decided_in <= elapsed  # seconds, measured inside decide(): no wall-clock bound
    assert data["decided_in"] == decision.decided_in


# -- the documented examples --------------------------------------------------------------------------
@pytest.mark.parametrize("module", ["scorer", "balancer", "health", "router", "metrics"])
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"magi.routing.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
