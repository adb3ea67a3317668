"""Discovery over folders of generated tiny models: ids, tiers, skipped files, refresh, profiles."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import magi
from magi.config.app import ModelPin, ModelsConfig
from magi.errors import ModelError
from magi.models.discovery import ModelDiscoveryService, find_model_files
from magi.models.gguf_meta import GGUFModelInfo, read_model_info
from magi.models.registry import ModelRegistry, RegistryWriteError, added_folders_path
from magi.profiles import ProfileManager
from magi.testing.runtime import FAST, TinyRuntime
from magi.testing.tiny_gguf import SEED_MODELS, make_seed_models, write_tiny_model

ROOT = Path(__file__).resolve().parents[1]

SEED_IDS = set(SEED_MODELS)


def make_varied_folder(folder: Path) -> dict[str, str]:
    """Seed models, extra families, a split model and bad files; returns {file name: expected outcome}."""
    make_seed_models(folder)
    write_tiny_model(
        folder / "nested" / "deeper" / "Tiny-1B-Q8_0.gguf",
        name=None,
        basename=None,
        size_label=None,
        file_type=None,
    )
    write_tiny_model(
        folder / "Llama-3.1-70B-Instruct-Q4_K_M.gguf",
        shards=3,
        name="Llama 3.1 70B Instruct",
        basename="Llama-3.1",
        size_label="70B",
        finetune="Instruct",
    )
    write_tiny_model(
        folder / "gemma-3-270m-f16.gguf",
        name="Gemma 3 270m",
        basename="gemma-3",
        size_label="270M",
        file_type="F16",
        context_length=32768,
    )
    truncated = write_tiny_model(folder / "Broken-7B-Q4_K_M.gguf")
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    (folder / "readme.gguf").write_text("This is not a model, just text with a .gguf name.\n" * 3)
    write_tiny_model(folder / "Half-8B-Q4_K_M.gguf", shards=2)
    (folder / "Half-8B-Q4_K_M-00002-of-00002.gguf").unlink()
    write_tiny_model(folder / "adapter.gguf", metadata={"general.type": "adapter"})
    write_tiny_model(folder / ".hidden" / "Secret-1B-Q4_K_M.gguf")
    (folder / "notes.txt").write_text("ignored: not .gguf")
    return {
        "Tiny-1B-Q8_0.gguf": "tiny_1p0b_q80_fast",
        "Llama-3.1-70B-Instruct-Q4_K_M-00001-of-00003.gguf": "llama3_p1_70p0b_q4km_powerful",
        "gemma-3-270m-f16.gguf": "gemma3_270m_f16_fast",
        "Broken-7B-Q4_K_M.gguf": "skipped: truncated",
        "readme.gguf": "skipped: not a GGUF file",
        "Half-8B-Q4_K_M-00001-of-00002.gguf": "skipped: split model incomplete",
        "adapter.gguf": "skipped: general.type is 'adapter'",
    }


@pytest.fixture
def varied(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "models"
    return folder, make_varied_folder(folder)


def test_discovery_over_a_varied_folder(
    varied: tuple[Path, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    folder, expected = varied
    result = ModelDiscoveryService(scan_path=folder).discover()
    registry = result.registry
    by_name = {e.path.name: e.id for e in registry.models.values()}
    skipped = {s.path.name: s.reason for s in registry.skipped}
    for name, outcome in expected.items():
        if outcome.startswith("skipped: "):
            assert outcome.removeprefix("skipped: ") in skipped[name], (name, skipped.get(name))
        else:
            assert by_name[name] == outcome
    assert set(registry.models) >= SEED_IDS
    assert len(registry.models) == 6 and len(registry.skipped) == 4
    assert not any("Secret" in str(e.path) for e in registry.models.values())
    # every skipped file was logged as a warning naming it and the reason
    for item in registry.skipped:
        assert any(str(item.path) in r.getMessage() and item.reason in r.getMessage() for r in caplog.records)
    assert (result.stats.models, result.stats.skipped, result.stats.reused) == (6, 4, 0)


def test_split_model_is_one_entry(varied: tuple[Path, dict[str, str]]) -> None:
    folder, _ = varied
    registry = ModelDiscoveryService(scan_path=folder).discover().registry
    entry = registry.get("llama3_p1_70p0b_q4km_powerful")
    shards = sorted(folder.glob("Llama-3.1-70B-Instruct-Q4_K_M-*.gguf"))
    assert entry.path == shards[0] and [f.path for f in entry.files] == shards
    assert entry.file_size == sum(p.stat().st_size for p in shards)
    assert entry.split_count == 3 and entry.tier == "powerful" and entry.params == 70_000_000_000


def test_seed_models_get_the_seed_ids_tiers_and_facts(seed_models: dict[str, Path]) -> None:
    folder = next(iter(seed_models.values())).parent
    registry = ModelDiscoveryService(scan_path=folder).discover().registry
    assert set(registry.models) == SEED_IDS
    for model_id, path in seed_models.items():
        entry = registry.get(model_id)
        assert entry.path == path
        assert entry.tier == model_id.rsplit("_", 1)[1]
        assert entry.quant == "Q4_K_M" and entry.file_type == 15
        assert entry.architecture == "llama" and entry.context_length == 4096
        assert (entry.n_layer, entry.n_embd, entry.n_head, entry.n_head_kv) == (2, 64, 4, 2)
        assert entry.file_size == path.stat().st_size
        assert entry.memory_mb == pytest.approx(entry.memory(2048).total_mb, abs=0.05)


def test_seed_profiles_validate_against_the_registry(seed_models_dir: Path, tmp_path: Path) -> None:
    """The seed's own example: load the registry, validate each shipped profile against it."""
    discovery = ModelDiscoveryService(scan_path=seed_models_dir, registry_path=tmp_path / "data" / "reg.json")
    discovery.refresh()
    registry = discovery.load_registry(tmp_path / "data" / "reg.json")
    manager = ProfileManager()  # the shipped conf/profile
    for name in ("development", "production", "fast-only"):
        profile = manager.load_profile(name)
        assert manager.validate_profile(profile, list(registry.models.keys())) == [], name


