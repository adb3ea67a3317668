"""Clear errors from the runtime: missing and corrupt model files, unknown model ids,
prompts longer than the context, and every model failing. None of them crashes the
process or loses the reason."""

from __future__ import annotations

from dataclasses import replace

import pytest

from magi.errors import ModelError, ModelNotFoundError
from magi.runtime.backend import GenerationSettings, PromptTooLongError
from magi.runtime.llama import LlamaBackend
from magi.runtime.runner import NoModelAnsweredError
from magi.testing.runtime import CODER, FAST, REASONER, FaultInjector, TinyRuntime

LONG_PROMPT = "word " * 20  # about 100 tokens: too long for n_ctx=64, fits 256


def test_missing_file_names_the_file_and_the_fix(tiny_runtime: TinyRuntime) -> None:
    with tiny_runtime.runner("fast-only") as runner:
        spec = runner.specs[FAST]
        tiny_runtime.path(FAST).unlink()  # gone after discovery, before the first load
        with pytest.raises(ModelError) as direct:
            LlamaBackend(spec).load()
        with pytest.raises(NoModelAnsweredError) as through_runner:
            runner.run("Hi")
    for message in (str(direct.value), str(through_runner.value)):
        assert f"Model '{FAST}'" in message
        assert f"file not found: {spec.path}" in message
        assert "magi discover" in message


@pytest.mark.parametrize("damage", ["truncated", "not-gguf", "empty"])
def test_corrupt_file_fails_over_with_a_clear_error(tiny_runtime: TinyRuntime, damage: str) -> None:
    path = tiny_runtime.path(FAST)
    with tiny_runtime.runner("development") as runner:
        # damaged after discovery, as an interrupted download or a bad disk would
        data = path.read_bytes()
        path.write_bytes(
            {"truncated": data[: len(data) // 2], "not-gguf": b"not a model" * 100, "empty": b""}[damage]
        )
        result = runner.run("Hi")  # routed to fast: the powerful tier answers instead
        assert (result.routed_tier, result.model_id) == ("fast", REASONER)
        (fallback,) = result.fallbacks
        assert fallback.model_id == FAST
        assert "ModelError" in fallback.error and "could not load" in fallback.error
        assert str(path) in fallback.error and "truncated or not a GGUF model" in fallback.error
        assert runner.run("Hello").model_id == REASONER  # the process is fine


def test_profile_with_a_model_missing_from_the_registry(tiny_runtime: TinyRuntime) -> None:
    config = tiny_runtime.compose("fast-only", f"profile.enabled_models=[{FAST},llama9_70b_q4km_powerful]")
    from magi.runtime.runner import Runner

    with pytest.raises(ModelNotFoundError) as info:
        Runner(config)
    message = str(info.value)
    assert "llama9_70b_q4km_powerful" in message
    for known in (FAST, REASONER, CODER):
        assert known in message
    assert "magi discover" in message
    assert info.value.status_code == 404


def test_prompt_longer_than_the_context_is_a_422_not_a_model_failure(tiny_runtime: TinyRuntime) -> None:
    with tiny_runtime.runner("fast-only", "runtime.n_ctx=64") as runner:
        with pytest.raises(PromptTooLongError) as info:
            runner.run(LONG_PROMPT)
        status = runner.status()[FAST]
        assert runner.run("Short").model_id == FAST
    message = str(info.value)
    assert info.value.status_code == 422
    assert FAST in message and "n_ctx=64" in message and "raise runtime.n_ctx" in message
    assert (status["state"], status["consecutive_failures"]) == ("closed", 0)  # not the model's fault


def test_prompt_too_long_for_one_model_fails_over_to_a_larger_context(tiny_runtime: TinyRuntime) -> None:
    with tiny_runtime.runner("development", f"+runtime.models.{FAST}.n_ctx=64") as runner:
        result = runner.run(LONG_PROMPT)
        status = runner.status()[FAST]
    assert (result.routed_tier, result.model_id) == ("fast", REASONER)
    assert [f.model_id for f in result.fallbacks] == [FAST]
    assert "n_ctx=64" in result.fallbacks[0].error
    assert status["consecutive_failures"] == 0


def test_prompt_too_long_for_the_draft_model_skips_the_draft(tiny_runtime: TinyRuntime) -> None:
    hard = "Prove step by step that the algorithm terminates. " + LONG_PROMPT
    with tiny_runtime.runner("development", f"+runtime.models.{FAST}.n_ctx=64") as runner:
        result = runner.run(hard)
    assert result.routed_tier == "powerful" and result.draft is None
    assert [(s.stage, s.model_id) for s in result.stages] == [("refine", REASONER)]


def test_backend_refuses_a_prompt_that_does_not_fit(tiny_runtime: TinyRuntime) -> None:
    spec = tiny_runtime.runner("fast-only").specs[FAST]
    spec = replace(spec, load=spec.load.model_copy(update={"n_ctx": 64}))
    backend = LlamaBackend(spec)
    try:
        with pytest.raises(PromptTooLongError, match="runs with n_ctx=64"):
            list(backend.stream(LONG_PROMPT, GenerationSettings(max_tokens=4)))
        assert "".join(backend.stream("Hi", GenerationSettings(max_tokens=4)))
    finally:
        backend.close()


def test_no_model_answered_names_every_model_and_its_state(tiny_runtime: TinyRuntime) -> None:
    faults = FaultInjector()
    faults.fail(FAST, message="out of memory")
    faults.fail(REASONER, message="segfault in kernel")
    with tiny_runtime.runner("development", "runtime.failure_threshold=1", backend_factory=faults) as runner:
        with pytest.raises(NoModelAnsweredError) as first:
            runner.run("Hi")  # fast fails, then the powerful tier fails too
        with pytest.raises(NoModelAnsweredError) as second:
            runner.run("Hi again")  # every circuit is open now: nothing is tried
    message = str(first.value)
    assert first.value.status_code == 503
    assert "No model could answer the answer stage (2 failed) in tiers fast, powerful" in message
    assert f"{FAST}: open (1 failure, last: " in message and "out of memory" in message
    assert f"{REASONER}: open (1 failure" in message and "segfault in kernel" in message
    assert "Errors in this request:" in message
    assert first.value.details["errors"].keys() == {FAST, REASONER}

    again = str(second.value)
    assert "in tiers fast, powerful" in again  # the fallback tier is named although skipped
    assert f"{FAST}: open" in again and f"{REASONER}: open" in again
    assert "retry in" in again and "Errors in this request" not in again
    assert faults.calls == {FAST: 1, REASONER: 1}


def test_probe_of_an_unloaded_model_checks_the_gguf_magic(tmp_path) -> None:
    from magi.runtime.backend import BackendError, ModelSpec
    from magi.runtime.llama import LlamaBackend

    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model at all")
    with pytest.raises(BackendError, match="is not a GGUF file"):
        LlamaBackend(ModelSpec(model_id="bogus", path=bogus)).probe()
    with pytest.raises(BackendError, match="cannot read"):
        LlamaBackend(ModelSpec(model_id="gone", path=tmp_path / "gone.gguf")).probe()
