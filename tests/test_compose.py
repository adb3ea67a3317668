"""magi.compose / list_profiles: Hydra composition, overrides, repeated use, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import magi
from magi.errors import ConfigError, ProfileNotFoundError


def test_default_profile_composes() -> None:
    """No profile given: the one named in conf/config.yaml's defaults list."""
    import yaml

    from .conftest import CONF

    defaults = yaml.safe_load((CONF / "config.yaml").read_text())["defaults"]
    (default,) = [entry["profile"] for entry in defaults if isinstance(entry, dict) and "profile" in entry]
    cfg = magi.compose()
    assert cfg.profile == magi.ProfileManager(CONF / "profile").load_profile(default)
    assert cfg.profile != magi.compose(profile="production").profile  # the default is not just any profile
    assert cfg.task.name == "run"


def test_overrides_apply_and_validate() -> None:
    cfg = magi.compose(
        profile="development",
        overrides=[
            "profile.two_stage.enabled=false",
            "profile.tier_config.0.max_score=3.5",
            "runtime.n_ctx=512",
        ],
    )
    assert cfg.profile.two_stage.enabled is False
    assert cfg.profile.tier_config[0].max_score == 3.5
    assert cfg.runtime.n_ctx == 512


def test_profile_override_inside_overrides_list() -> None:
    assert magi.compose(overrides=["profile=production"]).profile.name == "Production"


def test_compose_works_repeatedly_in_one_process() -> None:
    names = {magi.compose(profile=p).profile.name for p in ["development", "production", "fast-only"] * 10}
    assert names == {"Development", "Production", "Fast Only"}
    assert magi.list_profiles() == magi.list_profiles()


def test_unknown_profile_lists_the_options() -> None:
    with pytest.raises(ProfileNotFoundError) as info:
        magi.compose(profile="nope")
    assert info.value.status_code == 404
    for name in ("development", "production", "fast-only"):
        assert name in str(info.value)


def test_invalid_override_names_file_and_field() -> None:
    with pytest.raises(ConfigError) as info:
        magi.compose(profile="production", overrides=["profile.load_balancing.strategy=fastest"])
    message = str(info.value)
    assert "profile/production.yaml" in message
    assert "profile.load_balancing.strategy" in message and "'fastest'" in message


def test_unknown_override_key_is_a_clear_error() -> None:
    with pytest.raises(ConfigError) as info:
        magi.compose(overrides=["profile.two_stage.enabld=true"])
    assert "enabld" in str(info.value)


def test_added_unknown_key_is_caught_by_the_schema() -> None:
    with pytest.raises(ConfigError) as info:
        magi.compose(overrides=["+runtime.nctx=5"])
    assert "runtime.nctx: unknown key. Did you mean 'n_ctx'?" in str(info.value)


def test_override_syntax_error() -> None:
    with pytest.raises(ConfigError):
        magi.compose(overrides=["profile.two_stage.enabled=[unclosed"])


def test_missing_config_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        magi.compose(conf_dir=tmp_path)
    assert "config.yaml: file not found" in str(info.value)


def test_conf_dir_env_var(conf_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (conf_dir / "profile" / "fast-only.yaml").rename(conf_dir / "profile" / "speedy.yaml")
    monkeypatch.setenv("MAGI_CONF_DIR", str(conf_dir))
    assert "speedy" in magi.list_profiles()
    assert magi.compose(profile="speedy").profile.name == "Fast Only"


def test_saved_profile_is_selectable_at_once(conf_dir: Path) -> None:
    manager = magi.ProfileManager(profiles_dir=conf_dir / "profile")
    prof = manager.load_profile("production").model_copy(update={"name": "Prod EU"})
    manager.save_profile(prof)
    assert "prod-eu" in magi.list_profiles(conf_dir)
    assert magi.compose(profile="prod-eu", conf_dir=conf_dir).profile == prof


def test_infinity_survives_config_json_round_trip() -> None:
    cfg = magi.compose(profile="development")
    assert magi.MagiConfig.model_validate_json(cfg.model_dump_json()) == cfg


def test_base_defaults_in_config_yaml_match_the_schema() -> None:
    """conf/config.yaml spells out the schema's defaults; they must not drift apart."""
    from magi.config.profile import LoadBalancingConfig, TwoStageConfig

    cfg = magi.compose(profile="fast-only")  # its YAML sets only `enabled` in both blocks
    assert cfg.profile.two_stage.model_dump(exclude={"enabled"}) == TwoStageConfig().model_dump(
        exclude={"enabled"}
    )
    assert cfg.profile.load_balancing.model_dump(exclude={"enabled"}) == LoadBalancingConfig().model_dump(
        exclude={"enabled"}
    )
    defaults = magi.MagiConfig(profile=cfg.profile)
    assert cfg.runtime == defaults.runtime
    assert cfg.models == defaults.models


def test_any_profile_field_overrides_without_plus() -> None:
    cfg = magi.compose(profile="development", overrides=["profile.load_balancing.strategy=random"])
    assert cfg.profile.load_balancing.strategy == "random"


def test_infinity_on_the_command_line() -> None:
    ok = magi.compose(profile="development", overrides=["runtime.max_tokens=inf"])
    assert ok.runtime.max_tokens_or_none is None  # unlimited at the llama.cpp boundary
    with pytest.raises(ConfigError) as info:
        magi.compose(profile="development", overrides=["runtime.max_tokens=.inf"])
    assert "write infinity as .inf in YAML files, or inf in command-line overrides" in str(info.value)


def test_run_py_reads_magi_conf_dir(conf_dir: Path, tmp_path: Path) -> None:
    """run.py, magi and magi.compose use the same config folder."""
    import os
    import subprocess
    import sys

    from .conftest import ROOT

    (conf_dir / "profile" / "fast-only.yaml").rename(conf_dir / "profile" / "speedy.yaml")
    env = {**os.environ, "MAGI_CONF_DIR": str(conf_dir)}
    proc = subprocess.run(
        [sys.executable, "run.py", "--cfg", "job", "profile=speedy"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Fast Only" in proc.stdout


def test_profiles_list_names_a_missing_conf_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from magi.cli import main

    monkeypatch.setenv("MAGI_CONF_DIR", str(tmp_path / "nope"))
    assert main(["profiles", "list"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_task_field_error_names_the_task_file() -> None:
    with pytest.raises(ConfigError) as info:
        magi.compose(profile="demo", overrides=["task=bench", "task.limit=-1"])
    message = str(info.value)
    assert "task/bench.yaml (task.*)" in message and "task.limit" in message
    assert "profile/demo.yaml" not in message  # no profile field is at fault
