"""task=tiers / magi evaluate: every prompt on every tier once, answers cached, thresholds
swept offline (magi.sweeps.tiers)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from magi.config.base import ConsistencyError
from magi.config.profile import ModelProfile
from magi.routing.metrics import quality_curve, routing_figures
from magi.runtime.pool import ModelPool
from magi.sweeps.jobs import JobInfo
from magi.sweeps.tiers import (
    CACHE_FILE,
    SUMMARY_FILE,
    SUMMARY_MD,
    TIERS_FILE,
    TWO_STAGE,
    cache_path,
    offline_sweep,
    read_records,
    route_arm,
    run_tiers,
    tiers_summary,
)
from magi.testing.runtime import FAST, REASONER, FaultInjector, TinyRuntime

pytest_plugins = ["magi.testing.fixtures"]

# The echo models answer ':::...' to these prompts (see test_graders' bench test): 'contains :'
# grades 1 on every tier, 'number 4' grades 0.
SET = [
    {"id": "hit", "prompt": "Say hello", "grader": "contains", "expected": [":"]},
    {
        "id": "num",
        "prompt": "What is 2+2? Explain step by step and prove it.",
        "grader": "number",
        "expected": 4,
    },
]


def _write_set(folder: Path, lines: list[dict], name: str = "set.jsonl") -> Path:
    path = folder / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def _run(
    env: TinyRuntime, tmp_path: Path, folder: str, *overrides: str, injector: FaultInjector | None = None
) -> tuple[dict, Path, FaultInjector]:
    injector = injector if injector is not None else FaultInjector()
    prompts = _write_set(tmp_path, SET)
    config = env.compose(
        "development",
        "task=tiers",
        f"task.prompts='{prompts}'",
        f"task.cache_dir='{tmp_path / 'cache'}'",
        "task.progress=false",
        "runtime.n_ctx=1024",
        "profile.two_stage.enabled=true",
        *overrides,
    )
    pool = ModelPool(backend_factory=injector)
    try:
        job = JobInfo(output_dir=tmp_path / folder, profile_key="development")
        return run_tiers(config, job, pool=pool), job.output_dir, injector
    finally:
        pool.close()


def test_every_prompt_is_answered_on_every_tier_and_two_stage(
    echo_runtime: TinyRuntime, tmp_path: Path
) -> None:
    summary, folder, injector = _run(echo_runtime, tmp_path, "run")
    records = read_records(folder)
    assert [(r["id"], r["arm"]) for r in records] == [
        ("hit", "fast"),
        ("num", "fast"),
        ("hit", "powerful"),
        ("num", "powerful"),
        ("hit", TWO_STAGE),
        ("num", TWO_STAGE),
    ]
    models = {r["arm"]: r["models"] for r in records}
    assert models == {"fast": [FAST], "powerful": [REASONER], TWO_STAGE: [FAST, REASONER]}
    for r in records:
        assert r["answer"] and r["completion_tokens"] > 0 and r["prompt_tokens"] > 0 and r["total_s"] > 0
        assert r["error"] is None and r["cached"] is False and r["key"] and isinstance(r["score"], float)
        assert r["two_stage"] is (r["arm"] == TWO_STAGE)
        assert r["grade"] == (1.0 if r["id"] == "hit" else 0.0)
    # every prompt's score is the real scorer's, the same on each arm (the two-stage arm is forced)
    assert len({(r["id"], r["score"]) for r in records}) == 2
    # 2 answers on fast + 2 drafts; 2 on powerful + 2 refines
    assert injector.calls == {FAST: 4, REASONER: 4}
    assert summary["asked"] == 6 and summary["reused"] == 0
    assert summary["per_arm"]["fast"]["quality"] == 0.5 and summary["per_arm"][TWO_STAGE]["graded"] == 2
    saved = json.loads((folder / SUMMARY_FILE).read_text())
    assert saved["per_arm"] == summary["per_arm"] and saved["arms"][TWO_STAGE]["tiers"] == [
        "fast",
        "powerful",
    ]
    table = (folder / SUMMARY_MD).read_text()
    assert "| all fast | 0.500 |" in table and "| profile |" in table
    assert (tmp_path / "cache" / CACHE_FILE).is_file()


def test_a_tier_alone_does_not_fall_back_to_another(echo_runtime: TinyRuntime, tmp_path: Path) -> None:
    injector = FaultInjector()
    injector.fail(FAST)
    _, folder, _ = _run(echo_runtime, tmp_path, "run", "profile.two_stage.enabled=false", injector=injector)
    fast = [r for r in read_records(folder) if r["arm"] == "fast"]
    assert [r["answer"] for r in fast] == [None, None]  # no powerful model answered for it
    assert all("injected failure" in r["error"] and r["grade"] == 0.0 for r in fast)
    assert all(r["answer"] for r in read_records(folder) if r["arm"] == "powerful")
    assert not (tmp_path / "cache" / CACHE_FILE).read_text().count('"arm": "fast"')  # failures not cached


def test_a_rerun_reuses_the_stored_answers_and_asks_no_model(
    echo_runtime: TinyRuntime, tmp_path: Path
) -> None:
    first, folder1, _ = _run(echo_runtime, tmp_path, "run1")
    second, folder2, injector = _run(echo_runtime, tmp_path, "run2")
    assert injector.calls == {} and second["asked"] == 0 and second["reused"] == 6
    old, new = read_records(folder1), read_records(folder2)
    assert all(r["cached"] for r in new)
    keep = ("id", "arm", "answer", "grade", "completion_tokens", "total_s", "models", "score")
    assert [{k: r[k] for k in keep} for r in new] == [{k: r[k] for k in keep} for r in old]
    assert second["per_arm"] == first["per_arm"]
    # another setting that changes answers asks again
    _, _, injector = _run(echo_runtime, tmp_path, "run3", "runtime.max_tokens=6")
    assert injector.calls == {FAST: 4, REASONER: 4}
    # a changed model file (same bytes, a new modification time) asks again: its tier and the
    # two-stage path that refines on it, not the fast tier alone
    path = echo_runtime.path(REASONER)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    _, _, injector = _run(echo_runtime, tmp_path, "run4")
    assert injector.calls == {FAST: 2, REASONER: 4}  # the two-stage arm's drafts


def test_changed_grading_fields_regrade_the_stored_answer_without_asking(
    echo_runtime: TinyRuntime, tmp_path: Path
) -> None:
    _run(echo_runtime, tmp_path, "run1", "profile.two_stage.enabled=false")
    SET[0]["expected"] = ["zzz"]  # the echo answer ':::' no longer contains it
    try:
        summary, folder, injector = _run(echo_runtime, tmp_path, "run2", "profile.two_stage.enabled=false")
    finally:
        SET[0]["expected"] = [":"]
    assert injector.calls == {} and summary["asked"] == 0
    hits = [r for r in read_records(folder) if r["id"] == "hit"]
    assert [(r["grade"], r["expected"], r["cached"]) for r in hits] == [(0.0, ["zzz"], True)] * 2


def test_reuse_false_asks_again(echo_runtime: TinyRuntime, tmp_path: Path) -> None:
    _run(echo_runtime, tmp_path, "run1", "profile.two_stage.enabled=false")
    summary, _, injector = _run(
        echo_runtime, tmp_path, "run2", "profile.two_stage.enabled=false", "task.reuse=false"
    )
    assert injector.calls == {FAST: 2, REASONER: 2} and summary["reused"] == 0


def test_the_cache_defaults_beside_the_run_folders_parent(tmp_path: Path) -> None:
    from magi.config.task import TiersTaskConfig

    job = JobInfo(output_dir=tmp_path / "outputs" / "2026-12-02" / "07-00-00")
    assert cache_path(TiersTaskConfig(), job) == tmp_path / "outputs" / CACHE_FILE
    assert cache_path(TiersTaskConfig(cache_dir=tmp_path / "c"), job) == tmp_path / "c" / CACHE_FILE


# -- the offline sweep, on records written by hand -------------------------------------
SCORES = {"a": 1.0, "b": 3.0, "c": 6.0, "d": 9.0}
FAST_GRADES = {"a": 1.0, "b": 1.0, "c": 0.0, "d": 0.0}
STRONG_GRADES = {"a": 1.0, "b": 0.5, "c": 1.0, "d": 1.0}


def _records() -> list[dict]:
    rows = []
    for arm, grades, seconds, tokens in (
        ("fast", FAST_GRADES, 1.0, 10),
        ("powerful", STRONG_GRADES, 3.0, 30),
    ):
        for prompt_id, grade in grades.items():
            rows.append(
                {
                    "id": prompt_id,
                    "arm": arm,
                    "grade": grade,
                    "total_s": seconds,
                    "prompt_tokens": 5,
                    "completion_tokens": tokens,
                }
            )
    return rows


def test_offline_sweep_numbers_by_hand() -> None:
    points = offline_sweep(_records(), SCORES, [5.0, 2.0, 10.0, -1.0])
    # 5: a, b fast (1, 1), c, d powerful (1, 1); 1+1+3+3 s; 10+10+30+30 tokens
    p = points[0]
    assert (p.quality, p.graded, p.strong_share, p.tier_share) == (
        1.0,
        4,
        0.5,
        {"fast": 0.5, "powerful": 0.5},
    )
    assert (p.seconds, p.seconds_per_prompt, p.prompt_tokens, p.completion_tokens) == (8.0, 2.0, 20, 80)
    # 2: a fast (1); b, c, d powerful (0.5, 1, 1)
    assert (points[1].quality, points[1].strong_share, points[1].seconds) == (0.875, 0.75, 10.0)
    assert (points[2].quality, points[2].strong_share, points[2].completion_tokens) == (0.5, 0.0, 40)
    assert (points[3].quality, points[3].strong_share, points[3].seconds) == (0.875, 1.0, 12.0)
    # a score equal to a threshold stays in the lower tier, as in the router
    assert offline_sweep(_records(), SCORES, [3.0])[0].tier_share == {"fast": 0.5, "powerful": 0.5}


def test_a_failed_grade_counts_and_an_ungradable_answer_is_left_out() -> None:
    rows = _records()
    rows[0]["grade"] = None  # a: fast has no grade (e.g. a judge without a number)
    p = offline_sweep(rows, SCORES, [10.0])[0]
    assert (p.quality, p.graded) == (pytest.approx(1 / 3), 3)


def test_route_arm_with_three_tiers_and_two_stage() -> None:
    tiers = ["fast", "mid", "powerful"]
    assert route_arm(1.0, (2.0, 5.0), tiers) == ("fast", "fast")
    assert route_arm(5.0, (2.0, 5.0), tiers) == ("mid", "mid")
    assert route_arm(9.0, (2.0, 5.0), tiers, "powerful") == ("powerful", TWO_STAGE)
    with pytest.raises(ValueError, match="3 tiers need 2 threshold"):
        offline_sweep(_records(), SCORES, [5.0], tiers=tiers)
    with pytest.raises(ValueError, match="no record of arm 'two-stage'"):
        offline_sweep(_records(), SCORES, [5.0], two_stage_tier="powerful")


def _profile(two_stage: bool = False) -> ModelProfile:
    return ModelProfile(
        name="p",
        enabled_models=["m1", "m2"],
        tier_config=[{"name": "fast", "max_score": 5.0}, {"name": "powerful"}],
        two_stage={"enabled": two_stage},
    )


def test_summary_points_curve_and_routellm_figures() -> None:
    summary = tiers_summary(_records(), SCORES, profile=_profile(), thresholds=[2.0])
    assert [p["label"] for p in summary["points"]] == ["profile", "thresholds=2.0"]
    assert summary["points"][0]["quality"] == 1.0 and summary["points"][1]["quality"] == 0.875
    curve = [(p["strong_share"], p["quality"]) for p in summary["curve"]]
    assert curve == [(0.0, 0.5), (0.25, 0.75), (0.5, 1.0), (0.75, 0.875), (1.0, 0.875)]
    figures = summary["routellm"]
    weak = [FAST_GRADES[i] >= 0.5 for i in SCORES]
    strong = [STRONG_GRADES[i] >= 0.5 for i in SCORES]
    assert figures["apgr"] == pytest.approx(routing_figures(list(SCORES.values()), weak, strong).apgr)
    assert (figures["weak"], figures["strong"], figures["prompts"]) == ("fast", "powerful", 4)
    # graded: the area under the curve above is 0.828125; (0.828125 - 0.5) / (0.875 - 0.5)
    assert figures["graded_apgr"] == pytest.approx(0.875)


def test_apgr_of_synthetic_outcomes_matches_routing_figures() -> None:
    import random

    rng = random.Random(7)
    scores, weak, strong, rows = {}, [], [], []
    for n in range(60):
        prompt_id = f"q{n}"
        scores[prompt_id] = float(rng.randint(0, 20)) / 2  # ties included
        w, s = rng.random() < 0.4, rng.random() < 0.8
        weak.append(w)
        strong.append(s)
        for arm, ok in (("fast", w), ("powerful", s)):
            rows.append({"id": prompt_id, "arm": arm, "grade": float(ok), "total_s": 1.0})
    summary = tiers_summary(rows, scores, profile=_profile())
    expected = routing_figures(list(scores.values()), weak, strong)
    for name in ("apgr", "cpt50", "cpt80", "auc", "weak_accuracy", "strong_accuracy"):
        assert summary["routellm"][name] == pytest.approx(getattr(expected, name)), name
    # with 0/1 grades the offline curve is RouteLLM's quality curve
    curve = [(p["strong_share"], p["quality"]) for p in summary["curve"]]
    assert summary["routellm"]["graded_apgr"] == pytest.approx(expected.apgr)  # 0/1 grades: the same
    expected_curve = quality_curve(list(scores.values()), weak, strong)
    assert [x for x, _ in curve] == pytest.approx([x for x, _ in expected_curve])
    assert [y for _, y in curve] == pytest.approx([y for _, y in expected_curve])


def test_routellm_figures_without_a_gap_say_why() -> None:
    rows = [r if r["arm"] == "fast" else {**r, "grade": 0.0} for r in _records()]
    figures = tiers_summary(rows, SCORES, profile=_profile())["routellm"]
    assert "no performance gap" in figures["error"]


def test_the_cost_quality_plot_draws_the_curve_and_the_points(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plot needs the bench extra")
    from magi.sweeps.tiers import SUMMARY_PNG, plot_tiers, write_summary

    summary = tiers_summary(_records(), SCORES, profile=_profile(), thresholds=[2.0])
    write_summary(tmp_path, summary)
    assert (tmp_path / SUMMARY_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    share_ax, time_ax = plot_tiers(summary).axes
    curve, *dots, random_router = share_ax.lines
    assert list(curve.get_xdata()) == [0.0, 25.0, 50.0, 75.0, 100.0]
    assert list(curve.get_ydata()) == [0.5, 0.75, 1.0, 0.875, 0.875]
    assert [(d.get_xdata()[0], d.get_ydata()[0]) for d in dots] == [
        (100 * p["strong_share"], p["quality"]) for p in summary["points"]
    ]
    assert [t.get_text() for t in share_ax.texts] == ["profile", "thresholds=2.0"]
    assert list(random_router.get_ydata()) == [0.5, 0.875]
    assert f"APGR {summary['routellm']['apgr']:.3f}" in share_ax.get_title()
    seconds = sorted(p["seconds_per_prompt"] for p in summary["curve"])
    assert sorted(time_ax.lines[0].get_xdata()) == pytest.approx(seconds)
    one_tier = tmp_path / "one"
    one_tier.mkdir()
    write_summary(one_tier, {"profile": "p", "tiers": ["fast"]})  # no curve: no plot
    assert not (one_tier / SUMMARY_PNG).exists() and (one_tier / SUMMARY_FILE).exists()


def test_the_two_stage_arm_is_the_strong_one_when_the_strongest_tier_refines() -> None:
    rows = _records() + [{**r, "arm": TWO_STAGE} for r in _records() if r["arm"] == "powerful"]
    summary = tiers_summary(rows, SCORES, profile=_profile(two_stage=True))
    assert summary["two_stage_tier"] == "powerful" and summary["routellm"]["strong"] == TWO_STAGE
    assert summary["points"][0]["quality"] == 1.0


# -- settings and the command line -----------------------------------------------------
def test_task_settings_are_validated() -> None:
    from magi.config.task import TiersTaskConfig, task_config
    from magi.tasks import get_task

    assert get_task("tiers").__name__ == "tiers_task"
    assert isinstance(task_config({"name": "tiers", "limit": 3}), TiersTaskConfig)
    with pytest.raises(ConsistencyError, match="limit"):
        task_config({"name": "tiers", "limit": -1})
    with pytest.raises(ConsistencyError, match="Did you mean 'reuse'"):
        task_config({"name": "tiers", "reuze": False})


def test_evaluate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from magi.cli import main

    assert main(["evaluate", "nosuch", "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Profile 'nosuch' not found" in err and "development" in err and "Traceback" not in err
    bad = _write_set(tmp_path, [{"prompt": "ok", "expected": "x"}, {"prompt": "2+2?", "grader": "number"}])
    assert main(["evaluate", "development", "--prompts", str(bad), "--output-dir", str(tmp_path / "o")]) == 2
    assert "set.jsonl:2: the 'number' grader needs 'expected'" in capsys.readouterr().err
    assert not (tmp_path / "o" / TIERS_FILE).exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "development", "--limit", "0"])
    assert exit_info.value.code == 2


def test_thresholds_that_do_not_fit_the_profile_are_refused_before_any_answer(
    echo_runtime: TinyRuntime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from magi.cli import main

    prompts = _write_set(tmp_path, SET)
    options = [arg for o in echo_runtime.overrides for arg in ("-o", o)]
    out = tmp_path / "run"
    argv = ["evaluate", "development", "--prompts", str(prompts), "--output-dir", str(out), *options]
    assert main([*argv, "-o", "task.thresholds=[[2,6]]"]) == 2  # development has two tiers: one cut
    err = capsys.readouterr().err
    assert "task.thresholds" in err and "[2.0, 6.0]" in err and "Traceback" not in err
    assert not out.exists()  # refused before any model was asked or anything written


def test_an_explicit_run_folder_keeps_its_cache_beside_it(
    echo_runtime: TinyRuntime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--output-dir runs/a``: the answer cache is ``runs/tiers-cache.jsonl``, found by the
    next run in ``runs/`` (it went two levels up, outside the folder the user named)."""
    from magi.cli import main

    prompts = _write_set(tmp_path, SET)
    options = [arg for o in echo_runtime.overrides for arg in ("-o", o)]
    runs = tmp_path / "work" / "runs"
    argv = ["evaluate", "development", "--prompts", str(prompts), "--limit", "1", *options]
    assert main([*argv, "--output-dir", str(runs / "a")]) == 0
    assert (runs / CACHE_FILE).is_file() and not (tmp_path / CACHE_FILE).exists()
    assert main([*argv, "--output-dir", str(runs / "b")]) == 0
    assert "0 answer(s) asked" in capsys.readouterr().out


