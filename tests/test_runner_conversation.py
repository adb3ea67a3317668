"""The Runner on conversations: messages in, routing by the last user turn plus its
history, system prompts by precedence, two-stage refine on the conversation, and bad
input as a 422 that never touches a model.

Real tiny models (magi.testing): the fast model has random weights (it writes exactly
its token budget), the powerful one echoes the last character of what it is given. A
:class:`FaultInjector` with no faults records what each model was sent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from magi.conversation import Conversation, InvalidConversationError, Message, to_conversation
from magi.errors import MAGIException
from magi.prompt import InvalidPromptError
from magi.routing.router import CONVERSATION_CAP, conversation_score
from magi.routing.scorer import get_scorer
from magi.runtime.backend import stage_settings
from magi.runtime.runner import fill_refine_template
from magi.testing.runtime import FAST, REASONER, REFINE_TEMPLATE, FaultInjector, TinyRuntime, tagged
from magi.testing.tiny_gguf import CHAT_MODEL, SEED_MODELS, write_spec

HARD = "Prove that the square root of 2 is irrational; explain every step rigorously."
ANSWER = "Suppose sqrt(2) = p/q in lowest terms; then p^2 = 2 q^2, so p is even, and so is q."
LABELLED = Path(__file__).resolve().parents[1] / "data" / "prompts" / "labelled.jsonl"


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


# -- routing ---------------------------------------------------------------------------
def test_a_one_message_conversation_routes_and_runs_as_its_prompt(refine_runtime: TinyRuntime) -> None:
    plain, listed = FaultInjector(), FaultInjector()
    with refine_runtime.runner("development", backend_factory=plain) as runner:
        as_prompt = runner.run(HARD)
        decided = runner.route(HARD)
    with refine_runtime.runner("development", backend_factory=listed) as runner:
        as_messages = runner.run([user(HARD)])
        typed = runner.route([Message("user", HARD)])
    assert decided == typed
    assert "conversation" not in as_messages.contributions
    for field in ("text", "prompt", "score", "contributions", "features", "routed_tier", "draft", "scored"):
        assert getattr(as_messages, field) == getattr(as_prompt, field), field
    assert as_messages.scored == "the prompt"
    assert as_messages.messages == as_prompt.messages == [user(HARD)]
    assert "scored:" not in as_messages.explain()
    assert plain.prompts == listed.prompts  # the backends were sent the same prompt string


def test_a_follow_up_inherits_the_hard_question_and_small_talk_stays_fast(
    refine_runtime: TinyRuntime,
) -> None:
    with refine_runtime.runner("development") as runner:
        alone = runner.route("why?")
        follow_up = runner.route([user(HARD), assistant(ANSWER), user("why?")])
        small_talk = runner.route([user("Hi there!"), assistant("Hello!"), user("How are you?")])
        thanks = runner.route([user(HARD), assistant(ANSWER), user("thanks!")])

    assert alone.tier == "fast"
    assert (follow_up.tier, follow_up.two_stage, follow_up.turns) == ("powerful", True, 3)
    added = follow_up.score.contributions["conversation"]
    assert 0 < added <= CONVERSATION_CAP
    assert follow_up.score.score == pytest.approx(alone.score.score + added, abs=0.011)
    assert follow_up.score.features["conversation_turns_back"] == 1
    assert follow_up.scored == f"last user message of 3 turns, conversation {added:+.2f}"
    assert "conversation +" in follow_up.explain()
    assert follow_up.explain().endswith(f"; scored: {follow_up.scored}")
    assert follow_up.to_dict()["scored"] == follow_up.scored

    assert small_talk.tier == "fast" and small_talk.score.contributions["conversation"] < 0.1
    assert thanks.tier == "fast"  # a message scoring under 1.0 is never promoted past 5.0


def test_the_conversation_rule_on_the_labelled_prompts() -> None:
    """The figures in :func:`conversation_score`'s docstring."""
    scorer = get_scorer("heuristic")
    rows = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    hard = [r["prompt"] for r in rows if r["label"] == "hard"]
    easy = [r["prompt"] for r in rows if r["label"] == "easy"]
    reply = assistant("Sure. " * 30)

    def score(*messages: dict[str, str]) -> float:
        return conversation_score(scorer, to_conversation(list(messages))).score

    assert len(hard) == 32 and len(easy) == 32
    assert [h for h in hard if score(user(h), reply, user("why?")) <= 5.0] == []
    assert [(a, b) for a in easy for b in easy if score(user(a), reply, user(b)) > 5.0] == []
    assert [h for h in hard if score(user(h), reply, user("thanks!")) > 5.0] == []
    promoted = sum(score(user(h), reply, user(e)) > 5.0 for h in hard for e in easy)
    assert promoted == 64  # the rule's cost: an easy question right after a hard one


