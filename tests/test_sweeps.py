"""Sweeps end to end on tiny GGUF models: Hydra multirun, failures, model reuse,
the joblib launcher, magi.sweep from Python, and the demo model."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import magi
from magi.machine import usable_cores
from magi.runtime.backend import GenerationSettings
from magi.runtime.pool import ModelPool
from magi.testing.runtime import REASONER, Fault, FaultInjector, TinyRuntime, tagged
from magi.testing.tiny_gguf import SEED_MODELS, write_spec

from .conftest import ROOT

FAST = "qwen3_4p0b_q4km_fast"
DEEPSEEK = "deepseek_r10528qwen3_8p0b_q4km_powerful"
CODER = "qwen2_coder_p5_14p0b_q4km_powerful"
PROMPTS = [
    {"id": "easy", "prompt": "Hi there", "expected": ["e"]},
    {
        "id": "hard",
        "prompt": "Prove step by step that sqrt(2) is irrational and analyse the algorithm's complexity.",
    },
    {"id": "easy2", "prompt": "Name a color."},
]


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return path


def model_overrides(models_dir: Path) -> list[str]:
    return [
        f"models.dirs=['{models_dir}']",
        f"models.registry='{models_dir / 'registry.json'}'",
        "models.demo=false",
        "runtime.max_tokens=4",
        "profile.two_stage.stage1_max_tokens=4",  # tiny models never stop early
        "runtime.n_ctx=512",
    ]


def bench_two_profiles(
    sweep_dir: Path, models_dir: Path, prompt_file: Path, *launcher: str
) -> subprocess.CompletedProcess[str]:
    """``task=bench`` over development and fast-only on tiny models, on ``launcher``."""
    return multirun(
        *launcher,
        "profile=development,fast-only",
        "task=bench",
        f"task.prompts='{prompt_file}'",
        "task.progress=false",
        f"hydra.sweep.dir='{sweep_dir}'",
        *model_overrides(models_dir),
    )


def multirun(*overrides: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "run.py", "-m", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_multirun_two_profiles_writes_metrics_and_summary(
    seed_models_dir: Path, prompt_file: Path, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = bench_two_profiles(sweep_dir, seed_models_dir, prompt_file)
    assert proc.returncode == 0, proc.stderr
    for num, profile in enumerate(["Development", "Fast Only"]):
        metrics = json.loads((sweep_dir / str(num) / "metrics.json").read_text())
        assert metrics["status"] == "ok" and metrics["profile"] == profile
        assert metrics["prompts"]["count"] == 3 and metrics["answered"] == 3
        assert f"profile={metrics['profile_key']}" in metrics["overrides"]
        assert metrics["latency_s"]["p50"] > 0 and metrics["ttft_s"]["p95"] >= metrics["ttft_s"]["p50"]
        assert metrics["memory"]["peak_rss_mb"] > 0
    dev = json.loads((sweep_dir / "0" / "metrics.json").read_text())
    assert dev["tier_mix"] == {"fast": 2, "powerful": 1} and dev["strong_share"] == pytest.approx(1 / 3)
    assert set(dev["stages"]) == {"answer", "draft", "refine"}  # two-stage on the hard prompt
    assert dev["model_mix"][DEEPSEEK] == 1 and dev["quality"]["checked"] == 1
    rows = read_csv(sweep_dir / "summary.csv")
    assert [(r["variant"], r["status"]) for r in rows] == [
        ("profile=development", "ok"),
        ("profile=fast-only", "ok"),
    ]
    assert float(rows[1]["strong_share"]) == 0.0
    md = (sweep_dir / "summary.md").read_text()
    assert "| 0 | profile=development | ok | Development |" in md
    assert (sweep_dir / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert "Sweep summary" in proc.stdout and "profile=fast-only" in proc.stdout


@pytest.mark.slow
def test_failed_job_is_a_failed_row_and_the_others_survive(tmp_path: Path, prompt_file: Path) -> None:
    models = tmp_path / "only-fast"
    write_spec(models, SEED_MODELS[FAST])  # production's models are missing
    sweep_dir = tmp_path / "sweep"
    proc = multirun(
        "profile=fast-only,production,development",
        "task=bench",
        f"task.prompts='{prompt_file}'",
        "task.progress=false",
        f"hydra.sweep.dir='{sweep_dir}'",
        *model_overrides(models),
    )
    assert proc.returncode == 1  # the sweep finished, then reported its failures
    assert "error: 2 of 3 job(s) failed" in proc.stderr
    assert "Traceback" not in proc.stderr  # user errors are messages, not tracebacks
    rows = read_csv(sweep_dir / "summary.csv")
    assert [r["status"] for r in rows] == ["ok", "failed", "failed"]
    assert rows[0]["variant"] == "profile=fast-only" and float(rows[0]["latency_p50_s"]) > 0
    assert "enables models that are not in the registry" in rows[1]["error"]
    assert DEEPSEEK in rows[1]["error"] and CODER in rows[1]["error"]
    failed = json.loads((sweep_dir / "1" / "metrics.json").read_text())
    assert failed["status"] == "failed" and failed["error_type"] == "ModelNotFoundError"
    assert "| 1 | profile=production | failed |" in (sweep_dir / "summary.md").read_text()
    assert (sweep_dir / "summary.png").is_file()


@pytest.mark.slow
def test_invalid_variant_fails_alone(seed_models_dir: Path, prompt_file: Path, tmp_path: Path) -> None:
    """A value Pydantic refuses fails its job only (Hydra composes it fine)."""
    sweep_dir = tmp_path / "sweep"
    proc = multirun(
        "profile=fast-only",
        "task=bench",
        "task.limit=1,-1",
        f"task.prompts='{prompt_file}'",
        "task.progress=false",
        f"hydra.sweep.dir='{sweep_dir}'",
        *model_overrides(seed_models_dir),
    )
    assert proc.returncode == 1
    rows = read_csv(sweep_dir / "summary.csv")
    assert [(r["variant"], r["status"]) for r in rows] == [
        ("task.limit=1", "ok"),
        ("task.limit=-1", "failed"),
    ]
    assert "task.limit: Input should be greater than 0" in rows[1]["error"]


@pytest.mark.slow
def test_models_load_once_across_the_sweep(seed_models_dir: Path, prompt_file: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = multirun(
        "profile=development,fast-only,production",
        "task=bench",
        f"task.prompts='{prompt_file}'",
        "task.progress=false",
        f"hydra.sweep.dir='{sweep_dir}'",
        *model_overrides(seed_models_dir),
    )
    assert proc.returncode == 0, proc.stderr
    loads = [json.loads((sweep_dir / str(i) / "metrics.json").read_text())["pool"] for i in range(3)]
    assert loads[0]["loads_by_model"] == {FAST: 1, DEEPSEEK: 1}
    assert loads[1]["loads"] == 0  # fast-only reuses the fast model
    assert loads[2]["loads_by_model"] == {CODER: 1}  # production loads only what is new
    assert f"model loads across the sweep: 3 ({FAST} 1, {DEEPSEEK} 1, {CODER} 1) in 1 process(es)" in (
        proc.stdout
    )
    assert [r["model_loads"] for r in read_csv(sweep_dir / "summary.csv")] == ["2", "0", "1"]


@pytest.mark.slow
def test_joblib_launcher_runs_a_two_job_sweep(
    seed_models_dir: Path, prompt_file: Path, tmp_path: Path
) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep_dir = tmp_path / "sweep"
    proc = bench_two_profiles(sweep_dir, seed_models_dir, prompt_file, "hydra/launcher=parallel")
    assert proc.returncode == 0, proc.stderr
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    metrics = [json.loads((sweep_dir / str(i) / "metrics.json").read_text()) for i in range(2)]
    assert all(m["status"] == "ok" and m["job"]["launcher"] == "joblib" for m in metrics)
    # two jobs at once share the cores instead of each taking all of them
    assert all(m["n_threads"] == [max(usable_cores() // 2, 1)] for m in metrics)
    assert [r["status"] for r in read_csv(sweep_dir / "summary.csv")] == ["ok", "ok"]
    assert (sweep_dir / "summary.png").is_file()


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_sweep(
    seed_models_dir: Path, prompt_file: Path, tmp_path: Path
) -> None:
    """The SLURM plugin's local executor: jobs in separate processes, same summary."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "sweep"
    proc = bench_two_profiles(
        sweep_dir,
        seed_models_dir,
        prompt_file,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
    )
    assert proc.returncode == 0, proc.stderr
    metrics = [json.loads((sweep_dir / str(i) / "metrics.json").read_text()) for i in range(2)]
    assert [m["job"]["launcher"] for m in metrics] == ["submitit", "submitit"]
    assert [r["status"] for r in read_csv(sweep_dir / "summary.csv")] == ["ok", "ok"]


