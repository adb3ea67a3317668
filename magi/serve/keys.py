"""API keys of ``magi serve``: bearer tokens checked in constant time.

Keys come from ``MAGI_API_KEYS`` (comma-separated) and/or a file (``task.api_keys_file``,
one key per line, ``#`` starts a comment). With none, the server is open (it binds
127.0.0.1 unless told otherwise). A key is only ever compared with
:func:`hmac.compare_digest`, against every configured key so the time taken does not
say which one nearly matched, and never written to a log, a trace or a metric.

Example:
    >>> keys = APIKeys(["s3cret"])
    >>> keys.allows("Bearer s3cret"), keys.allows("Bearer nope"), keys.allows(None)
    (True, False, False)
    >>> APIKeys([]).allows(None)
    True
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from magi.errors import ConfigError

#: The environment variable holding comma-separated keys.
ENV_VAR = "MAGI_API_KEYS"


class APIKeys:
    """The keys a request may present (none: every request is allowed)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [k.encode("utf-8") for k in dict.fromkeys(keys) if k]

    @classmethod
    def load(cls, path: Path | None = None, environ: Mapping[str, str] | None = None) -> APIKeys:
        """Keys from ``MAGI_API_KEYS`` and the file at ``path`` (both, when both are set).

        Raises:
            ConfigError: the file cannot be read or holds no key (a keys file that
                locks nobody out by mistake must hold at least one).
        """
        env = os.environ if environ is None else environ
        keys = [k.strip() for k in env.get(ENV_VAR, "").split(",") if k.strip()]
        if path is not None:
            try:
                text = Path(path).expanduser().read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError([f"task.api_keys_file: cannot read {path}: {exc}"]) from None
            found = [line.split("#", 1)[0].strip() for line in text.splitlines()]
            found = [k for k in found if k]
            if not found:
                raise ConfigError([f"task.api_keys_file: {path} holds no key (one per line, '#' comments)"])
            keys += found
        return cls(keys)

    @property
    def enabled(self) -> bool:
        """Whether requests need a key."""
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:  # never the keys themselves
        return f"APIKeys({len(self._keys)} key(s))"

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries a valid key (always, with no keys)."""
        if not self._keys:
            return True
        if not authorization:
            return False
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        given = token.strip().encode("utf-8")
        matched = False
        for key in self._keys:  # every key is compared: no early exit
            matched |= hmac.compare_digest(given, key)
        return matched
