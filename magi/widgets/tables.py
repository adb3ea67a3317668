"""HTML for the widgets: a profile's tiers and models, a streamed answer, a routing trace.

Pure functions from MAGI objects to HTML strings, kept apart from the widgets so
they can be tested (and reused in reports) without a kernel. Everything user- or
model-provided is escaped: a model's answer may contain ``<script>``.

Styles are inline because an ``ipywidgets.HTML`` value is all the page gets; every
state is said in words as well as colour (draft/refine labels, "loaded: yes").

Example:
    >>> import magi
    >>> from magi.widgets.tables import profile_html
    >>> "<table" in profile_html(magi.compose(profile="production").profile)
    True
"""

from __future__ import annotations

import html
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from magi.config.profile import ModelProfile
from magi.render import model_tier_names, tier_rows
from magi.runtime.trace import RunResult

TABLE_STYLE = "border-collapse:collapse;margin:4px 0 8px 0;font-size:13px"
CELL_STYLE = "border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top"
HEAD_STYLE = CELL_STYLE + ";background:#f6f8fa;font-weight:600"
NUM_STYLE = CELL_STYLE + ";text-align:right;font-variant-numeric:tabular-nums"

#: Colours per stage; the stage name is always written out too.
STAGE_COLORS: dict[str, str] = {"draft": "#9a6700", "refine": "#0969da", "answer": "#1a7f37"}


def esc(value: object) -> str:
    """HTML-escape any value's text (quotes too: values end up in attributes)."""
    return html.escape(str(value), quote=True)


def html_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    caption: str | None = None,
    numeric: Collection[int] = (),
    css_class: str = "magi-table",
) -> str:
    """A bordered HTML table; ``numeric`` column indexes are right-aligned."""
    parts = [f'<table class="{esc(css_class)}" style="{TABLE_STYLE}">']
    if caption:
        parts.append(
            f'<caption style="text-align:left;font-weight:600;padding:2px 0">{esc(caption)}</caption>'
        )
    parts.append(
        "<thead><tr>"
        + "".join(f'<th scope="col" style="{HEAD_STYLE}">{esc(h)}</th>' for h in headers)
        + "</tr></thead>"
    )
    parts.append("<tbody>")
    for row in rows:
        cells = [
            f'<td style="{NUM_STYLE if i in numeric else CELL_STYLE}">{esc(c)}</td>'
            for i, c in enumerate(row)
        ]
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


# -- profiles --------------------------------------------------------------------------------
def profile_html(profile: ModelProfile, *, key: str | None = None, loaded: Collection[str] = ()) -> str:
    """The chosen profile: description, tiers (score range, expected time, models) and models.

    Args:
        profile: The validated profile.
        key: Its option name in the ``profile`` group (``fast-only``), shown beside the name.
        loaded: Model ids loaded in the pool right now (the "loaded" column).
    """
    title = esc(profile.name) + (
        f' <code style="font-weight:normal">profile={esc(key)}</code>' if key else ""
    )
    parts = [f'<div class="magi-profile"><div style="font-size:15px;font-weight:600">{title}</div>']
    if profile.description:
        parts.append(
            f'<div class="magi-description" style="margin:2px 0 4px 0">{esc(profile.description)}</div>'
        )
    rows = [
        (name, score_range.replace(" - ", " – "), f"{expected:g} s", ", ".join(members) or "–")
        for name, score_range, expected, members in tier_rows(profile)
    ]
    parts.append(
        html_table(("tier", "score range", "expected time", "models"), rows, caption="Tiers", numeric=(2,))
    )
    model_rows = [
        (m, ", ".join(model_tier_names(profile, m)) or "(from the registry)", "yes" if m in loaded else "no")
        for m in profile.enabled_models
    ]
    parts.append(html_table(("model", "tiers", "loaded"), model_rows, caption="Models"))
    ts = profile.two_stage
    two_stage = (
        f"on: {esc(ts.stage1_tier)} drafts (at most {ts.stage1_max_tokens} tokens), "
        f"{esc(ts.stage2_tier)} refines"
        if ts.enabled
        else "off"
    )
    lb = profile.load_balancing
    balancing = (
        f"on: {esc(lb.strategy)}, health check every {lb.health_check_interval:g} s" if lb.enabled else "off"
    )
    parts.append(
        f"<div><b>Two-stage:</b> {two_stage} &nbsp;·&nbsp; <b>Load balancing:</b> {balancing}</div></div>"
    )
    return "".join(parts)


# -- validation --------------------------------------------------------------------------------
def validation_html(problems: Sequence[str], *, headline: str = "", note: str = "") -> str:
    """Either a green "valid" line or every problem, in red, as a list (``role=alert``)."""
    if not problems:
        return (
            f'<div class="magi-valid" style="color:#1a7f37">✓ {esc(headline or "Valid configuration")}</div>'
        )
    items = "".join(f'<li><code style="white-space:pre-wrap">{esc(p)}</code></li>' for p in problems)
    extra = f'<div style="color:#57606a">{esc(note)}</div>' if note else ""
    title = esc(headline or "Invalid configuration")
    return (
        f'<div class="magi-invalid" role="alert" style="color:#cf222e">✗ {title}'
        f'<ul style="margin:2px 0">{items}</ul>{extra}</div>'
    )


# -- answers -----------------------------------------------------------------------------------
@dataclass
class StagePart:
    """The text one stage has streamed so far, and where it ran."""

    stage: str
    tier: str
    model_id: str
    pieces: list[str] = field(default_factory=list)
    restarts: int = 0

    @property
    def text(self) -> str:
        return "".join(self.pieces)