def test_sweep_from_python(seed_models_dir: Path, prompt_file: Path, tmp_path: Path) -> None:
    """magi.sweep: the same sweep without @hydra.main, one load per model."""
    pool = ModelPool()
    summary = magi.sweep(
        profiles=["development", "fast-only"],
        overrides=[*model_overrides(seed_models_dir), "runtime.max_tokens=2,4"],
        prompts=prompt_file,
        limit=2,
        sweep_dir=tmp_path / "sweep",
        progress=False,
        pool=pool,
    )
    assert [r["variant"] for r in summary.rows] == [
        "profile=development runtime.max_tokens=2",
        "profile=development runtime.max_tokens=4",
        "profile=fast-only runtime.max_tokens=2",
        "profile=fast-only runtime.max_tokens=4",
    ]
    assert [r["status"] for r in summary.rows] == ["ok"] * 4
    assert all(r["prompts"] == 2 for r in summary.rows)
    assert summary.loads_by_model == {FAST: 1, DEEPSEEK: 1} == pool.stats.loads_by_model
    for name in ("summary.csv", "summary.md", "summary.png"):
        assert (tmp_path / "sweep" / name).is_file()
    assert (tmp_path / "sweep" / "3" / "metrics.json").is_file()
    assert "profile=fast-only runtime.max_tokens=4" in summary.to_markdown()
    pool.close()


