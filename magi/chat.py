"""``magi chat``: a conversation with a profile in the terminal.

:class:`ChatSession` holds what a chat is: the profile's :class:`~magi.runtime.runner.Runner`,
the history (user and assistant turns, as ``{"role", "content"}`` messages), the system
prompt and the last answer's result. :func:`chat_loop` reads the user's lines and hands
them to it; ``magi.cli`` only parses the arguments.

Each line is one message (a line starting with ``/`` is a command):

* The whole history goes to :meth:`Runner.stream` with the new message, the system prompt
  as its ``system=``; the answer streams with its stage marks, as ``magi ask`` shows it
  (:class:`magi.render.StreamPrinter`), and joins the history.
* Ctrl-C during an answer ends it at its next token (:meth:`AnswerStream.cancel`): the
  text written so far is kept in the history, as the notebook's Stop keeps it (it is what
  the user saw and answers to; "go on" continues it). An answer cancelled before its
  first token leaves no turn: the message is dropped with it. A second Ctrl-C before the
  model stops abandons the answer at once (nothing of it is kept).
* An answer that fails (bad input 422, no model 503, a history too long for the context)
  prints one ``[FAILED: ...]`` line; the message is not kept, the session goes on. A
  history too long adds a line saying that ``/reset`` starts a new conversation.
* Ctrl-C at the prompt clears the line; Ctrl-D (end of input) ends the chat, exit 0.

With piped input there is no prompt and no banner: each line is echoed as ``>>> line``
before its answer (the transcript reads like ``magi ask``'s), and the exit status is 1 if
some message failed (0 otherwise). Interactive input is read with :mod:`readline`
(editing and recall).

Example:
    >>> session = ChatSession.open("demo", system="Be brief.")     # doctest: +SKIP
    >>> session.say("Why is the sky blue?")                       # doctest: +SKIP
    >>> session.history[-1]["role"]                               # doctest: +SKIP
    'assistant'
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from magi.errors import EXIT_PARTIAL, MAGIException, did_you_mean
from magi.prompt import check_prompt
from magi.render import StreamPrinter, first_line
from magi.runtime.backend import PromptTooLongError

if TYPE_CHECKING:
    from magi.config.app import MagiConfig
    from magi.runtime.pool import ModelPool
    from magi.runtime.runner import Runner
    from magi.runtime.trace import RunResult

#: The chat's commands and what each does (``/help`` prints them).
COMMANDS: dict[str, str] = {
    "/help": "this list",
    "/reset": "forget the conversation (the system prompt stays)",
    "/system": "/system TEXT sets the system prompt; /system shows it; /system - clears it",
    "/trace": "the last answer's routing trace",
    "/profile": "/profile NAME switches profile (the conversation goes on); /profile shows it",
    "/quit": "end the chat (so does Ctrl-D)",
}

#: Said after a turn whose history no longer fits the context.
RESET_HINT = "/reset starts a new conversation"

HELP = "\n".join(
    [
        *(f"  {name:<9} {what}" for name, what in COMMANDS.items()),
        "  //text    sends '/text' as a message",
        "  Ctrl-C stops an answer (the text so far is kept) or clears the line; Ctrl-D quits.",
    ]
)


@dataclass
class ChatSession:
    """A chat on one profile at a time: history, system prompt, the runner answering.

    Args:
        runner: The open runner of ``profile``.
        profile: The profile's option name (``demo``), as composed.
        overrides: Hydra overrides every profile of the session is composed with.
        system: The system prompt (None: the profile's or the model's default applies).
        conf_dir: Config folder (default: :func:`magi.config.compose.default_conf_dir`).
        pool: A model pool every runner of the session shares (a test's
            :class:`~magi.testing.runtime.FaultInjector` pool); default: each runner
            has its own, closed with it.
        out: Where answers and notes go.

    Attributes:
        history: The conversation so far, user and assistant turns (no system prompt:
            it goes as ``system=``, so ``/system`` changes it for the whole history).
        last: The last answer's result (``/trace``), a cancelled one's too.
        failed: Messages that failed (bad input, no model, too long for the context).
        turns_asked: Messages sent, failed ones included.
    """

    runner: Runner
    profile: str | None
    overrides: list[str] = field(default_factory=list)
    system: str | None = None
    conf_dir: Path | None = None
    pool: ModelPool | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)
    history: list[dict[str, str]] = field(default_factory=list)
    last: RunResult | None = None
    failed: int = 0
    turns_asked: int = 0

    @property
    def turns(self) -> int:
        """Turns in the history (a user message and its answer each)."""
        return len(self.history) // 2

    @classmethod
    def open(
        cls,
        profile: str | None = None,
        overrides: Sequence[str] = (),
        *,
        system: str | None = None,
        conf_dir: Path | None = None,
        pool: ModelPool | None = None,
        out: TextIO | None = None,
    ) -> ChatSession:
        """Compose ``profile`` and open its runner (no model is loaded yet).

        Raises:
            MAGIException: the profile, an override or the system prompt is wrong.
        """
        if system is not None:
            check_prompt(system, what="The system prompt (--system)")
        runner = _open_runner(_compose(profile, overrides, conf_dir), pool)
        return cls(
            runner,
            profile,
            list(overrides),
            system=system,
            conf_dir=conf_dir,
            pool=pool,
            out=out if out is not None else sys.stdout,
        )

    # -- the conversation ------------------------------------------------------------------
    def say(self, text: str) -> RunResult | None:
        """Answer ``text`` after the history; stream it to :attr:`out`; keep the turn.

        Returns the result (kept in the history, a cancelled one with its partial text),
        or None when the answer failed or was abandoned (the message is not kept).
        """
        messages = [*self.history, {"role": "user", "content": text}]
        stream = self.runner.stream(messages, system=self.system)
        printer = StreamPrinter(self.out)
        presses = 0

        def on_interrupt(signum: int, frame: object) -> None:
            nonlocal presses
            presses += 1
            if presses == 1:
                stream.cancel()  # ends at the next token, text kept
            else:
                raise KeyboardInterrupt  # the model did not stop yet: abandon the answer

        with _sigint(on_interrupt):
            try:
                check_prompt(text, what="The message")  # named as the user typed it, not by index
                for event in stream:
                    printer.event(event)
            except KeyboardInterrupt:
                stream.close()
                printer.note("stopped; the answer is dropped")
                return None
            except MAGIException as exc:
                self.failed += 1
                printer.fail(exc)
                if isinstance(exc, PromptTooLongError) and self.history:
                    printer.note(f"the {self.turns} earlier turn(s) are part of the prompt: {RESET_HINT}")
                return None
        result = stream.result
        assert result is not None
        self.last = result
        if result.cancelled:
            if not result.text:
                printer.note("cancelled before the first token; the message is dropped")
                return result
            printer.note("cancelled; the partial answer is kept")
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": result.text}]
        return result

    # -- commands --------------------------------------------------------------------------
    def command(self, line: str) -> bool:
        """Run one ``/command`` line; False when the chat should end (``/quit``)."""
        name, _, rest = line.strip().partition(" ")
        arg = rest.strip()
        if name == "/quit":
            return False
        if name == "/help":
            self._print(HELP)
        elif name == "/reset":
            turns = self.turns
            self.history.clear()
            self.last = None
            kept = " (system prompt kept)" if self.system is not None else ""
            self._note(f"conversation reset: {turns} turn(s) forgotten{kept}")
        elif name == "/system":
            self._system(arg)
        elif name == "/trace":
            self._print(self.last.explain() if self.last is not None else "No answer yet: nothing to trace.")
        elif name == "/profile":
            self._profile(arg)
        else:
            self._print(
                f"Unknown command {name}.{did_you_mean(name, list(COMMANDS))} "
                f"The commands are {', '.join(COMMANDS)} (//text sends '/text')."
            )
        return True

    def _system(self, text: str) -> None:
        if not text:
            shown = (
                repr(self.system) if self.system is not None else "none (the profile's or model's default)"
            )
            self._print(f"System prompt: {shown}")
            return
        if text == "-":
            self.system = None
            self._note("system prompt cleared (the profile's or model's default applies)")
            return
        try:
            self.system = check_prompt(text, what="The system prompt")
        except MAGIException as exc:
            self._print(f"error: {first_line(str(exc))}")
            return
        self._note("system prompt set")

    def _profile(self, name: str) -> None:
        """Switch to profile ``name``: its runner opens before the old one closes, so a
        profile that does not compose or resolve leaves the session as it was."""
        if not name:
            from magi.profiles import ProfileManager

            manager = ProfileManager(self.conf_dir / "profile" if self.conf_dir else None)
            self._print(
                f"Profile {self.runner.profile.name!r} ({self.profile or 'the default'}); "
                f"/profile NAME switches to one of: {', '.join(manager.list_profiles())}"
            )
            return
        try:
            runner = _open_runner(_compose(name, self.overrides, self.conf_dir), self.pool)
        except MAGIException as exc:
            self._print(f"error: {exc}")
            return
        self.runner.close()
        self.runner, self.profile, self.last = runner, name, None
        self._note(f"profile {runner.profile.name!r} ({name}): {tier_models(runner)}")

    # -- output ----------------------------------------------------------------------------
    def banner(self) -> str:
        """The interactive chat's first line: profile, tiers and models, how to get help."""
        return (
            f"MAGI chat on profile {self.runner.profile.name!r} ({tier_models(self.runner)}). "
            "/help lists the commands; Ctrl-D quits."
        )

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _note(self, text: str) -> None:
        self._print(f"[{text}]")

    def close(self) -> None:
        """Close the runner (and with it the models of its own pool)."""
        self.runner.close()

    def __enter__(self) -> ChatSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tier_models(runner: Runner) -> str:
    """``fast: model_a; powerful: model_b, model_c``: who answers in each tier."""
    return "; ".join(
        f"{tier}: {', '.join(members) or '(no model)'}" for tier, members in runner.tier_members.items()
    )


