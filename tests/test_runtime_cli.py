"""Command lines of the runtime: ``magi route`` (no model loaded) and ``python run.py``
with task ``run`` on tiny models."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import magi
from magi.cli import main
from magi.testing.runtime import FAST, REASONER, FaultInjector, TinyRuntime, tagged

from .conftest import ROOT

EASY = "Why is the sky blue?"
HARD = "Prove that the square root of 2 is irrational; explain every step."


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120
    )


def _reader_gone(command: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``command``, read its first line, close the pipe (``| head -1``): (status, stderr)."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()  # the first line, then the reader is gone
        proc.stdout.close()
        try:
            status = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"{command[1]} kept running after its reader closed the pipe") from None
        return status, proc.stderr.read().decode()


# -- magi route ------------------------------------------------------------------------------
def test_route_prints_score_reasons_tier_and_stage_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "--profile", "development", EASY, HARD]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Profile 'Development': scorer heuristic; tiers fast <= 5, powerful <= .inf")
    easy, hard = out.split(f"'{EASY}'")[1].split(f"'{HARD}'")
    assert "-> tier fast (max_score 5)" in easy
    assert "why    reasoning +" in easy
    assert "plan   one stage: answer on fast (<= 256 tokens)" in easy
    assert "-> tier powerful (max_score .inf)" in hard
    assert "plan   two stages: draft on fast (<= 500 tokens) -> refine on powerful" in hard


def test_route_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "--profile", "development", "--json", "--top", "2", EASY, HARD]) == 0
    easy, hard = json.loads(capsys.readouterr().out)
    assert (easy["prompt"], easy["tier"], easy["two_stage"], easy["max_score"]) == (EASY, "fast", False, 5.0)
    assert easy["stages"] == [{"role": "answer", "tier": "fast", "max_tokens": 256}]
    assert (hard["tier"], hard["two_stage"], hard["max_score"]) == ("powerful", True, "Infinity")
    assert hard["stages"] == [
        {"role": "draft", "tier": "fast", "max_tokens": 500},
        {"role": "refine", "tier": "powerful", "max_tokens": 256},
    ]
    top = hard["top_contributions"]
    assert len(top) == 2 and abs(top[0]["points"]) >= abs(top[1]["points"])
    assert top[0]["points"] == hard["contributions"][top[0]["name"]]
    assert hard["score"] > 5.0 and hard["explanation"].startswith(f"{hard['score']:.2f} = ")


def test_route_overrides_and_exact_boundaries(capsys: pytest.CaptureFixture[str]) -> None:
    above = math.nextafter(5.0, math.inf)
    args = ["route", "--profile", "development", "--json", "-o", "scorer=tagged"]
    assert main([*args, tagged("a", 5.0), tagged("b", above)]) == 0
    at, over = json.loads(capsys.readouterr().out)
    assert (at["score"], at["tier"], at["two_stage"]) == (5.0, "fast", False)
    assert (over["score"], over["tier"], over["two_stage"]) == (above, "powerful", True)
    assert main([*args, "-o", "profile.two_stage.enabled=false", tagged("c", 9.0)]) == 0
    (single,) = json.loads(capsys.readouterr().out)
    assert [s["role"] for s in single["stages"]] == ["answer"]


def test_route_shows_a_models_own_answer_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The stage plan uses the runner's rule on each model's own settings: a model of the
    tier with ``runtime.models.<id>.max_tokens`` gets its own budget in the plan."""
    from magi.runtime.resolve import resolve_models

    tiny = TinyRuntime.create(tmp_path)
    resolve_models(tiny.compose())  # discovers the tiny models and writes the registry
    options = [arg for override in tiny.overrides for arg in ("-o", override)]
    own = ["-o", f"+runtime.models.{FAST}.max_tokens=3"]
    assert main(["route", "--profile", "development", *options, *own, EASY]) == 0
    assert f"plan   one stage: answer on fast (<= 3 tokens on {FAST})" in capsys.readouterr().out
    assert main(["route", "--profile", "development", "--json", *options, *own, EASY]) == 0
    (plan,) = json.loads(capsys.readouterr().out)
    assert plan["stages"] == [{"role": "answer", "tier": "fast", "max_tokens": 8, "models": {FAST: 3}}]
    assert main(["route", "--profile", "development", "--json", *options, EASY]) == 0
    (plan,) = json.loads(capsys.readouterr().out)
    assert plan["stages"] == [{"role": "answer", "tier": "fast", "max_tokens": 8, "models": {FAST: 8}}]


