"""Conversations from the terminal: ``magi chat`` (piped stdin and a pseudo-terminal),
``magi ask/route --messages FILE.json`` and ``python run.py task.messages=FILE.json``,
on the tiny test models."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from magi.chat import ChatSession, chat_loop
from magi.cli import main
from magi.conversation import Conversation
from magi.runtime.pool import ModelPool
from magi.testing.runtime import FAST, REASONER, FaultInjector, TinyRuntime

from .conftest import ROOT

HARD = "Prove that the square root of 2 is irrational; explain every step."


def _env() -> dict[str, str]:
    return {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(ROOT), "TERM": "dumb"}


def _options(runtime: TinyRuntime, *extra: str) -> list[str]:
    return [a for o in [*runtime.overrides, *extra] for a in ("-o", o)]


def _chat(runtime: TinyRuntime, stdin: str | bytes, *args: str) -> subprocess.CompletedProcess[str]:
    """``magi chat`` in a subprocess with ``stdin`` piped."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run(
        [sys.executable, "-m", "magi.cli", "chat", *args],
        cwd=runtime.root,
        input=data,
        capture_output=True,
        env=_env(),
        timeout=180,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def _run_py(runtime: TinyRuntime, profile: str, messages: Path) -> subprocess.CompletedProcess[str]:
    """``python run.py profile=<profile> task.messages=<messages>`` over the tiny models."""
    return subprocess.run(
        [sys.executable, "run.py", f"profile={profile}", f"task.messages={messages}", *runtime.overrides,
         f"hydra.run.dir={runtime.root / 'hydra-run'}"],
        cwd=ROOT, capture_output=True, text=True, env=_env(), timeout=120,
    )  # fmt: skip


def _traces(out: str) -> list[str]:
    """The /trace outputs (RunResult.explain()): a "profile '...': score" line and its indented lines."""
    return re.findall(r"^profile '[^'\n]+': score .*\n(?:  .*\n)*", out, flags=re.MULTILINE)


def _prompt_tokens(trace: str) -> int:
    return int(re.search(r": (\d+) prompt \+ ", trace).group(1))  # type: ignore[union-attr]


# -- magi chat, piped --------------------------------------------------------------------------
def test_chat_piped_keeps_the_history_and_runs_the_commands(tiny_runtime: TinyRuntime) -> None:
    lines = [
        "Hello",
        "/trace",
        "And then?",
        "/trace",
        "/reset",
        "Hello",
        "/trace",
        "/help",
        "/sytem Be brief.",
        "/system Be brief.",
        "/system",
        "Hello",
        "/trace",
        "/system -",
        "/profile developmnt",
        "Still there?",
        "/profile development",
        HARD,
        "/trace",
        "//etc is a folder?",
        "/quit",
        "never read",
    ]
    proc = _chat(tiny_runtime, "\n".join(lines) + "\n", "--profile", "fast-only", *_options(tiny_runtime))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    assert not out.startswith("MAGI chat")  # piped: no banner, no prompt
    assert "fast-only> " not in out
    assert out.startswith(f">>> Hello\n[answer · fast · {FAST}]\n")
    traces = _traces(out)
    first, second, after_reset, with_system, hard = (_prompt_tokens(t) for t in traces)
    assert second > first + 8  # turn 2 carries turn 1: its message and its 8-token answer
    assert after_reset == first  # /reset forgot them
    assert with_system > first  # the system prompt is in the prompt
    assert "[conversation reset: 2 turn(s) forgotten]" in out
    for command in ("/reset", "/system", "/trace", "/profile", "/quit", "//text"):
        assert f"  {command}" in out  # /help lists it
    assert (
        "Unknown command /sytem. Did you mean '/system'? The commands are /help, /reset, /system, "
        "/trace, /profile, /quit" in out
    )
    assert "System prompt: 'Be brief.'" in out
    assert "[system prompt cleared" in out
    assert "error: Profile 'developmnt' not found" in out and "Did you mean 'development'?" in out
    assert f">>> Still there?\n[answer · fast · {FAST}]" in out  # the session went on, same profile
    assert f"[profile 'Development' (development): fast: {FAST}; powerful: {REASONER}]" in out
    assert f"[draft · fast · {FAST}]" in out and f"[refine · powerful · {REASONER}]" in out
    assert "(two-stage)" in traces[-1] and "scored: last user message of" in traces[-1]
    assert ">>> /etc is a folder?" in out  # // sends a message starting with /
    assert "never read" not in out  # /quit ended the chat


