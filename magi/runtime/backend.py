"""The backend protocol: what the pool and the runner need from a model.

A backend wraps one model (in-process llama.cpp in :mod:`magi.runtime.llama`; an
OpenAI-compatible HTTP server in :mod:`magi.runtime.remote`) behind six operations:
load, stream, generate, count tokens, probe health, close. The runner only ever
streams, so it can time every token: a model that goes silent (no first token, or
too long a gap between two tokens) is *stalled*, while one that is still writing
when the time budget ends has its answer ended there and kept (README "Timeouts").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from magi.errors import MAGIException

DeadlineKind = Literal["first_token", "token_gap", "budget"]
"""Which deadline of a generation passed: the first token's, a gap between tokens, the budget."""

#: Why an answer ended, in traces: the model stopped (end of sequence or a stop
#: sequence), ``max_tokens`` was reached, the time budget ran out ("timeout"), the
#: model went silent after writing something usable ("stalled"), the repetition stop
#: ended a loop ("repetition"), or the caller cancelled it ("cancelled"). All but
#: "stop" and "length" end an answer early; its text so far is kept.
FinishReason = Literal["stop", "length", "timeout", "stalled", "repetition", "cancelled"]
EARLY_FINISH_REASONS: frozenset[str] = frozenset({"timeout", "stalled", "repetition", "cancelled"})


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
    """Time budget of the whole generation (None: none): when it is reached the answer
    ends there (``finish_reason`` "timeout") and is kept."""
    first_token_timeout_s: float | None = None
    """Longest wait for the first token, prompt processing included (None: none)."""
    token_gap_timeout_s: float | None = None
    """Longest silence between two tokens (None: none). A model past either of these
    two deadlines is stalled. The runner sets all three from the tier
    (:meth:`for_tier`) and checks them per token; a backend that can block *between*
    tokens (a remote server that stops answering) enforces them itself, raising
    :class:`GenerationTimeout` with the deadline it missed."""

    def next_deadline(self, started: float, last_token_at: float | None) -> tuple[float, DeadlineKind] | None:
        """The nearest deadline of a generation that started at ``started`` and got its
        last token at ``last_token_at`` (None: no token yet), with its kind; None if
        there is none. Times are of one monotonic clock.

        Example:
            >>> s = GenerationSettings(timeout_s=20, first_token_timeout_s=5, token_gap_timeout_s=4)
            >>> s.next_deadline(100.0, None), s.next_deadline(100.0, 103.0), s.next_deadline(100.0, 117.0)
            ((105.0, 'first_token'), (107.0, 'token_gap'), (120.0, 'budget'))
        """
        candidates: list[tuple[float, DeadlineKind]] = []
        if last_token_at is None and self.first_token_timeout_s is not None:
            candidates.append((started + self.first_token_timeout_s, "first_token"))
        if last_token_at is not None and self.token_gap_timeout_s is not None:
            candidates.append((last_token_at + self.token_gap_timeout_s, "token_gap"))
        if self.timeout_s is not None:
            candidates.append((started + self.timeout_s, "budget"))
        finite = [c for c in candidates if c[0] != float("inf")]
        return min(finite, key=lambda c: c[0]) if finite else None

    def describe_deadline(self, kind: DeadlineKind | None) -> str:
        """The deadline in words, with the setting that sets it, for error messages."""
        if kind == "first_token":
            return (
                f"no first token within {self.first_token_timeout_s:.1f}s (the tier's "
                "expected_time_seconds x runtime.first_token_timeout_factor)"
            )
        if kind == "token_gap":
            return (
                f"no token for {self.token_gap_timeout_s:.1f}s (the tier's expected_time_seconds "
                "x runtime.token_gap_timeout_factor)"
            )
        return (
            f"the time budget of {self.timeout_s or 0:.1f}s ran out (the tier's expected_time_seconds "
            "x runtime.timeout_factor)"
        )


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
    """A generation missed a deadline (:class:`GenerationSettings`): the model stalled
    before its first token or between two, or the budget ran out while a backend was
    blocked waiting. ``deadline`` says which (None: a backend's own read timeout);
    ``tokens`` how many tokens came before. The runner keeps a usable partial answer
    and fails over only when there is none."""

    status_code = 504

    def __init__(
        self,
        message: str,
        *,
        deadline: DeadlineKind | None = None,
        tokens: int = 0,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message, details={**(details or {}), "deadline": deadline, "tokens": tokens})
        self.deadline = deadline
        self.tokens = tokens


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
