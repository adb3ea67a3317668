"""File writes that never leave a half-written file behind."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

#: Errors of ``os.link`` that mean "this file system has no hard links", not "exists".
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK})


def atomic_write_text(path: Path, text: str, *, overwrite: bool = True) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder.

    The temporary file is flushed and fsynced, then renamed over ``path`` with
    ``os.replace`` (atomic on POSIX), so readers see the old or the new content,
    never a truncated one. On any error the temporary file is removed.

    With ``overwrite=False`` the file is only created: the temporary file is
    hard-linked to ``path``, which fails if ``path`` exists, so of two writers racing
    for one name exactly one wins and the other gets :class:`FileExistsError`.

    Permissions: an existing file keeps its mode; a new file gets the mode ``open()``
    would give it (0666 less the umask), not ``mkstemp``'s 0600.

    Raises:
        FileExistsError: ``overwrite`` is false and ``path`` exists.
        OSError: the write failed (full disk, read-only folder, name too long...).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            if overwrite:
                with contextlib.suppress(FileNotFoundError):  # a new file: the umask's mode
                    os.fchmod(handle.fileno(), stat.S_IMODE(os.stat(path).st_mode))
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _create_from(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_temp_beside(path: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """Create a new hidden temporary file in ``path``'s folder, to be renamed over ``path``.

    The one rule for the mode of a new file MAGI writes: what ``open()`` would give it
    (0666 less the umask), not ``tempfile.mkstemp``'s 0600, so a file renamed into place
    can be read by whoever the umask lets read it.

    Returns:
        The open file descriptor (write-only) and the temporary file's path.
    """
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp  # the umask applies


def _create_from(tmp: Path, path: Path) -> None:
    """Give ``tmp``'s content the name ``path`` only if no file has it (then drop ``tmp``)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # No hard links here: reserve the name exclusively, then fill it atomically.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.replace(tmp, path)
        return
    tmp.unlink(missing_ok=True)
