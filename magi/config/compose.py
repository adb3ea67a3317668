"""Hydra composition for Python and notebooks, and the single validation step.

The pipeline runs one way: Hydra composes YAML → ``OmegaConf.to_container`` →
:meth:`MagiConfig.model_validate`. Past this module no code touches a ``DictConfig``.

Example:
    >>> import magi
    >>> cfg = magi.compose(profile="production", overrides=["profile.two_stage.enabled=false"])
    >>> cfg.profile.load_balancing.strategy
    'round_robin'
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from pydantic import ValidationError

from magi.config.app import MagiConfig
from magi.config.base import validation_to_config_error
from magi.errors import ConfigError, ConfigFileError, ProfileNotFoundError
from magi.sweeps.launchers import register_resolvers

register_resolvers()  # conf/hydra/launcher/*.yaml use ${magi.cores_up_to:N}

CONF_DIR_ENV = "MAGI_CONF_DIR"
PROFILE_GROUP = "profile"
ENDPOINTS_GROUP = "endpoints"
_compose_lock = threading.Lock()
#: MAGI's own config groups, for naming the file a faulty field came from.
CONFIG_GROUPS: tuple[str, ...] = (PROFILE_GROUP, "task", ENDPOINTS_GROUP)


def default_conf_dir() -> Path:
    """The Hydra config folder: ``$MAGI_CONF_DIR``, else the project's ``conf/``."""
    env = os.environ.get(CONF_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (Path(__file__).resolve().parents[2] / "conf").resolve()


def profiles_dir(conf_dir: Path | None = None) -> Path:
    """The ``profile`` config group folder, shared by Hydra and the ProfileManager."""
    return (conf_dir or default_conf_dir()) / PROFILE_GROUP


def list_profiles(conf_dir: str | Path | None = None) -> list[str]:
    """Names of the ``profile`` group's options, as Hydra's config loader sees them."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    conf = Path(conf_dir) if conf_dir else default_conf_dir()
    with _compose_lock, initialize_config_dir(version_base="1.3", config_dir=str(conf.resolve())):
        loader = GlobalHydra.instance().config_loader()
        return sorted(loader.get_group_options(PROFILE_GROUP))


def non_string_kind(word: str) -> str | None:
    """What Hydra's command line reads a bare word as, if not a string: ``"a number"``
    (``123``, ``1e3``, ``nan``, ``inf``), ``"a boolean"`` (``true``) or ``"null"``; else None.

    ``profile=123`` selects nothing (Hydra wants a string), so a profile file may not
    be named so (:func:`magi.profiles.manager.normalize_profile_name`).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        value = OverridesParser.create().parse_override(f"{PROFILE_GROUP}={word}").value()
    except Exception:  # not a value Hydra can parse at all
        return "something other than a name"
    return _kind(value)


def _kind(value: object) -> str | None:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return None


def _chosen_options(primary: Any, overrides: Sequence[str]) -> dict[str, list[object]]:
    """Group -> the option(s) chosen: the primary config's defaults list, then the
    overrides (a sweep ``profile=a,b`` chooses both, ``glob(...)`` the matching ones)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, Glob

    chosen: dict[str, list[object]] = {}
    defaults = primary.get("defaults") if isinstance(primary, dict) else None
    for entry in defaults if isinstance(defaults, list) else []:
        if isinstance(entry, dict) and len(entry) == 1:
            ((key, value),) = entry.items()
            group = str(key).removeprefix("override ").strip().split("@")[0]
            chosen[group] = [value]
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # Hydra reports a malformed override itself
        parsed = []
    for override in parsed:
        if override.is_delete() or override.package:
            continue
        value = override.value()
        if isinstance(value, ChoiceSweep):
            chosen[override.key_or_group] = list(value.list)
        elif isinstance(value, Glob):
            chosen[override.key_or_group] = [value]
        elif override.is_sweep_override():
            continue  # range/interval sweeps choose no config file
        else:
            chosen[override.key_or_group] = [value]
    return chosen


def check_config_files(
    conf_dir: str | Path,
    overrides: Sequence[str] = (),
    *,
    config_name: str = "config",
    search_dirs: Sequence[str | Path] = (),
) -> None:
    """Read the files Hydra is about to compose through the limits of
    :func:`~magi.config.yamlfile.load_yaml_file`, before Hydra does.

    Hydra (OmegaConf) copies every YAML alias, so an alias bomb composes for minutes,
    and a non-UTF-8 or deeply nested file ends in a traceback. Checked: the primary
    config and, for each config group, the option(s) chosen by its defaults list or
    the overrides, in ``conf_dir`` and any extra ``search_dirs`` (``--config-dir``).

    Raises:
        ConfigFileError: ``<file>: <problem>`` (422).
        ConfigError: a group option is not a string (``profile=123``; 422).
    """
    from hydra.core.override_parser.types import Glob

    from magi.config.yamlfile import load_yaml_file

    dirs = [Path(conf_dir), *(Path(d) for d in search_dirs)]
    primary: Any = None
    for folder in dirs:
        path = folder / f"{config_name}.yaml"
        if path.is_file():
            data = load_yaml_file(path)
            primary = data if primary is None else primary
    for group, options in _chosen_options(primary, overrides).items():
        folders = [d / group for d in dirs if (d / group).is_dir()]
        if not folders:
            continue  # not a config group (a value override such as prompt=...)
        for option in options:
            kind = _kind(option)
            if kind:
                text = str(option).lower() if option is None or isinstance(option, bool) else str(option)
                raise ConfigError(
                    [
                        f"{group}={text}: Hydra reads {text} as {kind}, not an option name. Quote it "
                        f"({group}='{text}') or rename the file to a name with a letter in it."
                    ],
                    source="the command-line overrides",
                )
            for folder in folders:
                if isinstance(option, Glob):
                    names = option.filter(sorted(p.stem for p in folder.glob("*.yaml")))
                    paths = [folder / f"{name}.yaml" for name in names]
                else:
                    paths = [folder / f"{option}.yaml"]
                for path in paths:
                    try:
                        exists = path.is_file()
                    except OSError as exc:  # e.g. a 300-character name: ENAMETOOLONG
                        raise ConfigFileError(path, f"cannot open the file: {exc.strerror or exc}") from None
                    if exists:
                        load_yaml_file(path)


#: Fields that are literal text: taken as written, never interpolated, so a prompt may
#: contain ``${...}`` (``python run.py prompt='What is ${runtime.n_ctx}?'``).
LITERAL_KEYS: tuple[str, ...] = ("prompt",)


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Resolve a composed config into plain Python data (raises ConfigError on MISSING).

    The fields of :data:`LITERAL_KEYS` are kept as written, unresolved.
    """
    from omegaconf.errors import OmegaConfBaseException

    raw = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(raw, dict)
    literal = {key: raw[key] for key in LITERAL_KEYS if isinstance(raw.get(key), str)}
    if literal:
        cfg = cfg.copy()
        with open_dict(cfg):
            for key in literal:
                cfg[key] = None
    try:
        data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError([f"{key}: {exc.msg if hasattr(exc, 'msg') else exc}"]) from None
    assert isinstance(data, dict)
    data.update(literal)
    data.pop("hydra", None)
    return {str(k): v for k, v in data.items()}


def validate_config(
    data: dict[str, Any],
    *,
    choices: Mapping[str, str | None] | None = None,
    conf_dir: Path | None = None,
) -> MagiConfig:
    """Validate composed data as a :class:`MagiConfig`.

    Errors name the files a field most likely came from: for the config groups in
    ``choices`` (``{"profile": "demo", "task": "bench", ...}``) whose fields have
    problems, ``conf/<group>/<choice>.yaml``; then ``conf/config.yaml`` (or an override).
    """
    try:
        return MagiConfig.model_validate(data)
    except ValidationError as exc:
        conf = conf_dir or default_conf_dir()
        err = validation_to_config_error(exc)
        sources = [
            f"{conf / group / (choice + '.yaml')} ({group}.*)"
            for group, choice in (choices or {}).items()
            if choice and any(p.startswith((f"{group}.", f"{group}:", f"{group}[")) for p in err.problems)
        ]
        sources.append(f"{conf / 'config.yaml'} or the command-line overrides")
        raise ConfigError(err.problems, source=", ".join(sources)) from None


def _with_cause(exc: BaseException) -> str:
    """Hydra's message plus its cause's first line: "Error merging override x=1" alone
    does not say that, e.g., the list index is out of range."""
    message = str(exc).strip()
    cause = exc.__cause__
    first = str(cause).strip().splitlines()[0].strip() if cause is not None and str(cause).strip() else ""
    if first and first not in message:
        key = getattr(cause, "full_key", None)
        detail = first + (f" (at {key})" if key else "")
        message += f"\n{detail}" if "\n" in message else f": {detail}"
    return message


#: How many composed configs :func:`compose` keeps (least recently used dropped first).
#: The picker composes on every change, with a handful of profile/override combinations.
COMPOSE_CACHE_SIZE = 64
#: A file modified less than this long before a fingerprint is taken makes the result
#: uncacheable: a second same-size write within the file system's timestamp tick (a few
#: ms on ext4, 1-2 s on FAT/HFS+) would keep (size, mtime) and go unnoticed ("racy git").
RACY_NS = 2_000_000_000

Fingerprint = tuple[tuple[str, int, int, int], ...]
_CacheKey = tuple[str, str, tuple[str, ...]]
_cache: OrderedDict[_CacheKey, tuple[Fingerprint, MagiConfig]] = OrderedDict()
_cache_lock = threading.Lock()


def conf_fingerprint(conf_dir: str | Path) -> tuple[Fingerprint, int]:
    """``(path, size, mtime_ns, inode)`` of every file under ``conf_dir`` (sorted, symlinks
    followed as Hydra does), and the newest ``mtime_ns`` among them.

    A stat per file, no reads: about 0.1 ms for the shipped ``conf/`` (15 files). An edit,
    a replaced file (new inode), a new or deleted file all change it.
    """
    entries: list[tuple[str, int, int, int]] = []
    pending = [str(conf_dir)]
    seen: set[tuple[int, int]] = set()  # folders by (device, inode): a symlink loop ends
    while pending:
        folder = pending.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                for entry in it:
                    try:
                        if entry.is_dir():
                            pending.append(entry.path)
                            continue
                        st = entry.stat()
                    except OSError:  # vanished or dangling: still part of what changed
                        entries.append((entry.path, -1, -1, -1))
                        continue
                    entries.append((entry.path, st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            continue  # an unreadable folder: Hydra will say so when it composes
    entries.sort()
    return tuple(entries), max((e[2] for e in entries), default=0)


def clear_compose_cache() -> None:
    """Forget every config :func:`compose` cached (the next compose runs Hydra again)."""
    with _cache_lock:
        _cache.clear()


def compose(
    profile: str | None = None,
    overrides: Sequence[str] = (),
    *,
    endpoints: str | None = None,
    conf_dir: str | Path | None = None,
    config_name: str = "config",
) -> MagiConfig:
    """Compose ``conf/`` with Hydra, apply overrides, and validate.

    Args:
        profile: Option of the ``profile`` group (``None`` keeps the default).
        endpoints: Option of the ``endpoints`` group: the set of remote models
            (``None`` keeps the default, ``none``: no remote models).
        overrides: Hydra overrides, e.g. ``["profile.two_stage.enabled=false"]``.
        conf_dir: Config folder; default :func:`default_conf_dir`.
        config_name: Primary config file name without ``.yaml``.

    Raises:
        ProfileNotFoundError: ``profile`` is not an option of the group (404).
        ConfigFileError: a file to compose breaks the limits of
            :func:`~magi.config.yamlfile.load_yaml_file` (422; checked before Hydra reads it).
        ConfigError: an override is malformed or the result is invalid (422).

    Safe to call any number of times in one process (the Hydra global state is
    restored on return), but not from inside a running ``@hydra.main`` app.

    A composition asked for before, with no file under the config folder changed since
    (:func:`conf_fingerprint`), is answered from a cache in well under a millisecond
    instead of Hydra's 100+ ms, as an independent deep copy: the picker composes on
    every change. Errors are never cached. The cache assumes the result depends on the
    files and these arguments only (validation reads nothing else);
    :func:`clear_compose_cache` forgets it.
    """
    conf = (Path(conf_dir) if conf_dir else default_conf_dir()).resolve()
    if not (conf / f"{config_name}.yaml").is_file():
        raise ConfigError([f"{conf / (config_name + '.yaml')}: file not found"], source=str(conf))
    all_overrides = list(overrides)
    if endpoints is not None:
        all_overrides.insert(0, f"{ENDPOINTS_GROUP}={endpoints}")
    if profile is not None:
        all_overrides.insert(0, f"{PROFILE_GROUP}={profile}")
    key: _CacheKey = (str(conf), config_name, tuple(all_overrides))
    # Taken before Hydra reads a file, so a write during the composition changes the
    # next fingerprint and misses.
    started_ns = time.time_ns()
    fingerprint, newest_ns = conf_fingerprint(conf)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] == fingerprint:
            _cache.move_to_end(key)
            return hit[1].model_copy(deep=True)
    config = _compose_uncached(conf, profile, all_overrides, list(overrides), config_name)
    if newest_ns < started_ns - RACY_NS:
        with _cache_lock:
            _cache[key] = (fingerprint, config.model_copy(deep=True))
            _cache.move_to_end(key)
            while len(_cache) > COMPOSE_CACHE_SIZE:
                _cache.popitem(last=False)
    return config


def _compose_uncached(
    conf: Path, profile: str | None, all_overrides: list[str], overrides: list[str], config_name: str
) -> MagiConfig:
    """Hydra's composition, MAGI's file checks and validation: :func:`compose` without its cache."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    with _compose_lock, initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        options = GlobalHydra.instance().config_loader().get_group_options(PROFILE_GROUP)
        if profile is not None and profile not in options:
            raise ProfileNotFoundError(profile, options, str(conf / PROFILE_GROUP))
        check_config_files(conf, all_overrides, config_name=config_name)
        try:
            cfg = hydra_compose(config_name=config_name, overrides=all_overrides, return_hydra_config=True)
        except MissingConfigException as exc:
            raise ConfigError([str(exc)], source=str(conf)) from None
        except (HydraException, OmegaConfBaseException) as exc:
            raise ConfigError([_with_cause(exc)], source="overrides " + repr(list(overrides))) from None
        choices = {
            group: OmegaConf.select(cfg, f"hydra.runtime.choices.{group}", default=None)
            for group in CONFIG_GROUPS
        }
        with open_dict(cfg):
            del cfg["hydra"]
    return validate_config(to_container(cfg), choices=choices, conf_dir=conf)
