"""The model registry: every discovered model by id, saved as JSON.

Discovery (:mod:`magi.models.discovery`) builds a :class:`ModelRegistry`; the
runtime and ``ProfileManager.validate_profile`` read it. The JSON file holds, per
model, the file(s) with size and modification time (so a refresh can skip
unchanged files), the metadata read from the GGUF header, the derived id, tier,
size and quantisation, and a memory estimate.

Example:
    >>> registry = ModelRegistry()
    >>> registry.ids
    []
    >>> registry.get("qwen3_4p0b_q4km_fast")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    magi.errors.ModelNotFoundError: Model 'qwen3_4p0b_q4km_fast' is not in the registry. Known models: ...
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from magi.config.base import MagiModel, describe_validation_error
from magi.errors import ModelError, ModelNotFoundError, did_you_mean, format_options
from magi.fileio import atomic_write_text
from magi.models.memory import MemoryEstimate, estimate_memory

REGISTRY_VERSION = 1


class ModelFile(MagiModel):
    """One file of a model (a split model has several), as last seen on disk."""

    path: Path = Field(description="Absolute path of the file.")
    size: int = Field(ge=0, description="Size in bytes.")
    mtime_ns: int = Field(
        description="Modification time (ns since the epoch); with size, decides re-reading."
    )


class ModelEntry(MagiModel):
    """One model of the registry: where it is, what it is, and what MAGI calls it."""

    id: str = Field(description="Model id, e.g. qwen3_4p0b_q4km_fast (docs/MODELS.md).")
    path: Path = Field(description="The file to load (the first shard of a split model).")
    files: list[ModelFile] = Field(min_length=1, description="Every file of the model, first shard first.")
    tier: str = Field(description="Tier from the parameter count and models.tier_thresholds, or a pin.")
    family: str = Field(description="Family part of the id, e.g. qwen2_coder_p5.")
    size: str = Field(description="Size part of the id, e.g. 4p0b.")
    quant: str | None = Field(description="Quantisation, e.g. Q4_K_M (None if unknown).")
    params: int = Field(ge=0, description="Parameter count used for the tier (from the size label if any).")
    params_source: str = Field(description="Where params came from: size_label, name, filename or tensors.")
    pinned: bool = Field(default=False, description="Id or tier was fixed by models.pins.")
    file_size: int = Field(ge=0, description="Bytes on disk, all shards together.")
    mtime: float = Field(description="Latest modification time of the files (seconds since the epoch).")
    memory_mb: float = Field(
        ge=0, description="Estimated memory when loaded with the registry's n_ctx (MiB)."
    )
    # What the GGUF header says (magi.models.gguf_meta.GGUFModelInfo).
    architecture: str = Field(description="general.architecture, e.g. llama, qwen3, gemma3.")
    general_type: str | None = Field(default=None, description="general.type, e.g. model.")
    name: str | None = Field(default=None, description="general.name.")
    basename: str | None = Field(default=None, description="general.basename.")
    finetune: str | None = Field(default=None, description="general.finetune.")
    size_label: str | None = Field(default=None, description="general.size_label, e.g. 4B.")
    file_type: int | None = Field(default=None, description="general.file_type (15 = Q4_K_M).")
    context_length: int | None = Field(default=None, description="Trained context length.")
    n_layer: int | None = Field(default=None, description="Number of blocks.")
    n_embd: int | None = Field(default=None, description="Embedding size.")
    n_head: int | None = Field(default=None, description="Attention heads.")
    n_head_kv: int | None = Field(default=None, description="Key/value heads (grouped-query attention).")
    key_length: int | None = Field(default=None, description="Key head size, when not n_embd / n_head.")
    value_length: int | None = Field(default=None, description="Value head size, when not n_embd / n_head.")
    n_vocab: int | None = Field(default=None, description="Vocabulary size.")
    n_tensors: int = Field(ge=0, description="Tensors, all shards together.")
    tensor_params: int = Field(ge=0, description="Parameters counted from tensor shapes.")
    dominant_tensor_type: str | None = Field(default=None, description="ggml type holding most weight bytes.")
    split_count: int = Field(default=1, ge=1, description="Number of files of a split model.")

    def memory(self, n_ctx: int, **load: Any) -> MemoryEstimate:
        """Memory estimate when loaded with ``n_ctx`` (capped at the model's context length);
        ``load``: :func:`~magi.models.memory.estimate_memory`'s type_k, type_v, n_gpu_layers,
        offload_kqv."""
        return estimate_memory(
            **load,
            file_size=self.file_size,
            n_ctx=n_ctx,
            n_layer=self.n_layer,
            n_embd=self.n_embd,
            n_head=self.n_head,
            n_head_kv=self.n_head_kv,
            key_length=self.key_length,
            value_length=self.value_length,
            context_length=self.context_length,
        )

    @property
    def params_b(self) -> float:
        """Parameters in billions."""
        return self.params / 1e9


class SkippedFile(MagiModel):
    """A ``.gguf`` file discovery could not register, or a folder it could not list, and why."""

    path: Path
    reason: str


class ModelRegistry(MagiModel):
    """Every discovered model, by id; saved to and loaded from JSON."""

    version: int = Field(default=REGISTRY_VERSION, description="Format version of the JSON file.")
    updated_at: str | None = Field(
        default=None,
        description="When discovery last changed the registry (UTC, ISO 8601); a refresh that "
        "finds nothing new keeps the file, and this time, as they were.",
    )
    scan_paths: list[Path] = Field(default_factory=list, description="Folders that were scanned.")
    added_dirs: list[Path] = Field(
        default_factory=list,
        exclude=True,
        description="Read, never written: where the previous release kept the folders `magi "
        "discover FOLDER` added. A refresh moves them into the folders file "
        "(added_folders_path), which is configuration; this file is only a cache.",
    )
    n_ctx: int = Field(default=2048, gt=0, description="Context length the memory estimates assume.")
    models: dict[str, ModelEntry] = Field(default_factory=dict, description="Models by id.")
    skipped: list[SkippedFile] = Field(
        default_factory=list, description="Files that could not be registered."
    )

    # -- queries ------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return list(self.models)

    def get(self, model_id: str) -> ModelEntry:
        """The entry of ``model_id``.

        Raises:
            ModelNotFoundError: unknown id; the message suggests the closest and lists all (404).
        """
        entry = self.models.get(model_id)
        if entry is None:
            known = list(self.models)
            raise ModelNotFoundError(
                f"Model '{model_id}' is not in the registry.{did_you_mean(model_id, known)} "
                f"Known models: {format_options(known)}. Run `magi discover FOLDER` to register more.",
                details={"id": model_id, "available": sorted(known)},
            )
        return entry

    def by_tier(self) -> dict[str, list[str]]:
        """Model ids grouped by their registry tier."""
        tiers: dict[str, list[str]] = {}
        for entry in self.models.values():
            tiers.setdefault(entry.tier, []).append(entry.id)
        return tiers

    def find_path(self, path: Path) -> ModelEntry | None:
        """The entry whose first file is ``path`` (resolved), if any."""
        target = Path(path).resolve()
        return next((e for e in self.models.values() if e.path.resolve() == target), None)

    # -- persistence ---------------------------------------------------------------
    def save(self, path: Path | str) -> Path:
        """Write the registry as indented JSON, atomically (readers never see half a file).

        Raises:
            RegistryWriteError: the file cannot be written (read-only folder or file
                system, full disk, a path through a file...); names the file (503).
        """
        path = Path(path)
        try:
            atomic_write_text(path, self.model_dump_json(indent=2) + "\n")
        except OSError as exc:
            raise RegistryWriteError(path, exc) from None
        return path

    def same_content(self, other: ModelRegistry) -> bool:
        """Equal apart from ``updated_at``: saving ``self`` over ``other`` would change nothing."""
        return self.model_dump(exclude={"updated_at"}) == other.model_dump(exclude={"updated_at"})

    @classmethod
    def load(cls, path: Path | str) -> ModelRegistry:
        """Read a registry JSON file.

        Raises:
            ModelError: the file is missing (404), unreadable, not UTF-8, not JSON, or
                not a registry (422); the message names the file and says how to rebuild it.
        """
        path = Path(path)
        rebuild = "Rebuild it with `magi discover FOLDER`."
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ModelError(
                f"Model registry {path} does not exist. Create it with `magi discover FOLDER` "
                "(or ModelDiscoveryService(scan_path=...).refresh()).",
                status_code=404,
                details={"path": str(path)},
            ) from None
        except UnicodeDecodeError as exc:
            raise ModelError(
                f"Model registry {path} is not UTF-8 text (byte {exc.start} is "
                f"{exc.object[exc.start]:#04x}). {rebuild}",
                details={"path": str(path)},
            ) from None
        except OSError as exc:
            raise ModelError(
                f"Cannot read the model registry {path}: {exc.strerror or exc}. {rebuild}",
                details={"path": str(path)},
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(
                f"Model registry {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                f"{exc.msg}). {rebuild}",
                details={"path": str(path)},
            ) from None
        except (ValueError, RecursionError) as exc:  # e.g. a 5,000-digit number, nesting too deep
            problem = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise ModelError(
                f"Model registry {path} is not a registry MAGI can read ({problem}). {rebuild}",
                details={"path": str(path)},
            ) from None
        if not isinstance(data, dict):
            raise ModelError(
                f"Model registry {path} must hold a JSON object, not {type(data).__name__}. {rebuild}"
            )
        version = data.get("version")
        if version != REGISTRY_VERSION:
            raise ModelError(
                f"Model registry {path} has format version {version!r}; this MAGI reads version "
                f"{REGISTRY_VERSION}. {rebuild}",
                details={"path": str(path)},
            )
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            problems = describe_validation_error(exc)
            shown = "\n".join(f"  - {p}" for p in problems[:10])
            more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise ModelError(
                f"Model registry {path} is not a valid registry ({len(problems)} problem(s)):\n"
                f"{shown}{more}\n{rebuild}",
                details={"path": str(path), "problems": problems},
            ) from None


class RegistryWriteError(ModelError):
    """The registry file cannot be written (HTTP 503: storage unavailable, not bad input).

    ``magi discover`` reports it; a start keeps the registry in memory instead
    (``ModelDiscoveryService.refresh(save_errors="warn")``).
    """

    status_code = 503

    def __init__(self, path: Path, error: OSError) -> None:
        self.path = path
        self.reason = error.strerror or str(error)
        super().__init__(
            f"Cannot write the model registry {path}: {self.reason}. Make its folder writable, or "
            "point models.registry (magi discover --registry FILE) at a file in a writable folder.",
            details={"path": str(path), "errno": error.errno},
        )


class FoldersWriteError(RegistryWriteError):
    """The folders file (:func:`added_folders_path`) cannot be written (503), like the registry."""

    def __init__(self, path: Path, error: OSError) -> None:
        self.path = path
        self.reason = error.strerror or str(error)
        ModelError.__init__(
            self,
            f"Cannot write {path} (the folders `magi discover FOLDER` added): {self.reason}. Make its "
            "folder writable, or point models.registry (magi discover --registry FILE) at a file in a "
            "writable folder (the folders file lives beside it).",
            details={"path": str(path), "errno": error.errno},
        )


#: The folders file's name is the registry's stem plus this (models/registry.json ->
#: models/registry.folders.json); :func:`added_folders_path` is the one place that builds it.
ADDED_FOLDERS_SUFFIX = ".folders.json"
ADDED_FOLDERS_VERSION = 1


def added_folders_path(registry_path: Path | str) -> Path:
    """Where the folders `magi discover FOLDER` added are kept for ``registry_path``: beside it.

    They are the user's configuration, so they do not live in the registry, a cache MAGI
    rebuilds from scratch when it is damaged. Each registry file has its own folders file.
    """
    registry_path = Path(registry_path)
    return registry_path.with_name(registry_path.stem + ADDED_FOLDERS_SUFFIX)


def load_added_folders(path: Path) -> list[Path] | None:
    """The folders recorded in the folders file ``path``; None if there is no such file.

    Raises:
        ModelError: the file cannot be read or is not a folders file (422); ``details["reason"]``
            says what is wrong, the message names the file.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):  # no file (a path through a file has none either)
        return None
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})"
    except json.JSONDecodeError as exc:
        reason = f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
    except OSError as exc:
        reason = f"unreadable ({exc.strerror or exc})"
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, nesting too deep
        reason = f"not JSON MAGI can read ({'nested too deeply' if isinstance(exc, RecursionError) else exc})"
    else:
        folders = data.get("folders") if isinstance(data, dict) else None
        if isinstance(folders, list) and all(isinstance(p, str) and p for p in folders):
            return [Path(p).expanduser() for p in folders]
        reason = 'not {"version": 1, "folders": ["/a/folder", ...]}'
    raise ModelError(
        f"Folders file {path} is {reason}.", details={"path": str(path), "reason": reason}
    )


def save_added_folders(path: Path, folders: list[Path]) -> None:
    """Write the folders file atomically (an existing file keeps its mode).

    Raises:
        FoldersWriteError: it cannot be written (503), named in the message.
    """
    text = json.dumps({"version": ADDED_FOLDERS_VERSION, "folders": [str(p) for p in folders]}, indent=2)
    try:
        atomic_write_text(path, text + "\n")
    except OSError as exc:
        raise FoldersWriteError(path, exc) from None


def utc_now() -> str:
    """The current time for ``updated_at``: UTC, ISO 8601, whole seconds."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()
