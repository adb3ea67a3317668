"""Two-stage draft -> refine and streaming, on real tiny models.

The fast model has random weights (it never emits end-of-sequence, so a stage
generates exactly its token budget); the powerful model is an echo model, so its
answer repeats the last character of the prompt it was given: the end of the draft.
A :class:`FaultInjector` with no faults records the prompt each model received.
"""

from __future__ import annotations

from magi.runtime.runner import fill_refine_template
from magi.testing import echo_completion
from magi.testing.runtime import CODER, FAST, REASONER, REFINE_TEMPLATE, FaultInjector, TinyRuntime, tagged

HARD = tagged("Prove it", 8.0)
EASY = tagged("Say hi", 1.0)


def test_draft_then_refine_with_trace(refine_runtime: TinyRuntime) -> None:
    recorder = FaultInjector()
    with refine_runtime.two_stage(recorder) as runner:
        result = runner.run(HARD)
        refine_prompt = fill_refine_template(REFINE_TEMPLATE, HARD, result.draft or "")
        refine_prompt_tokens = runner.pool.backend(REASONER).count_tokens(refine_prompt)

    # routing and stage order
    assert (result.score, result.routed_tier, result.tier, result.model_id) == (
        8.0,
        "powerful",
        "powerful",
        REASONER,
    )
    assert result.two_stage
    draft, refine = result.stages
    assert (draft.stage, draft.tier, draft.model_id) == ("draft", "fast", FAST)
    assert (refine.stage, refine.tier, refine.model_id) == ("refine", "powerful", REASONER)
    assert recorder.prompts == {FAST: [HARD], REASONER: [refine_prompt]}

    # the draft is capped at stage1_max_tokens; the refine gets the default answer length
    assert recorder.settings[FAST][0].max_tokens == 5
    assert (draft.completion_tokens, draft.finish_reason) == (5, "length")
    assert recorder.settings[REASONER][0].max_tokens == 12
    assert (refine.completion_tokens, refine.finish_reason) == (12, "length")
    assert result.completion_tokens == 17

    # the refine prompt holds the draft, and the echo model answers from its end
    assert result.draft and len(result.draft) == 5
    assert f"| draft: {result.draft}" in refine_prompt
    assert result.text == echo_completion(refine_prompt, 12) == result.draft[-1] * 12

    # tokens and timings
    assert refine.prompt_tokens == refine_prompt_tokens > draft.prompt_tokens > 0
    for stage in result.stages:
        assert 0 < stage.ttft_s <= stage.total_s
    # the caller saw the first token during the draft, before the refine started
    assert 0 < result.ttft_s <= result.total_s - refine.total_s
    assert result.total_s >= draft.total_s + refine.total_s
    assert result.fallbacks == []
    data = result.to_dict()
    assert [s["model_id"] for s in data["stages"]] == [FAST, REASONER]
    assert data["completion_tokens"] == 17
    explained = result.explain()
    assert "-> tier powerful (two-stage)" in explained
    assert "draft  fast" in explained and "refine powerful" in explained


def test_easy_prompt_gets_one_stage(refine_runtime: TinyRuntime) -> None:
    recorder = FaultInjector()
    with refine_runtime.two_stage(recorder) as runner:
        result = runner.run(EASY)
    assert (result.routed_tier, result.two_stage, result.draft) == ("fast", False, None)
    assert [(s.stage, s.model_id, s.completion_tokens) for s in result.stages] == [("answer", FAST, 12)]
    assert recorder.prompts == {FAST: [EASY]}


def test_draft_budget_wins_over_the_default_answer_length(refine_runtime: TinyRuntime) -> None:
    """runtime.max_tokens is the answer length 'when a stage sets none': a draft budget
    larger than it still applies."""
    recorder = FaultInjector()
    with refine_runtime.two_stage(
        recorder, "profile.two_stage.stage1_max_tokens=10", "runtime.max_tokens=6"
    ) as runner:
        result = runner.run(HARD)
    assert [s.completion_tokens for s in result.stages] == [10, 6]
    assert [s.max_tokens for s in recorder.settings[FAST]] == [10]


def test_per_model_answer_length_wins_over_the_runtime_default(refine_runtime: TinyRuntime) -> None:
    recorder = FaultInjector()
    with refine_runtime.two_stage(
        recorder, f"+runtime.models.{REASONER}.max_tokens=9", "runtime.max_tokens=6"
    ) as runner:
        result = runner.run(HARD)
    assert [s.completion_tokens for s in result.stages] == [5, 9]


def test_failed_draft_leaves_the_refine_tier_to_answer_alone(refine_runtime: TinyRuntime) -> None:
    recorder = FaultInjector()
    recorder.fail(FAST)
    with refine_runtime.two_stage(recorder) as runner:
        result = runner.run(HARD)
    assert result.draft is None
    assert [(s.stage, s.model_id) for s in result.stages] == [("refine", REASONER)]
    assert recorder.prompts[REASONER] == [HARD]  # no draft to refine: the prompt itself
    assert [(f.stage, f.model_id) for f in result.fallbacks] == [("draft", FAST)]


# -- streaming ---------------------------------------------------------------------------------
def test_stream_yields_the_draft_before_the_refine_and_done_last(refine_runtime: TinyRuntime) -> None:
    with refine_runtime.two_stage(FaultInjector()) as runner:
        events = list(runner.stream(HARD))
    kinds = [e.kind for e in events]
    assert kinds == ["stage", *["token"] * 5, "stage", *["token"] * 12, "done"]
    assert [(e.stage, e.tier, e.model_id) for e in events if e.kind == "stage"] == [
        ("draft", "fast", FAST),
        ("refine", "powerful", REASONER),
    ]
    result = events[-1].result
    assert result is not None
    draft_tokens = [e.text for e in events if e.kind == "token" and e.stage == "draft"]
    refine_tokens = [e.text for e in events if e.kind == "token" and e.stage == "refine"]
    assert "".join(draft_tokens) == result.draft
    assert "".join(refine_tokens) == result.text


def test_stream_restarts_a_stage_that_fails_mid_answer(tiny_runtime: TinyRuntime) -> None:
    """production: the round-robin pick fails after 3 tokens; the tier's other model
    answers, and the caller is told to discard the 3 tokens."""
    faults = FaultInjector()
    faults.fail(REASONER, after=3)
    with tiny_runtime.runner("production", backend_factory=faults) as runner:
        events = list(runner.stream("Explain"))
    kinds = [e.kind for e in events]
    assert kinds == ["stage", "token", "token", "token", "restart", "stage", *["token"] * 8, "done"]
    assert [e.model_id for e in events if e.kind in ("stage", "restart")] == [REASONER, REASONER, CODER]
    result = events[-1].result
    assert result is not None
    assert result.text == "".join(e.text for e in events[6:-1])
    assert (result.model_id, [f.model_id for f in result.fallbacks]) == (CODER, [REASONER])
    assert "injected failure" in result.fallbacks[0].error
