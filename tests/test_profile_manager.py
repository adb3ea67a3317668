"""ProfileManager: the seed's CRUD, safety, and clear errors for bad profiles."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

import magi
from magi import ProfileManager
from magi.config.profile import ModelProfile, TierConfig
from magi.errors import (
    ConfigError,
    InvalidProfileNameError,
    MAGIException,
    ProfileExistsError,
    ProfileNotFoundError,
)
from magi.profiles.manager import normalize_profile_name

from .seed_profiles import SEED_YAML


@pytest.fixture()
def manager(conf_dir: Path) -> ProfileManager:
    return ProfileManager(profiles_dir=conf_dir / "profile")


def custom_profile(name: str = "Custom Setup") -> ModelProfile:
    return ModelProfile(
        name=name,
        description="My custom configuration",
        enabled_models=["qwen3_4p0b_q4km_fast"],
        tier_config=[TierConfig(name="fast", max_score=float("inf"), expected_time_seconds=3)],
    )


# -- the seed's API usage examples, only the import lines changed ------------------


def test_seed_example_loading_a_profile(conf_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(conf_dir.parent)
    (conf_dir.parent / "config").mkdir()
    (conf_dir / "profile").rename(conf_dir.parent / "config" / "profiles")
    # --- seed example ---
    from pathlib import Path

    from magi import ProfileManager

    manager = ProfileManager(profiles_dir=Path("config/profiles"))

    # List available profiles
    profiles = manager.list_profiles()  # ['development', 'production', 'fast-only']

    # Load specific profile
    profile = manager.load_profile("development")

    # Access configuration
    print(profile.enabled_models)
    print(profile.two_stage.enabled)
    for tier in profile.tier_config:
        print(f"{tier.name}: max_score={tier.max_score}")
    # --- end ---
    assert {"development", "production", "fast-only"} <= set(profiles)
    out = capsys.readouterr().out
    assert "True" in out and "fast: max_score=5.0" in out and "powerful: max_score=inf" in out


def test_seed_example_creating_a_custom_profile(conf_dir: Path) -> None:
    manager = ProfileManager(profiles_dir=conf_dir / "profile")
    # --- seed example ---
    from magi import ModelProfile, TierConfig

    profile = ModelProfile(
        name="Custom Setup",
        description="My custom configuration",
        enabled_models=["qwen3_4p0b_q4km_fast"],
        tier_config=[TierConfig(name="fast", max_score=float("inf"), expected_time_seconds=3)],
    )

    # Save to disk
    manager.save_profile(profile)
    # --- end ---
    assert (conf_dir / "profile" / "custom-setup.yaml").is_file()
    assert manager.load_profile("Custom Setup") == profile


# -- round trips ----------------------------------------------------------------------


def test_save_list_load_delete_round_trip(manager: ProfileManager, conf_dir: Path) -> None:
    before = manager.list_profiles()
    profile = custom_profile("Fast Only Two")
    path = manager.save_profile(profile)
    assert path.name == "fast-only-two.yaml"
    assert manager.list_profiles() == sorted([*before, "fast-only-two"])
    assert manager.load_profile("fast-only-two") == profile
    assert manager.load_profile("Fast Only Two") == profile
    text = path.read_text()
    assert "max_score: .inf" in text  # human-readable, YAML infinity
    assert text.startswith("# Fast Only Two")
    # selectable at once through Hydra
    assert magi.compose(profile="fast-only-two", conf_dir=conf_dir).profile == profile
    manager.delete_profile("Fast Only Two")
    assert manager.list_profiles() == before
    with pytest.raises(ProfileNotFoundError):
        manager.delete_profile("fast-only-two")


def test_saved_file_is_seed_nested_form(manager: ProfileManager) -> None:
    path = manager.save_profile(manager.load_profile("development").model_copy(update={"name": "Dev Copy"}))
    data = yaml.safe_load(path.read_text())
    assert list(data) == ["profile", "enabled_models", "tier_config", "two_stage", "load_balancing"]
    assert data["profile"] == {
        "name": "Dev Copy",
        "description": manager.load_profile("development").description,
    }


def _flat(nested_yaml: str) -> str:
    """The seed's flat form of a profile: name and description at the top level."""
    data = yaml.safe_load(nested_yaml)
    header = data.pop("profile")
    return yaml.safe_dump({**header, **data}, sort_keys=False)


def test_flat_form_file_loads_like_the_nested_one(manager: ProfileManager, conf_dir: Path) -> None:
    text = _flat(SEED_YAML["production"])
    assert text.startswith("name: Production\ndescription: ")
    (manager.profiles_dir / "prod-flat.yaml").write_text(text)
    flat = manager.load_profile("prod-flat")
    assert flat == manager.load_profile("production")
    assert (flat.name, flat.load_balancing.strategy) == ("Production", "round_robin")
    # Hydra composes the flat file into the same profile
    assert magi.compose(profile="prod-flat", conf_dir=conf_dir).profile == flat


