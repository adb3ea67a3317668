"""``magi discover`` and ``magi models``: tables, registry files, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from magi.cli import main
from magi.models.registry import ModelRegistry
from magi.testing.tiny_gguf import SEED_MODELS, make_seed_models, write_tiny_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Work in ``tmp_path``: models.dirs' default ``models/`` is then the test's own (the
    seed models' folder, or absent), never the checkout's with whatever a user put there."""
    monkeypatch.chdir(tmp_path)


def test_discover_prints_table_and_writes_registry(
    seed_models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (seed_models_dir / "junk.gguf").write_text("not a model at all, but named like one")
    registry_path = tmp_path / "out" / "registry.json"
    code = main(["discover", str(seed_models_dir), "--registry", str(registry_path), "--no-demo"])
    out = capsys.readouterr().out
    assert code == 0
    header = out.splitlines()[0].split()
    assert header == ["id", "tier", "family", "size", "quant", "context", "file", "size", "memory"]
    for model_id in SEED_MODELS:
        assert model_id in out
    assert "Skipped 1 file(s):" in out and "junk.gguf: not a GGUF file" in out
    assert f"Registry written to {registry_path}" in out and "4 read, 0 unchanged" in out
    assert set(ModelRegistry.load(registry_path).models) == set(SEED_MODELS)

    # second run: the models are not re-read (the junk file is: skipped files are not cached)
    assert main(["discover", str(seed_models_dir), "--registry", str(registry_path), "--no-demo"]) == 0
    assert "1 read, 3 unchanged" in capsys.readouterr().out
    assert (
        main(["discover", str(seed_models_dir), "--registry", str(registry_path), "--no-demo", "--full"]) == 0
    )
    assert "4 read, 0 unchanged" in capsys.readouterr().out


def test_discover_json(seed_models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tiny_model(seed_models_dir / "Big-70B-Q4_K_M.gguf", shards=2)
    code = main(
        ["discover", str(seed_models_dir), "--registry", str(tmp_path / "r.json"), "--no-demo", "--json"]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {m["id"] for m in data["models"]} == set(SEED_MODELS) | {"tiny_llama_70p0b_q4km_powerful"}
    assert data["stats"]["models"] == 4 and data["skipped"] == []
    assert data["registry"] == str(tmp_path / "r.json")


def test_discover_missing_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["discover", str(tmp_path / "absent"), "--registry", str(tmp_path / "r.json"), "--no-demo"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith("error: Models folder ")
    assert "absent does not exist" in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "r.json").exists()


def test_models_list_and_check(
    seed_models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "registry.json"
    assert main(["discover", str(seed_models_dir), "--registry", str(registry), "--no-demo"]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--registry", str(registry)]) == 0
    out = capsys.readouterr().out
    assert "qwen2_coder_p5_14p0b_q4km_powerful" in out and str(seed_models_dir) in out
    assert "3 model(s) in" in out

    assert (
        main(["models", "check", "development", "production", "fast-only", "--registry", str(registry)]) == 0
    )
    out = capsys.readouterr().out
    assert "OK      development: fast: qwen3_4p0b_q4km_fast; powerful: deepseek" in out
    assert main(["models", "check", "demo", "--registry", str(registry)]) == 2
    err = capsys.readouterr().err
    assert "INVALID demo" in err
    assert "not in the registry: smollm2_135m_q41_fast, gemma3_270m_q4km_fast" in err


def test_models_list_without_registry_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--registry", str(tmp_path / "none.json")]) == 2
    assert "does not exist. Create it with `magi discover FOLDER`" in capsys.readouterr().err


def test_magi_discover_as_a_process(tmp_path: Path) -> None:
    """The console entry point end to end, on the generator script's output."""
    make_seed_models(tmp_path / "m")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "magi.cli",
            "discover",
            str(tmp_path / "m"),
            "--registry",
            str(tmp_path / "r.json"),
            "--no-demo",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "qwen3_4p0b_q4km_fast" in proc.stdout


PHI = "phi3_mini_p5_3p8b_q4km_fast"


def added_folders(path: Path) -> list[Path]:
    """The folders recorded in a folders file (docs/MODELS.md, "Adding a folder")."""
    return [Path(p) for p in json.loads(path.read_text())["folders"]]


def test_a_discovered_folder_stays_for_the_next_start(
    seed_models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import magi
    from magi.runtime.resolve import load_registry
    from magi.runtime.runner import Runner

    # working in tmp_path (fixture above): models.dirs' default, models/, is seed_models_dir
    mine = tmp_path / "mine"
    write_tiny_model(
        mine / "Phi-3.5-mini-3.8B-Q4_K_M.gguf",
        name="Phi 3.5 mini",
        basename="Phi-3.5-mini",
        size_label="3.8B",
    )
    registry = tmp_path / "reg.json"
    assert main(["discover", str(mine), "--registry", str(registry), "--no-demo"]) == 0
    out = capsys.readouterr().out
    assert PHI in out and "qwen3_4p0b_q4km_fast" in out  # models.dirs and the new folder
    assert f"Added {mine}" in out and "magi discover --forget" in out
    assert f"models.dirs=[models,{mine}]" in out  # the config line, for those who prefer it
    folders = tmp_path / "reg.folders.json"  # beside the registry, named by the output
    assert f"recorded in {folders}" in out
    assert added_folders(folders) == [mine]

    # the next start rebuilds the registry from models.dirs and keeps the added folder
    overrides = [f"models.registry={registry}", "models.demo=false"]
    config = magi.compose(profile="fast-only", overrides=[*overrides, f"profile.enabled_models=[{PHI}]"])
    assert set(load_registry(config).models) == {*SEED_MODELS, PHI}
    runner = Runner(config, start_health_checks=False)
    try:
        assert runner.specs[PHI].path == mine / "Phi-3.5-mini-3.8B-Q4_K_M.gguf"
        assert runner.run("hi").model_id == PHI
    finally:
        runner.close()

    # the reviewer's scenario: a damaged registry is rebuilt at the next start, the folder stays
    registry.write_text("garbage")
    assert set(load_registry(magi.compose(overrides=overrides)).models) == {*SEED_MODELS, PHI}
    assert main(["models", "list", "--no-probe", "--registry", str(registry)]) == 0
    assert PHI in capsys.readouterr().out

    # a missing added folder (an unplugged disk) is warned about and kept, not an error
    moved = tmp_path / "away"
    mine.rename(moved)
    assert set(load_registry(magi.compose(overrides=overrides)).models) == set(SEED_MODELS)
    assert added_folders(folders) == [mine]
    moved.rename(mine)

    assert main(["discover", "--forget", str(mine), "--registry", str(registry), "--no-demo"]) == 0
    assert f"Forgot {mine}" in capsys.readouterr().out
    assert set(load_registry(magi.compose(overrides=overrides)).models) == set(SEED_MODELS)
    assert added_folders(folders) == []


def test_profiles_show_gives_the_registry_tier_of_a_pinned_id(
    seed_models_dir: Path, conf_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from magi.config.app import ModelsConfig
    from magi.models.discovery import ModelDiscoveryService

    monkeypatch.setenv("MAGI_CONF_DIR", str(conf_dir))
    # the registry at models.registry (models/registry.json, in the working directory tmp_path)
    pins = [{"file": "Qwen3-4B-Q4_K_M.gguf", "id": "my_qwen"}]  # no tier suffix in the id
    config = ModelsConfig(dirs=[seed_models_dir], pins=pins, demo=False)
    ModelDiscoveryService(config=config, registry_path=seed_models_dir / "registry.json").refresh()
    profile = (conf_dir / "profile" / "development.yaml").read_text()
    (conf_dir / "profile" / "mine.yaml").write_text(
        profile.replace("Development", "Mine").replace("qwen3_4p0b_q4km_fast", "my_qwen")
    )
    assert main(["profiles", "show", "mine"]) == 0
    rows = {
        line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line[:4] in ("fast", "powe")
    }
    assert rows["fast"].endswith("my_qwen")  # the registry's tier for it, not '-'
    assert rows["powerful"].endswith("deepseek_r10528qwen3_8p0b_q4km_powerful")

    # without a registry the id's suffix is all there is: the row says where to look
    (seed_models_dir / "registry.json").unlink()
    assert main(["profiles", "show", "mine"]) == 0
    out = capsys.readouterr().out
    assert "my_qwen" in out.split("enabled models:")[0]
    assert "not in the registry" in out