def test_the_conversation_term_is_bounded_and_a_system_prompt_is_not_scored() -> None:
    scorer = get_scorer("heuristic")
    long_hard = [m for _ in range(50) for m in (user(HARD), assistant(ANSWER * 20))]
    capped = conversation_score(scorer, to_conversation([*long_hard, user("ok")]))
    assert capped.contributions["conversation"] == CONVERSATION_CAP
    with_system = conversation_score(scorer, to_conversation([system(HARD), user("why?")]))
    assert with_system == scorer.score("why?")


# -- running conversations -------------------------------------------------------------
def test_multi_turn_run_stream_and_run_many(refine_runtime: TinyRuntime) -> None:
    recorder = FaultInjector()
    conversation = [user("Say hi"), assistant("hi"), user(tagged("Say hi again", 1.0))]
    with refine_runtime.two_stage(recorder) as runner:
        result = runner.run(conversation)
        stream = runner.stream(conversation)
        events = list(stream)
        many = runner.run_many([tagged("Say hi", 1.0), conversation], progress=False)
        prompt_only = runner.run(tagged("Say hi again", 1.0))

    assert (result.tier, result.model_id, result.two_stage) == ("fast", FAST, False)
    assert result.prompt == conversation[-1]["content"]
    assert result.messages == conversation
    assert result.scored.startswith("last user message of 3 turns, conversation +")
    assert f"  scored: {result.scored}" in result.explain()
    assert result.to_dict()["messages"] == conversation and result.to_dict()["scored"] == result.scored
    sent = recorder.prompts[FAST][0]
    assert isinstance(sent, Conversation) and sent.to_dicts() == conversation
    # the history is part of what the model processed
    assert result.stages[0].prompt_tokens > prompt_only.stages[0].prompt_tokens

    tokens = "".join(e.text for e in events if e.kind == "token")
    assert events[-1].kind == "done" and stream.result is not None
    assert tokens == stream.result.text == result.text  # the random model is greedy: same text
    assert [r.messages for r in many] == [[user(tagged("Say hi", 1.0))], conversation]


def test_system_prompt_precedence(refine_runtime: TinyRuntime) -> None:
    recorder = FaultInjector()
    turns = [user(tagged("Say hi", 1.0))]
    with refine_runtime.two_stage(recorder, "+profile.system_prompt='From the profile.'") as runner:
        assert runner.profile.system_prompt == "From the profile."
        by_profile = runner.run(turns)
        by_call = runner.run(turns, system="From the call.")
        own = runner.run([system("Its own."), *turns], system="From the call.")
        streamed = runner.stream(turns, system="From the call.")
        list(streamed)
        many = runner.run_many([turns, [system("Its own."), *turns]], system="From the call.", progress=False)

    assert by_profile.messages == [system("From the profile."), *turns]
    assert by_call.messages == [system("From the call."), *turns]
    assert own.messages == [system("Its own."), *turns]
    assert streamed.result is not None and streamed.result.messages == by_call.messages
    assert [r.messages[0]["content"] for r in many] == ["From the call.", "Its own."]
    # what the model was really sent, and a system prompt is not scored
    assert [c.system for c in recorder.prompts[FAST]] == [
        "From the profile.",
        "From the call.",
        "Its own.",
        "From the call.",
        "From the call.",
        "Its own.",
    ]
    assert by_profile.score == by_call.score == own.score == 1.0
    # the system prompt's tokens are counted (one token a character in the tiny vocabulary)
    shorter = len("From the profile.") - len("From the call.")
    assert by_profile.stages[0].prompt_tokens - by_call.stages[0].prompt_tokens == shorter


def test_the_models_system_prompt_comes_between_the_calls_and_the_profiles(
    refine_runtime: TinyRuntime,
) -> None:
    recorder = FaultInjector()
    turns = [user(tagged("Say hi", 1.0))]
    with refine_runtime.two_stage(
        recorder,
        "+profile.system_prompt='From the profile.'",
        f"+runtime.models.{FAST}.system_prompt='From the model.'",
    ) as runner:
        by_model = runner.run(turns)
        by_call = runner.run(turns, system="From the call.")
    assert by_model.messages[0] == system("From the model.")
    assert by_call.messages[0] == system("From the call.")


