"""Pytest fixtures with tiny GGUF models; load with ``pytest_plugins = ["magi.testing.fixtures"]``.

Every fixture writes fresh files under the test's ``tmp_path`` (a few milliseconds),
so tests may modify, truncate or delete them freely.

* ``tiny_model``  - one random-weight tiny model (``Tiny-Llama``, label ``1B``)
* ``echo_model``  - one echo model: greedy output repeats the last prompt token
* ``seed_models`` - ``{model_id: path}`` of the seed's three models in ``tmp_path/models``
* ``seed_models_dir`` - that folder
"""

from __future__ import annotations

from pathlib import Path

import pytest

from magi.testing.tiny_gguf import make_seed_models, write_tiny_model


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    """A random-weight tiny llama model; never emits end-of-sequence under greedy decoding."""
    return write_tiny_model(tmp_path / "tiny" / "Tiny-Llama-1B-Q4_K_M.gguf", size_label="1B")


@pytest.fixture
def echo_model(tmp_path: Path) -> Path:
    """A tiny echo model: ``"Hello"`` continues ``"ooo..."`` (see ``echo_completion``)."""
    return write_tiny_model(tmp_path / "echo" / "Echo-Llama-1B-Q4_K_M.gguf", name="Echo Llama",
                            basename="Echo-Llama", size_label="1B", echo=True)


@pytest.fixture
def seed_models_dir(tmp_path: Path) -> Path:
    """``tmp_path/models`` holding tiny stand-ins of the seed's three models."""
    folder = tmp_path / "models"
    make_seed_models(folder)
    return folder


@pytest.fixture
def seed_models(seed_models_dir: Path) -> dict[str, Path]:
    """``{model_id: path}`` of the seed's three models (ids as discovery derives them)."""
    from magi.testing.tiny_gguf import SEED_MODELS

    return {model_id: seed_models_dir / spec.filename for model_id, spec in SEED_MODELS.items()}
