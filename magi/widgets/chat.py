"""The chat mode of the ProfilePicker: a conversation's history, a system prompt, a message box.

:class:`ChatView` holds the conversation the widget shows and sends: the turns
(:class:`ChatTurn`, a user message and the assistant's answer as it streamed, with
its stages and routing trace), the system prompt field, the message box and the
Send and Reset buttons. It does not run anything: :class:`~magi.widgets.picker.ProfilePicker`
streams each answer through the same path as a single prompt (status, progress bar,
Stop) and hands the view the stages as they grow and the result at the end.

What the next turn sends (:meth:`ChatView.request`): every finished turn as a user
and an assistant message, then the new user message; the system prompt field goes
as the call's ``system=`` (empty: the profile's or the model's default applies).
A stopped answer stays in the history with the text written so far (that is what
the user saw and answers to); a failed turn is shown, marked, and left out.

:func:`chat_html` draws the history: pure HTML from the turns, so it is testable
without a kernel; model text is escaped like every answer (:mod:`magi.widgets.tables`).

Example:
    >>> view = ChatView()
    >>> turn = view.begin("Hi")
    >>> view.request()
    [{'role': 'user', 'content': 'Hi'}]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import ipywidgets as widgets

from magi.runtime.trace import RunResult
from magi.widgets.tables import StagePart, answer_html, esc, trace_html

#: The picker's inputs (its own and the chat's) have their labels this wide; widgets
#: without a label (the buttons, the HTML panes) are indented by :data:`INDENT` to line up.
LABEL_STYLE = {"description_width": "80px"}
INDENT = "86px"

#: How an assistant turn is marked while and after it streams (``data-state``).
TURN_STATES = ("streaming", "done", "stopped", "failed")

USER_STYLE = "background:#ddf4ff;border-radius:6px;padding:4px 8px;margin:6px 0 2px 0;white-space:pre-wrap"
META_STYLE = "font-size:12px;color:#57606a;margin:0 0 4px 12px"


@dataclass
class ChatTurn:
    """One exchange: the user's message and the assistant's answer (as it streams)."""

    user: str
    parts: list[StagePart] = field(default_factory=list)
    result: RunResult | None = None
    error: str | None = None

    @property
    def state(self) -> str:
        """``streaming``, ``done``, ``stopped`` (cancelled, partial text kept) or ``failed``."""
        if self.error is not None:
            return "failed"
        if self.result is None:
            return "streaming"
        return "stopped" if self.result.cancelled else "done"

    @property
    def answer(self) -> str | None:
        """The assistant's text as it goes into the history; None while streaming or failed."""
        return self.result.text if self.result is not None and self.error is None else None


def history_messages(turns: Sequence[ChatTurn]) -> list[dict[str, str]]:
    """Turns as the messages a model reads: each answered turn's user and assistant
    message (a stopped answer with its partial text), failed turns left out."""
    out: list[dict[str, str]] = []
    for turn in turns:
        if turn.answer is not None:
            out += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": turn.answer}]
    return out


def turn_summary(result: RunResult) -> str:
    """The one-line trace under an answer: tier, model(s) per stage, score (and what it
    rated: the last message, plus the conversation's bounded term), tokens, time."""
    stages = " → ".join(f"{s.stage} {s.model_id}" for s in result.stages) or "no stages"
    two = " (two-stage)" if result.two_stage else ""
    early = f" · ended: {result.finish_reason}" if result.ended_early else ""
    scored = f" ({result.scored})" if result.scored != "the prompt" else ""
    return (
        f"tier {result.tier}{two} · {stages} · score {result.score:.1f}/10{scored} · "
        f"{result.completion_tokens} tokens in {result.total_s:.2f} s · profile {result.profile}{early}"
    )


def turn_html(turn: ChatTurn, index: int) -> str:
    """One turn: the user's message, the answer (stages marked) and its trace, collapsible,
    with the system prompt the model was given (the field's, or the profile's or model's
    default when the field is blank)."""
    user = (
        f'<div class="magi-chat-user" data-turn="{index}" style="{USER_STYLE}">'
        f"<b>You</b>: {esc(turn.user)}</div>"
    )
    finish = turn.result.finish_reason if turn.result is not None else None
    answer = answer_html(
        turn.parts,
        done=turn.state != "streaming",
        error=turn.error,
        finish=finish if turn.error is None else None,
    )
    meta = ""
    if turn.result is not None and turn.error is None:
        messages = turn.result.messages
        used = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
        system = (
            f'<div class="magi-chat-system">System prompt: <q>{esc(used)}</q></div>'
            if used is not None
            else '<div class="magi-chat-system">No system prompt.</div>'
        )
        meta = (
            f'<details class="magi-chat-trace" style="{META_STYLE}"><summary class="magi-chat-summary">'
            f"{esc(turn_summary(turn.result))}</summary>{system}{trace_html(turn.result)}</details>"
        )
    elif turn.error is not None:
        meta = f'<div style="{META_STYLE}">This turn failed: it is not sent with the next message.</div>'
    return (
        f'<div class="magi-chat-turn" data-turn="{index}" data-state="{turn.state}">{user}'
        f'<div class="magi-chat-assistant" style="margin-left:12px">{answer}</div>{meta}</div>'
    )


