"""Shared fixtures: a private copy of conf/ per test, Hydra state hygiene, and tiny
GGUF models from MAGI's own pytest plugin (magi.testing.fixtures)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

pytest_plugins = ["magi.testing.fixtures"]


@pytest.fixture()
def conf_dir(tmp_path: Path) -> Path:
    """A copy of the shipped conf/ that a test may change freely."""
    target = tmp_path / "conf"
    shutil.copytree(CONF, target)
    return target


@pytest.fixture(autouse=True)
def _clear_hydra() -> Iterator[None]:
    yield
    from hydra.core.global_hydra import GlobalHydra

    from magi.config.compose import clear_compose_cache

    GlobalHydra.instance().clear()
    clear_compose_cache()  # a test that patched what validation reads leaves no cached config
