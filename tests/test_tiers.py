"""Tier assignment, a profile's {tier: [model ids]}, and the seed's tier matching test."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from magi.config.profile import ModelProfile
from magi.errors import ConfigError, ModelNotFoundError
from magi.models.registry import ModelRegistry
from magi.models.tiers import assign_tier, check_tier_matching, model_tiers, profile_tier_models
from magi.profiles import ProfileManager
from magi.testing.fixtures import build_registry
from magi.testing.tiny_gguf import make_demo_stand_ins

DEFAULT = {"fast": 6.0, "powerful": math.inf}


@pytest.mark.parametrize(
    ("params", "tier"),
    [
        (0.27e9, "fast"),
        (4e9, "fast"),
        (6e9, "fast"),
        (6.01e9, "powerful"),
        (8e9, "powerful"),
        (14e9, "powerful"),
    ],
)
def test_default_thresholds(params: float, tier: str) -> None:
    assert assign_tier(params, DEFAULT) == tier


def test_thresholds_are_sorted_and_the_largest_catches_all() -> None:
    thresholds = {"large": 30.0, "small": 2.0, "medium": 10.0}  # any order
    assert [assign_tier(p * 1e9, thresholds) for p in (1, 2, 5, 10, 20, 70)] == [
        "small",
        "small",
        "medium",
        "medium",
        "large",
        "large",
    ]


def test_seed_profiles_map_tiers_to_models(seed_registry: ModelRegistry) -> None:
    manager = ProfileManager()
    assert profile_tier_models(manager.load_profile("development"), seed_registry) == {
        "fast": ["qwen3_4p0b_q4km_fast"],
        "powerful": ["deepseek_r10528qwen3_8p0b_q4km_powerful"],
    }
    assert profile_tier_models(manager.load_profile("production"), seed_registry) == {
        "powerful": ["deepseek_r10528qwen3_8p0b_q4km_powerful", "qwen2_coder_p5_14p0b_q4km_powerful"]
    }
    assert profile_tier_models(manager.load_profile("fast-only"), seed_registry) == {
        "fast": ["qwen3_4p0b_q4km_fast"]
    }
    for name in ("development", "production", "fast-only"):
        assert check_tier_matching(manager.load_profile(name), seed_registry) == [], name


def _profile(**kw: object) -> ModelProfile:
    data: dict[str, object] = {
        "name": "T",
        "enabled_models": ["qwen3_4p0b_q4km_fast", "deepseek_r10528qwen3_8p0b_q4km_powerful"],
        "tier_config": [{"name": "fast", "max_score": 5.0}, {"name": "powerful"}],
    }
    data.update(kw)
    return ModelProfile.model_validate(data)


def test_tier_mismatch_and_empty_tier_are_reported(seed_registry: ModelRegistry) -> None:
    profile = _profile(tier_config=[{"name": "fast"}])  # the 8B model is 'powerful'
    problems = check_tier_matching(profile, seed_registry)
    assert len(problems) == 1
    assert "'deepseek_r10528qwen3_8p0b_q4km_powerful' is in tier 'powerful'" in problems[0]
    assert "model_tiers.deepseek_r10528qwen3_8p0b_q4km_powerful" in problems[0]
    with pytest.raises(ConfigError, match="does not match the registry's tiers"):
        profile_tier_models(profile, seed_registry)
    assert profile_tier_models(profile, seed_registry, strict=False) == {"fast": ["qwen3_4p0b_q4km_fast"]}

    lonely = _profile(enabled_models=["qwen3_4p0b_q4km_fast"])
    assert check_tier_matching(lonely, seed_registry) == [
        "tier_config: tier 'powerful' has no enabled model; enable a model of that tier or map one to it "
        "with model_tiers"
    ]


def test_profile_override_moves_a_model(seed_registry: ModelRegistry) -> None:
    profile = _profile(
        tier_config=[{"name": "fast"}], model_tiers={"deepseek_r10528qwen3_8p0b_q4km_powerful": "fast"}
    )
    assert check_tier_matching(profile, seed_registry) == []
    assert profile_tier_models(profile, seed_registry) == {
        "fast": ["qwen3_4p0b_q4km_fast", "deepseek_r10528qwen3_8p0b_q4km_powerful"]
    }


def test_one_model_in_two_tiers(seed_registry: ModelRegistry) -> None:
    profile = _profile(
        enabled_models=["qwen3_4p0b_q4km_fast"],
        model_tiers={"qwen3_4p0b_q4km_fast": ["fast", "powerful"]},
        two_stage={"enabled": True},
    )
    assert model_tiers(profile, seed_registry, "qwen3_4p0b_q4km_fast") == ["fast", "powerful"]
    assert profile_tier_models(profile, seed_registry) == {
        "fast": ["qwen3_4p0b_q4km_fast"],
        "powerful": ["qwen3_4p0b_q4km_fast"],
    }


def test_absent_model(seed_registry: ModelRegistry) -> None:
    profile = _profile(enabled_models=["qwen3_4p0b_q4km_fast", "nope_1p0b_q4km_powerful"])
    problems = check_tier_matching(profile, seed_registry)
    assert problems[0].startswith("enabled_models: not in the registry: nope_1p0b_q4km_powerful")
    with pytest.raises(ModelNotFoundError, match="nope_1p0b_q4km_powerful") as info:
        profile_tier_models(profile, seed_registry)
    assert info.value.status_code == 404


def test_demo_profiles_route_on_stand_ins_of_the_demo_pair(tmp_path: Path) -> None:
    """The demo profiles match a registry holding models with the demo pair's ids (tiny
    stand-ins with the real files' names and metadata)."""
    make_demo_stand_ins(tmp_path)
    registry = build_registry(tmp_path)
    manager = ProfileManager()
    assert profile_tier_models(manager.load_profile("demo"), registry) == {
        "fast": ["smollm2_135m_q41_fast"],
        "powerful": ["gemma3_270m_q4km_fast"],
    }
    assert profile_tier_models(manager.load_profile("demo-single"), registry) == {
        "fast": ["gemma3_270m_q4km_fast"]
    }