def test_saving_over_a_flat_form_file_writes_the_nested_form(manager: ProfileManager) -> None:
    path = manager.profiles_dir / "dev-flat.yaml"
    path.write_text(_flat(SEED_YAML["development"]).replace("name: Development", "name: Dev Flat"))
    loaded = manager.load_profile("Dev Flat")
    changed = loaded.model_copy(update={"description": "edited"})
    assert manager.save_profile(changed) == path.resolve()
    data = yaml.safe_load(path.read_text())
    assert data["profile"] == {"name": "Dev Flat", "description": "edited"}
    assert "name" not in data and "description" not in data
    assert manager.load_profile("dev-flat") == changed
    assert changed.enabled_models == loaded.enabled_models and changed.two_stage == loaded.two_stage


def test_a_flat_form_file_with_a_bad_field_names_it(manager: ProfileManager) -> None:
    path = manager.profiles_dir / "flat-bad.yaml"
    path.write_text(
        _flat(SEED_YAML["fast-only"]).replace("expected_time_seconds: 2", "expected_time_seconds: -1")
    )
    with pytest.raises(ConfigError) as info:
        manager.load_profile("flat-bad")
    assert str(path) in str(info.value) and "tier_config[0].expected_time_seconds" in str(info.value)


def test_json_round_trip_keeps_infinity() -> None:
    profile = ProfileManager().load_profile("development")
    text = profile.model_dump_json()
    assert "Infinity" in text
    json.loads(text)  # valid JSON
    again = ModelProfile.model_validate_json(text)
    assert again == profile
    assert math.isinf(again.tier_config[-1].max_score)


def test_save_creates_the_folder(tmp_path: Path) -> None:
    manager = ProfileManager(profiles_dir=tmp_path / "new" / "profiles")
    assert manager.list_profiles() == []
    manager.save_profile(custom_profile())
    assert manager.list_profiles() == ["custom-setup"]


def test_save_without_overwrite_is_a_conflict(manager: ProfileManager) -> None:
    manager.save_profile(custom_profile())
    with pytest.raises(ProfileExistsError) as info:
        manager.save_profile(custom_profile(), overwrite=False)
    assert info.value.status_code == 409


def test_interrupted_save_leaves_old_file_intact(manager: ProfileManager, monkeypatch) -> None:
    path = manager.save_profile(custom_profile())
    old = path.read_text()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr("magi.fileio.os.replace", crash)
    changed = custom_profile().model_copy(update={"description": "changed"})
    with pytest.raises(KeyboardInterrupt):
        manager.save_profile(changed)
    assert path.read_text() == old
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []


# -- names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("Fast Only", "fast-only"),
        ("fast-only", "fast-only"),
        ("  Production  ", "production"),
        ("My_Profile v2", "my_profile-v2"),
        ("Prod (EU)", "prod-eu"),
        ("dev.yaml", "dev"),
    ],
)
def test_filename_normalisation(name: str, stem: str) -> None:
    assert normalize_profile_name(name) == stem


@pytest.mark.parametrize("name", ["../x", "/etc/x", "a/b", "a\\b", "..", "", "   ", "!!!", "x\x00y"])
def test_names_that_escape_are_refused(name: str, manager: ProfileManager) -> None:
    with pytest.raises(InvalidProfileNameError) as info:
        manager.save_profile(custom_profile().model_copy(update={"name": name}))
    assert info.value.status_code == 400
    with pytest.raises(InvalidProfileNameError):
        manager.load_profile(name)


def test_unknown_profile_lists_available(manager: ProfileManager) -> None:
    with pytest.raises(ProfileNotFoundError) as info:
        manager.load_profile("prodution")
    err = info.value
    assert err.status_code == 404
    assert "Did you mean 'production'?" in str(err)
    assert "development, fast-only, production" in str(err)


def test_validate_profile_returns_missing_ids(manager: ProfileManager) -> None:
    profile = manager.load_profile("development")
    assert manager.validate_profile(profile, ["qwen3_4p0b_q4km_fast"]) == [
        "deepseek_r10528qwen3_8p0b_q4km_powerful"
    ]
    assert manager.validate_profile(profile, profile.enabled_models) == []


# -- malformed profiles: each names its problem ------------------------------------------

DEV = SEED_YAML["development"]

