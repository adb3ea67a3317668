"""Test helpers shipped with MAGI: tiny generated GGUF models and pytest fixtures.

``magi.testing.tiny_gguf`` writes llama-architecture GGUF files of about 0.5 MB
that llama-cpp-python really loads; ``magi.testing.fixtures`` is a pytest plugin
(``pytest_plugins = ["magi.testing.fixtures"]``) with folders of them.
"""

from magi.testing.tiny_gguf import (
    SEED_MODELS,
    TinyModelSpec,
    echo_completion,
    make_seed_models,
    write_spec,
    write_tiny_model,
)

__all__ = [
    "SEED_MODELS",
    "TinyModelSpec",
    "echo_completion",
    "make_seed_models",
    "write_spec",
    "write_tiny_model",
]
