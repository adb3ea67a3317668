"""Reading GGUF headers without weights: same facts as gguf.GGUFReader, clear reasons for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf import GGUFReader

from magi.models.gguf_meta import GGUFReadError, read_header, read_model_info
from magi.testing.tiny_gguf import write_tiny_model


def test_header_matches_stock_reader(tmp_path: Path) -> None:
    path = write_tiny_model(tmp_path / "m.gguf", size_label="4B", context_length=777)
    header = read_header(path)
    stock = GGUFReader(path)
    for key, field in stock.fields.items():
        if key.startswith("GGUF.") or key.startswith("tokenizer.ggml."):
            continue
        assert header.fields[key] == field.contents(), key
    assert header.array_lengths["tokenizer.ggml.tokens"] == len(stock.fields["tokenizer.ggml.tokens"].data)
    assert [(t.name, t.shape, t.n_elements) for t in header.tensors] == [
        (t.name, tuple(int(d) for d in t.shape), t.n_elements) for t in stock.tensors
    ]


def test_model_info_of_tiny_model(tmp_path: Path) -> None:
    path = write_tiny_model(
        tmp_path / "m.gguf",
        name="Qwen3 4B",
        basename="Qwen3",
        size_label="4B",
        context_length=2048,
        n_layer=3,
        n_head=4,
        n_head_kv=2,
    )
    info = read_model_info([path])
    assert (info.architecture, info.name, info.basename, info.size_label) == (
        "llama",
        "Qwen3 4B",
        "Qwen3",
        "4B",
    )
    assert (info.file_type, info.context_length, info.n_layer, info.n_embd) == (15, 2048, 3, 64)
    assert (info.n_head, info.n_head_kv, info.n_vocab, info.split_count) == (4, 2, 354, 1)
    assert info.tensor_params == sum(t.n_elements for t in GGUFReader(path).tensors)
    assert info.dominant_tensor_type == "F32"


def test_split_model_sums_tensors(tmp_path: Path) -> None:
    single = read_model_info([write_tiny_model(tmp_path / "one.gguf", seed=1)])
    first = write_tiny_model(tmp_path / "split.gguf", shards=3, seed=1)
    shards = sorted(tmp_path.glob("split-*.gguf"))
    assert shards[0] == first
    info = read_model_info(shards)
    assert info.split_count == 3
    assert (info.n_tensors, info.tensor_params) == (single.n_tensors, single.tensor_params)
    with pytest.raises(GGUFReadError, match="split.count is 3 but 2 shard"):
        read_model_info(shards[:2])


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "too small"),
        (b"PK\x03\x04" + b"\x00" * 100, "not a GGUF file"),
        (b"<html>404 Not Found</html>" * 4, "not a GGUF file"),
        (b"GGUF\x09\x00\x00\x00" + b"\x00" * 40, "corrupt or truncated GGUF header"),
    ],
)
def test_bad_files_give_reasons(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(GGUFReadError, match=reason) as info:
        read_header(path)
    assert info.value.path == path


@pytest.mark.parametrize("keep", [30, 3000, 9000, 200_000])
def test_truncated_files_are_detected(tmp_path: Path, keep: int) -> None:
    path = write_tiny_model(tmp_path / "cut.gguf")
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(GGUFReadError, match="truncated"):
        read_model_info([path])


def test_vocab_only_file_is_not_a_model(tmp_path: Path) -> None:
    from gguf import GGUFWriter

    path = tmp_path / "vocab.gguf"
    writer = GGUFWriter(path, "llama")
    writer.add_token_list(["<unk>", "a"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(GGUFReadError, match="no tensors"):
        read_model_info([path])
