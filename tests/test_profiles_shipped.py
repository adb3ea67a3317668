"""Every shipped profile composes and validates; the seed's three profiles are verbatim."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

import magi
from magi import ProfileManager
from magi.profiles.manager import parse_profile

from .conftest import CONF
from .seed_profiles import SEED_YAML

SHIPPED = sorted(p.stem for p in (CONF / "profile").glob("*.yaml"))


def test_group_options_are_the_files() -> None:
    assert magi.list_profiles() == SHIPPED
    assert {"development", "production", "fast-only"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_composes_and_validates(name: str) -> None:
    cfg = magi.compose(profile=name)
    assert cfg.profile == ProfileManager().load_profile(name)
    assert magi.MagiConfig.model_validate_json(cfg.model_dump_json()) == cfg  # and survives JSON


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_yaml_opens_with_a_comment(name: str) -> None:
    text = (CONF / "profile" / f"{name}.yaml").read_text()
    assert text.startswith("# ")
    assert f"profile={name}" in text.split("\n\n")[0]


@pytest.mark.parametrize("key", sorted(SEED_YAML))
def test_seed_yaml_is_shipped_verbatim(key: str) -> None:
    shipped = yaml.safe_load((CONF / "profile" / f"{key}.yaml").read_text())
    assert shipped == yaml.safe_load(SEED_YAML[key])
    # and the text itself, minus the header comment, is the seed's block
    body = "\n".join(
        line
        for line in (CONF / "profile" / f"{key}.yaml").read_text().splitlines()
        if not line.startswith("#")
    )
    assert body.strip() == SEED_YAML[key].strip()


@pytest.mark.parametrize("key", sorted(SEED_YAML))
def test_seed_blocks_load_through_manager_and_compose(key: str, tmp_path: Path) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / f"{key}.yaml").write_text(SEED_YAML[key])
    via_manager = ProfileManager(profiles_dir=folder).load_profile(key)
    via_compose = magi.compose(profile=key).profile
    assert via_manager == via_compose


def test_seed_values() -> None:
    dev = magi.compose(profile="development").profile
    assert dev.name == "Development"
    assert dev.two_stage.enabled is True
    assert (dev.two_stage.stage1_tier, dev.two_stage.stage2_tier) == ("fast", "powerful")
    assert dev.two_stage.stage1_max_tokens == 500
    assert [(t.name, t.max_score) for t in dev.tier_config] == [("fast", 5.0), ("powerful", math.inf)]
    assert dev.load_balancing.enabled is False

    prod = magi.compose(profile="production").profile
    assert prod.load_balancing.enabled is True
    assert prod.load_balancing.strategy == "round_robin"
    assert prod.load_balancing.health_check_interval == 30
    assert prod.two_stage.enabled is False
    assert prod.enabled_models == [
        "deepseek_r10528qwen3_8p0b_q4km_powerful",
        "qwen2_coder_p5_14p0b_q4km_powerful",
    ]

    fast = magi.compose(profile="fast-only").profile
    assert len(fast.tier_config) == 1
    assert fast.tier_config[0].name == "fast" and math.isinf(fast.tier_config[0].max_score)
    assert fast.enabled_models == ["qwen3_4p0b_q4km_fast"]


def test_flat_and_nested_forms_are_equal() -> None:
    nested = yaml.safe_load(SEED_YAML["fast-only"])
    flat = {**{k: v for k, v in nested.items() if k != "profile"}, **nested["profile"]}
    assert parse_profile(flat, "flat") == parse_profile(nested, "nested")
