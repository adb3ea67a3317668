"""Prompt-lookup decoding (``runtime.prompt_lookup``) on the real llama-cpp-python path.

The refine stage's answer copies much of the draft in its prompt; llama-cpp-python's
``LlamaPromptLookupDecoding`` drafts tokens from the prompt and verifies them in one
batch. The backend switches it on for one call only (``magi.runtime.llama.prompt_lookup``),
so greedy text must be the model's own, and the model must be back to normal after.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from magi.config.model_settings import (
    PROMPT_LOOKUP_TOKENS,
    LoadSettings,
    ModelOverrides,
    SamplingSettings,
    merge,
)
from magi.errors import ConfigError
from magi.runtime.backend import GenerationSettings, ModelSpec, generate, stage_settings
from magi.runtime.llama import LlamaBackend

PROMPT = "the cat sat on the mat and the cat sat on the mat and the cat sat on the"


def _backend(path: Path) -> LlamaBackend:
    # no state cache: each run resets and processes the whole prompt (see _batches)
    load = LoadSettings(n_ctx=256, n_threads=1, state_cache_mb=0)
    return LlamaBackend(ModelSpec("m", path=path, load=load))


def _batches(backend: LlamaBackend, prompt: str, settings: GenerationSettings) -> tuple[str, list[int]]:
    """The greedy text and the size of every batch llama.cpp evaluated for it (a batch of
    more than one token after the prompt's is drafted tokens being verified)."""
    llm = backend._require()
    sizes: list[int] = []
    real_eval = llm.eval

    def eval_recording(tokens: list[int]) -> None:
        sizes.append(len(tokens))
        real_eval(tokens)

    llm.eval = eval_recording
    try:
        llm.reset()  # every run processes the whole prompt: the runs compare alike
        return generate(backend, prompt, settings).text, sizes
    finally:
        del llm.eval


@pytest.mark.parametrize("fixture", ["tiny_model", "echo_model"])
def test_greedy_text_is_the_same_with_and_without_lookup(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    backend = _backend(request.getfixturevalue(fixture))
    try:
        off = GenerationSettings(max_tokens=24, prompt_lookup=0, stop=[], repeat_penalty=1.0)
        on = off.model_copy(update={"prompt_lookup": 4})
        text_off, sizes_off = _batches(backend, PROMPT, off)
        text_on, sizes_on = _batches(backend, PROMPT, on)
        assert text_on == text_off and text_off
        assert all(size == 1 for size in sizes_off[1:])  # off: one token per step
        if fixture == "echo_model":  # the echo repeats itself: lookup drafts and it accepts
            assert max(sizes_on[1:]) > 1
            assert len(sizes_on) < len(sizes_off)
        llm = backend._llm
        # the switch is for one call: the model is back to its own settings
        assert llm.draft_model is None and llm._logits_all is False
        assert llm.scores.shape[0] == llm.n_batch
        assert _batches(backend, PROMPT, off) == (text_off, sizes_off)
    finally:
        backend.close()


def test_lookup_is_undone_when_the_answer_is_abandoned(echo_model: Path) -> None:
    backend = _backend(echo_model)
    try:
        stream = backend.stream("Hello", GenerationSettings(max_tokens=16, prompt_lookup=4))
        next(stream)
        assert backend._llm.draft_model is not None  # on while the refine generates
        stream.close()  # a cancelled answer
        assert backend._llm.draft_model is None and backend._llm._logits_all is False
    finally:
        backend.close()


def test_setting_values_and_stages() -> None:
    assert SamplingSettings().prompt_lookup == 0  # off unless configured (docs/PERFORMANCE.md)
    assert SamplingSettings(prompt_lookup=PROMPT_LOOKUP_TOKENS).prompt_lookup == 10
    assert SamplingSettings(prompt_lookup=False).prompt_lookup == 0
    with pytest.raises(ValueError, match="number of tokens"):
        SamplingSettings(prompt_lookup=True)
    with pytest.raises(ValueError):
        SamplingSettings(prompt_lookup=-1)
    # per model: runtime.models.<id>.prompt_lookup over the default
    assert merge(SamplingSettings(), ModelOverrides(prompt_lookup=3)).prompt_lookup == 3
    assert merge(SamplingSettings(prompt_lookup=0), ModelOverrides(prompt_lookup=6)).prompt_lookup == 6
    with pytest.raises(ConfigError, match="prompt_lookup"):
        merge(SamplingSettings(), ModelOverrides.model_construct(prompt_lookup=-2))
    # only the refine stage keeps it; llama.cpp is never sent MAGI's field
    sampling = SamplingSettings(prompt_lookup=5)
    assert stage_settings(sampling, 16).prompt_lookup == 0
    assert stage_settings(sampling, refine=True).prompt_lookup == 5
    assert "prompt_lookup" not in stage_settings(sampling, refine=True).llama_kwargs()


def test_the_runner_looks_up_on_the_refine_stage_only(tmp_path: Path) -> None:
    from magi.testing.runtime import FAST, REASONER, FaultInjector, TinyRuntime, tagged

    env = TinyRuntime.create(tmp_path, echo={REASONER})
    hard = tagged("Prove it", 8.0)
    common = (
        "scorer=tagged",
        "runtime.prompt_template='{prompt}'",
        "profile.two_stage.stage1_max_tokens=5",
        "runtime.max_tokens=12",
    )
    try:
        texts = []
        for lookup, own in ((4, None), (4, 0), (0, None)):
            recorder = FaultInjector()
            extra = [f"runtime.prompt_lookup={lookup}"]
            if own is not None:  # one model's own setting over the default
                extra.append(f"+runtime.models.{REASONER}.prompt_lookup={own}")
            with env.runner("development", *common, *extra, backend_factory=recorder) as runner:
                result = runner.run(hard)
            assert result.two_stage
            assert [s.prompt_lookup for s in recorder.settings[FAST]] == [0]  # the draft never
            expected = lookup if own is None else own
            assert [s.prompt_lookup for s in recorder.settings[REASONER]] == [expected]
            texts.append(result.text)
        assert texts[0] == texts[1] == texts[2] and texts[0]
    finally:
        env.close()
