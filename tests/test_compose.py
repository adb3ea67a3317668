"""magi.compose / list_profiles: Hydra composition, overrides, repeated use, errors."""

from __future__ import annotations

import importlib
import os
import shutil
import time
from collections.abc import Iterator
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


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ("profile.two_stage.enabld=true", "profile.two_stage.enabld: unknown key. Did you mean 'enabled'?"),
        ("runtime.n_gpu_layer=0", "runtime.n_gpu_layer: unknown key. Did you mean 'n_gpu_layers'?"),
        ("promt=hi", "promt: unknown key. Did you mean 'prompt'?"),
        ("models.dir=[x]", "models.dir: unknown key. Did you mean 'dirs'?"),
    ],
)
def test_unknown_override_key_is_a_clear_error(override: str, said: str) -> None:
    """A misspelt key says so with a did-you-mean, as one added with + does; not Hydra's
    "Key ... is not in struct" advice to append it with +."""
    with pytest.raises(ConfigError) as info:
        magi.compose(overrides=[override])
    assert said in str(info.value) and "+" not in str(info.value).split(said)[1].split("\n")[0]
    assert "not in struct" not in str(info.value)


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


def test_config_yaml_spells_out_every_runtime_and_models_field() -> None:
    """Every field is in conf/config.yaml, so it overrides without ``+`` (a field left out
    has the same default on both sides, which the test above cannot see)."""
    import yaml

    from magi.config.app import ModelsConfig, RuntimeConfig

    from .conftest import ROOT

    raw = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())
    for block, schema in (("runtime", RuntimeConfig), ("models", ModelsConfig)):
        missing = set(schema.model_fields) - set(raw[block])
        assert not missing, f"conf/config.yaml {block}: lacks {sorted(missing)}"


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


# --- the compose cache (issue 12): a repeated composition skips Hydra -----------------


def _age(conf_dir: Path, seconds: float = 60.0) -> None:
    """Date every file under ``conf_dir`` ``seconds`` back, past the cache's racy window."""
    old = time.time_ns() - int(seconds * 1e9)
    for path in conf_dir.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(old, old))


@pytest.fixture()
def hydra_runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, ...]]]:
    """The overrides of every composition that went through Hydra (not the cache)."""
    compose_module = importlib.import_module("magi.config.compose")  # the package re-exports compose()

    compose_module.clear_compose_cache()
    runs: list[tuple[str, ...]] = []
    real = compose_module._compose_uncached

    def counting(conf, profile, all_overrides, overrides, config_name):  # type: ignore[no-untyped-def]
        runs.append(tuple(all_overrides))
        return real(conf, profile, all_overrides, overrides, config_name)

    monkeypatch.setattr(compose_module, "_compose_uncached", counting)
    yield runs
    compose_module.clear_compose_cache()


def test_cache_hit_returns_an_equal_independent_copy(conf_dir: Path, hydra_runs: list) -> None:
    _age(conf_dir)
    first = magi.compose(profile="production", overrides=["runtime.n_ctx=512"], conf_dir=conf_dir)
    first.runtime.n_ctx = 1  # a caller mutating its copy...
    first.profile.enabled_models.append("mutant")
    second = magi.compose(profile="production", overrides=["runtime.n_ctx=512"], conf_dir=conf_dir)
    third = magi.compose(profile="production", overrides=["runtime.n_ctx=512"], conf_dir=conf_dir)
    assert len(hydra_runs) == 1  # the second and third came from the cache
    assert second.runtime.n_ctx == 512 and "mutant" not in second.profile.enabled_models  # ...not the cache
    assert second == third and second is not third and second.profile is not third.profile
    assert second == magi.compose(profile="production", overrides=["runtime.n_ctx=512"], conf_dir=conf_dir)


def test_editing_a_profile_keeping_its_size_invalidates(conf_dir: Path, hydra_runs: list) -> None:
    _age(conf_dir, 120)
    path = conf_dir / "profile" / "production.yaml"
    assert (
        magi.compose(profile="production", conf_dir=conf_dir).profile.load_balancing.health_check_interval
        == 30
    )
    text = path.read_text()
    edited = text.replace("health_check_interval: 30", "health_check_interval: 45")
    assert edited != text and len(edited) == len(text)
    before = path.stat().st_mtime_ns
    path.write_text(edited)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))  # still well in the past
    cfg = magi.compose(profile="production", conf_dir=conf_dir)
    assert cfg.profile.load_balancing.health_check_interval == 45
    assert len(hydra_runs) == 2