def test_evaluate_on_tiny_models(
    echo_runtime: TinyRuntime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from magi.cli import main

    prompts = _write_set(tmp_path, SET)
    options = [arg for o in echo_runtime.overrides for arg in ("-o", o)]
    argv = ["evaluate", "development", "--prompts", str(prompts), "--limit", "1", *options]
    argv += ["--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    argv += ["-o", "task.progress=false"]
    try:
        _evaluate_twice(main, argv, tmp_path, capsys)
    finally:
        from magi.runtime.pool import shared_pool

        shared_pool().close()  # the models magi evaluate loaded (else freed at interpreter exit)


def _evaluate_twice(main, argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| all fast |" in out and "3 answer(s) asked, 0 reused" in out
    assert [(r["id"], r["arm"]) for r in read_records(tmp_path / "out")] == [
        ("hit", "fast"),
        ("hit", "powerful"),
        ("hit", TWO_STAGE),  # the development profile drafts on fast and refines on powerful
    ]
    assert main(argv) == 0
    assert "0 answer(s) asked, 3 reused" in capsys.readouterr().out


def test_arms_are_the_tiers_with_models_then_two_stage() -> None:
    from magi.sweeps.tiers import profile_arms

    both = {"fast": ["m1"], "powerful": ["m2"]}
    assert [a.name for a in profile_arms(_profile(two_stage=True), both)] == ["fast", "powerful", TWO_STAGE]
    assert [a.name for a in profile_arms(_profile(), both)] == ["fast", "powerful"]
    assert [a.name for a in profile_arms(_profile(two_stage=True), {"fast": ["m1"]})] == ["fast"]
    assert profile_arms(_profile(), {}) == []


def test_records_as_routing_outcomes() -> None:
    from magi.sweeps.tiers import tiers_outcomes

    rows = [{**r, "prompt": f"question {r['id']}"} for r in _records()]
    rows[0]["grade"] = None  # a, fast: not graded, so no outcome
    assert tiers_outcomes(rows, "fast", "powerful") == [
        {"prompt": "question b", "weak": True, "strong": True},
        {"prompt": "question c", "weak": False, "strong": True},
        {"prompt": "question d", "weak": False, "strong": True},
    ]


def test_a_prompt_id_used_twice_is_refused(echo_runtime: TinyRuntime, tmp_path: Path) -> None:
    from magi.sweeps.prompts import PromptSetError

    prompts = _write_set(tmp_path, [SET[0], {**SET[1], "id": "hit"}], name="twice.jsonl")
    config = echo_runtime.compose("development", "task=tiers", f"task.prompts='{prompts}'")
    with pytest.raises(
        PromptSetError, match=r"twice.jsonl:2: prompt id 'hit' is used twice \(first on line 1\)"
    ):
        run_tiers(config, JobInfo(output_dir=tmp_path / "run"), pool=ModelPool())


@pytest.mark.slow
def test_task_tiers_through_run_py(echo_runtime: TinyRuntime, tmp_path: Path) -> None:
    """``python run.py task=tiers`` writes the records and the summary into Hydra's run folder,
    with the cache beside the run folder's parent; a bad prompt set exits 2 naming the line."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    prompts = _write_set(tmp_path, SET)
    run_dir = tmp_path / "outputs" / "day" / "run1"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "run.py", "task=tiers", "profile=development", *echo_runtime.overrides, *args],
            cwd=root,
            capture_output=True,
            text=True,
            env={**os.environ, "HYDRA_FULL_ERROR": "0"},
            timeout=300,
        )

    proc = run(f"task.prompts='{prompts}'", "task.progress=false", f"hydra.run.dir='{run_dir}'")
    assert proc.returncode == 0, proc.stderr
    assert "| all two-stage |" in proc.stdout and "6 answer(s) asked, 0 reused" in proc.stdout
    assert len(read_records(run_dir)) == 6 and (run_dir / SUMMARY_MD).is_file()
    assert (tmp_path / "outputs" / CACHE_FILE).is_file()
    bad = _write_set(tmp_path, [{"prompt": "2+2?", "grader": "number"}], name="bad.jsonl")
    proc = run(f"task.prompts='{bad}'", f"hydra.run.dir='{tmp_path / 'run2'}'")
    assert proc.returncode == 2 and "bad.jsonl:1: the 'number' grader needs 'expected'" in proc.stderr


def test_three_tiers_curve_moves_the_boundary_below_the_strongest() -> None:
    profile = ModelProfile(
        name="p3",
        enabled_models=["m1", "m2", "m3"],
        tier_config=[
            {"name": "fast", "max_score": 2.0},
            {"name": "mid", "max_score": 5.0},
            {"name": "powerful"},
        ],
    )
    rows = _records() + [{**r, "arm": "mid", "grade": 0.5} for r in _records() if r["arm"] == "fast"]
    summary = tiers_summary(rows, SCORES, profile=profile)
    assert summary["tiers"] == ["fast", "mid", "powerful"]
    # the profile: a (1) fast, b (3) mid, c (6) and d (9) powerful
    assert summary["points"][0]["tier_share"] == {"fast": 0.25, "mid": 0.25, "powerful": 0.5}
    shares = [(p["thresholds"], p["tier_share"]) for p in summary["curve"]]
    assert shares[0] == ([2.0, 9.0], {"fast": 0.25, "mid": 0.75, "powerful": 0.0})
    assert shares[2] == ([2.0, 4.5], {"fast": 0.25, "mid": 0.25, "powerful": 0.5})
    assert shares[3] == ([2.0, 2.0], {"fast": 0.25, "mid": 0.0, "powerful": 0.75})
    assert shares[-1] == ([0.0, 0.0], {"fast": 0.0, "mid": 0.0, "powerful": 1.0})
    assert (summary["routellm"]["weak"], summary["routellm"]["strong"]) == ("fast", "powerful")
