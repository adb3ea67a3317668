"""What every answer carries: how it was routed, and what each stage cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from magi.runtime.backend import EARLY_FINISH_REASONS, decode_rate

StageName = Literal["answer", "draft", "refine"]


@dataclass
class Fallback:
    """A model that was tried and failed before the answer came from another."""

    stage: StageName
    tier: str
    model_id: str
    error: str


@dataclass
class StageTrace:
    """One generation: which model of which tier, tokens and timings."""

    stage: StageName
    tier: str
    model_id: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    total_s: float
    finish_reason: str
    """Why the stage ended (:data:`magi.runtime.backend.FinishReason`): "stop", "length",
    or early, its text kept: "timeout", "stalled", "repetition", "cancelled"."""
    endpoint: str | None = None
    """The server's base URL when the model is remote; None when it ran in-process."""
    wait_s: float = 0.0
    """Time before generation started: waiting for the model's lock and, on first use,
    loading it. Not part of ``ttft_s``/``total_s``, which time the generation itself."""
    placement: str | None = None
    """Where the model ran: "CPU", "GPU 12/24 layers" (in-process), or "server" (remote)."""
    note: str | None = None
    """How the request was changed to fit the model's context (a draft budget cut to what
    the context leaves, a draft shortened in the refine prompt, the prompt answered
    without the draft) and why an answer ended early (the deadline, the stall or the
    repetition). None when the stage ran as planned."""

    @property
    def tokens_per_s(self) -> float:
        """Decode speed of this stage (tokens after the first, per second)."""
        return decode_rate(self.completion_tokens, self.ttft_s, self.total_s)


@dataclass
class RunResult:
    """An answer and its routing trace.

    ``ttft_s`` is the time until the caller saw the first token (of the draft, for
    two-stage); ``tier``/``model_id`` name the model that wrote the final text.
    ``prompt`` is the message answered (a conversation's last user message);
    ``messages`` the whole conversation as the final model was given it (a refine's
    template aside), system prompt included, as ``{"role", "content"}`` dicts;
    ``scored`` what the routing score rated ("the prompt", or "last user message of 3
    turns, conversation +2.10", :func:`magi.routing.router.conversation_score`).
    """

    text: str
    prompt: str
    profile: str
    score: float
    features: dict[str, float]
    contributions: dict[str, float]
    routed_tier: str
    tier: str
    model_id: str
    two_stage: bool
    stages: list[StageTrace] = field(default_factory=list)
    fallbacks: list[Fallback] = field(default_factory=list)
    ttft_s: float = 0.0
    total_s: float = 0.0
    route_s: float = 0.0
    draft: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    scored: str = "the prompt"

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.stages)

    @property
    def finish_reason(self) -> str:
        """Why the final text ended: the last stage's ``finish_reason`` ("stop", "length",
        "timeout", "stalled", "repetition", "cancelled")."""
        return self.stages[-1].finish_reason if self.stages else "stop"

    @property
    def ended_early(self) -> bool:
        """The answer was cut short (budget, stall, repetition, cancel); its text is kept."""
        return self.finish_reason in EARLY_FINISH_REASONS

    @property
    def cancelled(self) -> bool:
        """The caller cancelled the answer (:meth:`magi.runtime.runner.AnswerStream.cancel`)."""
        return self.finish_reason == "cancelled"

    @property
    def decode_tokens_per_s(self) -> float:
        """Generation speed over all stages: tokens after each stage's first, per second
        of generating them (no prompt processing, no waiting for models)."""
        tokens = sum(max(s.completion_tokens - 1, 0) for s in self.stages)
        seconds = sum(max(s.total_s - s.ttft_s, 0.0) for s in self.stages)
        return tokens / seconds if tokens and seconds > 0 else self.tokens_per_s

    @property
    def wait_s(self) -> float:
        """Time the stages spent waiting for their models (locks, first loads)."""
        return sum(s.wait_s for s in self.stages)

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens of all stages over the whole time."""
        return self.completion_tokens / self.total_s if self.total_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["completion_tokens"] = self.completion_tokens
        data["tokens_per_s"] = self.tokens_per_s
        data["wait_s"] = self.wait_s
        data["decode_tokens_per_s"] = self.decode_tokens_per_s
        data["finish_reason"] = self.finish_reason
        for stage, raw in zip(self.stages, data["stages"], strict=True):
            raw["tokens_per_s"] = stage.tokens_per_s
        return data

    def explain(self) -> str:
        """A short, human-readable routing trace."""
        top = sorted(self.contributions.items(), key=lambda kv: -abs(kv[1]))[:4]
        why = ", ".join(f"{k} {v:+.1f}" for k, v in top if v) or "no features"
        lines = [
            f"profile {self.profile!r}: score {self.score:.1f}/10 ({why}) -> tier {self.routed_tier}"
            + (" (two-stage)" if self.two_stage else "")
        ]
        if self.scored != "the prompt":
            lines.append(f"  scored: {self.scored}")
        for s in self.stages:
            lines.append(
                f"  {s.stage:<6} {s.tier:<9} {s.model_id}"
                + (f" @ {s.endpoint}" if s.endpoint else f" on {s.placement}" if s.placement else "")
                + f": {s.prompt_tokens} prompt + "
                f"{s.completion_tokens} tokens, first token {s.ttft_s * 1000:.0f} ms, "
                f"{s.total_s:.2f} s, {s.tokens_per_s:.1f} tok/s, ended: {s.finish_reason}"
            )
            if s.note:
                lines.append(f"         note: {s.note}")
        for f in self.fallbacks:
            lines.append(f"  failed {f.stage} {f.tier} {f.model_id}: {f.error}")
        waited = (
            f" (of which {self.wait_s:.2f} s waiting for or loading models)" if self.wait_s >= 0.01 else ""
        )
        lines.append(f"  total {self.total_s:.2f} s{waited}, first token after {self.ttft_s * 1000:.0f} ms")
        return "\n".join(lines)
