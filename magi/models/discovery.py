"""Discovery: find GGUF models in folders and build the model registry.

:class:`ModelDiscoveryService` is the seed's service. It scans folders
recursively for ``*.gguf`` files, groups split models (``-00001-of-00003.gguf``:
one model, the first shard is its path, sizes summed), reads each header without
loading weights (:mod:`magi.models.gguf_meta`), derives ids and tiers
(:mod:`magi.models.ids`, :mod:`magi.models.tiers`), and saves the registry.

A bad file never stops discovery: truncated downloads, non-GGUF files with a
``.gguf`` name, incomplete split sets, adapters and projectors are logged as
warnings and listed in ``registry.skipped`` with the reason.

The folders scanned are ``models.dirs`` plus the added folders: a folder given to
``magi discover FOLDER`` is recorded in the folders file beside the registry
(:func:`~magi.models.registry.added_folders_path`, e.g. ``models/registry.folders.json``),
so every later start keeps its models, even one that rebuilds a damaged registry. The
demo model is assembled into ``models.demo_dir`` (default ``models/``), never into a
folder MAGI was only asked to read.

:meth:`ModelDiscoveryService.refresh` is incremental: a file whose size and
modification time match the previous registry is not opened again (its stored
metadata is reused; ``DiscoveryStats.read`` counts the files actually read).
Ids and tiers are re-derived every time, so changed pins or thresholds apply
without re-reading.

Example (the seed's):
    >>> discovery = ModelDiscoveryService(scan_path=Path("/path/to/models"))  # doctest: +SKIP
    >>> registry = discovery.load_registry(Path("models/registry.json"))      # doctest: +SKIP
    >>> manager.validate_profile(profile, list(registry.models.keys()))        # doctest: +SKIP
    []
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from magi.config.app import ModelPin, ModelsConfig
from magi.errors import ModelError
from magi.models.gguf_meta import GGUFModelInfo, GGUFReadError, read_model_info
from magi.models.ids import (
    IdClaim,
    IdParts,
    assign_unique_ids,
    derive_identity,
    make_id,
    quant_token,
    strip_split_suffix,
)
from magi.models.registry import (
    ModelEntry,
    ModelFile,
    ModelRegistry,
    RegistryWriteError,
    SkippedFile,
    added_folders_path,
    load_added_folders,
    save_added_folders,
    utc_now,
)
from magi.models.tiers import assign_tier

logger = logging.getLogger(__name__)

#: The project's own models folder (models.dirs' default, relative to the working directory):
#: the demo model's folder unless models.demo_dir says otherwise, created when it goes there.
DEFAULT_MODELS_DIR = Path("models")
#: Registry files already warned about as unwritable: a start warns once per file and
#: process, not once per Runner (notebooks and sweeps start many).
_UNWRITABLE_WARNED: set[Path] = set()

Reader = Callable[[list[Path]], GGUFModelInfo]
_SHARD = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
#: Architectures that are GGUF files but not language models MAGI can run.
NON_MODEL_ARCHITECTURES = {"clip": "a multimodal projector (mmproj)"}


@dataclass(frozen=True)
class ModelFiles:
    """The files of one model: a single file, or every shard of a split model in order."""

    files: tuple[Path, ...]

    @property
    def path(self) -> Path:
        return self.files[0]


@dataclass
class DiscoveryStats:
    """What one discovery run did; ``read`` counts headers actually parsed."""

    models: int = 0
    read: int = 0
    reused: int = 0
    skipped: int = 0
    seconds: float = 0.0


@dataclass
class DiscoveryResult:
    """A discovery run's registry, statistics and warnings (unused pins, demo problems).

    ``saved`` says whether this run wrote the registry file: False when it was not
    asked to, when nothing changed, or when the file could not be written (then the
    registry lives only in memory).
    """

    registry: ModelRegistry
    stats: DiscoveryStats
    warnings: list[str] = field(default_factory=list)
    saved: bool = False
    #: Folders this run added to / removed from the folders file, and all it records after.
    added: list[Path] = field(default_factory=list)
    forgotten: list[Path] = field(default_factory=list)
    added_dirs: list[Path] = field(default_factory=list)

    @property
    def skipped(self) -> list[SkippedFile]:
        return self.registry.skipped


@dataclass(frozen=True)
class _Found:
    """A model whose metadata is known: its files as stat'ed now, and its id in the last registry."""

    model: ModelFiles
    files: list[ModelFile]
    info: GGUFModelInfo
    previous_id: str | None


