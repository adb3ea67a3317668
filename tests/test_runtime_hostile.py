"""The runtime under hostile conditions: concurrent loads, malformed prompts, model
files changed under a loaded model, prompts that overflow a two-stage refine, and
load limits under concurrency (issue 10).

Tests that could kill the interpreter (SIGBUS from a truncated memory-mapped file) or
that must see the real file descriptors 1 and 2 (pytest captures them) run their
scenario in a child process and check what it printed and how it ended.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from magi.errors import ConfigError
from magi.prompt import InvalidPromptError
from magi.runtime.backend import PromptTooLongError
from magi.runtime.runner import NoModelAnsweredError
from magi.testing import echo_completion, write_tiny_model
from magi.testing.runtime import FAST, REASONER, FaultInjector, TinyRuntime, tagged

ROOT = Path(__file__).resolve().parents[1]


def _run_child(script: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter with the project importable; output captured
    through pipes (so fds 1 and 2 are pipes the child can check)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


# -- item 2: concurrent loads leave stdout and stderr where they were -----------------------
CONCURRENT_LOADS = """
import os, sys, threading
from pathlib import Path
from magi.config.model_settings import LoadSettings
from magi.runtime.backend import GenerationSettings, ModelSpec
from magi.runtime.llama import LlamaBackend
from magi.testing.tiny_gguf import write_tiny_model

folder = Path(sys.argv[1])
paths = [write_tiny_model(folder / f"m{i}.gguf", seed=i) for i in range(8)]

def where(fd):
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, os.readlink(f"/proc/self/fd/{fd}"))

before = {fd: where(fd) for fd in (1, 2)}
errors = []
start = threading.Barrier(len(paths))

def work(i, path):
    try:
        start.wait()
        for round in range(4):
            backend = LlamaBackend(ModelSpec(model_id=f"m{i}", path=path, load=LoadSettings(n_ctx=64)))
            backend.load()
            "".join(backend.stream("Hi", GenerationSettings(max_tokens=2)))
            backend.close()
    except Exception as exc:  # reported below, on the restored stderr
        errors.append(repr(exc))

threads = [threading.Thread(target=work, args=(i, p)) for i, p in enumerate(paths)]
for t in threads:
    t.start()
for t in threads:
    t.join()