MALFORMED: dict[str, tuple[str, list[str]]] = {
    "wrong type": (
        DEV.replace("expected_time_seconds: 2", "expected_time_seconds: soon"),
        ["tier_config[0].expected_time_seconds", "valid number", "'soon'"],
    ),
    "duplicate tiers": (
        DEV.replace('name: "powerful"', 'name: "fast"').replace(
            'stage2_tier: "powerful"', 'stage2_tier: "fast"'
        ),
        ["tier_config[1].name: duplicate tier name 'fast'"],
    ),
    "decreasing thresholds": (
        DEV.replace("max_score: .inf", "max_score: 3.0"),
        ["tier_config[1].max_score", "must be greater than the previous tier's 5.0"],
    ),
    "unknown two-stage tier": (
        DEV.replace('stage2_tier: "powerful"', 'stage2_tier: "huge"'),
        ["two_stage.stage2_tier: tier 'huge' is not in tier_config", "fast, powerful"],
    ),
    "inf without the dot": (
        DEV.replace("max_score: .inf", "max_score: inf"),
        ["tier_config[1].max_score", "write infinity as .inf"],
    ),
    "missing field": (
        DEV.replace(
            "enabled_models:\n  - qwen3_4p0b_q4km_fast\n  - deepseek_r10528qwen3_8p0b_q4km_powerful\n", ""
        ),
        ["enabled_models: required field is missing"],
    ),
    "unknown key": (
        DEV.replace("two_stage:\n", "two_stages:\n  enabled: true\ntwo_stage:\n"),
        [
            "two_stages: unknown key. Did you mean 'two_stage'?",
            "Valid keys here: description, enabled_models",
        ],
    ),
    "unknown strategy": (
        SEED_YAML["production"].replace('"round_robin"', '"fastest"'),
        ["load_balancing.strategy", "'round_robin', 'least_loaded' or 'random'", "'fastest'"],
    ),
    "bad interval": (
        SEED_YAML["production"].replace("health_check_interval: 30", "health_check_interval: -5"),
        ["load_balancing.health_check_interval", "greater than or equal to 0.5"],
    ),
    "interval that would keep an idle runner busy": (
        SEED_YAML["production"].replace("health_check_interval: 30", "health_check_interval: 0.000000001"),
        ["load_balancing.health_check_interval", "greater than or equal to 0.5", "(got 1e-09)"],
    ),
    "zero stage1 tokens": (
        DEV.replace("stage1_max_tokens: 500", "stage1_max_tokens: 0"),
        ["two_stage.stage1_max_tokens", "greater than 0"],
    ),
    "yaml syntax error": (DEV.replace("tier_config:\n", "tier_config: [\n"), ["YAML syntax error", "line "]),
    "not a mapping": ("- just\n- a list\n", ["must be a mapping"]),
    "empty file": ("", ["the file is empty"]),
    "unknown key in profile block": (
        DEV.replace('  name: "Development"', '  nmae: "Development"'),
        ["profile.nmae: unknown key in the 'profile' block"],
    ),
    "no tiers": (
        SEED_YAML["fast-only"].replace(
            'tier_config:\n  - name: "fast"\n    max_score: .inf\n    expected_time_seconds: 2\n',
            "tier_config: []\n",
        ),
        ["tier_config", "at least 1 item"],
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_profile_gives_clear_error(case: str, manager: ProfileManager) -> None:
    text, expected = MALFORMED[case]
    path = manager.profiles_dir / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        manager.load_profile("broken")
    message = str(info.value)
    assert info.value.status_code == 422
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_every_problem_is_reported_at_once(manager: ProfileManager) -> None:
    text = (
        SEED_YAML["production"]
        .replace('"round_robin"', '"fastest"')
        .replace("expected_time_seconds: 15", "expected_time_seconds: -1")
        .replace("health_check_interval: 30", "health_check_interval: x")
    )
    (manager.profiles_dir / "broken.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        manager.load_profile("broken")
    assert len(info.value.problems) == 3
    assert "(3 problems)" in str(info.value)


def test_cross_field_problems_are_reported_together() -> None:
    with pytest.raises(MAGIException) as info:
        from magi.profiles.manager import parse_profile

        parse_profile(
            {
                "name": "x",
                "enabled_models": ["a", "a"],
                "tier_config": [{"name": "fast", "max_score": 5}, {"name": "fast", "max_score": 4}],
                "two_stage": {"enabled": True, "stage1_tier": "tiny"},
            },
            "inline",
        )
    problems = info.value.problems  # type: ignore[attr-defined]
    assert any("duplicate tier name" in p for p in problems)
    assert any("greater than the previous" in p for p in problems)
    assert any("enabled_models: listed more than once: a" in p for p in problems)
    assert any("two_stage.stage1_tier" in p for p in problems)
    assert any("two_stage.stage2_tier" in p for p in problems)


def test_yaml_is_loaded_safely(manager: ProfileManager) -> None:
    (manager.profiles_dir / "evil.yaml").write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError) as info:
        manager.load_profile("evil")
    assert "YAML syntax error" in str(info.value)
