"""Notebook parameters from environment variables.

The shipped notebooks run on the demo model by default; tests, CI and the voila
browser test point them at tiny models and temporary folders through these
variables instead of editing the notebooks:

* ``MAGI_NOTEBOOK_PROFILE``    the profile to start with (default ``demo``)
* ``MAGI_NOTEBOOK_OVERRIDES``  Hydra overrides, one per line (``#`` comments allowed)
* ``MAGI_NOTEBOOK_PROFILES``   comma-separated profiles a sweep compares
* ``MAGI_NOTEBOOK_OUT``        folder a notebook writes into (sweeps)

Example:
    >>> import os
    >>> os.environ["MAGI_NOTEBOOK_OVERRIDES"] = "runtime.max_tokens=8\\n# a comment\\nmodels.demo=false"
    >>> env_overrides()
    ['runtime.max_tokens=8', 'models.demo=false']
"""

from __future__ import annotations

import os
from collections.abc import Sequence

PROFILE_ENV = "MAGI_NOTEBOOK_PROFILE"
OVERRIDES_ENV = "MAGI_NOTEBOOK_OVERRIDES"
PROFILES_ENV = "MAGI_NOTEBOOK_PROFILES"
OUT_ENV = "MAGI_NOTEBOOK_OUT"


def parse_overrides(text: str) -> list[str]:
    """One Hydra override per line; blank lines and ``#`` comment lines are skipped.

    Lines, not spaces, separate overrides because a value may contain spaces
    (``runtime.prompt_template='Q: {prompt}'``).
    """
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def env_overrides(name: str = OVERRIDES_ENV, default: Sequence[str] = ()) -> list[str]:
    """The overrides in environment variable ``name`` (see :func:`parse_overrides`)."""
    value = os.environ.get(name)
    return parse_overrides(value) if value is not None else list(default)


def env_str(name: str, default: str) -> str:
    """A string parameter; an empty variable counts as unset."""
    return os.environ.get(name) or default


def env_list(name: str, default: Sequence[str]) -> list[str]:
    """A comma-separated list parameter."""
    value = os.environ.get(name)
    if not value:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]