def _compose(profile: str | None, overrides: Sequence[str], conf_dir: Path | None) -> MagiConfig:
    from magi.config import compose

    return compose(profile, list(overrides), conf_dir=conf_dir)


def _open_runner(config: MagiConfig, pool: ModelPool | None) -> Runner:
    from magi.runtime.runner import Runner

    return Runner(config, pool=pool)


class _sigint:  # noqa: N801 - used as a context manager, like a function
    """SIGINT calls ``handler`` inside the block (main thread only; elsewhere a no-op)."""

    def __init__(self, handler: Callable[[int, object], None]) -> None:
        self.handler = handler
        self.previous: object = None
        self.active = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> None:
        if self.active:
            self.previous = signal.signal(signal.SIGINT, self.handler)

    def __exit__(self, *exc: object) -> None:
        if self.active:
            signal.signal(signal.SIGINT, self.previous)  # type: ignore[arg-type]


# -- the loop ------------------------------------------------------------------------------
def chat_loop(session: ChatSession, stdin: TextIO | None = None, *, interactive: bool | None = None) -> int:
    """Read lines from ``stdin`` (default: ``sys.stdin``) until ``/quit`` or end of input.

    ``interactive`` (default: whether ``stdin`` is a terminal) shows a banner and a
    prompt and reads through :func:`input` with :mod:`readline`; otherwise each line is
    echoed as ``>>> line`` before its answer. Returns the exit status: 0, or 1 when a
    piped session had a message fail.
    """
    stdin = stdin if stdin is not None else sys.stdin
    if interactive is None:
        interactive = stdin.isatty()
    if hasattr(stdin, "reconfigure"):
        # a byte that is not UTF-8 reaches check_prompt (one error line) instead of ending the chat
        stdin.reconfigure(errors="surrogateescape")
    read = _terminal_reader(session) if interactive and stdin is sys.stdin else _line_reader(stdin)
    if interactive:
        session._print(session.banner())
    while True:
        try:
            line = read()
        except EOFError:
            if interactive:
                session._print("")
            break
        except KeyboardInterrupt:  # at the prompt: the line is cleared, ask again
            session._print("")
            continue
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        try:
            if line.startswith("/") and not line.startswith("//"):
                if not session.command(line):
                    break
                continue
            text = line[1:] if line.startswith("//") else line
            if not interactive:  # the transcript reads as magi ask's: a blank line between answers
                session._print(("\n" if session.turns_asked else "") + f">>> {text}")
            session.turns_asked += 1
            session.say(text)
        except KeyboardInterrupt:  # between answers (opening a profile): back to the prompt
            session._print("\n[interrupted]")
    return EXIT_PARTIAL if session.failed and not interactive else 0


def _line_reader(stdin: TextIO) -> Callable[[], str]:
    def read() -> str:
        line = stdin.readline()
        if not line:
            raise EOFError
        return line

    return read


def _terminal_reader(session: ChatSession) -> Callable[[], str]:
    """:func:`input` with line editing and recall (readline, where Python has it)."""
    with contextlib.suppress(ImportError):  # a Python built without readline: plain input()
        import readline  # noqa: F401 - importing it gives input() editing and history

    def read() -> str:
        return input(f"{session.profile or 'magi'}> ")

    return read