def test_two_stage_refine_sees_the_conversation_and_the_draft(refine_runtime: TinyRuntime) -> None:
    recorder = FaultInjector()
    hard = tagged("Prove it", 8.0)
    conversation = [system("Be exact."), user("What is 2+2?"), assistant("4"), user(hard)]
    with refine_runtime.two_stage(recorder) as runner:
        result = runner.run(conversation)
        backend = runner.pool.backend(REASONER)
        settings = stage_settings(runner.specs[REASONER].sampling, refine=True)
        draft_only = backend.count_tokens(result.draft or "")

    draft, refine = result.stages
    assert (draft.model_id, refine.model_id) == (FAST, REASONER)
    assert recorder.prompts[FAST] == [to_conversation(conversation)]
    sent = recorder.prompts[REASONER][0]
    assert isinstance(sent, Conversation)
    assert sent.messages[:-1] == to_conversation(conversation).messages[:-1]
    assert sent.last_user == fill_refine_template(REFINE_TEMPLATE, hard, result.draft or "")
    assert result.prompt == hard and result.messages == conversation  # not the refine's template
    # the refine processed the conversation and the draft: larger by about the draft
    assert refine.prompt_tokens == backend.count_prompt_tokens(sent, settings)
    grown = refine.prompt_tokens - draft.prompt_tokens
    assert draft_only <= grown <= draft_only + len(" | draft: ") + 2


def test_the_draft_budget_and_the_refine_fit_count_the_whole_conversation(
    refine_runtime: TinyRuntime,
) -> None:
    """n_ctx=256: a 120-character history leaves the 120-token draft less room, and the
    refine must cut the draft; counting only the last message would do neither."""
    recorder = FaultInjector()
    history = [user("a" * 60), assistant("b" * 60)]
    conversation = [*history, user(tagged("Prove it", 8.0))]
    with refine_runtime.two_stage(recorder, "profile.two_stage.stage1_max_tokens=120") as runner:
        result = runner.run(conversation)
        fast = runner.pool.backend(FAST)
        draft_tokens = fast.count_prompt_tokens(
            to_conversation(conversation), stage_settings(runner.specs[FAST].sampling, 120)
        )
    draft, refine = result.stages
    assert draft.prompt_tokens == draft_tokens
    assert draft.note == (
        f"token budget cut from 120 to {256 - draft_tokens}: what n_ctx=256 leaves after the "
        f"{draft_tokens}-token prompt"
    )
    assert refine.note is not None and refine.note.startswith("draft cut from ")
    assert refine.prompt_tokens <= 256 - 12  # the answer's room (runtime.max_tokens=12) is kept


# -- bad input -------------------------------------------------------------------------
BAD = [
    ([], None, "is empty"),
    ([{"role": "robot", "content": "hi"}], 0, "role 'robot'"),
    ([user("hi"), {"role": "user", "content": 42}], 1, "content of type int"),
    ([user("hi"), assistant("hello")], 1, "must be the user's"),
    ([user("hi"), system("late")], 1, "may only come first"),
]


@pytest.mark.parametrize(
    ("request_", "index", "problem"), BAD, ids=["empty", "role", "content", "ends", "system"]
)
def test_bad_conversations_are_422_and_never_reach_a_model(
    refine_runtime: TinyRuntime, request_, index, problem
) -> None:
    recorder = FaultInjector()
    with refine_runtime.two_stage(recorder) as runner:
        for call in (runner.run, runner.route, lambda r: list(runner.stream(r))):
            with pytest.raises(InvalidConversationError) as caught:
                call(request_)
            assert (caught.value.status_code, caught.value.index) == (422, index)
            assert problem in str(caught.value)
        with pytest.raises(InvalidConversationError) as caught:
            runner.run_many(["Say hi", request_, "Say bye"], progress=False)
        assert str(caught.value).startswith("Request 2 of 3")
        assert caught.value.index == index
        status = runner.health.status()
    assert recorder.calls == {}  # checked before any model was asked
    assert all(s["total_failures"] == 0 and s["state"] == "closed" for s in status.values())


def test_a_bad_system_prompt_is_422(refine_runtime: TinyRuntime) -> None:
    recorder = FaultInjector()
    with refine_runtime.two_stage(recorder) as runner:
        with pytest.raises(InvalidPromptError) as caught:
            runner.run("Say hi", system="   ")
        assert caught.value.status_code == 422 and "system prompt" in str(caught.value)
    assert recorder.calls == {}


def test_a_profiles_system_prompt_is_checked(refine_runtime: TinyRuntime) -> None:
    with pytest.raises(MAGIException, match="system_prompt") as caught:
        refine_runtime.compose("development", "+profile.system_prompt=' '")
    assert "empty" in str(caught.value)
    assert refine_runtime.compose("development").profile.system_prompt is None


def test_a_profile_file_sets_the_system_prompt(refine_runtime: TinyRuntime) -> None:
    development = refine_runtime.compose("development").profile.to_yaml_dict()
    refine_runtime.write_profile("terse", {**development, "system_prompt": "Answer in one line."})
    profile = refine_runtime.compose("terse").profile
    assert profile.system_prompt == "Answer in one line."
    assert profile.to_yaml_dict()["system_prompt"] == "Answer in one line."
    assert "system_prompt" not in development  # unset: the saved file stays as it was
    with refine_runtime.runner("terse", "scorer=tagged") as runner:
        assert runner.run(tagged("Say hi", 1.0)).messages[0] == system("Answer in one line.")


