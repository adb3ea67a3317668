"""Read a GGUF file's metadata (key/values and tensor infos) without loading weights.

``gguf.GGUFReader`` memory-maps the file and parses every key/value, including
tokenizer arrays of 150-260 thousand strings, element by element: about 8 s for
Gemma 3 270M. Discovery needs none of those arrays, only their lengths, and no
tensor data at all. :class:`_HeaderReader` therefore subclasses the reader and
(1) skips long arrays by walking their byte layout instead of building one numpy
view per element, and (2) records tensor infos without creating data views,
checking instead that every tensor's bytes lie inside the file: a truncated
download is reported as such. The weights are never read (the memory map only
pages in the header).

Every failure is a :class:`GGUFReadError` naming the file and the reason.
"""

from __future__ import annotations

import struct
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUFReader, GGUFValueType
from gguf.constants import GGMLQuantizationType

#: Arrays longer than this are skipped (only their length is kept).
MAX_PARSED_ARRAY = 64

_SCALAR_SIZES = {
    GGUFValueType.UINT8: 1,
    GGUFValueType.INT8: 1,
    GGUFValueType.BOOL: 1,
    GGUFValueType.UINT16: 2,
    GGUFValueType.INT16: 2,
    GGUFValueType.UINT32: 4,
    GGUFValueType.INT32: 4,
    GGUFValueType.FLOAT32: 4,
    GGUFValueType.UINT64: 8,
    GGUFValueType.INT64: 8,
    GGUFValueType.FLOAT64: 8,
}