def text_box(
    description: str, placeholder: str, *, rows: int, value: str = "", tooltip: str | None = None
) -> widgets.Textarea:
    """A full-width text area with its label at :data:`LABEL_STYLE`'s width."""
    return widgets.Textarea(
        value=value,
        description=description,
        placeholder=placeholder,
        rows=rows,
        style=LABEL_STYLE,
        layout=widgets.Layout(width="98%"),
        tooltip=tooltip,
    )


def primary_button(description: str, icon: str, tooltip: str) -> widgets.Button:
    """The action button that starts a row under the inputs (Run, Send), indented to them."""
    return widgets.Button(
        description=description,
        icon=icon,
        button_style="primary",
        tooltip=tooltip,
        layout=widgets.Layout(margin=f"0 0 0 {INDENT}"),
    )


def tag(named: Sequence[tuple[widgets.DOMWidget, str]]) -> None:
    """Give each widget the class ``magi-picker-<name>`` the tests and the page select by."""
    for widget, name in named:
        widget.add_class(f"magi-picker-{name}")


def chat_html(turns: Sequence[ChatTurn], *, cached: Sequence[str] = ()) -> str:
    """The whole history; ``cached`` holds the HTML of finished turns already drawn
    (a streaming answer redraws only its own turn)."""
    if not turns:
        return (
            '<div class="magi-chat" data-turns="0" aria-live="polite"><div class="magi-chat-empty" '
            'style="color:#57606a">No messages yet: type one below and press Send.</div></div>'
        )
    body = [cached[i] if i < len(cached) else turn_html(turn, i) for i, turn in enumerate(turns)]
    return f'<div class="magi-chat" data-turns="{len(turns)}" aria-live="polite">{"".join(body)}</div>'


class ChatView(widgets.VBox):
    """The chat panel: system prompt, history, message box, Send and Reset.

    The view keeps the conversation; the picker runs it. Children worth reading:
    ``system_text``, ``history`` (an HTML widget), ``message_text``, ``send_button``,
    ``reset_button``; :attr:`turns` and :meth:`messages`.

    Args:
        system: Initial text of the system prompt field.
    """

    def __init__(self, system: str = "") -> None:
        self.turns: list[ChatTurn] = []
        self._drawn: list[str] = []  # HTML of the finished turns, in order
        self.system_text = text_box(
            "System",
            "Optional system prompt, e.g. Answer in one short sentence. (empty: the profile's)",
            rows=2,
            value=system,
            tooltip="Sent with every message of this conversation; overrides the profile's system_prompt",
        )
        self.history = widgets.HTML(layout=widgets.Layout(margin=f"4px 0 4px {INDENT}"))
        self.message_text = text_box(
            "Message", "Your message; Send answers it with the whole conversation so far", rows=2
        )
        self.send_button = primary_button(
            "Send", "paper-plane", "Answer the message with the conversation so far (models stay loaded)"
        )
        self.reset_button = widgets.Button(
            description="Reset",
            icon="trash",
            tooltip="Forget the conversation and start a new one (the system prompt stays)",
        )
        tag(
            [
                (self.system_text, "system"),
                (self.history, "history"),
                (self.message_text, "message"),
                (self.send_button, "send"),
                (self.reset_button, "reset"),
            ]
        )
        super().__init__(children=[self.system_text, self.history, self.message_text])
        self.add_class("magi-picker-chat")
        self.draw()

    # -- the conversation ------------------------------------------------------------------
    @property
    def system(self) -> str | None:
        """The system prompt field, or None when it is blank (the defaults apply)."""
        text = self.system_text.value
        return text if text.strip() else None

    def messages(self) -> list[dict[str, str]]:
        """The finished turns as messages (user, assistant, ...), failed turns left out."""
        return history_messages(self.turns)

    def request(self) -> list[dict[str, str]]:
        """What the current (last, streaming) turn sends: the history, then its message."""
        if not self.turns or self.turns[-1].state != "streaming":
            raise RuntimeError("No turn is being answered; begin() one first.")
        return [*history_messages(self.turns[:-1]), {"role": "user", "content": self.turns[-1].user}]

    def begin(self, message: str) -> ChatTurn:
        """Add the user's message as a new turn, to be answered."""
        turn = ChatTurn(message)
        self.turns.append(turn)
        self.draw()
        return turn

    def finish(self, result: RunResult) -> None:
        """The current turn's answer is complete (or stopped: its partial text is kept)."""
        turn = self.turns[-1]
        turn.result = result
        self._drawn.append(turn_html(turn, len(self.turns) - 1))
        self.draw()

    def fail(self, error: str) -> None:
        """The current turn failed: shown, marked, and left out of the next request."""
        turn = self.turns[-1]
        turn.error = error
        self._drawn.append(turn_html(turn, len(self.turns) - 1))
        self.draw()

    def reset(self) -> None:
        """Forget every turn (the system prompt and the message box stay)."""
        self.turns.clear()
        self._drawn.clear()
        self.draw()

    def draw(self) -> None:
        """Redraw the history (finished turns from their cached HTML)."""
        self.history.value = chat_html(self.turns, cached=self._drawn)
