"""Plain-text rendering for the terminal: profiles, tables, and streamed answers."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TextIO

from magi.config.profile import ModelProfile

if TYPE_CHECKING:
    from magi.runtime.runner import StreamEvent


def fmt_score(value: float) -> str:
    """``5.0`` → ``"5.0"``, infinity → ``".inf"`` (as written in YAML)."""
    return ".inf" if math.isinf(value) else f"{value:g}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A left-aligned text table with a header rule."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def model_tier_names(
    profile: ModelProfile, model_id: str, registry_tiers: Mapping[str, str] | None = None
) -> list[str]:
    """The tiers a model serves in a profile.

    ``model_tiers`` wins; then ``registry_tiers`` (model id → tier, as a saved registry
    or an endpoint assigns it: what the runtime uses, and the only source for a pinned
    id such as ``my_model``); otherwise the seed-style id's suffix (``..._fast``).
    Callers pass a registry they have already; refreshing one would scan
    ``models.dirs`` (and assemble the demo model) just to draw a table.
    """
    override = profile.tier_override(model_id)
    if override is not None:
        return override
    if registry_tiers and model_id in registry_tiers:
        return [registry_tiers[model_id]]
    suffix = model_id.rsplit("_", 1)[-1] if "_" in model_id else ""
    return [suffix] if suffix in profile.tier_names else []


def tier_rows(
    profile: ModelProfile, registry_tiers: Mapping[str, str] | None = None
) -> list[tuple[str, str, float, list[str]]]:
    """Per tier: name, score range (``"5 - .inf"``), expected seconds, member models."""
    rows = []
    lower = 0.0
    for tier in profile.tier_config:
        members = [
            m for m in profile.enabled_models if tier.name in model_tier_names(profile, m, registry_tiers)
        ]
        rows.append(
            (
                tier.name,
                f"{fmt_score(lower)} - {fmt_score(tier.max_score)}",
                tier.expected_time_seconds,
                members,
            )
        )
        lower = tier.max_score
    return rows


def profile_summary(
    profile: ModelProfile, key: str | None = None, registry_tiers: Mapping[str, str] | None = None
) -> str:
    """Describe a profile: models, tiers, two-stage and balancing, in a few lines.

    ``registry_tiers`` (model id → tier) places models whose id does not end in a tier;
    models placed nowhere are listed below the table.
    """
    title = f"Profile {profile.name!r}" + (f" (profile={key})" if key else "")
    lines = [title]
    if profile.description:
        lines.append(f"  {profile.description}")
    lines.append("")
    rows = [
        (name, score_range, f"{expected:g}s", ", ".join(members) or "-")
        for name, score_range, expected, members in tier_rows(profile, registry_tiers)
    ]
    lines.append(table(("tier", "score range", "expected", "models"), rows))
    unplaced = [
        m
        for m in profile.enabled_models
        if not set(model_tier_names(profile, m, registry_tiers)) & set(profile.tier_names)
    ]
    if unplaced:
        lines.append(
            f"tier unknown: {', '.join(unplaced)} (not in the registry, and the id names no tier of "
            "this profile; `magi discover FOLDER` registers the file, or set model_tiers)"
        )
    lines.append("")
    lines.append(f"enabled models: {', '.join(profile.enabled_models)}")
    ts = profile.two_stage
    lines.append(
        f"two-stage:      {'on' if ts.enabled else 'off'}"
        + (
            f" ({ts.stage1_tier} drafts <= {ts.stage1_max_tokens} tokens, {ts.stage2_tier} refines)"
            if ts.enabled
            else ""
        )
    )
    lb = profile.load_balancing
    lines.append(
        f"balancing:      {'on' if lb.enabled else 'off'}"
        + (f" ({lb.strategy}, health check every {lb.health_check_interval:g}s)" if lb.enabled else "")
    )
    return "\n".join(lines)


class StreamPrinter:
    """Writes an answer's stream events (:meth:`magi.runtime.runner.Runner.stream`) as text,
    each stage marked on its own line: ``[answer · fast · model_id]`` (``draft`` and
    ``refine`` for two stages), then the tokens as they come.

    One home for how ``magi ask``, ``python run.py`` and ``magi chat`` show an answer.
    A failover mid-answer is marked ``[model failed; retrying on another model]``;
    :meth:`fail` closes a failed answer with ``[FAILED: headline]``, so the output never
    ends in a silent half answer. Every write is flushed (the tokens are the progress).
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.at_line_start = True

    def _line(self, text: str) -> None:
        """``text`` on a line of its own."""
        self.out.write(("" if self.at_line_start else "\n") + text + "\n")
        self.at_line_start = True
        self.out.flush()

    def event(self, event: StreamEvent) -> None:
        """Write one event (a ``done`` event ends the answer's last line)."""
        if event.kind == "stage":
            self._line(f"[{event.stage} · {event.tier} · {event.model_id}]")
        elif event.kind == "token":
            self.out.write(event.text)
            if event.text:
                self.at_line_start = event.text.endswith("\n")
        elif event.kind == "restart":
            self._line(f"[{event.model_id} failed; retrying on another model]")
        elif event.kind == "done" and not self.at_line_start:  # an answer ending in "\n" needs none
            self.out.write("\n")
            self.at_line_start = True
        self.out.flush()

    def note(self, text: str) -> None:
        """A mark of the printer's own (``[cancelled ...]``) on its own line."""
        self._line(f"[{text}]")

    def fail(self, error: BaseException) -> None:
        """Mark the answer failed with the error's first line."""
        self.note(f"FAILED: {first_line(str(error)).rstrip(':')}")


def first_line(text: str) -> str:
    """The first non-blank line of ``text``, stripped (a message's headline)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), text.strip())
