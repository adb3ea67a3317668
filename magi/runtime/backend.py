"""The backend protocol: what the pool and the runner need from a model.

A backend wraps one model (in-process llama.cpp in :mod:`magi.runtime.llama`; an
OpenAI-compatible HTTP server in :mod:`magi.runtime.remote`) behind six operations:
load, stream, generate, count tokens, probe health, close. What a model is asked is a
:class:`~magi.conversation.Conversation` (a plain ``str`` is accepted and means one
user message); the backend renders it for its model (:mod:`magi.runtime.templates`). The runner only ever
streams, so it can time every token: a model that goes silent (no first token, or
too long a gap between two tokens) is *stalled*, while one that is still writing
when the time budget ends has its answer ended there and kept (README "Timeouts").
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Protocol, runtime_checkable

from pydantic import BeforeValidator, ConfigDict, Field

from magi.config.model_settings import LoadSettings, SamplingSettings, gpu_offload_supported, placement
from magi.conversation import Conversation
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


def _inf_is_none(value: object) -> object:
    return None if isinstance(value, float) and math.isinf(value) else value


class GenerationSettings(SamplingSettings):
    """The settings of one generation: a model's sampling settings
    (:class:`~magi.config.model_settings.SamplingSettings`, the one declaration of them)
    for one stage (:func:`stage_settings`), plus the stage's deadlines.

    ``max_tokens`` is resolved here: ``None`` (or ``.inf``) is unlimited. Frozen: derive
    a changed copy with ``model_copy(update=...)``.
    """

    model_config = ConfigDict(frozen=True)

    max_tokens: Annotated[int | None, BeforeValidator(_inf_is_none)] = Field(  # type: ignore[assignment]
        default=256, gt=0, description="Answer length; None: until the context is full."
    )
    timeout_s: float | None = Field(default=None, description="Time budget of the whole generation.")
    """Time budget of the whole generation (None: none): when it is reached the answer
    ends there (``finish_reason`` "timeout") and is kept."""
    first_token_timeout_s: float | None = Field(default=None, description="Longest wait for the first token.")
    """Longest wait for the first token, prompt processing included (None: none)."""
    token_gap_timeout_s: float | None = Field(default=None, description="Longest silence between tokens.")
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


def stage_settings(
    sampling: SamplingSettings, stage_max_tokens: int | None = None, *, refine: bool = False
) -> GenerationSettings:
    """The settings one stage generates with, and so its token budget (``max_tokens``;
    None: unlimited): the one computation the runner, ``magi route`` and the widget share.

    ``sampling`` is a model's (``ModelSpec.sampling``: ``runtime.models.<id>`` merged over
    the runtime defaults), or the runtime defaults when the model is not known yet. A
    stage that sets its own budget (a draft's ``stage1_max_tokens``) replaces the answer
    length, because ``max_tokens`` is only the length "when a stage sets none" and the
    draft budget is what keeps stage 1 short. Only a ``refine`` stage keeps the model's
    ``prompt_lookup`` (its prompt holds the draft it rewrites); other stages get 0 (off).

    Example:
        >>> from magi.config.model_settings import SamplingSettings
        >>> stage_settings(SamplingSettings(max_tokens=float("inf"))).max_tokens is None
        True
        >>> stage_settings(SamplingSettings(max_tokens=64), 16).max_tokens
        16
    """
    fields = sampling.model_dump()
    if stage_max_tokens is not None:
        fields["max_tokens"] = stage_max_tokens
    if not refine:  # prompt lookup pays off where the answer copies its prompt: the refine's draft
        fields["prompt_lookup"] = 0
    return GenerationSettings.model_validate(fields)


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

    ``load`` and ``sampling`` are the model's settings, declared once in
    :mod:`magi.config.model_settings`: the runtime defaults with the model's
    ``runtime.models.<id>`` overrides merged in, threads and GPU layers resolved, and
    ``n_ctx`` capped at the model's trained context. A local model has a ``path``; a
    remote model has ``remote`` instead: it holds no memory here (``memory_mb`` 0),
    its server owns the load settings, and only ``sampling`` applies to it.
    """

    model_id: str
    path: Path | None = None
    memory_mb: float = 0.0
    """Estimated host memory (RAM) of the loaded model, in MB."""
    context_length: int | None = None
    load: LoadSettings = field(default_factory=LoadSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    remote: RemoteSettings | None = None
    gpu_memory_mb: float = 0.0
    """Estimated GPU memory of the loaded model (its offloaded layers), in MB."""
    n_layers: int | None = None
    """The model's layer count (GGUF ``block_count``), for where it runs (:attr:`placement`)."""

    @property
    def n_ctx(self) -> int:
        """The context the model is loaded with (``load.n_ctx``)."""
        return self.load.n_ctx

    @property
    def placement(self) -> str:
        """Where the model runs: "CPU", "GPU 12/24 layers" (CPU whatever ``n_gpu_layers``
        says when the installed llama.cpp cannot offload), or "server" (a remote model)."""
        if self.remote is not None:
            return "server"
        layers = self.load.n_gpu_layers if gpu_offload_supported() else 0
        return placement(layers or 0, self.n_layers)

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

    def stream(self, request: str | Conversation, settings: GenerationSettings) -> Iterator[str]:
        """Yield the answer to ``request`` (a conversation; a ``str`` is one user message),
        one piece per generated token (a piece may be ""). The backend renders the
        conversation for its model: the model's chat template, or MAGI's completion
        transcript (:func:`magi.runtime.templates.render_transcript`)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as it is (no template)."""
        ...

    def count_prompt_tokens(self, request: str | Conversation, settings: GenerationSettings) -> int:
        """Tokens the model processes for ``request``: the conversation as rendered for it,
        the template's own tokens included (a remote ``api: chat`` server's template is its
        own: there, the messages' text)."""
        ...

    def probe(self) -> None:
        """Raise if the model cannot answer; return quickly when it can."""
        ...

    def close(self) -> None: ...


def generate(backend: Backend, request: str | Conversation, settings: GenerationSettings) -> Generation:
    """Run a whole generation through ``backend.stream``, timing the first token.
    ``request`` is a conversation, or a prompt as one user message."""
    start = time.perf_counter()
    ttft = 0.0
    pieces: list[str] = []
    for piece in backend.stream(request, settings):
        if not ttft:
            ttft = time.perf_counter() - start
        pieces.append(piece)
    total = time.perf_counter() - start
    text = "".join(pieces)
    finish = "length" if settings.max_tokens is not None and len(pieces) >= settings.max_tokens else "stop"
    return Generation(
        text=text,
        prompt_tokens=backend.count_prompt_tokens(request, settings),
        completion_tokens=len(pieces),
        finish_reason=finish,
        ttft_s=ttft or total,
        total_s=total,
    )