class GGUFReadError(Exception):
    """A file could not be read as a GGUF model; ``reason`` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class TensorInfo:
    """Name, type and shape of one tensor; its data is never touched."""

    name: str
    ggml_type: str
    shape: tuple[int, ...]
    n_elements: int
    n_bytes: int


@dataclass
class GGUFHeader:
    """What one GGUF file (or shard) says about itself."""

    path: Path
    version: int
    fields: dict[str, Any]
    array_lengths: dict[str, int]
    tensors: list[TensorInfo] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


class _HeaderReader(GGUFReader):
    """``GGUFReader`` that skips long arrays and never maps tensor data."""

    tensor_infos: list[TensorInfo]

    def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list[Any], list[int], list[Any]]:
        if GGUFValueType(raw_type) != GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        raw_itype = self._get(orig_offs, np.uint32)
        alen = self._get(orig_offs + 4, np.uint64)
        if len(raw_itype) < 1 or len(alen) < 1:
            raise ValueError("metadata array header runs past the end of the file")
        count = int(alen[0])
        sub = GGUFValueType(int(raw_itype[0]))
        if count <= MAX_PARSED_ARRAY or sub == GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        offs = orig_offs + 12
        if sub == GGUFValueType.STRING:
            fmt = "<Q" if (self.byte_order == "I") == (sys.byteorder == "little") else ">Q"
            unpack = struct.Struct(fmt).unpack_from
            buf = self.data
            size = len(buf)
            for _ in range(count):
                if offs + 8 > size:
                    raise ValueError("metadata string array runs past the end of the file")
                offs += 8 + unpack(buf, offs)[0]
        else:
            offs += _SCALAR_SIZES[sub] * count
        if offs > len(self.data):
            raise ValueError("metadata array runs past the end of the file")
        # Same leading parts as the stock reader (type, length), no element parts.
        return offs - orig_offs, [raw_itype, alen], [], [GGUFValueType.ARRAY, sub]

    def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
        infos: list[TensorInfo] = []
        file_size = len(self.data)
        end_max = start_offs
        for fld in fields:
            _name_len, name_data, _n_dims, dims, raw_dtype, offset_tensor = fld.parts
            name = str(bytes(name_data), encoding="utf-8")
            try:
                ggml_type = GGMLQuantizationType(int(raw_dtype[0]))
            except ValueError:
                raise ValueError(
                    f"tensor {name!r} has unknown type {int(raw_dtype[0])} (written by a newer llama.cpp?)"
                ) from None
            shape = tuple(int(d) for d in dims)
            n_elements = int(np.prod(shape, dtype=np.int64)) if shape else 1
            block_size, type_size = GGML_QUANT_SIZES[ggml_type]
            n_bytes = n_elements * type_size // block_size
            end_max = max(end_max, start_offs + int(offset_tensor[0]) + n_bytes)
            infos.append(TensorInfo(name, ggml_type.name, shape, n_elements, n_bytes))
        if end_max > file_size:
            raise _Truncated(
                f"file is truncated: tensor data ends at byte {end_max:,} but the file has {file_size:,} "
                "bytes (incomplete download or copy?)"
            )
        self.tensor_infos = infos
        self.tensors = []


class _Truncated(ValueError):
    pass


def _field_value(reader: _HeaderReader, key: str) -> Any:
    fld = reader.fields[key]
    if fld.types and fld.types[0] == GGUFValueType.ARRAY and not fld.data:
        return None  # a skipped long array: only its length is known
    value = fld.contents()
    if isinstance(value, np.generic):
        value = value.item()
    return value


def read_header(path: Path) -> GGUFHeader:
    """Parse one GGUF file's header.

    Raises:
        GGUFReadError: the file is empty, not GGUF, of an unsupported version,
            truncated or otherwise corrupt; the reason says which.
    """
    try:
        if path.stat().st_size < 24:
            raise GGUFReadError(path, f"file too small to be GGUF ({path.stat().st_size} bytes)")
        with path.open("rb") as handle:
            magic = handle.read(4)
        if magic != b"GGUF":
            raise GGUFReadError(path, f"not a GGUF file (starts with {magic!r}, expected b'GGUF')")
        reader = _HeaderReader(path)
    except GGUFReadError:
        raise
    except _Truncated as exc:
        raise GGUFReadError(path, str(exc)) from None
    except OSError as exc:
        raise GGUFReadError(path, f"cannot read the file: {exc.strerror or exc}") from None
    except (ValueError, IndexError, KeyError, TypeError, struct.error, OverflowError, MemoryError) as exc:
        raise GGUFReadError(path, f"corrupt or truncated GGUF header: {exc}") from None
    try:
        fields: dict[str, Any] = {}
        lengths: dict[str, int] = {}
        for key, fld in reader.fields.items():
            if key.startswith("GGUF."):
                continue
            if fld.types and fld.types[0] == GGUFValueType.ARRAY:
                lengths[key] = int(fld.parts[4][0])
            fields[key] = _field_value(reader, key)
        version = int(reader.fields["GGUF.version"].parts[0][0])
        return GGUFHeader(path, version, fields, lengths, reader.tensor_infos)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise GGUFReadError(path, f"corrupt GGUF metadata: {exc}") from None
    finally:
        del reader


@dataclass(frozen=True)
class GGUFModelInfo:
    """The model facts discovery needs, gathered from a file or all shards of a split model."""

    architecture: str
    general_type: str | None
    name: str | None
    basename: str | None
    finetune: str | None
    size_label: str | None
    file_type: int | None
    context_length: int | None
    n_layer: int | None
    n_embd: int | None
    n_head: int | None
    n_head_kv: int | None
    key_length: int | None
    value_length: int | None
    n_vocab: int | None
    n_tensors: int
    tensor_params: int
    dominant_tensor_type: str | None
    split_count: int


def _int(value: Any) -> int | None:
    if isinstance(value, list):  # per-layer values (e.g. head counts): the largest
        value = max(value) if value else None
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def model_info(headers: list[GGUFHeader]) -> GGUFModelInfo:
    """Combine the headers of a model's files (one, or every shard in order).

    The first file carries the model's key/values; tensors are summed over all.

    Raises:
        GGUFReadError: no architecture, no tensors (a vocab-only file), or the split
            count disagrees with the files found.
    """
    first = headers[0]
    arch = _str(first.get("general.architecture"))
    if not arch:
        raise GGUFReadError(first.path, "no general.architecture key: not a model file")
    split_count = _int(first.get("split.count")) or 1
    if split_count != len(headers):
        raise GGUFReadError(
            first.path, f"split.count is {split_count} but {len(headers)} shard file(s) were given"
        )
    tensors = [t for h in headers for t in h.tensors]
    if not tensors:
        raise GGUFReadError(first.path, "has no tensors (a vocab-only file, not a model)")
    by_type: Counter[str] = Counter()
    for t in tensors:
        if len(t.shape) >= 2:
            by_type[t.ggml_type] += t.n_bytes
    n_embd = _int(first.get(f"{arch}.embedding_length"))
    n_head = _int(first.get(f"{arch}.attention.head_count"))
    n_vocab = first.array_lengths.get("tokenizer.ggml.tokens") or _int(first.get(f"{arch}.vocab_size"))
    return GGUFModelInfo(
        architecture=arch,
        general_type=_str(first.get("general.type")),
        name=_str(first.get("general.name")),
        basename=_str(first.get("general.basename")),
        finetune=_str(first.get("general.finetune")),
        size_label=_str(first.get("general.size_label")),
        file_type=_int(first.get("general.file_type")),
        context_length=_int(first.get(f"{arch}.context_length")),
        n_layer=_int(first.get(f"{arch}.block_count")),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=_int(first.get(f"{arch}.attention.head_count_kv")) or n_head,
        key_length=_int(first.get(f"{arch}.attention.key_length")),
        value_length=_int(first.get(f"{arch}.attention.value_length")),
        n_vocab=n_vocab,
        n_tensors=len(tensors),
        tensor_params=sum(t.n_elements for t in tensors),
        dominant_tensor_type=by_type.most_common(1)[0][0] if by_type else None,
        split_count=split_count,
    )


def read_model_info(paths: list[Path]) -> GGUFModelInfo:
    """Read a model's metadata from its file, or from every shard (first shard first)."""
    return model_info([read_header(p) for p in paths])