def test_chat_piped_failed_messages_print_one_line_and_the_chat_goes_on(tiny_runtime: TinyRuntime) -> None:
    stdin = b"Hello\n" + b"word " * 60 + b"\ncaf\xe9?\nHi\n"
    proc = _chat(tiny_runtime, stdin, "--profile", "fast-only", *_options(tiny_runtime, "runtime.n_ctx=64"))
    assert proc.returncode == 1, proc.stderr  # piped, and some message failed
    assert "Traceback" not in proc.stderr
    blocks = proc.stdout.split(">>> ")[1:]
    assert len(blocks) == 4
    too_long, not_utf8 = blocks[1], blocks[2]
    (failed,) = [line for line in too_long.splitlines() if line.startswith("[FAILED: ")]
    assert "does not fit the context" in failed
    assert not_utf8.splitlines()[1].startswith("[FAILED: The message is not valid Unicode text")
    assert "0xE9" in not_utf8 and len(not_utf8.strip().splitlines()) == 2
    assert blocks[3].startswith(f"Hi\n[answer · fast · {FAST}]\n")


def test_chat_system_option_and_startup_errors(tiny_runtime: TinyRuntime) -> None:
    plain = _chat(tiny_runtime, "Hello\n/trace\n", "--profile", "fast-only", *_options(tiny_runtime))
    system = _chat(
        tiny_runtime, "/system\nHello\n/trace\n", "--profile", "fast-only", "--system", "You are terse.",
        *_options(tiny_runtime),
    )  # fmt: skip
    assert plain.returncode == system.returncode == 0, system.stderr
    assert "System prompt: 'You are terse.'" in system.stdout
    assert _prompt_tokens(system.stdout) > _prompt_tokens(plain.stdout)
    bad = _chat(tiny_runtime, "Hello\n", "--profile", "fast-onyl", *_options(tiny_runtime))
    assert bad.returncode == 2 and "Did you mean 'fast-only'?" in bad.stderr
    assert "Traceback" not in bad.stderr and bad.stdout == ""
    blank = _chat(tiny_runtime, "Hello\n", "--system", "  ", *_options(tiny_runtime))
    assert blank.returncode == 2 and "The system prompt (--system) is empty" in blank.stderr


# -- the session in-process: what the models are given ---------------------------------------
def test_a_history_past_the_context_says_reset_starts_over(tiny_runtime: TinyRuntime) -> None:
    """Turns pile up until the conversation no longer fits any model's context: the
    failed turn says so and that /reset starts a new conversation; after /reset the
    same message is answered."""
    out = io.StringIO()
    overrides = [*tiny_runtime.overrides, "runtime.n_ctx=128"]
    with ChatSession.open("fast-only", overrides, out=out) as session:
        message = "Tell me more about the long river, please."
        for _ in range(30):
            if session.say(message) is None:
                break
        else:
            raise AssertionError("the history never outgrew the context")
        failed = out.getvalue().rstrip().splitlines()[-2:]
        assert failed[0].startswith("[FAILED: ") and "does not fit the context" in failed[0]
        turns = len(session.history) // 2
        hint = f"[the {turns} earlier turn(s) are part of the prompt: /reset starts a new conversation]"
        assert failed[1] == hint
        session.command("/reset")
        assert session.say(message) is not None


def test_chat_session_sends_the_history_and_keeps_failed_turns_out(tiny_runtime: TinyRuntime) -> None:
    faults = FaultInjector()
    out = io.StringIO()
    pool = ModelPool(backend_factory=faults)
    session = ChatSession.open("fast-only", tiny_runtime.overrides, system="Be kind.", pool=pool, out=out)
    with pool, session:
        first = session.say("Hello")
        assert first is not None
        faults.fail(FAST, message="the fast model is on fire")
        assert session.say("Fails") is None  # 503: one line, not kept
        faults.heal(FAST)
        lines = io.StringIO("/reset\nAgain\n")
        assert chat_loop(session, lines, interactive=False) == 1  # one message failed in this session
    (failed,) = [line for line in out.getvalue().splitlines() if line.startswith("[FAILED: ")]
    assert "No model could answer" in failed
    sent = [p for p in faults.prompts[FAST] if isinstance(p, Conversation)]
    assert sent[0].to_dicts() == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hello"},
    ]
    assert sent[1].to_dicts() == [  # the failed turn: the history up to it
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "Fails"},
    ]
    assert [m["content"] for m in sent[-1].to_dicts()] == ["Be kind.", "Again"]  # after /reset


# -- magi chat through a pseudo-terminal ------------------------------------------------------
DRIVER = """
import json, sys
from magi.chat import ChatSession, chat_loop
from magi.runtime.pool import ModelPool
from magi.testing.runtime import FAST, FaultInjector

faults = FaultInjector()
faults.pace(FAST, gap=float(sys.argv[2]))  # a slow model: Ctrl-C lands mid-answer
pool = ModelPool(backend_factory=faults)
with ChatSession.open("fast-only", json.loads(sys.argv[1]), pool=pool) as session:
    code = chat_loop(session)
pool.close()
sys.exit(code)
"""