def test_route_default_profile_is_the_configs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "Hi"]) == 0
    assert capsys.readouterr().out.startswith(f"Profile {magi.compose().profile.name!r}:")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "nope"], "Profile 'nope' not found"),
        (["--profile", "developmnt"], "Did you mean 'development'?"),
        (["-o", "profile.two_stage.enabled=maybe"], "profile.two_stage.enabled"),
    ],
)
def test_route_user_errors_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", *args, "Hi"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    if "--profile" in args:
        assert "Available profiles: demo, demo-single, development, fast-only, production" in err


def test_route_loads_no_model_and_needs_no_model_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from magi.models.discovery import ModelDiscoveryService
    from magi.runtime.llama import LlamaBackend

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("magi route must not discover or load models")

    monkeypatch.setattr(LlamaBackend, "load", forbidden)
    monkeypatch.setattr(ModelDiscoveryService, "refresh", forbidden)
    monkeypatch.setattr(ModelDiscoveryService, "discover", forbidden)
    monkeypatch.chdir(tmp_path)  # models.dirs=[models] does not exist here
    assert main(["route", "--profile", "production", "-o", f"models.dirs=['{tmp_path / 'none'}']", HARD]) == 0
    assert "-> tier powerful" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # no models folder, no registry written


def test_route_does_not_import_llama_cpp(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from magi.cli import main\n"
        f"code = main(['route', '--profile', 'development', {HARD!r}])\n"
        "assert 'llama_cpp' not in sys.modules, 'llama_cpp was imported'\n"
        "sys.exit(code)\n"
    )
    proc = _run("-c", code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "two stages: draft on fast" in proc.stdout
    assert list(tmp_path.iterdir()) == []


# -- python run.py (task run) ------------------------------------------------------------------------
def test_run_py_answers_the_builtin_prompts_on_tiny_models(tiny_runtime: TinyRuntime) -> None:
    run_dir = tiny_runtime.root / "hydra-run"
    proc = _run("run.py", "profile=development", f"hydra.run.dir={run_dir}", *tiny_runtime.overrides)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    from magi.tasks.run import BUILTIN_PROMPTS

    for prompt in BUILTIN_PROMPTS:
        assert f">>> {prompt}" in out
    assert f"[answer · fast · {FAST}]" in out
    assert f"[draft · fast · {FAST}]" in out and f"[refine · powerful · {REASONER}]" in out
    header = next(line for line in out.splitlines() if line.startswith("prompt"))
    assert header.split() == [
        *("prompt", "score", "tier", "model", "tokens", "ended"),
        *("first", "token", "total", "load/wait", "tok/s", "fallbacks", "runs", "on"),
    ]
    rows = out.split(header)[1].strip().splitlines()[1:]  # below the rule
    assert len(rows) == len(BUILTIN_PROMPTS)
    assert sum("(2-stage)" in row and f"{FAST} → {REASONER}" in row for row in rows) >= 1
    assert any(row.split()[-2:] == ["0", "CPU"] for row in rows)  # no fallback, on the CPU (CI's build)
    assert "Traceback" not in proc.stderr


def test_run_py_with_its_reader_gone_ends_quietly(tiny_runtime: TinyRuntime) -> None:
    """``python run.py | head -1``: the first line read, then the pipe closed. run.py stops
    as ``magi`` does (exit 1, no traceback); Hydra printed "Error executing job" and the
    BrokenPipeError, and Python a second one at exit."""
    run_dir = tiny_runtime.root / "hydra-run-pipe"
    command = [
        sys.executable,
        "run.py",
        "profile=development",
        f"hydra.run.dir={run_dir}",
        "runtime.max_tokens=200",
        *tiny_runtime.overrides,
    ]
    status, err = _reader_gone(command, ROOT)
    assert "Traceback" not in err and "Error executing job" not in err and "BrokenPipe" not in err, err
    assert status == 1


def test_run_py_answers_one_prompt_with_the_echo_model(echo_runtime: TinyRuntime) -> None:
    proc = _run(
        "run.py",
        "profile=fast-only",
        "prompt=Hello",
        "runtime.prompt_template='{prompt}'",
        f"hydra.run.dir={echo_runtime.root / 'hydra-run'}",
        *echo_runtime.overrides,
    )
    assert proc.returncode == 0, proc.stderr
    assert f">>> Hello\n[answer · fast · {FAST}]\noooooooo\n" in proc.stdout
    table_row = proc.stdout.strip().splitlines()[-1]
    assert table_row.startswith("Hello") and FAST in table_row and " 8 " in table_row


def test_run_py_reports_a_prompt_too_long_without_traceback(tiny_runtime: TinyRuntime) -> None:
    proc = _run(
        "run.py",
        "profile=fast-only",
        f"prompt='{'word ' * 80}'",
        f"hydra.run.dir={tiny_runtime.root / 'hydra-run'}",
        *tiny_runtime.overrides,
    )
    assert proc.returncode == 2
    assert "error: The prompt does not fit the context" in proc.stderr and "n_ctx=256" in proc.stderr
    assert "Traceback" not in proc.stderr


def _table_rows(out: str) -> list[str]:
    """The routing table's rows (below the header and its rule), up to the blank line."""
    header = next(line for line in out.splitlines() if line.startswith("prompt "))
    below = out.split(header, 1)[1].split("\n\n", 1)[0]
    return below.strip().splitlines()[1:]


def test_run_py_answers_every_prompt_and_marks_the_failed_ones(tiny_runtime: TinyRuntime) -> None:
    """n_ctx=64 fits the two short built-in prompts but not the two long ones: every
    prompt is still tried, the table has all four rows, the failed ones marked with
    each model's own cause, and the run exits 1 (like a partial bench) with one line."""
    from magi.tasks.run import BUILTIN_PROMPTS

    proc = _run(
        "run.py",
        "profile=development",
        f"hydra.run.dir={tiny_runtime.root / 'hydra-run'}",
        *tiny_runtime.overrides,
        "runtime.n_ctx=64",
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    for prompt in BUILTIN_PROMPTS:
        assert f">>> {prompt}" in out
    rows = _table_rows(out)
    assert len(rows) == len(BUILTIN_PROMPTS)
    answered, failed = rows[:2], rows[2:]
    assert all(FAST in row and "FAILED" not in row for row in answered)
    assert [row.split("FAILED ")[1].split()[0] for row in failed] == ["[1]", "[2]"]
    notes = out.split("\n\n")[-1]
    for n in (1, 2):
        note = next(line for line in notes.splitlines() if line.startswith(f"[{n}] "))
        # the per-model cause, not only the headline
        assert f"{REASONER}: The prompt has" in note and "n_ctx=64" in note
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: 2 of 4 prompts failed: ") and "n_ctx=64" in line


def test_run_py_with_every_prompt_failed_exits_2(tiny_runtime: TinyRuntime) -> None:
    proc = _run(
        "run.py",
        "profile=development",
        f"hydra.run.dir={tiny_runtime.root / 'hydra-run'}",
        *tiny_runtime.overrides,
        "runtime.n_ctx=16",
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(_table_rows(proc.stdout)) == 4 and all("FAILED" in r for r in _table_rows(proc.stdout))
    assert "error: No prompt could be answered (4 of 4 failed): " in proc.stderr
    assert "n_ctx=16" in proc.stderr


def test_failed_prompt_names_each_models_error(tiny_runtime: TinyRuntime) -> None:
    """No model answers: the row's note gives each model's own error (from
    ``NoModelAnsweredError.details["errors"]``), not just "No model could answer"."""
    from magi.tasks.run import answer_prompts, routing_table

    faults = FaultInjector()
    for model_id in (FAST, REASONER):
        faults.fail(model_id, message=f"{model_id} is on fire")
    out = io.StringIO()
    with tiny_runtime.runner("development", backend_factory=faults) as runner:
        rows = answer_prompts(runner, [EASY], out=out)
    (failed,) = rows
    assert failed.error is not None and failed.result is None
    assert failed.routed_tier == "fast" and failed.score is not None
    for model_id in (FAST, REASONER):  # each model's own error, as the runner recorded it
        assert f"{model_id}: BackendError: Model '{model_id}': {model_id} is on fire" in failed.cause
    assert "No model could answer" not in failed.cause
    text = routing_table(rows)
    assert "FAILED [1]" in text and f"[1] {EASY}: {FAST}: " in text
    assert out.getvalue().endswith(
        "\n[FAILED: No model could answer the answer stage (2 failed) in tiers fast, powerful]\n"
    )


def test_table_shows_routed_and_answering_tier_after_a_fallback(tiny_runtime: TinyRuntime) -> None:
    from magi.tasks.run import routing_table

    faults = FaultInjector()
    faults.fail(FAST)
    with tiny_runtime.runner("development", backend_factory=faults) as runner:
        result = runner.run(EASY)
        healthy = tiny_runtime.runner("development")
        with healthy:
            plain = healthy.run(EASY)
    assert (result.routed_tier, result.tier) == ("fast", "powerful")
    (row,) = _table_rows(routing_table([result]))
    assert row.split()[len(EASY.split()) + 1] == "fast→powerful"
    (row,) = _table_rows(routing_table([plain]))
    assert row.split()[len(EASY.split()) + 1] == "fast"


def test_ask_answers_every_prompt_and_exits_1_when_one_failed(
    tiny_runtime: TinyRuntime, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = [*tiny_runtime.overrides, "runtime.n_ctx=64"]
    argv = ["ask", "--profile", "fast-only", *[a for o in overrides for a in ("-o", o)]]
    assert main([*argv, "Hi", "word " * 40, "Hello"]) == 1
    captured = capsys.readouterr()
    rows = _table_rows(captured.out)
    assert len(rows) == 3 and "FAILED [1]" in rows[1] and "FAILED" not in rows[0] + rows[2]
    assert "error: 1 of 3 prompts failed: " in captured.err and "n_ctx=64" in captured.err


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"magi {version('magi')}"
    entry_point = Path(sys.executable).parent / "magi"  # the installed command says the same
    proc = subprocess.run([str(entry_point), "--version"], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout.strip()) == (0, f"magi {version('magi')}")


def test_run_task_in_process(tiny_runtime: TinyRuntime, capsys: pytest.CaptureFixture[str]) -> None:
    from magi.runtime.pool import shared_pool
    from magi.tasks.run import run_task

    config = tiny_runtime.compose("production", "prompt=Hi")
    try:
        (result,) = run_task(config)
    finally:
        shared_pool().close()
    assert result["model_id"] in config.profile.enabled_models and result["completion_tokens"] == 8
    assert result["text"] in capsys.readouterr().out


def test_ask_answers_prompts_as_typed(echo_runtime: TinyRuntime, capsys) -> None:
    """Commas, quotes and parentheses need no Hydra quoting with `magi ask`."""
    overrides = [*echo_runtime.overrides, "runtime.prompt_template='{prompt}'", "runtime.max_tokens=4"]
    argv = ["ask", "--profile", "fast-only", *[a for o in overrides for a in ("-o", o)], "Hi, it's (me)!"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f">>> Hi, it's (me)!\n[answer · fast · {FAST}]\n!!!!\n" in out
    assert "load/wait" in out


def test_ask_with_an_unknown_profile_exits_2(capsys) -> None:
    assert main(["ask", "--profile", "nope", "Hi"]) == 2
    assert "Available profiles" in capsys.readouterr().err


def test_table_says_how_each_stage_ended(echo_runtime: TinyRuntime) -> None:
    """An answer cut short (repetition stop, time budget, stall, cancel) is marked in the
    table; the echo model repeats one character, so the repetition stop ends it."""
    from magi.tasks.run import routing_table

    looping = ("runtime.max_tokens=64", "runtime.repetition_window=16", "runtime.repetition_max_cycle=4")
    with echo_runtime.runner("fast-only", *looping) as runner:
        looped = runner.run(EASY)
    with echo_runtime.runner("fast-only", "runtime.max_tokens=4", "runtime.repetition_stop=false") as runner:
        short = runner.run(EASY)
    header, *_ = routing_table([looped]).splitlines()
    assert "ended" in header.split()
    (row,) = _table_rows(routing_table([looped]))
    assert row.split()[header.split().index("ended") + len(EASY.split()) - 1] == "repetition"
    (row,) = _table_rows(routing_table([short]))
    assert row.split()[header.split().index("ended") + len(EASY.split()) - 1] == "length"


def test_a_closed_pipe_ends_magi_quietly(tmp_path: Path) -> None:
    """``magi ask ... | head -1``: the reader goes away mid-answer; magi stops the answer,
    frees the model and exits without a traceback (it hung in Runner.close before)."""
    tiny = TinyRuntime.create(tmp_path)
    options = [arg for override in tiny.overrides for arg in ("-o", override)]
    command = [
        sys.executable,
        "-m",
        "magi.cli",
        "ask",
        "--profile",
        "development",
        *options,
        "-o",
        "runtime.max_tokens=200",
        "Tell me a long story.",
        "And another one.",
    ]
    status, err = _reader_gone(command, tmp_path)
    assert "Traceback" not in err, err
    assert status == 1
