"""Sweep building blocks without models: prompt sets, task schemas, metrics, summaries."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

import magi
from magi.config.task import BenchTaskConfig, CalibrateTaskConfig, GenericTaskConfig, RunTaskConfig
from magi.errors import ConfigError
from magi.sweeps.callback import summarise_sweep
from magi.sweeps.metrics import percentile, read_metrics, write_metrics
from magi.sweeps.prompts import PromptSetError, load_prompts
from magi.sweeps.summary import NO_METRICS, SweepSummary, variant_labels

from .conftest import ROOT


# -- prompt sets ---------------------------------------------------------------------
def test_shipped_bench_set_loads_with_limit() -> None:
    items = load_prompts("data/prompts/bench.jsonl", limit=3)
    assert [p.id for p in items] == ["capital", "primes", "arith"]  # easy and hard alternate
    assert items[0].hit("The capital is Ottawa.") is True
    assert items[0].hit("Toronto") is False


def test_relative_paths_resolve_from_project_root(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert len(load_prompts("data/prompts/holdout.jsonl")) == 40


def test_missing_prompt_file_names_path_and_setting(tmp_path: Path) -> None:
    with pytest.raises(PromptSetError) as info:
        load_prompts(tmp_path / "nope.jsonl")
    text = str(info.value)
    assert str(tmp_path / "nope.jsonl") in text and "task.prompts" in text and "bench.jsonl" in text


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"prompt": "ok"}\n{"prompt": \n', ":2: not valid JSON"),
        ('{"text": "no prompt key"}\n', ":1: 'prompt' must be a non-empty string"),
        ('{"prompt": "x", "expected": 3}\n', ":1: 'expected' must be"),
        ("\n\n", "holds no prompt"),
    ],
)
def test_malformed_prompt_files_name_file_and_line(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(content)
    with pytest.raises(PromptSetError) as info:
        load_prompts(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_text_prompt_files_and_unknown_formats(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("one\n\ntwo\n")
    assert [p.prompt for p in load_prompts(tmp_path / "p.txt")] == ["one", "two"]
    (tmp_path / "p.csv").write_text("x\n")
    with pytest.raises(PromptSetError, match="unknown prompt file format '.csv'"):
        load_prompts(tmp_path / "p.csv")


# -- task schemas ----------------------------------------------------------------------
def test_each_task_gets_its_schema() -> None:
    assert isinstance(magi.compose().task, RunTaskConfig)
    bench = magi.compose(overrides=["task=bench", "task.limit=3"]).task
    assert isinstance(bench, BenchTaskConfig) and bench.limit == 3 and bench.preload
    calibrate = magi.compose(overrides=["task=calibrate", "task.shares.powerful=0.2"]).task
    assert isinstance(calibrate, CalibrateTaskConfig) and calibrate.shares == {"powerful": 0.2}


def test_bad_task_settings_are_named_together() -> None:
    with pytest.raises(ConfigError) as info:
        magi.compose(overrides=["task=bench", "task.limit=-1", "+task.limt=3"])
    text = str(info.value)
    assert "task.limit: Input should be greater than 0" in text
    assert "task.limt: unknown key. Did you mean 'limit'?" in text


def test_plugin_tasks_without_schema_keep_their_keys() -> None:
    from magi.config.task import task_config

    settings = task_config({"name": "plugin-task", "anything": 1})
    assert isinstance(settings, GenericTaskConfig) and settings.model_dump()["anything"] == 1


# -- metrics and labels --------------------------------------------------------------------
def test_percentile_interpolates_like_numpy() -> None:
    import numpy as np

    values = [0.3, 1.2, 0.7, 5.0, 2.2]
    for q in (0, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], 50) is None


def test_variant_labels_keep_only_what_differs() -> None:
    jobs = [
        ["profile=demo", "task=bench", "runtime.max_tokens=8"],
        ["profile=demo", "task=bench", "runtime.max_tokens=16"],
    ]
    assert variant_labels(jobs) == ["runtime.max_tokens=8", "runtime.max_tokens=16"]
    assert variant_labels([["profile=demo", "task=bench", "task.limit=3"]]) == ["profile=demo"]
    assert variant_labels([[]]) == ["(defaults)"]


def _fake_metrics(profile: str, p50: float, share: float, loads: dict[str, int]) -> dict:
    return {
        "status": "ok",
        "task": "bench",
        "profile": profile,
        "overrides": [f"profile={profile.lower()}", "task=bench"],
        "job": {"num": 0, "pid": 1},
        "prompts": {"count": 4},
        "answered": 4,
        "strong_tier": "powerful",
        "strong_share": share,
        "tier_mix": {"fast": 2, "powerful": 2},
        "model_mix": {"m": 4},
        "latency_s": {"p50": p50, "p95": p50 * 2},
        "ttft_s": {"p50": 0.01, "p95": 0.02},
        "tokens": {"per_s": 50.0},
        "stages": {"answer": {"p50_s": p50, "total_s": 4 * p50}},
        "fallbacks": {"count": 0},
        "errors": {"count": 0},
        "pool": {"loads": sum(loads.values()), "loads_by_model": loads},
        "memory": {"peak_rss_mb": 120.0},
        "quality": {"hit_rate": 0.5},
    }


def _job(folder: Path, overrides: list[str], metrics: dict | None, task: str = "bench") -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / ".hydra" / "config.yaml").write_text(f"task:\n  name: {task}\n")
    if metrics is not None:
        write_metrics(folder, metrics)
    return folder


def test_summary_from_a_sweep_folder_with_a_failed_and_a_crashed_job(tmp_path: Path) -> None:
    ok = _fake_metrics("Demo", 0.5, 0.5, {"m": 1})
    _job(tmp_path / "0", ok["overrides"], ok)
    failed = {"status": "failed", "task": "bench", "error": "Model 'x' not found\nmore", "overrides": []}
    _job(tmp_path / "1", ["profile=broken", "task=bench"], failed)
    _job(tmp_path / "2", ["profile=killed", "task=bench"], None)
    summary = summarise_sweep(tmp_path, wall_s=3.0)
    assert [r["status"] for r in summary.rows] == ["ok", "failed", "failed"]
    assert [r["variant"] for r in summary.rows] == ["profile=demo", "profile=broken", "profile=killed"]
    assert summary.rows[1]["error"].startswith("Model 'x' not found")
    assert summary.rows[2]["error"] == NO_METRICS
    assert summary.model_loads == 1 and summary.loads_by_model == {"m": 1}
    paths = summary.write()
    assert sorted(p.name for p in paths.values()) == ["summary.csv", "summary.md", "summary.png"]
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["status"] for r in rows] == ["ok", "failed", "failed"]
    assert float(rows[0]["latency_p50_s"]) == 0.5
    md = paths["md"].read_text()
    assert "| 1 | profile=broken | failed |" in md and "Model 'x' not found" in md
    assert "wall time 3.0 s" in md and "1 of 3 job(s) ok" in md
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_jobs_of_other_tasks_are_no_rows(tmp_path: Path) -> None:
    _job(tmp_path / "0", ["profile=demo", "task=run"], None, task="run")
    assert summarise_sweep(tmp_path).rows == []


def test_summary_table_object_renders() -> None:
    a = _fake_metrics("Demo", 0.4, 0.5, {"m": 1})
    b = _fake_metrics("Single", 0.2, 0.0, {})
    summary = SweepSummary.from_metrics([(None, a), (None, b)])
    assert [r["variant"] for r in summary.rows] == ["profile=demo", "profile=single"]
    text = summary.to_text()
    assert "profile=single" in text and "model loads across the sweep: 1 (m 1)" in text
    assert summary._repr_markdown_().startswith("| # | variant |")
    assert "latency_p50_s" in summary.to_csv().splitlines()[0]
    fig = summary.plot()
    assert fig._repr_png_()[:4] == b"\x89PNG"  # Jupyter shows it without pyplot
    assert fig.axes[0].get_xlabel().startswith("prompts routed to the 'powerful' tier")


def test_unreadable_metrics_read_as_failed(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text("{not json")
    data = read_metrics(tmp_path)
    assert data is not None and data["status"] == "failed" and "unreadable" in data["error"]
    assert read_metrics(tmp_path / "none") is None


def test_failure_record_keeps_task_partial_figures(tmp_path: Path) -> None:
    from magi.sweeps.jobs import JobInfo, fail_job

    job = JobInfo(output_dir=tmp_path, overrides=["profile=x"], num=3, multirun=True, profile_key="x")
    assert math.isnan(fail_job(ValueError("boom"), job, task="bench"))
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["status"] == "failed" and data["error"] == "boom" and data["task"] == "bench"
    write_metrics(tmp_path, {"status": "failed", "error": "first", "answered": 2})
    fail_job(ValueError("second"), job)
    assert json.loads((tmp_path / "metrics.json").read_text())["error"] == "first"


def test_launcher_configs_open_with_a_command() -> None:
    for path in sorted((ROOT / "conf" / "hydra" / "launcher").glob("*.yaml")):
        text = path.read_text()
        assert text.startswith("# ") and f"hydra/launcher={path.stem}" in text, path
    for path in (ROOT / "conf" / "task").glob("*.yaml"):
        assert path.read_text().startswith("# "), path


@pytest.mark.parametrize("launcher", ["parallel", "slurm"])
def test_launcher_configs_compose(launcher: str) -> None:
    from hydra import compose, initialize_config_dir

    plugin = {
        "parallel": "hydra_plugins.hydra_joblib_launcher",
        "slurm": "hydra_plugins.hydra_submitit_launcher",
    }
    pytest.importorskip(plugin[launcher])
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    target = cfg.hydra.launcher._target_
    assert ("Joblib" in target) if launcher == "parallel" else ("Slurm" in target)
    if launcher == "parallel":
        assert cfg.hydra.launcher.n_jobs == 2


def test_pool_keeps_a_model_loaded_when_only_sampling_defaults_change() -> None:
    """Sweeps over runtime.max_tokens / temperature must not reload the weights."""
    from dataclasses import replace

    from magi.config.model_settings import LoadSettings, SamplingSettings
    from magi.runtime.backend import ModelSpec
    from magi.runtime.pool import ModelPool

    class Fake:
        def __init__(self, spec: ModelSpec) -> None:
            self.spec = spec
            self.loaded = False

        def load(self) -> None:
            self.loaded = True

        def close(self) -> None:
            self.loaded = False

    pool = ModelPool(backend_factory=Fake)  # type: ignore[arg-type]
    spec = ModelSpec(model_id="m", path=Path("m.gguf"))
    pool.register(spec)
    pool.preload("m")
    sampling = replace(spec, sampling=SamplingSettings(max_tokens=8, temperature=0.7))
    pool.register(sampling)
    assert pool.backend("m").loaded and pool.spec("m") == sampling == pool.backend("m").spec
    pool.register(replace(sampling, load=LoadSettings(n_ctx=512)))  # a load setting: the model is reloaded
    assert not pool.backend("m").loaded
    pool.preload("m")
    assert pool.stats.loads == 2


def test_plot_labels_are_short_but_distinct() -> None:
    from magi.sweeps.summary import short_labels

    assert short_labels(["profile.tier_config.0.max_score=2", "profile.tier_config.0.max_score=5"]) == [
        "max_score=2",
        "max_score=5",
    ]
    both = ["a.t.0.max_score=2 a.t.1.max_score=5", "a.t.0.max_score=3 a.t.1.max_score=5"]
    assert short_labels(both) == ["0.max_score=2 1.max_score=5", "0.max_score=3 1.max_score=5"]


# -- failures that don't hide -------------------------------------------------------------
def _partial_metrics() -> dict:
    """A bench where 1 of 4 prompts failed (the figures run_bench writes for it)."""
    data = _fake_metrics("Demo", 0.4, 0.25, {"m": 1})
    cause = "GenerationTimeout: Model 'm' produced nothing in 6.0 s"
    data.update(
        {
            "status": "partial",
            "answered": 3,
            "failed": 1,
            "error_share": 0.25,
            "errors": {
                "count": 1,
                "share": 0.25,
                "first": [f"arith: m: {cause}"],
                "by_type": {"NoModelAnsweredError": 1},
                "prompts": [
                    {
                        "id": "arith",
                        "prompt": "What is 12 times 12?",
                        "routed_tier": "fast",
                        "error_type": "NoModelAnsweredError",
                        "status_code": 503,
                        "error": "No model could answer the answer stage (1 failed)",
                        "causes": {"m": cause},
                    }
                ],
            },
        }
    )
    return data


def test_callback_ends_a_sweep_with_failed_prompts_non_zero(tmp_path: Path, capsys) -> None:
    from omegaconf import OmegaConf

    from magi.sweeps.callback import SweepSummaryCallback

    partial = _partial_metrics()
    _job(tmp_path / "0", partial["overrides"], partial)
    ok = _fake_metrics("Single", 0.2, 0.0, {})
    _job(tmp_path / "1", ok["overrides"], ok)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    with pytest.raises(SystemExit) as info:
        SweepSummaryCallback().on_multirun_end(config)
    assert info.value.code == 1
    out, err = capsys.readouterr()
    assert "error: 1 of 2 job(s) had failed prompts: job 0 (profile=demo): 1 of 4 prompts failed" in err
    assert "partial" in out and "1 of 2 job(s) ok, 1 with failed prompts" in out
    SweepSummaryCallback(fail_on_error=False).on_multirun_end(config)  # reports, keeps status 0
    assert (tmp_path / "summary.csv").is_file()


def test_partial_row_shows_its_error_share_and_first_cause() -> None:
    summary = SweepSummary.from_metrics(
        [(None, _partial_metrics()), (None, _fake_metrics("B", 0.2, 0.0, {}))]
    )
    partial, ok = summary.rows
    assert (partial["status"], partial["error_share"], partial["failed"]) == ("partial", 0.25, 1)
    assert (
        partial["error"]
        == "1 of 4 prompts failed: arith: m: GenerationTimeout: Model 'm' produced nothing in 6.0 s"
    )
    assert (ok["status"], ok["error_share"], ok["error"]) == ("ok", 0.0, "")
    headers, body = summary._display()
    col = headers.index("error %")
    assert headers[col - 1] == "prompts"  # next to the prompt count, always shown
    assert [r[col] for r in body] == ["25", "0"]
    md = summary.to_markdown()
    assert "| 0 | profile=demo | partial |" in md and "GenerationTimeout" in md


def test_metrics_from_before_error_shares_still_summarise() -> None:
    """metrics.json files written before the error share existed: derived from the counts."""
    old = _fake_metrics("Old", 0.4, 0.5, {})
    old["errors"] = {"count": 1, "first": ["x: boom"]}
    (row,) = SweepSummary.from_metrics([(None, old)]).rows
    assert row["error_share"] == 0.25 and row["status"] == "partial"  # ok with errors was not ok


def test_headline_says_how_many_prompts_failed() -> None:
    from magi.sweeps.bench import headline

    data = _partial_metrics()
    data["tokens"] = {"per_s": 10.0}
    line = headline(data)
    assert line.startswith("partial: 3 of 4 prompts answered, 1 failed (25%; first: arith:")
    assert "latency p50 0.40 s" in line


# -- quality in the summary: the mean grade column and the cost-quality panel -----------
def _graded(profile: str, share: float, mean_grade: float | None, overrides: list[str]) -> dict:
    data = _fake_metrics(profile, 0.3, share, {})
    data["overrides"] = overrides
    data["tokens"] = {"per_s": 50.0, "per_prompt": 12.5}
    data["grades"] = {"mean_grade": mean_grade, "graded": 4 if mean_grade is not None else 0}
    return data


def test_summary_quality_column_and_cost_quality_plot(tmp_path: Path) -> None:
    jobs = [
        _graded("Dev", 0.25, 0.5, ["profile=dev", "profile.tier_config.0.max_score=8"]),
        _graded("Dev", 0.75, 0.75, ["profile=dev", "profile.tier_config.0.max_score=2"]),
        _graded("Single", 0.0, None, ["profile=single", "profile.tier_config.0.max_score=2"]),
    ]
    summary = SweepSummary.from_metrics([(None, m) for m in jobs], tmp_path)
    assert [r["quality"] for r in summary.rows] == [0.5, 0.75, None]
    assert summary.rows[0]["tokens_per_prompt"] == 12.5
    headers, body = summary._display()
    col = headers.index("quality")
    assert [r[col] for r in body] == ["0.50", "0.75", ""]  # blank when ungraded
    paths = summary.write()
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["quality"] for r in rows] == ["0.5", "0.75", ""]
    assert "| quality |" in paths["md"].read_text().splitlines()[2]
    fig = summary.plot()
    latency, quality = fig.axes
    assert latency.get_xlabel().startswith("prompts routed to the 'powerful' tier")
    assert quality.get_ylabel().startswith("quality: mean grade")
    graded_labels = ["profile=dev max_score=8", "profile=dev max_score=2"]  # the ungraded job: none
    assert [t.get_text() for t in quality.texts] == graded_labels
    points = [ln for ln in quality.get_lines() if ln.get_marker() == "o"]
    assert sorted((ln.get_xdata()[0], ln.get_ydata()[0]) for ln in points) == [(25.0, 0.5), (75.0, 0.75)]
    curve = next(ln for ln in quality.get_lines() if ln.get_linestyle() == "-")  # Dev's two thresholds
    assert list(curve.get_xdata()) == [25.0, 75.0] and list(curve.get_ydata()) == [0.5, 0.75]
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_ungraded_sweeps_keep_one_plot_and_no_quality_column() -> None:
    summary = SweepSummary.from_metrics([(None, _fake_metrics("Demo", 0.4, 0.5, {}))])
    assert summary.rows[0]["quality"] is None and "quality" in summary.columns  # the CSV has it
    assert "quality" not in summary._display()[0]
    assert len(summary.plot().axes) == 1
