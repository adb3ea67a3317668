"""Pytest fixtures with tiny GGUF models; load with ``pytest_plugins = ["magi.testing.fixtures"]``.

Every fixture writes fresh files under the test's ``tmp_path`` (a few milliseconds),
so tests may modify, truncate or delete them freely.

* ``tiny_model``        one random-weight tiny model (``Tiny-Llama``, label ``1B``)
* ``echo_model``        one echo model: greedy output repeats the last prompt token
* ``chat_model``        one random-weight tiny model with a chat template in its GGUF
                        (``tokenizer.chat_template``: llama-cpp-python's template path)
* ``seed_models_dir``   ``tmp_path/models`` with the seed's three models (random weights)
* ``seed_models``       ``{model_id: path}`` of those
* ``seed_registry``     the registry discovered from ``seed_models_dir`` and saved to
                        ``seed_models_dir/registry.json`` (``registry_path`` fixture)
* ``echo_seed_models_dir`` / ``echo_seed_registry``  the same three ids, echo weights:
                        deterministic answers for routing and two-stage tests
* ``tiny_runtime`` / ``echo_runtime``  a :class:`~magi.testing.runtime.TinyRuntime`:
                        the three models (random / echo weights) and configs and
                        runners over them (``max_tokens=8``, ``n_ctx=256``)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from magi.models.discovery import ModelDiscoveryService
from magi.models.registry import ModelRegistry
from magi.testing.runtime import TinyRuntime
from magi.testing.tiny_gguf import SEED_MODELS, make_seed_models, write_chat_model, write_tiny_model

REGISTRY_NAME = "registry.json"


def build_registry(folder: Path, registry_path: Path | None = None) -> ModelRegistry:
    """Discover ``folder`` (no demo) and save the registry (default ``folder/registry.json``)."""
    service = ModelDiscoveryService(scan_path=folder, registry_path=registry_path or folder / REGISTRY_NAME)
    return service.refresh().registry


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    """A random-weight tiny llama model; never emits end-of-sequence under greedy decoding."""
    return write_tiny_model(tmp_path / "tiny" / "Tiny-Llama-1B-Q4_K_M.gguf", size_label="1B")


#: The file name of :func:`write_echo_llama`'s model.
ECHO_LLAMA_FILE = "Echo-Llama-1B-Q4_K_M.gguf"


def write_echo_llama(folder: Path) -> Path:
    """Write the tiny echo model ``folder/Echo-Llama-1B-Q4_K_M.gguf`` (id
    ``echo_llama_1p0b_q4km_fast``) and return its path; for fixtures of any scope."""
    return write_tiny_model(
        folder / ECHO_LLAMA_FILE, name="Echo Llama", basename="Echo-Llama", size_label="1B", echo=True
    )


@pytest.fixture
def echo_model(tmp_path: Path) -> Path:
    """A tiny echo model: ``"Hello"`` continues ``"ooo..."`` (see ``echo_completion``)."""
    return write_echo_llama(tmp_path / "echo")


@pytest.fixture
def chat_model(tmp_path: Path) -> Path:
    """A random-weight tiny model whose GGUF carries a ChatML-like ``tokenizer.chat_template``
    and its special tokens (``magi.testing.tiny_gguf.TINY_CHAT_TEMPLATE``)."""
    return write_chat_model(tmp_path / "chat" / "Tiny-Chat-1B-Instruct-Q4_K_M.gguf")


@pytest.fixture
def seed_models_dir(tmp_path: Path) -> Path:
    """``tmp_path/models`` holding tiny stand-ins of the seed's three models."""
    folder = tmp_path / "models"
    make_seed_models(folder)
    return folder


@pytest.fixture
def seed_models(seed_models_dir: Path) -> dict[str, Path]:
    """``{model_id: path}`` of the seed's three models (ids as discovery derives them)."""
    return {model_id: seed_models_dir / spec.filename for model_id, spec in SEED_MODELS.items()}


@pytest.fixture
def registry_path(tmp_path: Path) -> Path:
    """Where ``seed_registry`` / ``echo_seed_registry`` are saved."""
    return tmp_path / "models" / REGISTRY_NAME


@pytest.fixture
def seed_registry(seed_models_dir: Path, registry_path: Path) -> ModelRegistry:
    """The registry of the seed's three tiny models, also saved at ``registry_path``."""
    return build_registry(seed_models_dir, registry_path)


@pytest.fixture
def echo_seed_models_dir(tmp_path: Path) -> Path:
    """``tmp_path/models`` with echo-weight stand-ins of the seed's three models."""
    folder = tmp_path / "models"
    make_seed_models(folder, echo=True)
    return folder


@pytest.fixture
def echo_seed_registry(echo_seed_models_dir: Path, registry_path: Path) -> ModelRegistry:
    """The registry of the echo seed models, also saved at ``registry_path``."""
    return build_registry(echo_seed_models_dir, registry_path)


@pytest.fixture
def tiny_runtime(tmp_path: Path) -> Iterator[TinyRuntime]:
    """The seed's three models (random weights) and configs over them (``TinyRuntime``)."""
    env = TinyRuntime.create(tmp_path)
    yield env
    env.close()


@pytest.fixture
def echo_runtime(tmp_path: Path) -> Iterator[TinyRuntime]:
    """Like ``tiny_runtime`` with echo weights: greedy answers follow ``echo_completion``."""
    env = TinyRuntime.create(tmp_path, echo=True)
    yield env
    env.close()
