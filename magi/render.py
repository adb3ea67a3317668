"""Plain-text rendering of profiles and tables for the terminal."""

from __future__ import annotations

import math
from collections.abc import Sequence

from magi.config.profile import ModelProfile


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


def profile_summary(profile: ModelProfile, key: str | None = None) -> str:
    """Describe a profile: models, tiers, two-stage and balancing, in a few lines."""
    title = f"Profile {profile.name!r}" + (f" (profile={key})" if key else "")
    lines = [title]
    if profile.description:
        lines.append(f"  {profile.description}")
    lines.append("")
    lower = 0.0
    rows = []
    for tier in profile.tier_config:
        models = [
            m for m in profile.enabled_models if tier.name in (profile.tier_override(m) or [_tier_from_id(m)])
        ]
        rows.append(
            (
                tier.name,
                f"{fmt_score(lower)} - {fmt_score(tier.max_score)}",
                f"{tier.expected_time_seconds:g}s",
                ", ".join(models) or "-",
            )
        )
        lower = tier.max_score
    lines.append(table(("tier", "score range", "expected", "models"), rows))
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


def _tier_from_id(model_id: str) -> str:
    """The tier suffix of a seed-style id (``..._fast`` → ``fast``), else ``""``."""
    return model_id.rsplit("_", 1)[-1] if "_" in model_id else ""