after = {fd: where(fd) for fd in (1, 2)}
print("stdout still reaches the parent", flush=True)
os.write(1, b"fd 1 too\\n")
print("stderr still reaches the parent", file=sys.stderr, flush=True)
os.write(2, b"fd 2 too\\n")
print("ERRORS", errors, file=sys.stderr, flush=True)
print("SAME", before == after, before, after, flush=True)
"""


def test_concurrent_loads_and_closes_keep_stdout_and_stderr(tmp_path: Path) -> None:
    """8 threads load, run and close 8 different tiny models 4 times each, at once.
    llama-cpp-python's verbose=False swaps fds 1 and 2 during a load; unserialised,
    one load 'restores' another's /dev/null and the output is lost for good."""
    done = _run_child(CONCURRENT_LOADS, str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "stdout still reaches the parent" in done.stdout and "fd 1 too" in done.stdout
    assert "stderr still reaches the parent" in done.stderr and "fd 2 too" in done.stderr
    assert "ERRORS []" in done.stderr
    assert "SAME True" in done.stdout, done.stdout


# -- item 4: a model file changed under a loaded model ----------------------------------------
TRUNCATE_IN_PLACE = """
import sys
from pathlib import Path
from magi.testing.runtime import FAST, REASONER, TinyRuntime

env = TinyRuntime.create(Path(sys.argv[1]))
mmap = sys.argv[2]
with env.runner("development", "scorer=tagged", "runtime.failure_threshold=2",
                f"runtime.use_mmap={mmap}") as runner:
    print("USE_MMAP", runner.specs[FAST].load.use_mmap, flush=True)
    print("FIRST", runner.run("Hi").model_id, flush=True)
    path = env.path(FAST)
    with path.open("r+b") as handle:  # in place: same inode, half the bytes
        handle.truncate(path.stat().st_size // 2)
    for attempt in range(3):
        result = runner.run("Hi again")
        print("ANSWERED_BY", result.model_id, flush=True)
        for fallback in result.fallbacks:
            print("FALLBACK", fallback.model_id, fallback.error, flush=True)
    print("STATE", runner.status()[FAST]["state"], flush=True)
"""


@pytest.mark.parametrize("mmap", ["true", "false"])
def test_a_model_file_truncated_in_place_fails_cleanly(tmp_path: Path, mmap: str) -> None:
    """Truncating a memory-mapped model's file used to kill the process with SIGBUS on
    the next generation. Now the change is noticed first: the model is closed, fails
    with a message naming the file and how to replace models, and its circuit opens."""
    done = _run_child(TRUNCATE_IN_PLACE, str(tmp_path), mmap)
    assert done.returncode == 0, f"child died with {done.returncode}: {done.stderr[-2000:]}"
    out = done.stdout
    path = tmp_path / "models" / "Qwen3-4B-Q4_K_M.gguf"
    assert f"USE_MMAP {mmap == 'true'}" in out
    assert "FIRST qwen3_4p0b_q4km_fast" in out
    assert out.count("ANSWERED_BY deepseek_r10528qwen3_8p0b_q4km_powerful") == 3  # failed over
    fallbacks = [line for line in out.splitlines() if line.startswith("FALLBACK")]
    assert len(fallbacks) == 2  # two failures open the circuit; the third request skips it
    first = fallbacks[0]
    assert "BackendError" in first and str(path) in first and "changed on disk" in first
    assert "file is truncated" in first and "renaming it over the old one" in first
    assert "use_mmap=false" in first
    assert "STATE open" in out


def test_a_model_file_overwritten_with_garbage_fails_instead_of_answering(tiny_runtime: TinyRuntime) -> None:
    """Same size, same inode, garbage bytes: used to give empty answers reported as success."""
    path = tiny_runtime.path(FAST)
    with tiny_runtime.runner("fast-only", "runtime.failure_threshold=1") as runner:
        assert runner.run("Hi").completion_tokens == 8
        size = path.stat().st_size
        with path.open("r+b") as handle:
            handle.write(b"\x00garbage" * (size // 8))
        assert path.stat().st_size == size
        with pytest.raises(NoModelAnsweredError) as info:
            runner.run("Hi")
        message = str(info.value)
        assert f"{FAST}: BackendError: Model '{FAST}': its file {path} changed on disk" in message
        assert "not a GGUF file" in message
        assert runner.status()[FAST]["state"] == "open"
        assert not runner.pool.backend(FAST).loaded  # closed, not left serving garbage


def test_a_model_file_replaced_by_rename_is_reloaded(tiny_runtime: TinyRuntime, tmp_path: Path) -> None:
    """The safe way to update a model: write the new file beside it and rename it over."""
    path = tiny_runtime.path(FAST)
    with tiny_runtime.runner("fast-only", "runtime.prompt_template='{prompt}'") as runner:
        random_answer = runner.run("Hello").text
        assert set(random_answer) != {"o"}
        new = write_tiny_model(path.with_name("incoming.gguf"), echo=True)
        os.replace(new, path)
        result = runner.run("Hello")
        assert result.text == echo_completion("Hello", 8)  # the new weights answer
        assert result.fallbacks == []
        assert runner.status()[FAST]["state"] == "closed"
        runner._probe(FAST)  # healthy: unchanged since the reload


def test_health_probe_notices_a_changed_model_file(tiny_runtime: TinyRuntime) -> None:
    path = tiny_runtime.path(FAST)
    with tiny_runtime.runner("fast-only") as runner:
        runner.run("Hi")
        assert runner.health.probe_all() == {FAST: True}
        good = path.read_bytes()
        with path.open("r+b") as handle:
            handle.truncate(len(good) // 2)
        assert runner.health.probe_all() == {FAST: False}
        error = runner.status()[FAST]["last_probe"]["error"]
        assert str(path) in error and "changed on disk" in error and "file is truncated" in error
        # replaced by rename with a valid file: healthy again, reloaded on the next request
        incoming = path.with_name("incoming.gguf")
        incoming.write_bytes(good)
        os.replace(incoming, path)
        assert runner.health.probe_all() == {FAST: True}
        assert runner.run("Hi").completion_tokens == 8


def test_use_mmap_reaches_each_model_spec(tiny_runtime: TinyRuntime) -> None:
    with tiny_runtime.runner(
        "development", "runtime.use_mmap=false", f"+runtime.models.{REASONER}.use_mmap=true"
    ) as runner:
        assert (runner.specs[FAST].load.use_mmap, runner.specs[REASONER].load.use_mmap) == (False, True)
        assert runner.run("Hi").completion_tokens == 8
    with tiny_runtime.runner("fast-only") as runner:
        assert runner.specs[FAST].load.use_mmap is True


# -- item 3: input that can never succeed is the request's fault, not the model's -----------
BAD_TEXT = "caf\udce9"  # what Python makes of the bytes b"caf\xe9" in a UTF-8 argv


def test_a_prompt_that_is_not_valid_unicode_is_a_422_and_never_opens_a_circuit(
    tiny_runtime: TinyRuntime,
) -> None:
    with tiny_runtime.runner("development", "runtime.failure_threshold=1") as runner:
        for call in (runner.run, runner.route, lambda p: list(runner.stream(p))):
            with pytest.raises(InvalidPromptError) as info:
                call(BAD_TEXT)
            assert info.value.status_code == 422
            message = str(info.value)
            assert "position 3" in message and "U+DCE9" in message and "byte 0xE9" in message
        with pytest.raises(InvalidPromptError, match="Prompt 2 of 3 is not valid Unicode text"):
            runner.run_many(["Hi", BAD_TEXT, "Hello"], progress=False)
        assert runner.pool.stats.loads == 0  # refused before any model was asked
        assert {m: s["state"] for m, s in runner.status().items()} == {FAST: "closed", REASONER: "closed"}
        assert runner.run("Hi").model_id == FAST


@pytest.mark.parametrize("blank", ["", "   ", "\n\t"])
def test_an_empty_or_blank_prompt_is_a_422_everywhere(tiny_runtime: TinyRuntime, blank: str) -> None:
    """The same rule as run.py's prompt='' (config), for the Runner and `magi ask`."""
    with tiny_runtime.runner("fast-only") as runner:
        for call in (runner.run, runner.route, lambda p: list(runner.stream(p))):
            with pytest.raises(InvalidPromptError, match="is empty") as info:
                call(blank)
            assert info.value.status_code == 422
        assert runner.pool.stats.loads == 0
    from magi.cli import main

    argv = ["ask", "--profile", "fast-only", *[a for o in tiny_runtime.overrides for a in ("-o", o)]]
    assert main([*argv, blank]) == 2


def test_prompts_over_every_models_context_never_count_against_a_circuit(tiny_runtime: TinyRuntime) -> None:
    long_prompt = "word " * 80  # about 400 tokens: over n_ctx=256 of both models
    with tiny_runtime.runner("development", "scorer=tagged", "runtime.failure_threshold=1") as runner:
        for score in (1.0, 9.0, 1.0, 9.0, 1.0):  # one stage, and two-stage (draft and refine)
            with pytest.raises(PromptTooLongError) as info:
                runner.run(tagged(long_prompt, score))
            assert info.value.status_code == 422
        status = runner.status()
        assert {m: (s["state"], s["consecutive_failures"]) for m, s in status.items()} == {
            FAST: ("closed", 0),
            REASONER: ("closed", 0),
        }
        assert runner.run("Hi").model_id == FAST


def _magi(*args: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LC_ALL": "C.UTF-8", "PYTHONUTF8": "1"}
    return subprocess.run(
        [sys.executable.encode(), b"-m", b"magi.cli", *args], capture_output=True, timeout=120, env=env
    )


@pytest.mark.parametrize("command", [b"ask", b"route"])
def test_cli_refuses_an_argument_that_is_not_utf8(command: bytes) -> None:
    done = _magi(command, b"fine", b"caf\xe9")
    assert done.returncode == 2
    err = done.stderr.decode("utf-8", errors="replace")
    assert "error: argument 3 is not valid UTF-8 (byte 0xE9 at position 3)" in err
    assert "Traceback" not in err


# -- item 8: a refine prompt that overflows the context ------------------------------------------
def _refine_runner(env: TinyRuntime, recorder: FaultInjector, *overrides: str):
    return env.runner(
        "development",
        "scorer=tagged",
        "profile.two_stage.stage1_max_tokens=200",  # more than n_ctx=256 leaves after the prompt
        "runtime.repetition_stop=false",  # the echo model loops; these tests need whole drafts
        *overrides,
        backend_factory=recorder,
    )


def test_a_refine_prompt_over_the_context_gets_a_shortened_draft(echo_runtime: TinyRuntime) -> None:
    """A 108-token prompt fits n_ctx=256 alone, but prompt + draft + template did not:
    the request failed with 422. Now the draft budget stops at what the context leaves,
    and the refine prompt holds as much of the draft as fits, beside room for the answer."""
    prompt = tagged("word " * 20, 9.0)  # 108 tokens with the completion template
    recorder = FaultInjector()
    with _refine_runner(echo_runtime, recorder) as runner:
        result = runner.run(prompt)
        fast, reasoner = runner.pool.backend(FAST), runner.pool.backend(REASONER)
        draft_prompt_tokens = fast.count_prompt_tokens(prompt, recorder.settings[FAST][0])
        sent = recorder.prompts[REASONER][0]
        sent_tokens = reasoner.count_prompt_tokens(sent, recorder.settings[REASONER][0])
        templated = reasoner.inner.format_prompt(sent, recorder.settings[REASONER][0])  # "Q: ...\nA:"
    draft, refine = result.stages
    assert (draft.model_id, refine.model_id) == (FAST, REASONER)
    assert draft_prompt_tokens > 100
    # the draft's budget is what the context leaves after its prompt, not 200
    assert recorder.settings[FAST][0].max_tokens == 256 - draft_prompt_tokens == draft.completion_tokens
    assert draft.note == (
        f"token budget cut from 200 to {256 - draft_prompt_tokens}: what n_ctx=256 leaves "
        f"after the {draft_prompt_tokens}-token prompt"
    )
    # the refine prompt: the prompt and the draft's beginning, leaving the answer's 8 tokens
    assert result.draft is not None and len(result.draft) == draft.completion_tokens
    kept = sent.split("Here is a draft answer:\n", 1)[1].split("\n\nImprove the draft", 1)[0]
    assert 0 < len(kept) < len(result.draft) and result.draft.startswith(kept)
    assert sent.startswith(prompt)
    assert sent_tokens == refine.prompt_tokens <= 256 - 8
    assert refine.note is not None and refine.note.startswith("draft cut from ")
    assert refine.note.endswith("tokens to fit n_ctx=256 with room for the answer")
    assert refine.completion_tokens == 8 and result.text == echo_completion(templated, 8)
    assert f"note: {refine.note}" in result.explain() and f"note: {draft.note}" in result.explain()
    assert result.to_dict()["stages"][1]["note"] == refine.note


def test_a_refine_template_over_the_context_answers_in_one_stage(echo_runtime: TinyRuntime) -> None:
    prompt = tagged("word " * 36, 9.0)  # fits alone; with the refine template it cannot
    recorder = FaultInjector()
    with _refine_runner(echo_runtime, recorder) as runner:
        result = runner.run(prompt)
    draft, refine = result.stages
    assert recorder.prompts[REASONER] == [prompt]  # the prompt itself, no draft
    assert refine.note is not None and refine.note.startswith("answered the prompt alone")
    assert "n_ctx=256" in refine.note
    assert result.text == ":" * 8  # the echo model repeats the end of "Q: <prompt>\nA:"
    assert draft.completion_tokens > 0 and result.fallbacks == []


def test_a_draft_budget_above_any_context_is_refused(echo_runtime: TinyRuntime) -> None:
    with pytest.raises(ConfigError) as info:
        echo_runtime.compose("development", "profile.two_stage.stage1_max_tokens=100000000000000000000")
    assert "stage1_max_tokens" in str(info.value) and "131072" in str(info.value)
