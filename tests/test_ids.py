"""The seed's id scheme: family_size_quant_tier, derived the same way every time."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from magi.errors import ModelError
from magi.models.gguf_meta import GGUFModelInfo
from magi.models.ids import (
    IdClaim,
    assign_unique_ids,
    derive_identity,
    family_token,
    make_id,
    parse_size_label,
    quant_from_filename,
    quant_name_from_file_type,
    quant_token,
    size_token_from_count,
    size_token_from_label,
)
from magi.testing.tiny_gguf import make_seed_models, write_tiny_model

BASE = GGUFModelInfo(
    architecture="llama",
    general_type="model",
    name=None,
    basename=None,
    finetune=None,
    size_label=None,
    file_type=None,
    context_length=4096,
    n_layer=2,
    n_embd=64,
    n_head=4,
    n_head_kv=2,
    key_length=None,
    value_length=None,
    n_vocab=354,
    n_tensors=21,
    tensor_params=119_360,
    dominant_tensor_type="F32",
    split_count=1,
)


@pytest.mark.parametrize(
    ("raw", "token"),
    [
        ("Qwen3", "qwen3"),
        ("Deepseek-R1-0528-Qwen3", "deepseek_r10528qwen3"),
        ("DeepSeek-R1-0528-Qwen3", "deepseek_r10528qwen3"),
        ("Qwen2.5-Coder", "qwen2_coder_p5"),
        ("gemma-3", "gemma3"),
        ("Llama-3.1", "llama3_p1"),
        ("Phi-3.5-mini", "phi3_mini_p5"),
        ("Mistral", "mistral"),
        ("Tiny Llama", "tiny_llama"),
        ("", "model"),
    ],
)
def test_family_token(raw: str, token: str) -> None:
    assert family_token(raw) == token


@pytest.mark.parametrize(
    ("label", "token", "params"),
    [
        ("4B", "4p0b", 4e9),
        ("14B", "14p0b", 14e9),
        ("0.5B", "0p5b", 0.5e9),
        ("1.5B", "1p5b", 1.5e9),
        ("270M", "270m", 270e6),
        ("8x7B", "8x7p0b", 56e9),
        ("30B-A3B", "30p0b", 30e9),
        ("1T", "1p0t", 1e12),
    ],
)
def test_size_from_label(label: str, token: str, params: float) -> None:
    assert size_token_from_label(label) == token
    assert parse_size_label(label) == pytest.approx(params)


def test_size_from_count_and_bad_labels() -> None:
    assert size_token_from_count(4_022_468_096) == "4p0b"
    assert size_token_from_count(268_098_176) == "268m"
    assert size_token_from_count(119_360) == "119k"
    assert parse_size_label("large") is None and size_token_from_label("large") is None


def test_quant_names() -> None:
    assert quant_name_from_file_type(15) == "Q4_K_M"
    assert quant_name_from_file_type(0) == "F32"
    assert quant_name_from_file_type(1024) is None  # GUESSED
    assert quant_name_from_file_type(9999) is None
    assert quant_from_filename("Qwen3-4B-Q4_K_M") == "Q4_K_M"
    assert quant_from_filename("model.q8_0") == "Q8_0"
    assert quant_from_filename("Big-IQ4_XS-00001-of-00002") == "IQ4_XS"
    assert quant_from_filename("gemma-3-270m-bf16") == "BF16"
    assert quant_from_filename("plain") is None
    assert [quant_token(q) for q in ("Q4_K_M", "BF16", "IQ4_XS")] == ["q4km", "bf16", "iq4xs"]


SEED = [
    ("Qwen3-4B-Q4_K_M.gguf", "Qwen3 4B", "Qwen3", "4B", "qwen3_4p0b_q4km_fast"),
    (
        "DeepSeek-R1-0528-Qwen3-8B-Q4_K_M.gguf",
        "Deepseek-R1-0528-Qwen3-8B",
        "Deepseek-R1-0528-Qwen3",
        "8B",
        "deepseek_r10528qwen3_8p0b_q4km_powerful",
    ),
    (
        "Qwen2.5-Coder-14B-Instruct-Q4_K_M.gguf",
        "Qwen2.5 Coder 14B Instruct",
        "Qwen2.5-Coder",
        "14B",
        "qwen2_coder_p5_14p0b_q4km_powerful",
    ),
]


@pytest.mark.parametrize(("filename", "name", "basename", "label", "expected"), SEED)
@pytest.mark.parametrize("known", ["all", "name-only", "filename-only"])
def test_seed_ids_from_metadata_or_file_name(
    filename: str, name: str, basename: str, label: str, expected: str, known: str
) -> None:
    if known == "all":
        info = replace(BASE, name=name, basename=basename, size_label=label, file_type=15)
    elif known == "name-only":
        info = replace(BASE, name=name, file_type=15)
    else:
        info = BASE
    identity = derive_identity(info, filename)
    tier = expected.rsplit("_", 1)[1]
    assert make_id(identity.family, identity.size, quant_token(identity.quant or ""), tier) == expected
    assert (
        identity.params_source
        == {"all": "size_label", "name-only": "name", "filename-only": "filename"}[known]
    )


def test_identity_falls_back_to_tensor_count() -> None:
    identity = derive_identity(BASE, "mystery.gguf")
    assert (identity.family, identity.size, identity.quant) == ("mystery", "119k", "F32")
    assert (identity.params, identity.params_source) == (119_360, "tensors")


def test_unique_ids_get_stable_suffixes() -> None:
    claims = [IdClaim("/b/x.gguf", "m_fast"), IdClaim("/a/x.gguf", "m_fast"), IdClaim("/c/x.gguf", "m_fast")]
    assert assign_unique_ids(claims) == {
        "/a/x.gguf": "m_fast",
        "/b/x.gguf": "m_fast_2",
        "/c/x.gguf": "m_fast_3",
    }
    # A later refresh: /a vanished, /0 is new. Existing files keep their ids; the newcomer gets a free one.
    again = [
        IdClaim("/b/x.gguf", "m_fast", previous="m_fast_2"),
        IdClaim("/c/x.gguf", "m_fast", previous="m_fast_3"),
        IdClaim("/0/x.gguf", "m_fast"),
    ]
    assert assign_unique_ids(again) == {
        "/b/x.gguf": "m_fast_2",
        "/c/x.gguf": "m_fast_3",
        "/0/x.gguf": "m_fast",
    }


def test_pins_win_and_clashing_pins_are_an_error() -> None:
    claims = [IdClaim("/a.gguf", "m_fast"), IdClaim("/b.gguf", "m_fast", pinned=True)]
    assert assign_unique_ids(claims) == {"/b.gguf": "m_fast", "/a.gguf": "m_fast_2"}
    with pytest.raises(ModelError, match=r"Two pins .* 'x'.*/a.gguf and /b.gguf"):
        assign_unique_ids([IdClaim("/a.gguf", "x", pinned=True), IdClaim("/b.gguf", "x", pinned=True)])


# -- same derived id, different models: told apart by what they are, not by path order ---------
def _discover_ids(*folders: Path) -> dict[str, str]:
    """Discover ``folders`` (no demo); ``{file name: id}``."""
    from magi.models.discovery import ModelDiscoveryService

    registry = ModelDiscoveryService(scan_path=list(folders)).discover().registry
    return {entry.path.name: entry.id for entry in registry.models.values()}


def _llama(path: Path, *, finetune: str | None, name: str) -> Path:
    return write_tiny_model(path, name=name, basename="Llama-3.1", size_label="8B", finetune=finetune)


@pytest.mark.parametrize("instruct_first", [True, False])
def test_instruct_and_base_of_one_family_get_distinct_ids_in_any_path_order(
    tmp_path: Path, instruct_first: bool
) -> None:
    first, second = ("a", "b") if instruct_first else ("b", "a")
    _llama(
        tmp_path / first / "Llama-3.1-8B-Instruct-Q4_K_M.gguf",
        finetune="Instruct",
        name="Llama 3.1 8B Instruct",
    )
    _llama(tmp_path / second / "Llama-3.1-8B-Q4_K_M.gguf", finetune=None, name="Llama 3.1 8B")
    assert _discover_ids(tmp_path) == {
        "Llama-3.1-8B-Instruct-Q4_K_M.gguf": "llama3_p1_8p0b_q4km_powerful",
        "Llama-3.1-8B-Q4_K_M.gguf": "llama3_p1_8p0b_base_q4km_powerful",
    }


def test_variant_comes_from_the_name_or_file_name_when_finetune_is_silent(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "a" / "gemma-3-270m-it-Q4_K_M.gguf", name=None, basename=None, finetune=None)
    write_tiny_model(tmp_path / "b" / "gemma-3-270m-pt-Q4_K_M.gguf", name=None, basename=None, finetune=None)
    write_tiny_model(tmp_path / "c" / "x.gguf", name="Gemma 3 270M Base", basename=None, finetune=None)
    ids = _discover_ids(tmp_path)
    assert ids == {
        "gemma-3-270m-it-Q4_K_M.gguf": "gemma3_270m_q4km_fast",
        "gemma-3-270m-pt-Q4_K_M.gguf": "gemma3_270m_pt_q4km_fast",
        "x.gguf": "gemma3_270m_base_q4km_fast",
    }


@pytest.mark.parametrize("copy_name", ["my-assistant.gguf", "A-copy.gguf"])
def test_a_renamed_copy_gets_its_id_from_its_file_name(tmp_path: Path, copy_name: str) -> None:
    original = make_seed_models(tmp_path / "m")["qwen3_4p0b_q4km_fast"]
    shutil.copy(original, tmp_path / "m" / copy_name)  # sorts after / before the original
    ids = _discover_ids(tmp_path / "m")
    assert ids["Qwen3-4B-Q4_K_M.gguf"] == "qwen3_4p0b_q4km_fast"
    assert ids[copy_name] == f"{Path(copy_name).stem.lower().replace('-', '_')}_4p0b_q4km_fast"
    assert len(set(ids.values())) == len(ids) == 4


def test_the_same_file_twice_still_gets_a_numeric_suffix(tmp_path: Path) -> None:
    original = make_seed_models(tmp_path / "a")["qwen3_4p0b_q4km_fast"]
    (tmp_path / "b").mkdir()
    shutil.copy(original, tmp_path / "b" / original.name)
    from magi.models.discovery import ModelDiscoveryService

    registry = ModelDiscoveryService(scan_path=[tmp_path / "b", tmp_path / "a"]).discover().registry
    assert registry.get("qwen3_4p0b_q4km_fast").path == original  # path order: a before b
    assert registry.get("qwen3_4p0b_q4km_fast_2").path == tmp_path / "b" / original.name


def test_ids_stay_when_a_base_model_joins_later(tmp_path: Path) -> None:
    from magi.models.discovery import ModelDiscoveryService

    _llama(tmp_path / "m" / "Llama-3.1-8B-Q4_K_M.gguf", finetune=None, name="Llama 3.1 8B")
    service = ModelDiscoveryService(scan_path=tmp_path / "m", registry_path=tmp_path / "r.json")
    assert service.refresh().registry.ids == ["llama3_p1_8p0b_q4km_powerful"]
    _llama(
        tmp_path / "m" / "Llama-3.1-8B-Instruct-Q4_K_M.gguf",
        finetune="Instruct",
        name="Llama 3.1 8B Instruct",
    )
    ids = {e.path.name: e.id for e in service.refresh().registry.models.values()}
    # the base model had the plain id: it keeps it (profiles name it); the newcomer gets its variant
    assert ids == {
        "Llama-3.1-8B-Q4_K_M.gguf": "llama3_p1_8p0b_q4km_powerful",
        "Llama-3.1-8B-Instruct-Q4_K_M.gguf": "llama3_p1_8p0b_instruct_q4km_powerful",
    }