STAGE_TITLES: dict[str, str] = {"draft": "Draft", "refine": "Refine", "answer": "Answer"}


#: How an answer that ended early is marked below its text, by ``finish_reason``.
EARLY_FINISH_NOTES = {
    "cancelled": "■ Stopped: the answer was cancelled; the text above is what had been written.",
    "timeout": "⏱ Ended at the tier's time budget (runtime.timeout_factor); the text above is kept.",
    "stalled": "⚠ The model stalled mid-answer; the text above is what it had written.",
    "repetition": "↻ Ended a repeating loop (runtime.repetition_stop).",
}


def answer_html(
    parts: Sequence[StagePart], *, done: bool = False, error: str | None = None, finish: str | None = None
) -> str:
    """The answer so far, one block per stage, each marked with stage, tier and model.

    With two-stage processing the draft is shown above (muted) and the refined,
    final answer below. The container is an ARIA live region so screen readers
    follow the stream. ``finish`` (the result's ``finish_reason``) is set on the
    container; an answer that ended early (stopped, timed out, stalled, looping) is
    marked below its text.
    """
    blocks = []
    for part in parts:
        color = STAGE_COLORS.get(part.stage, "#57606a")
        title = STAGE_TITLES.get(part.stage, part.stage.title())
        note = f" (restarted {part.restarts}×: a model failed)" if part.restarts else ""
        muted = "color:#57606a;" if part.stage == "draft" else ""
        blocks.append(
            f'<div class="magi-stage magi-stage-{esc(part.stage)}" data-stage="{esc(part.stage)}" '
            f'style="border-left:4px solid {color};padding:2px 8px;margin:4px 0">'
            f'<div style="font-size:12px"><b style="color:{color}">{esc(title)}</b> · {esc(part.tier)} · '
            f"<code>{esc(part.model_id)}</code>{esc(note)}</div>"
            f'<pre class="magi-text" style="white-space:pre-wrap;margin:2px 0;font-family:inherit;{muted}">'
            f"{esc(part.text)}</pre></div>"
        )
    if error:
        blocks.append(
            f'<pre class="magi-error" role="alert" style="white-space:pre-wrap;color:#cf222e;margin:4px 0">'
            f"{esc(error)}</pre>"
        )
    if finish in EARLY_FINISH_NOTES:
        blocks.append(
            f'<div class="magi-finish magi-finish-{esc(finish)}" style="font-size:12px;color:#9a6700">'
            f"{esc(EARLY_FINISH_NOTES[finish])}</div>"
        )
    state = "done" if done else "streaming"
    marked = f' data-finish="{esc(finish)}"' if finish else ""
    return f'<div class="magi-answer" data-state="{state}"{marked} aria-live="polite">{"".join(blocks)}</div>'


# -- traces ------------------------------------------------------------------------------------
def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def trace_html(result: RunResult) -> str:
    """The routing trace: score and why, routed tier, then one row per stage with timings."""
    top = sorted(result.contributions.items(), key=lambda kv: -abs(kv[1]))[:4]
    why = ", ".join(f"{k} {v:+.1f}" for k, v in top if v) or "no features"
    head = (
        f'<div class="magi-route"><b>Score</b> {result.score:.1f}/10 ({esc(why)}) → <b>tier</b> '
        f"{esc(result.routed_tier)}{' (two-stage)' if result.two_stage else ''} · <b>profile</b> "
        f"{esc(result.profile)}</div>"
    )
    rows = [
        (
            s.stage,
            s.tier,
            s.model_id,
            s.prompt_tokens,
            s.completion_tokens,
            _ms(s.ttft_s),
            f"{s.total_s:.2f} s",
            f"{s.tokens_per_s:.1f}",
            s.finish_reason,
        )
        for s in result.stages
    ]
    table = html_table(
        ("stage", "tier", "model", "prompt tokens", "tokens", "first token", "total", "tok/s", "finish"),
        rows,
        caption="Routing trace",
        numeric=(3, 4, 5, 6, 7),
        css_class="magi-table magi-trace-table",
    )
    fallbacks = ""
    if result.fallbacks:
        fallbacks = html_table(
            ("stage", "tier", "model", "error"),
            [(f.stage, f.tier, f.model_id, f.error) for f in result.fallbacks],
            caption="Failed attempts (failed over to the next model)",
        )
    foot = (
        f"<div>Total {result.total_s:.2f} s · first token after {_ms(result.ttft_s)} · "
        f"routing {result.route_s * 1e6:.0f} µs · {result.completion_tokens} tokens, "
        f"{result.tokens_per_s:.1f} tok/s</div>"
    )
    return f'<div class="magi-trace-block">{head}{table}{fallbacks}{foot}</div>'


# -- generic tables (sweep summaries) ----------------------------------------------------------
def format_cell(value: object) -> str:
    """Numbers to a readable precision, everything else as text."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}" if abs(value) >= 1e-3 else f"{value:.3g}"
    return "" if value is None else str(value)


def records_html(
    columns: Sequence[str], rows: Sequence[Mapping[str, object]], *, caption: str | None = None
) -> str:
    """Rows of dicts as a table with every column; numeric columns right-aligned."""
    numeric = {
        i
        for i, c in enumerate(columns)
        if any(isinstance(r.get(c), int | float) and not isinstance(r.get(c), bool) for r in rows)
    }
    return html_table(
        columns,
        [[format_cell(r.get(c)) for c in columns] for r in rows],
        caption=caption,
        numeric=numeric,
        css_class="magi-table magi-sweep-table",
    )
