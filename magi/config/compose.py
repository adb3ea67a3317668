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
from magi.errors import ConfigError, ConfigFileError, OverrideError, ProfileNotFoundError
from magi.prompt import escaped_byte
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


def shown_override(text: str) -> str:
    """An override as the user typed it, printable: a non-UTF-8 byte (a lone surrogate
    in ``sys.argv``) is shown as ``\\xe9``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _strings(value: object) -> list[str]:
    """Every string in an override's value (lists, dicts and choice sweeps included)."""
    from hydra.core.override_parser.types import ChoiceSweep

    if isinstance(value, str):
        return [value]
    if isinstance(value, ChoiceSweep):
        value = value.list
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item)]
    return []


def parse_overrides(overrides: Sequence[str]) -> list[Any]:
    """Hydra's own parse of ``overrides`` (its ``Override`` objects), or one clear error.

    Hydra reports an override its grammar cannot read (``prompt=${foo``, an unquoted
    non-UTF-8 byte) as a raw ``LexerNoViableAltException``, and a string OmegaConf's
    interpolation grammar cannot read (``prompt='cost ${'``) only when it merges it.
    Both are found here, before anything is composed.

    Raises:
        OverrideError: naming the override and how to write it (422).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import grammar_parser

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        shown = shown_override(text)
        try:
            override = parser.parse_override(text)
        except Exception as exc:
            bad = [f"0x{b:02x}" for b in map(escaped_byte, text) if b is not None]
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            reason = f"not UTF-8 text (byte {bad[0]})" if bad else shown_override(first)
            raise OverrideError(shown, reason) from None
        if not override.is_delete():
            for value in _strings(override.value()):
                if "${" not in value:
                    continue
                try:
                    grammar_parser.parse(value)
                except Exception as exc:  # GrammarParseError: what Hydra's merge would raise
                    raise OverrideError(shown, shown_override(str(exc).strip().splitlines()[0])) from None
        _check_key(override, shown)
        parsed.append(override)
    return parsed


def _check_key(override: Any, shown: str) -> None:
    """A plain ``key=value`` override (no ``+``/``++``/``~``) must name a setting the schema
    has: a misspelt one is refused with a did-you-mean, as a key added with ``+`` is by the
    schema, not left to Hydra's "Key ... is not in struct" advice to append it with ``+``.
    Keys the schema cannot see into (a task's own fields, a mapping's keys such as
    ``runtime.models.<id>``, Hydra's) pass."""
    import typing

    from hydra.core.override_parser.types import OverrideType
    from pydantic import BaseModel

    from magi.config.app import MagiConfig
    from magi.errors import did_you_mean, format_options

    key = override.key_or_group
    if override.type != OverrideType.CHANGE or override.package or "/" in key or key.startswith("hydra"):
        return
    parts = key.split(".")
    model: Any = MagiConfig
    for depth, name in enumerate(parts):
        fields = model.model_fields
        if name not in fields:
            valid = list(fields)
            where = ".".join(parts[: depth + 1])
            hint = did_you_mean(name, valid)
            raise ConfigError(
                [f"{where}: unknown key.{hint} Valid keys here: {format_options(valid)}"],
                source=f"the command-line override {shown}",
            )
        if name == "task" and depth == 0:  # the chosen task's own fields: not TaskConfig's
            return
        annotation = fields[name].annotation
        if typing.get_origin(annotation) in (list, tuple, dict):
            return  # items by index or key: checked after composing
        for arg in (annotation, *typing.get_args(annotation)):  # X, or X | None
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                model = arg
                break
        else:
            return  # a value: nothing below it to check here


def _search_path_dirs(entries: object) -> list[Path]:
    """The folders of a ``hydra.searchpath`` list: ``file://`` URLs and plain paths
    (relative to the working directory, as Hydra reads them). ``pkg://`` entries are
    skipped: they name installed packages' configs, not files a user drops in, and
    reading them would mean importing the package; interpolated ones are skipped too."""
    dirs: list[Path] = []
    for entry in entries if isinstance(entries, list | tuple) else []:
        if not isinstance(entry, str) or "${" in entry:
            continue
        if entry.startswith("file://"):
            entry = entry.removeprefix("file://")
        elif "://" in entry:  # pkg:// (see above) or a scheme Hydra has no source for
            continue
        dirs.append(Path(entry).expanduser().absolute())
    return dirs


def _defaults_entries(data: object, parent_group: str) -> list[tuple[str, str | None, list[object], bool]]:
    """A config file's defaults list as ``(path, package, options, is_group)``.

    A group entry (``{group@pkg: option}``, ``{optional /group: [a, b]}``,
    ``{override group: option}``) gives its absolute group path and options; a config
    entry (``other``, ``/group/option``) its absolute config path. Relative paths are
    relative to the file's own group, as Hydra reads them; ``_self_`` is skipped.
    """

    def absolute(path: str) -> str:
        path = path.strip()
        return path[1:] if path.startswith("/") else "/".join(p for p in (parent_group, path) if p)

    defaults = data.get("defaults") if isinstance(data, dict) else None
    entries: list[tuple[str, str | None, list[object], bool]] = []
    for entry in defaults if isinstance(defaults, list) else []:
        if isinstance(entry, str) and entry.strip() != "_self_":
            path, _, package = entry.strip().partition("@")
            entries.append((absolute(path), package or None, [], False))
        elif isinstance(entry, dict) and len(entry) == 1:
            ((key, value),) = entry.items()
            words = str(key).split()
            if not words:
                continue
            group, _, package = words[-1].partition("@")  # before it: optional / override
            options = value if isinstance(value, list) else [value]
            entries.append((absolute(group), package or None, options, True))
    return entries


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
    config and every file its defaults list takes, recursively (each file's own
    defaults list too: group and config entries, ``/absolute`` groups, ``@package``,
    ``optional``, ``override``, option lists), with the options the overrides choose
    instead (``profile=x``, a sweep ``profile=a,b``, ``glob(...)``) and the ones they add
    (``+profile@foo=x``). Files are looked for in ``conf_dir``, the extra
    ``search_dirs`` (``--config-dir``) and the ``hydra.searchpath`` set by an override
    or the primary config. Each config path is read once (a loop of defaults ends).

    Raises:
        OverrideError: an override Hydra cannot read (422).
        ConfigFileError: ``<file>: <problem>`` (422).
        ConfigError: a group option is not a string (``profile=123``; 422).
    """
    from hydra.core.override_parser.types import ChoiceSweep, Glob

    from magi.config.yamlfile import load_yaml_file

    parsed = parse_overrides(overrides)
    dirs = [Path(conf_dir).absolute(), *(Path(d).absolute() for d in search_dirs)]
    for override in parsed:
        if override.key_or_group == "hydra.searchpath" and not override.is_delete():
            dirs += _search_path_dirs(override.value())

    def files(config_path: str) -> list[Path]:
        found = []
        for folder in dict.fromkeys(dirs):
            path = folder / f"{config_path}.yaml"
            try:
                exists = path.is_file()
            except OSError as exc:  # e.g. a 300-character name: ENAMETOOLONG
                raise ConfigFileError(path, f"cannot open the file: {exc.strerror or exc}") from None
            if exists:
                found.append(path)
        return found

    def is_group(group: str) -> bool:
        return any((d / group).is_dir() for d in dirs)

    def group_paths(group: str, option: object) -> list[str]:
        if isinstance(option, Glob):
            names = {p.stem for d in dirs if (d / group).is_dir() for p in (d / group).glob("*.yaml")}
            return [f"{group}/{name}" for name in option.filter(sorted(names))]
        if option is None or not isinstance(option, str | int | float) or isinstance(option, bool):
            return []
        text = str(option)
        return [] if text == "???" or "${" in text else [f"{group}/{text}"]

    # Options the overrides choose, by (group, package); matched to defaults entries, the rest added.
    chosen: dict[tuple[str, str | None], list[object]] = {}
    for override in parsed:
        if override.is_delete() or not is_group(override.key_or_group):
            continue  # not a config group: a value override such as prompt=...
        value = override.value()
        if isinstance(value, ChoiceSweep):
            options = list(value.list)
        elif isinstance(value, Glob):
            options = [value]
        elif override.is_sweep_override():
            continue  # range/interval sweeps choose no config file
        else:
            options = value if isinstance(value, list) else [value]
        group = override.key_or_group
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
        chosen[(group, override.package or None)] = options

    for path in files(config_name):  # the primary's hydra.searchpath adds folders first
        data = load_yaml_file(path)
        hydra_node = data.get("hydra") if isinstance(data, dict) else None
        if isinstance(hydra_node, dict):
            dirs += _search_path_dirs(hydra_node.get("searchpath"))

    pending = [config_name]
    seen: set[str] = set()
    while pending or chosen:
        if not pending:  # overrides no defaults entry took: +group@pkg=option and the like
            (group, _), options = chosen.popitem()
            pending += [p for option in options for p in group_paths(group, option)]
            continue
        config_path = pending.pop()
        if config_path in seen:
            continue
        seen.add(config_path)
        for path in files(config_path):
            for target, package, options, group_entry in _defaults_entries(
                load_yaml_file(path), os.path.dirname(config_path)
            ):
                if group_entry:
                    options = chosen.pop((target, package), options)
                    pending += [p for option in options for p in group_paths(target, option)]
                else:
                    pending.append(target)


#: Fields that are literal text: taken as written, never interpolated, so a prompt may
#: contain ``${...}`` (``python run.py prompt='What is ${runtime.n_ctx}?'``). An escaped
#: ``\${`` (how Hydra's grammar takes a ``${`` with no closing brace: ``prompt='cost \${'``)
#: is a ``${``, as OmegaConf reads it.
LITERAL_KEYS: tuple[str, ...] = ("prompt",)


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Resolve a composed config into plain Python data (raises ConfigError on MISSING).

    The fields of :data:`LITERAL_KEYS` are kept as written, unresolved.
    """
    from omegaconf.errors import OmegaConfBaseException

    raw = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(raw, dict)
    literal = {key: raw[key].replace("\\${", "${") for key in LITERAL_KEYS if isinstance(raw.get(key), str)}
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
