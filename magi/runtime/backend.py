"""The backend protocol: what the pool and the runner need from a model.

A backend wraps one model (in-process llama.cpp in :mod:`magi.runtime.llama`; an
OpenAI-compatible HTTP server in :mod:`magi.runtime.remote`) behind six operations:
load, stream, generate, count tokens, probe health, close. The runner only ever
streams, so it can time the first token and stop a generation that overruns its
tier's timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from magi.errors import MAGIException


@dataclass(frozen=True)
class GenerationSettings:
    """Resolved sampling settings for one generation (``max_tokens=None``: unlimited)."""

    max_tokens: int | None = 256
    temperature: float = 0.0
    top_p: float = 0.95
    repeat_penalty: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    prompt_template: str = "{prompt}"
    """Completion prompt for models without a chat template ('{prompt}' is filled in).
    A sampling setting, not a load setting: runners sharing a pool each pass their own."""
    timeout_s: float | None = None
    """Wall-clock budget of the whole generation (None: none). The runner sets the
    tier's timeout and checks it per token; a backend that can block *between*
    tokens (a remote server that stops answering) must enforce it itself."""


@dataclass(frozen=True)
class RemoteSettings:
    """Where and how to reach a model served over HTTP (from ``endpoints.<id>``).

    A plain, hashable copy of :class:`magi.config.endpoints.EndpointConfig` plus the
    resolved served-model name, so the runtime never touches config objects.
    """

    url: str
    model: str
    api: str = "chat"
    api_key_env: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    probe_timeout: float = 5.0
    health_paths: tuple[str, ...] = ("/health", "/v1/models")
    max_concurrency: int = 1
    n_ctx: int | None = None
    llama_params: bool = True
    trust_env: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to run one model, resolved from registry and config.

    A local model has a ``path`` and the llama.cpp load settings (n_ctx, n_threads,
    n_batch, chat_format), already merged from the runtime defaults and per-model
    overrides and capped at the model's limits. A remote model has ``remote``
    instead: it holds no memory here (``memory_mb`` 0) and its server owns the load
    settings; the sampling settings in ``generation`` apply to both.
    """

    model_id: str
    path: Path | None = None
    memory_mb: float = 0.0
    context_length: int | None = None
    n_ctx: int = 2048
    n_threads: int = 1
    n_batch: int = 512
    seed: int = 0
    chat_format: str | None = None
    use_mmap: bool = True
    """Memory-map the file (fast loads, shared pages) or read it into memory (safe
    against the file being modified in place while loaded)."""
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    remote: RemoteSettings | None = None

    @property
    def is_remote(self) -> bool:
        """Served over HTTP rather than loaded in-process."""
        return self.remote is not None

    @property
    def url(self) -> str | None:
        """The server's base URL of a remote model, as it may be shown (credentials
        redacted, for traces and messages); None for a local one. The backend connects
        with ``remote.url``."""
        if self.remote is None:
            return None
        from magi.config.endpoints import redact_url

        return redact_url(self.remote.url)

    @property
    def max_concurrency(self) -> int:
        """Requests the pool lets run on this model at once (a local ``Llama``: one)."""
        return self.remote.max_concurrency if self.remote is not None else 1

    @property
    def known_n_ctx(self) -> int | None:
        """The context the model runs with, when MAGI knows it: a local model's ``n_ctx``;
        a remote model's only if its endpoint declares ``n_ctx`` (else the server's own)."""
        return self.n_ctx if self.remote is None else self.remote.n_ctx

    @property
    def location(self) -> str:
        """Where the model runs, for messages: the server URL or the file path."""
        return self.url or str(self.path)


def decode_rate(completion_tokens: int, ttft_s: float, total_s: float) -> float:
    """Tokens per second after the first token (decode speed, without prompt processing);
    the plain average when there is only one token or no time after it."""
    gen_time = total_s - ttft_s
    if completion_tokens > 1 and gen_time > 0:
        return (completion_tokens - 1) / gen_time
    return completion_tokens / total_s if total_s > 0 else 0.0


@dataclass
class Generation:
    """A finished generation with its own timings."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    ttft_s: float
    total_s: float

    @property
    def tokens_per_s(self) -> float:
        return decode_rate(self.completion_tokens, self.ttft_s, self.total_s)


class BackendError(MAGIException):
    """A model failed while loading or generating (the runner fails over)."""

    status_code = 502


class PromptTooLongError(MAGIException):
    """The prompt does not fit the model's context; not the model's fault."""

    status_code = 422


class GenerationTimeout(BackendError):
    """A generation ran past its tier's timeout."""

    status_code = 504


@runtime_checkable
class Backend(Protocol):
    """One model behind load / stream / generate / count / probe / close."""

    spec: ModelSpec

    @property
    def loaded(self) -> bool: ...

    def load(self) -> None: ...

    def stream(self, prompt: str, settings: GenerationSettings) -> Iterator[str]:
        """Yield the answer's text, one piece per generated token (a piece may be "")."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def count_prompt_tokens(self, prompt: str, settings: GenerationSettings) -> int:
        """Tokens the model processes for ``prompt``: with the completion template
        applied for completion-style models (chat models: the user message itself)."""
        ...

    def probe(self) -> None:
        """Raise if the model cannot answer; return quickly when it can."""
        ...

    def close(self) -> None: ...


def generate(backend: Backend, prompt: str, settings: GenerationSettings) -> Generation:
    """Run a whole generation through ``backend.stream``, timing the first token."""
    start = time.perf_counter()
    ttft = 0.0
    pieces: list[str] = []
    for piece in backend.stream(prompt, settings):
        if not ttft:
            ttft = time.perf_counter() - start
        pieces.append(piece)
    total = time.perf_counter() - start
    text = "".join(pieces)
    finish = "length" if settings.max_tokens is not None and len(pieces) >= settings.max_tokens else "stop"
    return Generation(
        text=text,
        prompt_tokens=backend.count_prompt_tokens(prompt, settings),
        completion_tokens=len(pieces),
        finish_reason=finish,
        ttft_s=ttft or total,
        total_s=total,
    )