def test_sweep_from_python_fails_fast_on_a_bad_variant(tmp_path: Path) -> None:
    with pytest.raises(magi.ConfigError, match="Variant profile=nope") as info:
        magi.sweep(profiles=["development", "nope"], sweep_dir=tmp_path, progress=False)
    assert "Could not find 'profile/nope'" in str(info.value) and "fast-only" in str(info.value)
    with pytest.raises(magi.ConfigError, match="Variant profile=development task=bench task.limit=-1"):
        magi.sweep(profiles=["development"], limit=-1, sweep_dir=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


def test_sweep_from_python_records_a_failing_variant(tmp_path: Path, prompt_file: Path) -> None:
    models = tmp_path / "only-fast"
    write_spec(models, SEED_MODELS[FAST])
    summary = magi.sweep(
        profiles=["fast-only", "production"],
        overrides=model_overrides(models),
        prompts=prompt_file,
        sweep_dir=tmp_path / "sweep",
        progress=False,
        pool=ModelPool(),
    )
    assert [r["status"] for r in summary.rows] == ["ok", "failed"]
    assert "not in the registry" in summary.failed[0]["error"]


def _demo_available() -> bool:
    from magi.models.demo import demo_available

    return demo_available()


@pytest.mark.slow
@pytest.mark.skipif(not _demo_available(), reason="the demo extra is not installed")
def test_demo_sweep_prints_a_summary_and_leaves_a_plot(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    models = tmp_path / "models"
    models.mkdir()  # the demo model is assembled into it
    proc = multirun(
        "profile=demo,demo-single",
        "task=bench",
        "task.limit=3",
        "runtime.max_tokens=16",
        "runtime.timeout_factor=20",  # a busy CI machine must not time the tier out
        f"models.dirs=['{models}']",
        f"models.registry='{models / 'registry.json'}'",
        f"hydra.sweep.dir='{sweep_dir}'",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Sweep summary" in proc.stdout
    assert "profile=demo " in proc.stdout and "profile=demo-single" in proc.stdout
    # the demo pair loads once each; demo-single reuses demo's Gemma (one process)
    footer = next(line for line in proc.stdout.splitlines() if "model loads across the sweep" in line)
    assert "model loads across the sweep: 2 (" in footer, footer
    assert "gemma3_270m_q4km_fast 1" in footer and "smollm2_135m_q41_fast 1" in footer, footer
    assert (sweep_dir / "summary.png").read_bytes()[:4] == b"\x89PNG"
    rows = read_csv(sweep_dir / "summary.csv")
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(r["prompts"] == "3" for r in rows)


# -- failures that don't hide: a bench where one model always fails ---------------------------
class PromptFaults(FaultInjector):
    """``FaultInjector`` whose models also fail on every prompt containing ``marker``:
    with the fast model always failing, the marked prompts are the ones no model answers."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self._last: dict[str, str] = {}

    def _record(self, model_id: str, prompt: str, settings: GenerationSettings) -> None:
        super()._record(model_id, prompt, settings)
        self._last[model_id] = prompt

    def fault(self, model_id: str) -> Fault | None:
        always = super().fault(model_id)
        if always is None and self.marker in self._last.get(model_id, ""):
            return Fault("stream", 0, f"no answer to {self.marker}")
        return always


#: Echo models repeat the templated prompt's last character ("Q: ...\nA:" ends in ":"), so
#: every answered prompt hits ``expected``: the hit rate shows whether the failed one is a miss.
FAULT_PROMPTS = [
    {"id": "boom", "prompt": tagged("boom, say hello", 1), "expected": [":"]},  # no model answers
    {"id": "easy", "prompt": tagged("hello", 1), "expected": [":"]},  # fast fails: powerful answers
    {"id": "hard", "prompt": tagged("prove it, hello", 9), "expected": [":"]},  # two-stage
    {"id": "easy2", "prompt": tagged("echo", 1), "expected": [":"]},
]


def _bench_with_faults(env: TinyRuntime, tmp_path: Path) -> tuple[dict, Path]:
    from magi.sweeps.bench import run_bench
    from magi.sweeps.jobs import JobInfo

    prompts = tmp_path / "faults.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in FAULT_PROMPTS))
    faults = PromptFaults("boom")
    faults.fail(FAST)  # the fast model always fails
    pool = ModelPool(backend_factory=faults)
    config = env.compose(
        "development", "scorer=tagged", "task=bench", f"task.prompts='{prompts}'", "task.progress=false"
    )
    job = JobInfo(
        output_dir=tmp_path / "sweep" / "0", overrides=["profile=development"], profile_key="development"
    )
    try:
        metrics = run_bench(config, job, pool=pool)
    finally:
        pool.close()
    return metrics, job.output_dir


def test_bench_counts_failed_prompts_in_every_rate(echo_runtime: TinyRuntime, tmp_path: Path) -> None:
    metrics, _ = _bench_with_faults(echo_runtime, tmp_path)
    assert metrics["status"] == "partial"  # 1 of 4 prompts failed: not plain "ok"
    assert (metrics["prompts"]["count"], metrics["answered"], metrics["failed"]) == (4, 3, 1)
    assert metrics["error_share"] == 0.25 and metrics["errors"]["share"] == 0.25
    # shares are over all 4 prompts (answered-only would give powerful 1/3, hits 3/3)
    assert metrics["strong_share"] == 0.25
    assert metrics["tier_share"] == {"fast": 0.5, "powerful": 0.25}
    assert sum(metrics["tier_share"].values()) + metrics["error_share"] == 1.0
    assert metrics["two_stage_share"] == 0.25
    assert metrics["quality"] == {"checked": 4, "hits": 3, "hit_rate": 0.75, "failed": 1}


def test_bench_keeps_routed_and_answering_tier(echo_runtime: TinyRuntime, tmp_path: Path) -> None:
    metrics, _ = _bench_with_faults(echo_runtime, tmp_path)
    assert metrics["tier_mix"] == {"fast": 2, "powerful": 1}  # where the router sent them
    assert metrics["answer_tier_mix"] == {"powerful": 3}  # who answered: fast always fails
    rerouted = metrics["rerouted"]
    assert rerouted["count"] == 2 and rerouted["by_route"] == {"fast->powerful": 2}
    assert [(p["id"], p["routed_tier"], p["tier"], p["model_id"]) for p in rerouted["prompts"]] == [
        ("easy", "fast", "powerful", REASONER),
        ("easy2", "fast", "powerful", REASONER),
    ]


def test_metrics_json_keeps_each_failed_prompts_causes(echo_runtime: TinyRuntime, tmp_path: Path) -> None:
    _, folder = _bench_with_faults(echo_runtime, tmp_path)
    saved = json.loads((folder / "metrics.json").read_text())
    (failure,) = saved["errors"]["prompts"]
    assert failure["id"] == "boom" and failure["prompt"] == FAULT_PROMPTS[0]["prompt"]
    assert failure["routed_tier"] == "fast"
    assert (failure["error_type"], failure["status_code"]) == ("NoModelAnsweredError", 503)
    assert failure["error"].startswith("No model could answer")
    # the real cause of each model, not only the headline
    assert set(failure["causes"]) == {FAST, REASONER}
    assert "injected failure" in failure["causes"][FAST]
    assert (
        "BackendError" in failure["causes"][REASONER] and "no answer to boom" in failure["causes"][REASONER]
    )
    assert saved["errors"]["by_type"] == {"NoModelAnsweredError": 1}
    first = saved["errors"]["first"][0]
    assert first.startswith(f"boom: {FAST}: BackendError:") and "no answer to boom" in first


def test_summary_of_a_partial_bench_marks_its_errors(echo_runtime: TinyRuntime, tmp_path: Path) -> None:
    from magi.sweeps.summary import SweepSummary

    metrics, folder = _bench_with_faults(echo_runtime, tmp_path)
    summary = SweepSummary.from_metrics([(folder, metrics)], folder.parent)
    (row,) = summary.rows
    assert row["status"] == "partial" and row["error_share"] == 0.25 and row["failed"] == 1
    assert row["strong_share"] == 0.25 and row["hit_rate"] == 0.75
    assert row["answer_tier_mix"] == "powerful 3" and row["rerouted"] == 2
    assert row["error"].startswith(f"1 of 4 prompts failed: boom: {FAST}: BackendError")
    assert "no answer to boom" in row["error"]
    assert summary.partial == [row] and summary.failed == [] and summary.ok == []
    text = summary.to_text()
    header, _, body = text.splitlines()[:3]
    assert "error %" in header and "partial" in body and " 25 " in body
    assert "0 of 1 job(s) ok, 1 with failed prompts" in text
    paths = summary.write()
    assert "| 0 | profile=development | partial |" in paths["md"].read_text()
    rows = read_csv(paths["csv"])
    assert rows[0]["status"] == "partial" and float(rows[0]["error_share"]) == 0.25
    assert "no answer to boom" in rows[0]["error"]
    ax = summary.plot().axes[0]
    assert any("25% errors" in t.get_text() for t in ax.texts)  # the point is labelled
    assert any(line.get_marker() == "X" for line in ax.get_lines())  # and drawn as an X


def test_summary_of_a_graded_bench_has_its_quality(echo_runtime: TinyRuntime, tmp_path: Path) -> None:
    """The tiny-model bench's grades (contains ':'; the failed prompt counts 0) are the
    summary's quality column and a point of the cost-quality panel."""
    from magi.sweeps.summary import SweepSummary

    metrics, folder = _bench_with_faults(echo_runtime, tmp_path)
    assert metrics["grades"]["mean_grade"] == 0.75
    summary = SweepSummary.from_metrics([(folder, metrics)], folder.parent)
    (row,) = summary.rows
    assert row["quality"] == 0.75 and row["graded"] == 4
    headers, body = summary._display()
    assert body[0][headers.index("quality")] == "0.75"
    assert read_csv(summary.write()["csv"])[0]["quality"] == "0.75"
    latency, quality = summary.plot().axes
    (point,) = [ln for ln in quality.get_lines() if ln.get_marker() == "X"]  # partial: a red X
    assert (point.get_xdata()[0], point.get_ydata()[0]) == (25.0, 0.75)
    assert quality.texts[0].get_text() == "profile=development (25% errors)"


@pytest.mark.slow
def test_multirun_with_a_failing_prompt_marks_the_rows_and_exits_non_zero(
    seed_models_dir: Path, tmp_path: Path
) -> None:
    """Through run.py -m and the callback: a prompt over every model's context fails
    (422) in both variants; the sweep says so instead of reporting ``ok``."""
    prompts = tmp_path / "prompts.jsonl"
    too_long = {"id": "too-long", "prompt": "word " * 300}  # > n_ctx=512 tokens on the tiny models
    prompts.write_text("".join(json.dumps(p) + "\n" for p in [*PROMPTS, too_long]))
    sweep_dir = tmp_path / "sweep"
    proc = bench_two_profiles(sweep_dir, seed_models_dir, prompts)
    assert proc.returncode == 1, proc.stderr
    assert "error: 2 of 2 job(s) had failed prompts" in proc.stderr
    assert "1 of 4 prompts failed: too-long:" in proc.stderr
    assert "Traceback" not in proc.stderr
    rows = read_csv(sweep_dir / "summary.csv")
    assert [r["status"] for r in rows] == ["partial", "partial"]
    assert [float(r["error_share"]) for r in rows] == [0.25, 0.25]
    assert all(r["error"].startswith("1 of 4 prompts failed: too-long:") for r in rows)
    assert "partial" in proc.stdout and "0 of 2 job(s) ok, 2 with failed prompts" in proc.stdout
    for num in range(2):
        metrics = json.loads((sweep_dir / str(num) / "metrics.json").read_text())
        (failure,) = metrics["errors"]["prompts"]
        assert failure["id"] == "too-long" and failure["status_code"] == 422
        assert failure["causes"] and all("n_ctx" in c for c in failure["causes"].values())
    assert (sweep_dir / "summary.png").read_bytes()[:4] == b"\x89PNG"


def test_single_bench_run_with_a_failed_prompt_prints_its_table_and_exits_1(
    echo_runtime: TinyRuntime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``python run.py task=bench`` (not a sweep): the table is printed with the failed
    prompt's cause, then the run ends non-zero."""
    from magi.runtime.pool import shared_pool
    from magi.tasks.bench import bench_task

    monkeypatch.chdir(tmp_path)  # the job folder goes under ./outputs
    prompts = tmp_path / "prompts.jsonl"
    items = [{"id": "hi", "prompt": "Hello"}, {"id": "too-long", "prompt": "word " * 100}]  # > n_ctx=256
    prompts.write_text("".join(json.dumps(p) + "\n" for p in items))
    config = echo_runtime.compose(
        "fast-only", "task=bench", f"task.prompts='{prompts}'", "task.progress=false"
    )
    try:
        with pytest.raises(SystemExit) as info:
            bench_task(config)
    finally:
        shared_pool().close()
    assert info.value.code == 1
    out, err = capsys.readouterr()
    assert "partial" in out and "error %" in out
    assert err.startswith(f"error: 1 of 2 prompts failed: too-long: {FAST}: ") and "n_ctx=256" in err
    (saved,) = tmp_path.glob("outputs/*/*/metrics.json")
    assert json.loads(saved.read_text())["status"] == "partial"
