"""ProfileManager: list, load, save, delete and validate profiles as YAML files.

It works on the same folder Hydra composes (``conf/profile/`` by default), so a
profile saved from Python is at once selectable as ``python run.py profile=<name>``.

Example:
    >>> from pathlib import Path
    >>> from magi import ProfileManager
    >>> manager = ProfileManager(profiles_dir=Path("conf/profile"))
    >>> "production" in manager.list_profiles()
    True
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from magi.config.base import validation_to_config_error
from magi.config.profile import ModelProfile
from magi.config.yamlfile import load_yaml_file
from magi.errors import (
    ConfigError,
    InvalidProfileNameError,
    MAGIException,
    ProfileExistsError,
    ProfileNotFoundError,
    ProfileWriteError,
)
from magi.fileio import atomic_write_text

logger = logging.getLogger(__name__)

SUFFIX = ".yaml"
_SAFE_STEM = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
#: Longest profile file stem: file systems allow 255 bytes, and a name is for people.
MAX_NAME_CHARS = 100


def normalize_profile_name(name: str) -> str:
    """Turn a profile name into its file stem: ``"Fast Only"`` → ``"fast-only"``.

    Lower-cases, turns runs of anything but letters, digits, ``_`` and ``-`` into
    one ``-``, and trims dashes. Names that try to leave the profiles folder
    (path separators, ``..``, absolute paths) are refused, never rewritten. So are
    stems that ``profile=<stem>`` cannot select because Hydra reads them as a number,
    a boolean or null (``123``, ``1e3``, ``nan``, ``inf``, ``true``, ``null``), and
    stems longer than :data:`MAX_NAME_CHARS`.

    Raises:
        InvalidProfileNameError: the name is empty, too long, not selectable or
            would escape the folder (400).
    """
    raw = name.strip()
    if raw.endswith(SUFFIX):
        raw = raw[: -len(SUFFIX)]
    if not raw or "/" in raw or "\\" in raw or ".." in raw or "\x00" in raw or os.path.isabs(raw):
        raise InvalidProfileNameError(
            f"Invalid profile name {name!r}: a name may not be empty or contain path "
            "separators or '..'; use letters, digits, spaces, '_' and '-'."
        )
    stem = re.sub(r"[^a-z0-9_-]+", "-", raw.lower()).strip("-")
    if not _SAFE_STEM.match(stem):
        raise InvalidProfileNameError(
            f"Invalid profile name {name!r}: it has no letters or digits to make a file name from."
        )
    if len(stem) > MAX_NAME_CHARS:
        raise InvalidProfileNameError(
            f"Invalid profile name {name[:40]!r}...: its file name would have {len(stem)} characters; "
            f"use at most {MAX_NAME_CHARS}."
        )
    from magi.config.compose import non_string_kind

    kind = non_string_kind(stem)
    if kind:
        raise InvalidProfileNameError(
            f"Invalid profile name {name!r}: 'profile={stem}' would be read as {kind}, not a name, "
            f"so the profile could not be selected; add a letter, e.g. '{stem}-profile'."
        )
    return stem


def parse_profile(data: Any, source: str) -> ModelProfile:
    """Validate already-parsed YAML data as a profile; errors name ``source``."""
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(
            [f"(top level): a profile must be a mapping of keys to values, but the file is {kind}"],
            source=source,
        )
    try:
        return ModelProfile.model_validate(data)
    except ValidationError as exc:
        raise validation_to_config_error(exc, source=source) from None


def read_profile_file(path: Path) -> ModelProfile:
    """Read and validate one profile YAML file, under the limits every config file
    passes (:func:`magi.config.yamlfile.load_yaml_file`: size, UTF-8, depth, aliases,
    duplicate keys; safe loading only)."""
    return parse_profile(load_yaml_file(path), str(path))


_WRITE_FIXES = {
    errno.ENOSPC: "the disk is full; free some space",
    errno.EDQUOT: "the disk quota is exhausted; free some space",
    errno.EROFS: "the file system is read-only; save to a writable profiles folder",
    errno.EACCES: "permission denied; make the folder writable or save to another profiles folder",
    errno.EPERM: "permission denied; make the folder writable or save to another profiles folder",
}


def _write_error(path: Path, exc: OSError) -> MAGIException:
    """The MAGI error for a failed profile write: what failed, where, and the fix."""
    if exc.errno == errno.ENAMETOOLONG:
        return InvalidProfileNameError(
            f"Cannot save profile {path}: the path is too long for the file system; "
            "choose a shorter name or profiles folder.",
            details={"path": str(path)},
        )
    fix = _WRITE_FIXES.get(exc.errno or 0, exc.strerror or str(exc))
    return ProfileWriteError(f"Cannot save profile {path}: {fix}.", details={"path": str(path)})


class ProfileManager:
    """CRUD for profile YAML files in one folder (the Hydra ``profile`` group).

    Args:
        profiles_dir: The folder; default the project's ``conf/profile``. It is
            created when the first profile is saved.
    """

    def __init__(self, profiles_dir: Path | str | None = None) -> None:
        if profiles_dir is None:
            from magi.config.compose import profiles_dir as default_profiles_dir

            profiles_dir = default_profiles_dir()
        self.profiles_dir = Path(profiles_dir)

    # -- paths -------------------------------------------------------------------
    def path_for(self, name: str) -> Path:
        """The file a profile of this name lives in (the name is normalised)."""
        path = (self.profiles_dir / f"{normalize_profile_name(name)}{SUFFIX}").resolve()
        if path.parent != self.profiles_dir.resolve():  # belt and braces
            raise InvalidProfileNameError(f"Invalid profile name {name!r}: it leaves {self.profiles_dir}")
        return path

    # -- the seed's methods --------------------------------------------------------
    def profile_files(self) -> list[Path]:
        """Every profile file in the folder, sorted by name (valid or not)."""
        if not self.profiles_dir.is_dir():
            return []
        return sorted((p for p in self.profiles_dir.glob(f"*{SUFFIX}") if p.is_file()), key=lambda p: p.stem)

    def list_profiles(self) -> list[str]:
        """Names (file stems) of every profile in the folder, sorted."""
        names = [p.stem for p in self.profile_files()]
        logger.info("Found %d profiles in %s", len(names), self.profiles_dir)
        return names

    def load_profile(self, name: str) -> ModelProfile:
        """Load and validate a profile by name (``"Fast Only"`` and ``"fast-only"`` alike).

        Raises:
            ProfileNotFoundError: no such file; lists the available profiles (404).
            ConfigError: the YAML is malformed or invalid; names file and fields (422).
        """
        path = self.path_for(name)
        if not path.is_file():
            raise ProfileNotFoundError(name, self.list_profiles(), str(self.profiles_dir))
        profile = read_profile_file(path)
        logger.info("Loaded profile '%s' from %s", profile.name, path)
        return profile

    def save_profile(self, profile: ModelProfile, *, overwrite: bool = True) -> Path:
        """Write a profile as human-readable YAML in the seed's nested form.

        The write is atomic: a temporary file in the same folder is renamed over
        the target, so an interrupted save never leaves a truncated profile. With
        ``overwrite=False`` the file is created atomically too: of two saves racing
        for one name, exactly one succeeds. An existing file keeps its permissions;
        a new one follows the umask.

        Raises:
            ProfileExistsError: the file exists and ``overwrite`` is false (409).
            InvalidProfileNameError: the name cannot be a file name (400).
            ProfileWriteError: the file cannot be written (full disk, read-only
                folder...); names the file (503).
        """
        path = self.path_for(profile.name)
        header = (
            f"# {profile.name}: {profile.description or 'a MAGI profile'}\n"
            f"# Saved by magi.ProfileManager. Run it: python run.py profile={path.stem}\n"
        )
        body = yaml.safe_dump(profile.to_yaml_dict(), sort_keys=False, allow_unicode=True, width=100)
        try:
            atomic_write_text(path, header + body, overwrite=overwrite)
        except FileExistsError:
            raise ProfileExistsError(
                f"Profile file {path} already exists; pass overwrite=True or choose another name.",
                details={"path": str(path)},
            ) from None
        except OSError as exc:
            raise _write_error(path, exc) from None
        logger.info("Saved profile '%s' to %s", profile.name, path)
        return path

    def delete_profile(self, name: str) -> None:
        """Remove a profile file.

        Raises:
            ProfileNotFoundError: no such profile; lists the available ones (404).
        """
        path = self.path_for(name)
        if not path.is_file():
            raise ProfileNotFoundError(name, self.list_profiles(), str(self.profiles_dir))
        path.unlink()
        logger.info("Deleted profile '%s' (%s)", name, path)

    def validate_profile(self, profile: ModelProfile, available_model_ids: Iterable[str]) -> list[str]:
        """Return the enabled models of ``profile`` that are not available (empty: valid)."""
        available = set(available_model_ids)
        missing = [m for m in profile.enabled_models if m not in available]
        if missing:
            logger.warning(
                "Profile '%s' names models not in the registry: %s", profile.name, ", ".join(missing)
            )
        return missing