def test_two_stage_on_a_chat_template_model_and_a_completion_model(refine_runtime: TinyRuntime) -> None:
    """The fast model carries a chat template in its GGUF (llama-cpp-python renders the
    conversation), the powerful one is completion-style (MAGI's transcript): the draft
    and the refine each count what their own rendering processes."""
    write_spec(refine_runtime.models_dir, SEED_MODELS[FAST], **CHAT_MODEL)
    recorder = FaultInjector()
    hard = tagged("Prove it", 8.0)
    conversation = [user("What is 2+2?"), assistant("4"), user(hard)]
    with refine_runtime.two_stage(recorder, "+profile.system_prompt='Be exact.'") as runner:
        result = runner.run(conversation)
        fast, reasoner = recorder.backends[FAST].inner, recorder.backends[REASONER].inner
        sent_draft, sent_refine = recorder.prompts[FAST][0], recorder.prompts[REASONER][0]
        draft_settings = stage_settings(runner.specs[FAST].sampling, 5)
        refine_settings = stage_settings(runner.specs[REASONER].sampling, refine=True)
        rendered = fast.format_prompt(sent_draft, draft_settings)
        counted = (
            fast.count_prompt_tokens(sent_draft, draft_settings),
            reasoner.count_prompt_tokens(sent_refine, refine_settings),
        )
        assert fast.is_chat and not reasoner.is_chat

    draft, refine = result.stages
    assert (draft.model_id, refine.model_id) == (FAST, REASONER)
    assert result.messages == [system("Be exact."), *conversation]
    assert rendered.startswith("<s><|im_start|>system\nBe exact.<|im_end|>\n<|im_start|>user\nWhat is 2+2?")
    assert rendered.endswith("<|im_start|>assistant\n")
    assert (draft.prompt_tokens, refine.prompt_tokens) == counted
    assert sent_refine.last_user == fill_refine_template(REFINE_TEMPLATE, hard, result.draft or "")
    assert sent_refine.messages[:-1] == sent_draft.messages[:-1]


#: A chat template that refuses system messages, as several real ones do (Gemma's, Mistral's).
NO_SYSTEM_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{{ '<|im_start|>assistant\n' }}"
)


def _strict_chat_model(refine_runtime: TinyRuntime, model_id: str) -> None:
    write_spec(
        refine_runtime.models_dir,
        SEED_MODELS[model_id],
        **{**CHAT_MODEL, "chat_template": NO_SYSTEM_TEMPLATE},
    )


def test_a_chat_template_that_refuses_the_conversation_is_not_a_model_failure(
    refine_runtime: TinyRuntime,
) -> None:
    """A model whose template refuses a system message is skipped for that request, like a
    context too small: the tier's other model answers, and no circuit counts a failure."""
    from magi.testing.runtime import CODER

    _strict_chat_model(refine_runtime, CODER)
    conversation = [system("Be brief."), user("Say hi")]
    with refine_runtime.runner("production", "runtime.max_tokens=4") as runner:
        answers = [runner.run(conversation) for _ in range(2)]  # round robin: each model first once
        status = runner.health.status()
    assert {a.model_id for a in answers} == {REASONER}
    assert status[CODER]["total_failures"] == 0 and status[CODER]["state"] == "closed"
    assert any(
        f.model_id == CODER and "System role not supported" in f.error
        for f in answers[0].fallbacks + answers[1].fallbacks
    )


def test_a_conversation_every_model_refuses_is_the_requests_error(refine_runtime: TinyRuntime) -> None:
    from magi.testing.runtime import CODER

    _strict_chat_model(refine_runtime, CODER)
    _strict_chat_model(refine_runtime, REASONER)
    with refine_runtime.runner("production", "runtime.max_tokens=4") as runner:
        with pytest.raises(InvalidConversationError, match="System role not supported") as caught:
            runner.run([system("Be brief."), user("Say hi")])
        status = runner.health.status()
        assert runner.run("Say hi").text is not None  # the models still answer what they accept
    assert caught.value.status_code == 422
    assert all(s["total_failures"] == 0 for s in status.values())


def test_the_profile_system_prompt_is_overridden_like_every_field(tiny_runtime: TinyRuntime) -> None:
    """conf/config.yaml declares it under ``profile:``, so no ``+`` is needed (README)."""
    config = tiny_runtime.compose("development", "profile.system_prompt='Be brief.'")
    assert config.profile.system_prompt == "Be brief."