def _same_files(old: list[ModelFile], new: list[ModelFile]) -> bool:
    """Unchanged on disk: same paths, sizes and modification times (then the header is not re-read)."""
    return [(f.path, f.size, f.mtime_ns) for f in old] == [(f.path, f.size, f.mtime_ns) for f in new]


def demo_folder(config: ModelsConfig) -> Path:
    """Where the demo model is assembled: ``models.demo_dir``, else MAGI's own ``models/``.

    Never one of the user's folders in ``models.dirs`` (or given to ``magi discover``):
    MAGI does not write 253 MB into a folder it was only asked to read.
    """
    return Path(config.demo_dir) if config.demo_dir is not None else DEFAULT_MODELS_DIR


def check_folders(dirs: Iterable[Path]) -> None:
    """Raise ModelError (404) naming the first of ``dirs`` that is not an existing folder."""
    for folder in dirs:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise ModelError(
                f"Models folder {folder} {what}. Create it and put .gguf files in it, or pass another "
                "folder (magi discover FOLDER, or models.dirs in conf/config.yaml).",
                status_code=404,
                details={"path": str(folder)},
            )


def find_model_files(dirs: Iterable[Path]) -> tuple[list[ModelFiles], list[SkippedFile]]:
    """Every model in ``dirs`` (recursively), plus incomplete split sets and folders
    that cannot be listed as skipped entries.

    Hidden files and folders (names starting with ``.``) are ignored: they are
    temporary files of interrupted writes. A file reachable from two folders is
    counted once.

    Raises:
        ModelError: a folder does not exist or is not a folder (404).
    """
    seen: set[Path] = set()
    singles: list[Path] = []
    shards: dict[tuple[Path, str, int], dict[int, Path]] = {}
    skipped: list[SkippedFile] = []
    dirs = [Path(folder).expanduser() for folder in dirs]
    check_folders(dirs)
    for folder in dirs:
        for path in _gguf_files(folder.resolve(), skipped):
            if not path.is_file():
                continue
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            match = _SHARD.match(path.name)
            if match:
                key = (path.parent, match["stem"], int(match["count"]))
                shards.setdefault(key, {})[int(match["no"])] = path
            else:
                singles.append(path)
    models = [ModelFiles((p,)) for p in singles]
    for (_parent, _stem, count), found in shards.items():
        wanted = set(range(1, count + 1))
        if set(found) == wanted:
            models.append(ModelFiles(tuple(found[i] for i in sorted(found))))
        else:
            missing = sorted(wanted - set(found))
            first = found[min(found)]
            skipped.append(
                SkippedFile(
                    path=first,
                    reason=f"split model incomplete: shard(s) {', '.join(f'{n:05d}' for n in missing)} of "
                    f"{count:05d} missing",
                )
            )
    models.sort(key=lambda m: str(m.path))
    return models, skipped