def test_profile_naming_an_absent_model_lists_it(seed_models_dir: Path) -> None:
    registry = ModelDiscoveryService(scan_path=seed_models_dir).discover().registry
    manager = ProfileManager()
    (seed_models_dir / "Qwen2.5-Coder-14B-Instruct-Q4_K_M.gguf").unlink()
    smaller = ModelDiscoveryService(scan_path=seed_models_dir).discover().registry
    production = manager.load_profile("production")
    assert manager.validate_profile(production, registry.ids) == []
    assert manager.validate_profile(production, smaller.ids) == ["qwen2_coder_p5_14p0b_q4km_powerful"]
    assert manager.validate_profile(manager.load_profile("demo"), smaller.ids) == [
        "smollm2_135m_q41_fast",
        "gemma3_270m_q4km_fast",
    ]


class CountingReader:
    """The real header reader, counting which files it was asked to read."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, paths: list[Path]) -> GGUFModelInfo:
        self.calls.append(paths[0].name)
        return read_model_info(paths)


def test_refresh_rereads_only_changed_files(varied: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    folder, _ = varied
    reader = CountingReader()
    service = ModelDiscoveryService(scan_path=folder, registry_path=tmp_path / "reg.json", reader=reader)
    first = service.refresh()
    # 6 models + 3 bad files; the incomplete split set is skipped without reading
    assert first.stats.read == 9 and first.stats.reused == 0
    assert (tmp_path / "reg.json").is_file()
    bad = {"Broken-7B-Q4_K_M.gguf", "readme.gguf", "adapter.gguf"}

    reader.calls.clear()
    second = service.refresh()  # previous registry loaded from disk
    assert second.stats.reused == 6
    assert set(reader.calls) == bad  # only the bad files (they are not cached)
    assert second.registry.models == first.registry.models

    # change one model (new bytes, new mtime), add one, delete one
    qwen = folder / "Qwen3-4B-Q4_K_M.gguf"
    write_tiny_model(qwen, name="Qwen3 4B", basename="Qwen3", size_label="4B", context_length=8192, seed=99)
    os.utime(qwen, ns=(qwen.stat().st_atime_ns, qwen.stat().st_mtime_ns + 10**9))
    write_tiny_model(
        folder / "Mistral-7B-v0.3-Q5_K_M.gguf",
        name="Mistral 7B v0.3",
        basename="Mistral",
        size_label="7B",
        file_type="Q5_K_M",
    )
    (folder / "gemma-3-270m-f16.gguf").unlink()
    reader.calls.clear()
    third = service.refresh()
    model_reads = [c for c in reader.calls if c not in bad]
    assert sorted(model_reads) == ["Mistral-7B-v0.3-Q5_K_M.gguf", "Qwen3-4B-Q4_K_M.gguf"]
    assert third.stats.reused == 4  # 6 - 1 changed - 1 deleted
    assert third.registry.get("qwen3_4p0b_q4km_fast").context_length == 8192
    assert "mistral_7p0b_q5km_powerful" in third.registry.models
    assert "gemma3_270m_f16_fast" not in third.registry.models


def test_registry_json_round_trip(varied: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    folder, _ = varied
    registry = ModelDiscoveryService(scan_path=folder).discover().registry
    path = registry.save(tmp_path / "out" / "registry.json")
    loaded = ModelRegistry.load(path)
    assert loaded == registry
    assert loaded.model_dump_json() == registry.model_dump_json()
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temporary file


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON (line 1, column 2"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"version": 99, "models": {}}', "format version 99"),
        ('{"version": 1, "models": {"x": {"id": "x"}}}', "is not a valid registry"),
    ],
)
def test_corrupt_registry_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "registry.json"
    path.write_text(content)
    with pytest.raises(ModelError, match="Model registry") as info:
        ModelDiscoveryService(scan_path=tmp_path).load_registry(path)
    assert str(path) in str(info.value) and message in str(info.value)
    assert "magi discover" in str(info.value)


def test_missing_registry_and_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist. Create it with `magi discover") as info:
        ModelRegistry.load(tmp_path / "none.json")
    assert info.value.status_code == 404
    with pytest.raises(ModelError, match=r"Models folder .*nowhere does not exist") as info:
        ModelDiscoveryService(scan_path=tmp_path / "nowhere").discover()
    assert info.value.status_code == 404


def test_refresh_rebuilds_a_corrupt_registry(seed_models_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text("{garbage")
    result = ModelDiscoveryService(scan_path=seed_models_dir, registry_path=path).refresh()
    assert set(result.registry.models) == SEED_IDS
    assert ModelRegistry.load(path) == result.registry


def test_duplicate_files_get_suffixed_ids(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        make_seed_models(tmp_path / folder)
    registry = ModelDiscoveryService(scan_path=[tmp_path / "b", tmp_path / "a"]).discover().registry
    assert registry.get("qwen3_4p0b_q4km_fast").path.parent.name == "a"
    assert registry.get("qwen3_4p0b_q4km_fast_2").path.parent.name == "b"
    assert len(registry.models) == 6


def test_overlapping_folders_count_a_file_once(seed_models_dir: Path) -> None:
    models, _ = find_model_files([seed_models_dir, seed_models_dir.parent])
    assert len(models) == 3


def test_pins_and_thresholds_from_config(seed_models_dir: Path) -> None:
    config = ModelsConfig(
        tier_thresholds={"small": 5.0, "medium": 10.0, "large": float("inf")},
        pins={
            "Qwen3-4B-Q4_K_M.gguf": ModelPin(id="my-qwen"),
            "DeepSeek-R1-0528-Qwen3-8B-Q4_K_M.gguf": ModelPin(tier="reasoning"),
            "absent.gguf": ModelPin(tier="x"),
        },
        demo=False,
    )
    result = ModelDiscoveryService(scan_path=seed_models_dir, config=config).discover()
    registry = result.registry
    assert set(registry.models) == {
        "my-qwen",
        "deepseek_r10528qwen3_8p0b_q4km_reasoning",
        "qwen2_coder_p5_14p0b_q4km_large",
    }
    assert registry.get("my-qwen").tier == "small" and registry.get("my-qwen").pinned
    assert registry.get("deepseek_r10528qwen3_8p0b_q4km_reasoning").tier == "reasoning"
    assert result.warnings == ["models.pins.absent.gguf: no discovered file has this name"]


def test_pins_and_thresholds_are_validated() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="positive number of billions"):
        ModelsConfig(tier_thresholds={"fast": 0})
    with pytest.raises(ValidationError, match="needs at least one tier"):
        ModelsConfig(tier_thresholds={})
    with pytest.raises(ValidationError, match="pattern"):
        ModelsConfig(pins={"a.gguf": {"id": "bad id!"}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        ModelsConfig(pins={"a.gguf": {"tierr": "fast"}})


PIN_LIST = (
    "models.pins=[{file:Qwen3-4B-Q4_K_M.gguf,id:my_qwen,tier:powerful},"
    "{file:x-00001-of-00002.gguf,tier:fast}]"
)


def test_pins_as_a_list_from_the_command_line(seed_models_dir: Path) -> None:
    # file names are no valid override keys (the dots), so pins also take a list of {file, id, tier}
    config = magi.compose(overrides=[PIN_LIST, f"models.dirs=[{seed_models_dir}]", "models.demo=false"])
    assert config.models.pins == {
        "Qwen3-4B-Q4_K_M.gguf": ModelPin(id="my_qwen", tier="powerful"),
        "x-00001-of-00002.gguf": ModelPin(tier="fast"),
    }
    registry = ModelDiscoveryService(
        config=config.models, registry_path=seed_models_dir / "r.json"
    ).discover()
    entry = registry.registry.get("my_qwen")
    assert (entry.tier, entry.pinned, entry.path.name) == ("powerful", True, "Qwen3-4B-Q4_K_M.gguf")
    # the mapping form still works, and means the same
    mapping = ModelsConfig(pins={"Qwen3-4B-Q4_K_M.gguf": {"id": "my_qwen", "tier": "powerful"}})
    listed = ModelsConfig(pins=[{"file": "Qwen3-4B-Q4_K_M.gguf", "id": "my_qwen", "tier": "powerful"}])
    assert mapping == listed


def test_pins_list_as_run_py_takes_it() -> None:
    proc = subprocess.run(
        [sys.executable, "run.py", "--cfg", "job", PIN_LIST],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "file: Qwen3-4B-Q4_K_M.gguf" in proc.stdout and "id: my_qwen" in proc.stdout


@pytest.mark.parametrize(
    ("pins", "problem"),
    [
        ([{"id": "x"}], "models.pins: item 0: needs 'file'"),
        ([{"file": "a.gguf"}, {"file": "a.gguf", "id": "y"}], "item 1: file 'a.gguf' is pinned twice"),
        (["a.gguf"], "models.pins: item 0: must be {file: NAME.gguf, id: ..., tier: ...}"),
    ],
)
def test_pins_list_mistakes_are_named(pins: list[object], problem: str) -> None:
    from magi.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        magi.compose(overrides=[f"models.pins={_hydra(pins)}"])
    assert problem in str(info.value)


def _hydra(value: object) -> str:
    """A Python list/dict/str as a Hydra override value."""
    if isinstance(value, list):
        return "[" + ",".join(_hydra(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra(v)}" for k, v in value.items()) + "}"
    return str(value)


def test_bare_service_does_not_assemble_the_demo(seed_models_dir: Path) -> None:
    ModelDiscoveryService(scan_path=seed_models_dir).discover()
    assert not list(seed_models_dir.glob("gemma*"))


def test_registry_queries(seed_registry: ModelRegistry, seed_models: dict[str, Path]) -> None:
    from magi.errors import ModelNotFoundError

    assert seed_registry.by_tier() == {
        "powerful": ["deepseek_r10528qwen3_8p0b_q4km_powerful", "qwen2_coder_p5_14p0b_q4km_powerful"],
        "fast": ["qwen3_4p0b_q4km_fast"],
    }
    path = seed_models["qwen3_4p0b_q4km_fast"]
    found = seed_registry.find_path(path)
    assert found is not None and found.id == "qwen3_4p0b_q4km_fast"
    with pytest.raises(ModelNotFoundError, match="Did you mean 'qwen3_4p0b_q4km_fast'") as info:
        seed_registry.get("qwen3_4p0b_q4km_fsat")
    assert "deepseek_r10528qwen3_8p0b_q4km_powerful" in str(info.value)


def test_a_missing_folder_is_an_error_before_the_demo_model_is_placed_in_it(tmp_path: Path) -> None:
    """A typo in models.dirs must not create the folder and copy 250 MB into it."""
    typo = tmp_path / "modles"
    config = ModelsConfig(dirs=[typo], registry=tmp_path / "registry.json", demo=True)
    with pytest.raises(ModelError, match="modles does not exist"):
        ModelDiscoveryService(config=config).refresh()
    assert not typo.exists() and not (tmp_path / "registry.json").exists()


# -- registries and folders that cannot be written or read (issue 10, item 6) --------------------
def _warnings_naming(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


def _unwritable_registry(tmp_path: Path, how: str) -> Path:
    """A registry path whose write fails even for root: its 'folder' is a regular file
    (ENOTDIR/EEXIST), or it lies in sysfs (EACCES)."""
    if how == "parent is a file":
        (tmp_path / "not-a-folder").write_text("a file, not a folder")
        return tmp_path / "not-a-folder" / "registry.json"
    return Path(f"/sys/magi-{tmp_path.name}-registry.json")


def _writable(folder: Path) -> bool:
    probe = folder / ".magi-write-probe"
    try:
        probe.write_text("x")
    except OSError:
        return False
    probe.unlink()
    return True


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` refuse new files: mode 0555, and as root (whom modes do not stop)
    the immutable attribute too. Skips the test when neither works here."""
    mode = folder.stat().st_mode
    immutable = False
    folder.chmod(0o555)
    try:
        if _writable(folder) and shutil.which("chattr"):
            immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        if _writable(folder):
            pytest.skip(f"cannot make {folder} read-only here (root, no chattr)")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(mode)