class _Terminal:
    """The parent side of a pty: write keys, read the screen until a text appears."""

    def __init__(self, fd: int, pid: int) -> None:
        self.fd = fd
        self.pid = pid  # the chat's; 0 once it has ended
        self.screen = ""
        self.cursor = 0  # where the next expect looks from: after the last match (as pexpect)

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def expect(self, text: str, timeout: float = 60.0) -> str:
        """Read until ``text`` appears after the last match; return the screen so far."""
        deadline = time.monotonic() + timeout
        while text not in self.screen[self.cursor :]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} did not appear; the screen:\n{self.screen}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # the child ended
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the chat ended before {text!r}; the screen:\n{self.screen}")
                self.screen += chunk.decode("utf-8", "replace").replace("\r\n", "\n")
        self.cursor = self.screen.index(text, self.cursor) + len(text)
        return self.screen


def _spawn_chat(runtime: TinyRuntime, *, gap: float) -> tuple[int, int]:
    """The chat on a pty (child pid, the terminal's fd), its fast model ``gap`` s a token."""
    import pty

    script = runtime.root / "driver.py"
    script.write_text(DRIVER, encoding="utf-8")
    overrides = [*runtime.overrides, "runtime.max_tokens=12"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: the chat, its terminal the pty
        os.chdir(runtime.root)
        argv = [sys.executable, str(script), json.dumps(overrides), str(gap)]
        os.execve(sys.executable, argv, _env())
    return pid, fd


def _wait(pid: int, *, timeout: float, screen: _Terminal) -> int:
    """The child's wait status, or fail (showing the screen) if it has not ended in ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    raise AssertionError(f"the chat did not end; the screen:\n{screen.screen}")


@contextlib.contextmanager
def _chat_terminal(runtime: TinyRuntime, *, gap: float) -> Iterator[_Terminal]:
    """The chat on a pty (:func:`_spawn_chat`); a test ends it with :func:`_quit`, else it is
    killed on the way out."""
    pid, fd = _spawn_chat(runtime, gap=gap)
    term = _Terminal(fd, pid)
    try:
        yield term
    finally:
        if term.pid:
            os.kill(term.pid, 9)
            os.waitpid(term.pid, 0)
        os.close(fd)


def _quit(term: _Terminal) -> None:
    """Ctrl-D at the prompt: the chat ends with status 0 and no traceback."""
    term.send("\x04")
    status = _wait(term.pid, timeout=30, screen=term)
    term.pid = 0
    assert os.waitstatus_to_exitcode(status) == 0, term.screen
    assert "Traceback" not in term.screen


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_chat_in_a_terminal_ctrl_c_stops_an_answer_and_ctrl_d_quits(echo_runtime: TinyRuntime) -> None:
    with _chat_terminal(echo_runtime, gap=0.4) as term:
        term.expect("/help lists the commands; Ctrl-D quits.")
        term.expect("fast-only> ")
        term.send("Hello\n")
        mark = f"[answer · fast · {FAST}]\n"
        term.expect(mark)
        term.expect(":")  # a token; the next comes in 0.4 s
        term.send("\x03")  # Ctrl-C mid-answer
        screen = term.expect("[cancelled; the partial answer is kept]")
        partial = screen.split(f"[answer · fast · {FAST}]\n")[1].split("\n[cancelled")[0]
        assert 1 <= len(partial) < 12
        term.expect("fast-only> ")
        term.send("/trace\n")
        term.expect("ended: cancelled")
        term.expect("fast-only> ")
        term.send("typed but never sent")
        term.expect("sent")
        # as a person would, not within microseconds of the echo: CPython's readline loop
        # misses a SIGINT that lands between handling a key and waiting for the next one
        time.sleep(0.3)
        term.send("\x03")  # Ctrl-C at the prompt clears the line
        term.expect("fast-only> ", timeout=10)
        term.send("Again\n")
        term.expect(mark)
        term.expect("\nfast-only> ", timeout=60)  # answered in full: the prompt is back
        term.send("/reset\n")
        screen = term.expect("turn(s) forgotten]")
        assert "[conversation reset: 2 turn(s) forgotten]" in screen  # the partial turn and "Again"
        assert screen.count(f"[answer · fast · {FAST}]") == 2
        term.expect("fast-only> ")  # keys only once the prompt is up (as a person types)
        _quit(term)


# -- --messages FILE.json: magi route, magi ask, run.py ---------------------------------------------
BAD_CONVERSATIONS = [
    pytest.param([], None, "is empty", id="empty"),
    pytest.param(
        [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hello"}], 1, "role 'bot'", id="role"
    ),
    pytest.param([{"role": "user", "content": 42}], 0, "content of type int", id="content"),
    pytest.param(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        1,
        "must be the user's",
        id="ends-with-assistant",
    ),
]


def _write(tmp_path: Path, messages: object, name: str = "chat.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(messages), encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["route", "ask"])
@pytest.mark.parametrize(("messages", "index", "problem"), BAD_CONVERSATIONS)
def test_messages_bad_input_exits_2_naming_the_file_and_index(
    command: str,
    messages: list[object],
    index: int | None,
    problem: str,
    tiny_runtime: TinyRuntime,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = _write(tiny_runtime.root, messages)
    argv = [command, "--profile", "fast-only", *_options(tiny_runtime), "--messages", str(path)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {path}") and problem in captured.err
    if index is not None:
        assert f"message {index}" in captured.err
    assert "Traceback" not in captured.err
    assert ">>>" not in captured.out  # nothing was answered: the file is checked first


@pytest.mark.parametrize(("messages", "index", "problem"), BAD_CONVERSATIONS)
def test_run_py_task_messages_bad_input_exits_2(
    messages: list[object], index: int | None, problem: str, tiny_runtime: TinyRuntime
) -> None:
    path = _write(tiny_runtime.root, messages)
    proc = _run_py(tiny_runtime, "fast-only", path)
    assert proc.returncode == 2, proc.stderr
    assert f"error: {path}" in proc.stderr and problem in proc.stderr
    if index is not None:
        assert f"message {index}" in proc.stderr
    assert "Traceback" not in proc.stderr and ">>>" not in proc.stdout


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": HARD},
    {"role": "assistant", "content": "Suppose it is rational."},
    {"role": "user", "content": "Why?"},
]


def test_route_messages_scores_the_conversation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, {"messages": CONVERSATION})
    assert main(["route", "--profile", "development", "Why?", "--messages", str(path)]) == 0
    out = capsys.readouterr().out
    alone, conversation = out.split("\n\n")[1:]
    assert alone.startswith("'Why?'\n") and "-> tier fast" in alone and "scored" not in alone
    assert conversation.startswith(f"{path} (4 messages): 'Why?'\n")
    assert "-> tier powerful" in conversation  # the follow-up of a hard question is hard
    assert "  scored last user message of 3 turns, conversation +" in conversation
    assert main(["route", "--profile", "development", "--json", "--messages", str(path)]) == 0
    (plan,) = json.loads(capsys.readouterr().out)
    assert (plan["messages_file"], plan["messages"], plan["prompt"]) == (str(path), 4, "Why?")
    assert plan["tier"] == "powerful" and plan["scored"].startswith("last user message of 3 turns")
    assert main(["route", "--profile", "development"]) == 2
    assert "give at least one PROMPT or --messages FILE.json" in capsys.readouterr().err


def test_ask_messages_answers_the_conversation(
    tiny_runtime: TinyRuntime, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tiny_runtime.root, [{"role": "user", "content": "Hi"}, *CONVERSATION[2:]])
    argv = ["ask", "--profile", "fast-only", *_options(tiny_runtime), "Hello", "--messages", str(path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert ">>> Hello\n" in out and ">>> [3 messages] Why?\n" in out
    assert out.count(f"[answer · fast · {FAST}]") == 2
    rows = out.split("\n\n")[-1].splitlines()[2:]
    assert [row.split()[0] for row in rows] == ["Hello", "Why?"]


def test_run_py_task_messages_answers_the_conversation(tiny_runtime: TinyRuntime) -> None:
    path = _write(tiny_runtime.root, CONVERSATION)
    proc = _run_py(tiny_runtime, "development", path)
    assert proc.returncode == 0, proc.stderr
    assert ">>> [4 messages] Why?\n" in proc.stdout
    assert f"[draft · fast · {FAST}]" in proc.stdout and f"[refine · powerful · {REASONER}]" in proc.stdout
    assert "What is the capital of France?" not in proc.stdout  # not the built-in prompts


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_chat_in_a_terminal_second_ctrl_c_abandons_the_answer(echo_runtime: TinyRuntime) -> None:
    """The model takes 5 s a token: the first Ctrl-C ends the answer at the next one; a
    second, before that, abandons it at once, nothing of it kept."""
    with _chat_terminal(echo_runtime, gap=5.0) as term:
        term.expect("fast-only> ")
        term.send("Hello\n")
        term.expect(f"[answer · fast · {FAST}]\n")
        term.expect(":")
        time.sleep(0.5)  # into the 5 s wait (a Ctrl-C right after a token ends the answer there)
        term.send("\x03")
        time.sleep(0.3)
        start = time.monotonic()
        term.send("\x03")
        term.expect("[stopped; the answer is dropped]", timeout=4)
        assert time.monotonic() - start < 4  # before the model's next token
        term.expect("fast-only> ")
        term.send("/reset\n")
        term.expect("[conversation reset: 0 turn(s) forgotten]")
        term.expect("fast-only> ")
        _quit(term)