def test_a_new_file_invalidates(conf_dir: Path, hydra_runs: list) -> None:
    _age(conf_dir)
    magi.compose(profile="production", conf_dir=conf_dir)
    magi.compose(profile="production", conf_dir=conf_dir)
    assert len(hydra_runs) == 1
    (conf_dir / "profile" / "extra.yaml").write_text((conf_dir / "profile" / "fast-only.yaml").read_text())
    _age(conf_dir)
    magi.compose(profile="production", conf_dir=conf_dir)
    assert len(hydra_runs) == 2
    assert magi.compose(profile="extra", conf_dir=conf_dir).profile.name == "Fast Only"


def test_different_overrides_profiles_and_folders_miss(conf_dir: Path, hydra_runs: list) -> None:
    _age(conf_dir)
    a = magi.compose(profile="production", conf_dir=conf_dir)
    b = magi.compose(profile="production", overrides=["runtime.n_ctx=512"], conf_dir=conf_dir)
    c = magi.compose(profile="development", conf_dir=conf_dir)
    d = magi.compose(profile="production", endpoints="example", conf_dir=conf_dir)
    assert len(hydra_runs) == 4
    assert a.runtime.n_ctx != b.runtime.n_ctx and a.profile != c.profile and a.endpoints != d.endpoints
    other = conf_dir.parent / "other"
    shutil.copytree(conf_dir, other)
    magi.compose(profile="production", conf_dir=other)
    assert len(hydra_runs) == 5


def test_a_file_written_just_now_is_never_served_stale(conf_dir: Path, hydra_runs: list) -> None:
    """Two same-size writes within one timestamp tick keep (size, mtime): a config composed
    from a file that new is not cached, so the second write is seen."""
    path = conf_dir / "profile" / "production.yaml"
    text = path.read_text()
    path.write_text(text)  # modified now
    stamp = path.stat().st_mtime_ns
    assert (
        magi.compose(profile="production", conf_dir=conf_dir).profile.load_balancing.health_check_interval
        == 30
    )
    path.write_text(text.replace("health_check_interval: 30", "health_check_interval: 45"))
    os.utime(path, ns=(stamp, stamp))  # the same tick, as a fast second write would get
    cfg = magi.compose(profile="production", conf_dir=conf_dir)
    assert cfg.profile.load_balancing.health_check_interval == 45
    assert len(hydra_runs) == 2


def test_cache_is_bounded_least_recently_used_first(
    conf_dir: Path, hydra_runs: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose_module = importlib.import_module("magi.config.compose")  # the package re-exports compose()

    monkeypatch.setattr(compose_module, "COMPOSE_CACHE_SIZE", 2)
    _age(conf_dir)
    for n_ctx in (512, 1024, 512, 768, 512, 1024):  # 1024 is evicted by 768 (512 was used since)
        magi.compose(overrides=[f"runtime.n_ctx={n_ctx}"], conf_dir=conf_dir)
    assert [run[-1] for run in hydra_runs] == [
        "runtime.n_ctx=512",
        "runtime.n_ctx=1024",
        "runtime.n_ctx=768",
        "runtime.n_ctx=1024",
    ]
    assert len(compose_module._cache) == 2


def test_errors_are_not_cached(conf_dir: Path, hydra_runs: list) -> None:
    _age(conf_dir)
    for _ in range(2):
        with pytest.raises(ConfigError):
            magi.compose(overrides=["profile.load_balancing.strategy=fastest"], conf_dir=conf_dir)
    assert len(hydra_runs) == 2


def test_bench_compose_meets_its_budget(conf_dir: Path) -> None:
    """scripts/bench_compose.py: a cached compose costs ≤ 5% of a Hydra one (ratio, one run)."""
    import subprocess
    import sys

    from .conftest import ROOT

    def bench(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "scripts/bench_compose.py", "--conf-dir", str(conf_dir), *args]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)

    _age(conf_dir)
    proc = bench("--rounds", "5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warm ÷ cold = " in proc.stdout
    missed = bench("--rounds", "1", "--budget", "0")  # a regression is visible: non-zero exit
    assert missed.returncode == 1 and "OVER BUDGET" in missed.stderr


def test_fingerprint_visits_a_folder_once_through_a_symlink_loop(conf_dir: Path) -> None:
    compose_module = importlib.import_module("magi.config.compose")
    files, _ = compose_module.conf_fingerprint(conf_dir)
    (conf_dir / "profile" / "loop").symlink_to(conf_dir, target_is_directory=True)
    looped, _ = compose_module.conf_fingerprint(conf_dir)
    assert len(looped) == len(files) > 10  # not 40 nested copies until the kernel's ELOOP