def test_non_utf8_registry_is_a_clear_error_and_is_rebuilt(
    seed_models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "registry.json"
    path.write_bytes(b'{"version": 1, "models": {"caf\xe9": {}}}')
    with pytest.raises(ModelError, match="is not UTF-8 text") as info:
        ModelRegistry.load(path)
    assert str(path) in str(info.value) and "magi discover" in str(info.value)
    assert info.value.status_code == 422

    result = ModelDiscoveryService(scan_path=seed_models_dir, registry_path=path).refresh()
    assert set(result.registry.models) == SEED_IDS
    assert ModelRegistry.load(path) == result.registry
    assert len(_warnings_naming(caplog, "Rebuilding the registry")) == 1


def test_deeply_nested_registry_is_rebuilt(seed_models_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelError, match=f"Model registry {path}"):
        ModelRegistry.load(path)
    result = ModelDiscoveryService(scan_path=seed_models_dir, registry_path=path).refresh()
    assert set(result.registry.models) == SEED_IDS and result.saved


@pytest.mark.parametrize("how", ["parent is a file", "in sysfs"])
def test_unwritable_registry_is_kept_in_memory_with_one_warning(
    seed_models_dir: Path, tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = _unwritable_registry(tmp_path, how)
    service = ModelDiscoveryService(scan_path=seed_models_dir, registry_path=path)
    # asked for explicitly (magi discover), a failed write is a clear error, not an OSError
    with pytest.raises(RegistryWriteError, match=f"Cannot write the model registry {path}") as info:
        service.refresh()
    assert info.value.status_code == 503 and "models.registry" in str(info.value)
    assert not path.exists()

    # at start (save_errors="warn") the registry lives in memory, with one warning naming it
    caplog.clear()
    for _ in range(3):
        result = service.refresh(save_errors="warn")
        assert set(result.registry.models) == SEED_IDS and not result.saved
    assert len(_warnings_naming(caplog, str(path))) == 1, caplog.text
    assert "kept in memory" in _warnings_naming(caplog, str(path))[0]


def test_unchanged_registry_is_not_rewritten(seed_models_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    service = ModelDiscoveryService(scan_path=seed_models_dir, registry_path=path)
    first = service.refresh()
    assert first.saved
    before = path.stat()
    second = service.refresh()
    after = path.stat()
    assert not second.saved
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert second.registry == ModelRegistry.load(path)  # what is returned is what is on disk

    write_tiny_model(seed_models_dir / "Mistral-7B-v0.3-Q5_K_M.gguf", size_label="7B", file_type="Q5_K_M")
    third = service.refresh()
    assert third.saved and ModelRegistry.load(path) == third.registry
    assert len(third.registry.models) == 4


def test_runner_starts_over_a_read_only_models_folder(
    tiny_runtime: TinyRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    """A shared, read-only models folder with a stale registry in it: the start re-scans,
    keeps the new registry in memory, warns once naming the file, and answers."""
    folder = tiny_runtime.models_dir
    registry = folder / "registry.json"
    overrides = (f"models.registry='{registry}'",)
    stale = tiny_runtime.path(FAST).read_bytes()
    tiny_runtime.path(FAST).unlink()
    with tiny_runtime.runner("production", *overrides) as runner:  # writes a registry without FAST
        assert FAST not in runner.specs
    tiny_runtime.path(FAST).write_bytes(stale)
    before = registry.read_bytes()
    with read_only(folder):
        caplog.clear()
        with tiny_runtime.runner("development", *overrides) as runner:
            assert runner.run("Hi").model_id == FAST
        assert len(_warnings_naming(caplog, str(registry))) == 1, caplog.text
    assert registry.read_bytes() == before


@pytest.mark.parametrize("how", ["parent is a file", "in sysfs"])
def test_runner_starts_when_the_registry_cannot_be_written(
    tiny_runtime: TinyRuntime, tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = _unwritable_registry(tmp_path, how)
    config = tiny_runtime.compose("development", f"models.registry='{path}'")
    with magi.Runner(config, start_health_checks=False) as runner:
        assert runner.run("Hi").text
    assert len(_warnings_naming(caplog, str(path))) == 1, caplog.text


def _make_too_long_folder(root: Path) -> None:
    """Nest folders under ``root`` so deep that the full path exceeds PATH_MAX, with a
    model at the bottom: listing them by path fails with ENAMETOOLONG, for root too
    (the same OSError from os.scandir as an unreadable folder)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(20):
            name = "d" * 250
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        model = os.open("Lost-1B-Q4_K_M.gguf", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
        os.close(model)
    finally:
        os.close(fd)


@pytest.mark.parametrize("how", ["path too long", "mode 000"])
def test_an_unreadable_folder_is_reported_not_skipped_silently(
    seed_models_dir: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    if how == "path too long":
        _make_too_long_folder(seed_models_dir)
        unreadable = seed_models_dir / ("d" * 250)
    else:
        unreadable = seed_models_dir / "private"
        unreadable.mkdir()
        write_tiny_model(unreadable / "Hidden-1B-Q4_K_M.gguf")
        unreadable.chmod(0)
        try:
            os.listdir(unreadable)
        except PermissionError:
            pass
        else:
            unreadable.chmod(0o755)
            pytest.skip("root can list a mode-000 folder")
    try:
        result = ModelDiscoveryService(scan_path=seed_models_dir).discover()
    finally:
        if how == "mode 000":
            unreadable.chmod(0o755)
    assert set(result.registry.models) == SEED_IDS
    skipped = [s for s in result.registry.skipped if s.reason.startswith("cannot list folder")]
    assert len(skipped) == 1 and str(skipped[0].path).startswith(str(unreadable)), result.registry.skipped
    messages = _warnings_naming(caplog, "cannot list folder")
    assert len(messages) == 1 and str(unreadable) in messages[0]


# -- folders added with `magi discover FOLDER` live in their own file, not in the cache ----------
def _added(tmp_path: Path) -> Path:
    mine = tmp_path / "mine"
    write_tiny_model(mine / "Tiny-Llama-1B-Q4_K_M.gguf", size_label="1B")
    return mine


TINY = "tiny_llama_1p0b_q4km_fast"


@pytest.mark.parametrize("garbage", ["not json {", '{"version": 99}', ""])
def test_a_rebuilt_registry_keeps_the_added_folders(
    seed_models_dir: Path, tmp_path: Path, garbage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The reviewer's scenario: the registry is a cache, rebuilt when damaged; the folders
    added with `magi discover FOLDER` are configuration and survive the rebuild."""
    mine = _added(tmp_path)
    path = tmp_path / "r.json"
    config = ModelsConfig(dirs=[seed_models_dir], demo=False)
    ModelDiscoveryService(config=config, registry_path=path, add_dirs=[mine]).refresh()
    folders = added_folders_path(path)
    assert folders == tmp_path / "r.folders.json" and folders.is_file()
    assert "added_dirs" not in path.read_text()  # one home: the folders file
    path.write_text(garbage)
    caplog.clear()
    result = ModelDiscoveryService(config=config, registry_path=path).refresh(save_errors="warn")
    assert len(_warnings_naming(caplog, "Rebuilding the registry")) == 1
    assert result.added_dirs == [mine] and TINY in result.registry.models
    assert TINY in ModelRegistry.load(path).models  # and in the rebuilt file, for the next start


def test_a_registry_of_the_previous_release_keeps_its_added_dirs(
    seed_models_dir: Path, tmp_path: Path
) -> None:
    """Migration: a registry that still holds added_dirs (and no folders file beside it)."""
    mine = _added(tmp_path)
    path = tmp_path / "r.json"
    config = ModelsConfig(dirs=[seed_models_dir], demo=False)
    ModelDiscoveryService(config=config, registry_path=path).refresh()
    old = json.loads(path.read_text())
    old["added_dirs"] = [str(mine)]
    path.write_text(json.dumps(old))
    result = ModelDiscoveryService(config=config, registry_path=path).refresh(save_errors="warn")
    assert result.added_dirs == [mine] and TINY in result.registry.models
    assert json.loads(added_folders_path(path).read_text())["folders"] == [str(mine)]
    assert "added_dirs" not in path.read_text()  # moved out of the cache
    # then --forget is not undone by the old copy
    ModelDiscoveryService(config=config, registry_path=path, forget_dirs=[mine]).refresh()
    result = ModelDiscoveryService(config=config, registry_path=path).refresh(save_errors="warn")
    assert result.added_dirs == [] and TINY not in result.registry.models


@pytest.mark.parametrize("garbage", [b"[/home/me/gguf", b'{"folders": 3}', b'{"folders": [""]}', b"\xff\xfe"])
def test_a_corrupt_folders_file_is_a_warning_naming_it(
    seed_models_dir: Path, tmp_path: Path, garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    mine = _added(tmp_path)
    path = tmp_path / "r.json"
    config = ModelsConfig(dirs=[seed_models_dir], demo=False)
    folders = added_folders_path(path)
    folders.write_bytes(garbage)
    before = folders.read_bytes()
    caplog.clear()
    result = ModelDiscoveryService(config=config, registry_path=path).refresh(save_errors="warn")
    assert set(result.registry.models) == SEED_IDS  # the start goes on with models.dirs
    messages = _warnings_naming(caplog, str(folders))
    assert len(messages) == 1, caplog.text
    assert "not scanned" in messages[0] and "magi discover FOLDER" in messages[0]
    assert any(w.startswith(f"folders file {folders}") for w in result.warnings)
    assert folders.read_bytes() == before  # left for the user to mend, not overwritten
    # adding a folder would overwrite what the user may still want: a clear error instead
    with pytest.raises(ModelError, match=str(folders)) as info:
        ModelDiscoveryService(config=config, registry_path=path, add_dirs=[mine]).refresh()
    assert info.value.status_code == 422 and folders.read_bytes() == before


def test_forget_removes_the_folder_from_the_folders_file(seed_models_dir: Path, tmp_path: Path) -> None:
    mine = _added(tmp_path)
    path = tmp_path / "r.json"
    config = ModelsConfig(dirs=[seed_models_dir], demo=False)
    ModelDiscoveryService(config=config, registry_path=path, add_dirs=[mine]).refresh()
    result = ModelDiscoveryService(config=config, registry_path=path, forget_dirs=[mine]).refresh()
    assert result.forgotten == [mine] and TINY not in result.registry.models
    assert json.loads(added_folders_path(path).read_text())["folders"] == []
    path.write_text("garbage")  # a rebuild does not bring it back
    assert TINY not in ModelDiscoveryService(config=config, registry_path=path).refresh().registry.models
    with pytest.raises(ModelError, match="is not one `magi discover FOLDER` added") as info:
        ModelDiscoveryService(config=config, registry_path=path, forget_dirs=[mine]).refresh()
    assert info.value.status_code == 404


@pytest.mark.parametrize("how", ["parent is a file", "in sysfs"])
def test_an_unwritable_folders_file_is_kept_in_memory_with_one_warning(
    seed_models_dir: Path, tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    mine = _added(tmp_path)
    path = _unwritable_registry(tmp_path, how)
    folders = added_folders_path(path)
    service = ModelDiscoveryService(scan_path=seed_models_dir, registry_path=path, add_dirs=[mine])
    # asked for explicitly (magi discover FOLDER): a clear error naming the folders file
    with pytest.raises(RegistryWriteError, match=f"Cannot write {folders}") as info:
        service.refresh()
    assert info.value.status_code == 503 and not folders.exists()
    caplog.clear()
    for _ in range(3):
        result = service.refresh(save_errors="warn")
        assert TINY in result.registry.models and result.added_dirs == [mine] and not result.saved
    messages = _warnings_naming(caplog, str(folders))
    assert len(messages) == 1, caplog.text
    assert "kept in memory" in messages[0] and str(path) in messages[0]  # one warning for both files


def test_a_read_only_registry_folder_keeps_the_migrated_folders_in_memory(
    seed_models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mine = _added(tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir()
    path = shared / "registry.json"
    config = ModelsConfig(dirs=[seed_models_dir], demo=False)
    ModelDiscoveryService(config=config, registry_path=path).refresh()
    old = json.loads(path.read_text())
    old["added_dirs"] = [str(mine)]
    path.write_text(json.dumps(old))
    with read_only(shared):
        caplog.clear()
        result = ModelDiscoveryService(config=config, registry_path=path).refresh(save_errors="warn")
        assert TINY in result.registry.models and not result.saved
        assert len(_warnings_naming(caplog, "kept in memory")) == 1, caplog.text
    assert not added_folders_path(path).exists()


def test_a_start_logs_each_discovery_warning_once(
    seed_models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Discovery logs its own warnings; the start (load_registry) must not repeat them."""
    import magi
    from magi.runtime.resolve import load_registry

    cfg = magi.compose(
        profile="development",
        overrides=[
            f"models.dirs=['{seed_models_dir}']",
            f"models.registry='{tmp_path / 'registry.json'}'",
            "models.demo=false",
            "models.pins=[{file:no-such-file.gguf,id:ghost_1p0b_q4km_fast}]",
        ],
    )
    with caplog.at_level(logging.WARNING):
        load_registry(cfg)
    pin_warnings = [r for r in caplog.records if "no-such-file.gguf" in r.getMessage()]
    assert len(pin_warnings) == 1, [r.getMessage() for r in pin_warnings]
