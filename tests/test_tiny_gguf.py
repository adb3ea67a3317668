"""The tiny GGUF generator: every file it writes loads in llama-cpp-python and generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import llama_cpp
import pytest
from gguf import GGUFReader

from magi.testing.tiny_gguf import SEED_MODELS, echo_completion, make_seed_models, write_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def _generate(path: Path, prompt: str = "Hello", max_tokens: int = 8) -> dict:
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False, seed=0)
    try:
        return llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0)
    finally:
        llm.close()


VARIANTS = {
    "default": {},
    "echo": {"echo": True},
    "no-metadata": {"name": None, "basename": None, "size_label": None, "file_type": None},
    "f16-label": {"file_type": "F16", "size_label": "270M"},
    "mha-3-layers": {"n_layer": 3, "n_head_kv": 4, "context_length": 512},
    "split-3": {"shards": 3},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_loads_and_generates(tmp_path: Path, variant: str) -> None:
    path = write_tiny_model(tmp_path / "Tiny-1B-Q4_K_M.gguf", **VARIANTS[variant])
    assert path.exists() and path.stat().st_size < 1_000_000
    out = _generate(path)
    text = out["choices"][0]["text"]
    assert out["usage"]["completion_tokens"] == 8
    assert len(text) == 8 and text.strip()


def test_seed_models_load_and_generate(tmp_path: Path) -> None:
    paths = make_seed_models(tmp_path)
    assert set(paths) == set(SEED_MODELS)
    for path in paths.values():
        assert path.name in {s.filename for s in SEED_MODELS.values()}
        assert _generate(path)["usage"]["completion_tokens"] == 8


@pytest.mark.parametrize("prompt", ["Hello", "The answer is 42", "a b c~", "ends with a space "])
def test_echo_model_repeats_last_prompt_token(tmp_path: Path, prompt: str) -> None:
    path = write_tiny_model(tmp_path / "echo.gguf", echo=True)
    text = _generate(path, prompt, max_tokens=6)["choices"][0]["text"]
    assert text == echo_completion(prompt, 6)


def test_metadata_is_written_as_given(tmp_path: Path) -> None:
    path = write_tiny_model(
        tmp_path / "m.gguf",
        name="Qwen2.5 Coder 14B Instruct",
        basename="Qwen2.5-Coder",
        size_label="14B",
        file_type="Q4_K_M",
        finetune="Instruct",
        context_length=1234,
    )
    fields = GGUFReader(path).fields
    assert fields["general.basename"].contents() == "Qwen2.5-Coder"
    assert fields["general.size_label"].contents() == "14B"
    assert fields["general.file_type"].contents() == 15
    assert fields["llama.context_length"].contents() == 1234


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = write_tiny_model(tmp_path / "a.gguf", seed=7)
    b = write_tiny_model(tmp_path / "b.gguf", seed=7)
    assert a.read_bytes() == b.read_bytes()


def test_split_names_follow_gguf_split(tmp_path: Path) -> None:
    first = write_tiny_model(tmp_path / "Big-8B-Q4_K_M.gguf", shards=3)
    assert first.name == "Big-8B-Q4_K_M-00001-of-00003.gguf"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"Big-8B-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)
    ]


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid: "):
        write_tiny_model(tmp_path / "x.gguf", file_type="Q9_Z")
    with pytest.raises(ValueError, match=r"\.gguf"):
        write_tiny_model(tmp_path / "x.bin")


def test_script_writes_seed_models(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_tiny_models.py"),
            str(tmp_path),
            "--seed-models",
            "--count",
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(proc.stdout.split()) == 5
    assert (tmp_path / "Qwen3-4B-Q4_K_M.gguf").exists()
