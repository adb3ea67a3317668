"""The `magi` CLI and `python run.py`: exit codes and messages, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from magi.cli import main

from .conftest import ROOT

PROFILES = sorted(p.stem for p in (ROOT / "conf" / "profile").glob("*.yaml"))


def test_profiles_list(capsys) -> None:
    assert main(["profiles", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("development", "production", "fast-only"):
        assert name in out


def test_profiles_show(capsys) -> None:
    assert main(["profiles", "show", "Fast Only"]) == 0
    out = capsys.readouterr().out
    assert "Profile 'Fast Only' (profile=fast-only)" in out
    assert "qwen3_4p0b_q4km_fast" in out


def test_profiles_show_unknown(capsys) -> None:
    assert main(["profiles", "show", "nope"]) == 2
    err = capsys.readouterr().err
    assert "Profile 'nope' not found" in err and "production" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("name", PROFILES)
def test_validate_every_shipped_profile(name: str, capsys) -> None:
    assert main(["validate", name]) == 0
    assert capsys.readouterr().out.startswith("OK")


def test_validate_by_path_and_invalid_file(tmp_path: Path, capsys) -> None:
    good = ROOT / "conf" / "profile" / "production.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text((good.read_text()).replace("round_robin", "fastest"))
    assert main(["validate", str(good)]) == 0
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "load_balancing.strategy" in err
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120
    )


def test_console_script_module_entry() -> None:
    proc = _run("-m", "magi.cli", "validate", "nope")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "Available profiles" in proc.stderr


@pytest.mark.parametrize("name", PROFILES)
def test_run_py_cfg_job_for_every_profile(name: str) -> None:
    proc = _run("run.py", "--cfg", "job", f"profile={name}")
    assert proc.returncode == 0, proc.stderr
    assert "enabled_models:" in proc.stdout and "tier_config:" in proc.stdout


def test_run_py_override() -> None:
    proc = _run("run.py", "--cfg", "job", "profile=development", "profile.two_stage.enabled=false")
    assert proc.returncode == 0, proc.stderr
    assert "enabled: false" in proc.stdout.split("two_stage:")[1].split("\n")[1]


def test_run_py_unknown_profile_lists_options() -> None:
    proc = _run("run.py", "profile=nope")
    assert proc.returncode != 0
    assert "Available options in 'profile'" in proc.stderr
    for name in ("development", "production", "fast-only"):
        assert name in proc.stderr


def test_run_py_misspelt_key_exits_2_with_a_did_you_mean(tmp_path: Path) -> None:
    proc = _run("run.py", f"hydra.run.dir={tmp_path}", "runtime.n_gpu_layer=0")
    assert proc.returncode == 2, proc.stderr
    assert "runtime.n_gpu_layer: unknown key. Did you mean 'n_gpu_layers'?" in proc.stderr
    assert "HYDRA_FULL_ERROR" not in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_run_py_invalid_value_exits_2_without_traceback(tmp_path: Path) -> None:
    proc = _run(
        "run.py",
        f"hydra.run.dir={tmp_path}",
        "profile=development",
        "profile.load_balancing.strategy=fastest",
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "profile.load_balancing.strategy" in proc.stderr and "profile/development.yaml" in proc.stderr