def _gguf_files(folder: Path, skipped: list[SkippedFile]) -> list[Path]:
    """The ``*.gguf`` names under ``folder``, sorted; hidden names are left out and
    symlinked folders are not followed (as ``Path.rglob`` does).

    A folder that cannot be listed (no permission, a path too long, an I/O error)
    is added to ``skipped`` with the reason (and so warned about), never passed
    over in silence: its models would otherwise just be missing.
    """

    def unlistable(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else folder
        skipped.append(SkippedFile(path=where, reason=f"cannot list folder: {exc.strerror or exc}"))

    found: list[Path] = []
    for parent, subdirs, names in os.walk(folder, onerror=unlistable):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        found.extend(Path(parent, n) for n in names if n.endswith(".gguf") and not n.startswith("."))
    return sorted(found)


def _stat_files(model: ModelFiles) -> list[ModelFile]:
    out = []
    for p in model.files:
        st = p.stat()
        out.append(ModelFile(path=p, size=st.st_size, mtime_ns=st.st_mtime_ns))
    return out


def _info_from_entry(entry: ModelEntry) -> GGUFModelInfo:
    return GGUFModelInfo(**{f.name: getattr(entry, f.name) for f in fields(GGUFModelInfo)})


def _not_a_model(info: GGUFModelInfo) -> str | None:
    if info.general_type and info.general_type != "model":
        return f"general.type is '{info.general_type}' (an adapter or other non-model file)"
    if info.architecture in NON_MODEL_ARCHITECTURES:
        return f"{NON_MODEL_ARCHITECTURES[info.architecture]}, not a language model"
    return None


def _pin_for(pins: dict[str, ModelPin], path: Path) -> tuple[str, ModelPin] | None:
    for key in (path.name, strip_split_suffix(path.stem) + ".gguf"):
        if key in pins:
            return key, pins[key]
    return None


class ModelDiscoveryService:
    """Scan folders for GGUF models and maintain the registry (the seed's service).

    Args:
        scan_path: A folder or several; default ``config.dirs``.
        config: The ``models`` section (thresholds, pins, registry path, demo);
            default :class:`~magi.config.app.ModelsConfig` defaults.
        registry_path: Where the registry JSON lives; default ``config.registry``.
        n_ctx: Context length the registry's memory estimates assume.
        include_demo: Assemble and register the demo model. ``None``: follow
            ``config.demo`` when a config is given, else off (a bare
            ``ModelDiscoveryService(scan_path=...)`` only scans). When it follows the
            config and the extra is not installed, the demo is silently left out;
            when ``True`` it is an error.
        reader: Reads a model's metadata from its files (replaceable to count reads).
        progress: Show a progress bar while reading headers.
        add_dirs: Folders to record in the folders file (``magi discover FOLDER``):
            scanned now and by every later refresh with the same registry path, so a
            start keeps the models of a folder added once.
        forget_dirs: Folders to remove from it (``magi discover --forget``).

    The folders scanned are ``scan_path`` (default ``config.dirs``) plus those of the
    folders file (:attr:`folders_path`). An added folder that has gone (an unplugged
    disk) is skipped with a warning and stays recorded.
    """

    def __init__(
        self,
        scan_path: Path | str | Sequence[Path | str] | None = None,
        *,
        config: ModelsConfig | None = None,
        registry_path: Path | str | None = None,
        n_ctx: int = 2048,
        include_demo: bool | None = None,
        reader: Reader = read_model_info,
        progress: bool = False,
        add_dirs: Sequence[Path | str] = (),
        forget_dirs: Sequence[Path | str] = (),
    ) -> None:
        self.config = config or ModelsConfig()
        self.add_dirs = [Path(p).expanduser() for p in add_dirs]
        self.forget_dirs = [Path(p).expanduser() for p in forget_dirs]
        if scan_path is None:
            self.scan_paths = [Path(p) for p in self.config.dirs]
        elif isinstance(scan_path, str | Path):
            self.scan_paths = [Path(scan_path)]
        else:
            self.scan_paths = [Path(p) for p in scan_path]
        self.registry_path = Path(registry_path) if registry_path is not None else Path(self.config.registry)
        #: The folders `magi discover FOLDER` added, kept beside the registry (not in it: a cache).
        self.folders_path = added_folders_path(self.registry_path)
        self.n_ctx = n_ctx
        self.demo_required = include_demo is True
        self.include_demo = (
            self.config.demo if include_demo is None and config is not None else bool(include_demo)
        )
        self.reader = reader
        self.progress = progress
        self.last_stats: DiscoveryStats | None = None

    # -- the seed's API --------------------------------------------------------------
    def load_registry(self, path: Path | str | None = None) -> ModelRegistry:
        """Load a saved registry (default: this service's ``registry_path``).

        Raises:
            ModelError: missing (404) or corrupt (422) file, named in the message.
        """
        return ModelRegistry.load(path if path is not None else self.registry_path)

    def save_registry(self, registry: ModelRegistry, path: Path | str | None = None) -> Path:
        """Write ``registry`` atomically (default: this service's ``registry_path``)."""
        return registry.save(path if path is not None else self.registry_path)

    def discover(self) -> DiscoveryResult:
        """Scan from scratch (every header read, no registry file consulted); nothing is saved."""
        added, forgotten, recorded = self._added_dirs([])
        return self._run(previous=None, recorded=recorded, added=added, forgotten=forgotten)

    def refresh(
        self,
        previous: ModelRegistry | None = None,
        *,
        save: bool = True,
        save_errors: Literal["raise", "warn"] = "raise",
        full: bool = False,
    ) -> DiscoveryResult:
        """Scan again, re-reading only new or changed files, and save the registry.

        Args:
            previous: The registry to update; default: the one at ``registry_path``
                if it exists. An unreadable previous registry is rebuilt (with a
                warning): it only caches what the files say.
            save: Write the result to ``registry_path``, unless it is the registry
                just read from there with nothing changed (then the file, and its
                ``updated_at``, stay as they are).
            save_errors: ``"raise"``: a registry that cannot be written raises
                :class:`~magi.models.registry.RegistryWriteError` (``magi discover``).
                ``"warn"``: log one warning naming the file and keep the registry in
                memory (a start: read-only models folders are common and the registry
                is only a cache).
            full: Re-read every header (``magi discover --full``); the added folders
                are still scanned.

        The added folders are read from :attr:`folders_path` at every call. A registry
        of the previous release that still holds ``added_dirs`` (and no folders file)
        has them moved into the folders file. A damaged folders file is a warning (its
        folders are not scanned; the file is left for the user to mend) and makes
        adding or forgetting a folder a 422 error, so it is never overwritten.
        """
        from_disk = False
        legacy: list[Path] = []
        if previous is None and self.registry_path.is_file():
            try:
                previous = self.load_registry()
                from_disk = True
            except ModelError as exc:
                logger.warning("Rebuilding the registry from scratch: %s", exc)
                legacy = _salvage_added_dirs(self.registry_path)
        if previous is not None:
            legacy = list(previous.added_dirs)
        stored, notes = self._read_folders()
        before = stored if stored is not None else []
        if stored is None:  # no folders file yet (or a damaged one): the old registry's, if any
            before = [*before, *(p for p in legacy if p not in before)]
        added, forgotten, recorded = self._added_dirs(before)
        result = self._run(
            previous=None if full else previous,
            recorded=recorded,
            added=added,
            forgotten=forgotten,
            notes=notes,
        )
        if not save:
            return result
        try:
            if not notes and recorded != (stored or []):
                save_added_folders(self.folders_path, recorded)
            # a previous release's added_dirs leave the registry once the folders file holds them
            moved = previous is not None and bool(previous.added_dirs) and not notes
            if from_disk and previous is not None and not moved and result.registry.same_content(previous):
                result.registry = result.registry.model_copy(update={"updated_at": previous.updated_at})
                return result
            self.save_registry(result.registry)
        except RegistryWriteError as exc:
            if save_errors == "raise":
                raise
            # a folders file that cannot be written leaves the registry unsaved too: an old
            # registry's added_dirs must not be dropped before the folders file holds them
            key = self.registry_path.absolute()
            log = logger.debug if key in _UNWRITABLE_WARNED else logger.warning
            _UNWRITABLE_WARNED.add(key)
            if exc.path == self.folders_path:
                what = f"the added folders (and the registry {self.registry_path}) are"
            else:
                what = "the registry is"
            log(
                "%s %s cannot be written (%s); %s kept in memory for this run. Point models.registry "
                "at a file in a writable folder to keep it between runs.",
                "Folders file" if exc.path == self.folders_path else "Model registry",
                exc.path,
                exc.reason,
                what,
            )
        else:
            result.saved = True
            _UNWRITABLE_WARNED.discard(self.registry_path.absolute())
        return result

    # -- the work ------------------------------------------------------------------
    @property
    def demo_folder(self) -> Path:
        """Where the demo model goes (:func:`demo_folder`); never a scanned folder by default."""
        return demo_folder(self.config)

    def _ensure_demo(self, warnings: list[str]) -> list[Path]:
        """Put every demo model (:data:`~magi.models.demo.DEMO_MODELS`) into the demo folder.

        Returns the paths of those in place. Following the config, a model whose package is
        not installed is left out silently and one that cannot be written with a warning;
        with ``include_demo=True`` either is an error.
        """
        from magi.models.demo import DEMO_MODELS

        paths = [self._ensure_one_demo(model.ensure, warnings) for model in DEMO_MODELS]
        return [p for p in paths if p is not None]

    def _ensure_one_demo(self, ensure: Callable[..., Path], warnings: list[str]) -> Path | None:
        from magi.models.demo import DemoModelUnavailableError

        try:
            return ensure(self.demo_folder, progress=self.progress)
        except DemoModelUnavailableError as exc:
            if self.demo_required:
                raise
            logger.info("Demo model left out: %s", exc)
            return None
        except ModelError as exc:
            if self.demo_required:
                raise
            warnings.append(f"demo model left out: {exc}")
            return None
        except OSError as exc:  # e.g. a read-only models folder without the demo model in it
            folder = self.demo_folder
            problem = f"cannot write the demo model into {folder}: {exc.strerror or exc}"
            if self.demo_required:
                raise ModelError(
                    f"{problem}. Make the folder writable or set models.demo_dir to a writable one.",
                    status_code=503,
                    details={"path": str(folder)},
                ) from None
            warnings.append(f"demo model left out: {problem} (set models.demo_dir to a writable folder)")
            return None

    def _read_folders(self) -> tuple[list[Path] | None, list[str]]:
        """The folders file's folders (None: no file, or a damaged one) and the warning if damaged.

        Raises:
            ModelError: the file is damaged and this run would add or forget a folder (422):
                writing would destroy what the user may still want from it.
        """
        try:
            return load_added_folders(self.folders_path), []
        except ModelError as exc:
            reason = exc.details["reason"]
            if self.add_dirs or self.forget_dirs:
                raise ModelError(
                    f"Folders file {self.folders_path} is {reason}, so no folder can be added or "
                    "forgotten: mend it, or delete it and add your folders again with "
                    "`magi discover FOLDER`.",
                    details={"path": str(self.folders_path), "reason": reason},
                ) from None
            return None, [
                f"folders file {self.folders_path} is {reason}: the folders `magi discover FOLDER` "
                "added are not scanned this run (which ones it held cannot be told from it). Mend "
                "the file, or delete it and add them again with `magi discover FOLDER`; MAGI leaves "
                "it as it is."
            ]

    def _added_dirs(self, before: list[Path]) -> tuple[list[Path], list[Path], list[Path]]:
        """(newly added, forgotten, recorded after this run) folders, absolute.

        A folder already scanned as part of ``scan_path`` is not recorded.

        Raises:
            ModelError: a folder to forget is not recorded (404), listing the recorded ones.
        """
        recorded = [Path(p) for p in before]
        forgotten: list[Path] = []
        for folder in self.forget_dirs:
            target = folder.absolute().resolve()
            match = [p for p in recorded if p == target or p.resolve() == target]
            if not match:
                raise ModelError(
                    f"Folder {folder} is not one `magi discover FOLDER` added to {self.folders_path} "
                    f"(added: {', '.join(map(str, recorded)) or 'none'}); folders of models.dirs are "
                    "changed in the config.",
                    status_code=404,
                    details={"path": str(folder), "added": [str(p) for p in recorded]},
                )
            recorded = [p for p in recorded if p not in match]
            forgotten.extend(match)
        configured = {Path(p).expanduser().absolute().resolve() for p in self.scan_paths}
        added: list[Path] = []
        for folder in self.add_dirs:
            target = folder.absolute().resolve()
            if target in configured or target in recorded:
                continue
            check_folders([folder])
            recorded.append(target)
            added.append(target)
        return added, forgotten, recorded

    def _run(
        self,
        previous: ModelRegistry | None,
        recorded: Sequence[Path] = (),
        added: Sequence[Path] = (),
        forgotten: Sequence[Path] = (),
        notes: Sequence[str] = (),
    ) -> DiscoveryResult:
        start = time.perf_counter()
        warnings: list[str] = list(notes)
        dirs = list(self.scan_paths)
        # A folder that does not exist is a mistake to report, not a place to create and
        # fill with a 250 MB demo model; only the project's default folder is created.
        # That default, models/, may also be absent when added folders hold the models.
        # The demo's own folder (models.demo_dir, default models/) is made for the demo.
        demo_home = _folder_key(self.demo_folder) if self.include_demo else None
        check_folders(
            d
            for d in dirs
            if not (
                _folder_key(d) == demo_home or (Path(d) == DEFAULT_MODELS_DIR and recorded)
            )
        )
        for folder in recorded:
            if Path(folder).is_dir():
                dirs.append(Path(folder))
            else:
                warnings.append(
                    f"models folder {folder} (added by `magi discover`) is not there; skipped this time "
                    f"(`magi discover --forget {folder}` stops scanning it)"
                )
        if self.include_demo:
            for demo_path in self._ensure_demo(warnings):
                if not any(_is_within(demo_path, d) for d in dirs):
                    dirs.append(demo_path.parent)
        if recorded:  # an absent models/ is no mistake when added folders hold the models
            dirs = [d for d in dirs if Path(d) != DEFAULT_MODELS_DIR or Path(d).is_dir()]
        models, skipped = find_model_files(dirs)
        stats = DiscoveryStats()
        found = self._read_all(models, previous, stats, skipped)
        registry_models, used_pins = self._build_entries(found)

        for name in sorted(set(self.config.pins) - used_pins):
            warnings.append(f"models.pins.{name}: no discovered file has this name")
        for item in skipped:
            logger.warning("Skipped %s: %s", item.path, item.reason)
        for text in warnings:
            logger.warning("%s", text)
        stats.models = len(registry_models)
        stats.skipped = len(skipped)
        stats.seconds = time.perf_counter() - start
        self.last_stats = stats
        registry = ModelRegistry(
            updated_at=utc_now(),
            scan_paths=[Path(d).resolve() for d in dirs],
            n_ctx=self.n_ctx,
            models=registry_models,
            skipped=sorted(skipped, key=lambda s: str(s.path)),
        )
        return DiscoveryResult(
            registry=registry,
            stats=stats,
            warnings=warnings,
            added=list(added),
            forgotten=list(forgotten),
            added_dirs=list(recorded),
        )

    def _read_all(
        self,
        models: list[ModelFiles],
        previous: ModelRegistry | None,
        stats: DiscoveryStats,
        skipped: list[SkippedFile],
    ) -> list[_Found]:
        """Metadata of every model: reused from ``previous`` when size and mtime match, else read."""
        cached = {e.path: e for e in previous.models.values()} if previous is not None else {}
        iterator: Iterable[ModelFiles] = models
        if self.progress:
            from tqdm.auto import tqdm

            iterator = tqdm(models, desc="Reading GGUF headers", unit="model", leave=False)
        found: list[_Found] = []
        for model in iterator:
            try:
                stat = _stat_files(model)
            except OSError as exc:
                skipped.append(SkippedFile(path=model.path, reason=f"cannot stat: {exc.strerror or exc}"))
                continue
            old = cached.get(model.path)
            if old is not None and _same_files(old.files, stat):
                found.append(_Found(model, stat, _info_from_entry(old), old.id))
                stats.reused += 1
                continue
            stats.read += 1
            try:
                info = self.reader(list(model.files))
            except GGUFReadError as exc:
                skipped.append(SkippedFile(path=model.path, reason=exc.reason))
                continue
            reason = _not_a_model(info)
            if reason:
                skipped.append(SkippedFile(path=model.path, reason=reason))
                continue
            found.append(_Found(model, stat, info, None))
        return found

    def _build_entries(self, found: list[_Found]) -> tuple[dict[str, ModelEntry], set[str]]:
        """Derive ids (unique), tiers and memory estimates; returns entries by id and the pins used."""
        claims: list[IdClaim] = []
        data: dict[str, dict[str, object]] = {}
        used_pins: set[str] = set()
        for item in found:
            path = item.model.path
            identity = derive_identity(item.info, path.name)
            pin = _pin_for(self.config.pins, path)
            pinned_id = pinned_tier = None
            if pin:
                used_pins.add(pin[0])
                pinned_id, pinned_tier = pin[1].id, pin[1].tier
            tier = pinned_tier or assign_tier(identity.params, self.config.tier_thresholds)
            quant = quant_token(identity.quant) if identity.quant else "unknown"
            wanted = pinned_id or make_id(identity.family, identity.size, quant, tier)
            parts = IdParts(
                identity.family, identity.size, quant, tier, identity.variant, identity.file_family
            )
            claims.append(
                IdClaim(
                    str(path), wanted, pinned=pinned_id is not None, previous=item.previous_id, parts=parts
                )
            )
            data[str(path)] = dict(
                path=path,
                files=item.files,
                tier=tier,
                family=identity.family,
                size=identity.size,
                quant=identity.quant,
                params=identity.params,
                params_source=identity.params_source,
                pinned=pin is not None,
                file_size=sum(f.size for f in item.files),
                mtime=max(f.mtime_ns for f in item.files) / 1e9,
                **{f.name: getattr(item.info, f.name) for f in fields(GGUFModelInfo)},
            )
        ids = assign_unique_ids(claims)
        entries: dict[str, ModelEntry] = {}
        for key in sorted(data, key=lambda k: ids[k]):
            partial = ModelEntry.model_construct(id=ids[key], **data[key])  # for the estimate only
            memory = round(partial.memory(self.n_ctx).total_mb, 1)
            entries[ids[key]] = ModelEntry(id=ids[key], memory_mb=memory, **data[key])
        return entries, used_pins


def _salvage_added_dirs(path: Path) -> list[Path]:
    """The ``added_dirs`` of a previous release's registry file that does not load (bad
    entries, other version): they are the user's choices, so a rebuild keeps them when
    they can be read (and moves them into the folders file)."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        found = data.get("added_dirs", []) if isinstance(data, dict) else []
        return [Path(p) for p in found if isinstance(p, str) and p]
    except (OSError, ValueError, RecursionError):
        return []


def _folder_key(folder: Path | str) -> Path:
    """A folder as a comparable absolute path (``models`` and ``/cwd/models`` are one)."""
    return Path(folder).expanduser().absolute()


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(Path(folder).resolve())
    except ValueError:
        return False
    return True


def discover_models(
    config: ModelsConfig, *, n_ctx: int = 2048, save: bool = True, progress: bool = False
) -> DiscoveryResult:
    """Refresh the registry described by an app config's ``models`` section (demo included per config)."""
    service = ModelDiscoveryService(config=config, n_ctx=n_ctx, progress=progress)
    return service.refresh(save=save)
