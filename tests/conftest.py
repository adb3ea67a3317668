"""Shared fixtures: a private copy of conf/ per test, Hydra state hygiene, and tiny
GGUF models from MAGI's own pytest plugin (magi.testing.fixtures)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from magi.testing.runtime import REASONER, TinyRuntime

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

pytest_plugins = ["magi.testing.fixtures"]

#: Text no scorer may fail on or score off its 0-10 scale: empty, blank, one symbol, very
#: long, repeated cue words, other scripts, code-like noise, a lone surrogate.
ODD_PROMPTS = [
    "",
    " ",
    "?",
    "```",
    "x" * 50_000,
    "why " * 2000,
    "\u00e9t\u00e9 \u2211\u222b \u6f22\u5b57",
    "a_b fooBar {};" * 300,
    "\udc80",
]


@pytest.fixture()
def conf_dir(tmp_path: Path) -> Path:
    """A copy of the shipped conf/ that a test may change freely."""
    target = tmp_path / "conf"
    shutil.copytree(CONF, target)
    return target


@pytest.fixture
def refine_runtime(tmp_path: Path) -> Iterator[TinyRuntime]:
    """The seed's models for two-stage tests: the fast model has random weights (a draft
    is exactly its token budget), the reasoner echoes (its answer repeats the end of what
    it was sent); see :meth:`TinyRuntime.two_stage`."""
    env = TinyRuntime.create(tmp_path, echo={REASONER})
    yield env
    env.close()


@pytest.fixture(autouse=True)
def _clear_hydra() -> Iterator[None]:
    yield
    from hydra.core.global_hydra import GlobalHydra

    from magi.config.compose import clear_compose_cache

    GlobalHydra.instance().clear()
    clear_compose_cache()  # a test that patched what validation reads leaves no cached config
