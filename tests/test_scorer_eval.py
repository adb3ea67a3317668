"""Scoring the scorers on routing outcomes: APGR, CPT, the outcome file, `magi scorer eval`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from magi.cli import main
from magi.routing.metrics import apgr, cpt, quality_curve, routing_figures
from magi.routing.outcomes import Outcome, OutcomeFileError, fold_of, load_outcomes, split_folds

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "routing" / "outcomes-sample.jsonl"

# Four prompts: the first two are where routing up pays off (weak wrong, strong right),
# the last two both tiers answer. Weak quality 0.5, strong 1.0: a gap of 0.5.
WEAK = [False, False, True, True]
STRONG = [True, True, True, True]


def test_perfect_router_recovers_the_gap_as_early_as_possible() -> None:
    scores = [4.0, 3.0, 2.0, 1.0]
    curve = quality_curve(scores, WEAK, STRONG)
    assert curve == [(0, 0.5), (0.25, 0.75), (0.5, 1.0), (0.75, 1.0), (1.0, 1.0)]
    # PGR 0, 0.5, 1, 1, 1 at shares 0, .25, .5, .75, 1: trapezoids .0625 + .1875 + .25 + .25
    assert apgr(scores, WEAK, STRONG) == pytest.approx(0.75)
    assert cpt(scores, WEAK, STRONG, 0.5) == pytest.approx(0.25)
    assert cpt(scores, WEAK, STRONG, 0.8) == pytest.approx(0.4)


def test_perfect_router_approaches_one_when_few_prompts_need_the_strong_tier() -> None:
    weak = [False] + [True] * 999
    strong = [True] * 1000
    scores = [1.0] + [0.0] * 999
    # the gap is closed after the first of 1,000 calls: APGR = 1 - 0.001 / 2 (the first trapezoid)
    assert apgr(scores, weak, strong) == pytest.approx(0.9995)


def test_reversed_router_recovers_the_gap_last() -> None:
    scores = [1.0, 2.0, 3.0, 4.0]
    # PGR 0, 0, 0, 0.5, 1: trapezoids 0 + 0 + .0625 + .1875
    assert apgr(scores, WEAK, STRONG) == pytest.approx(0.25)
    assert cpt(scores, WEAK, STRONG, 0.5) == pytest.approx(0.75)


def test_constant_scorer_is_a_random_router() -> None:
    # one tie: the curve is the straight line from weak to strong quality
    assert apgr([5.0] * 4, WEAK, STRONG) == pytest.approx(0.5)
    assert cpt([5.0] * 4, WEAK, STRONG, 0.8) == pytest.approx(0.8)


def test_random_scores_average_one_half() -> None:
    rng = random.Random(0)
    weak = [rng.random() < 0.6 for _ in range(2000)]
    strong = [w or rng.random() < 0.5 for w in weak]
    values = [apgr([rng.random() for _ in weak], weak, strong) for _ in range(20)]
    assert sum(values) / len(values) == pytest.approx(0.5, abs=0.02)


def test_apgr_can_exceed_one_when_the_weak_tier_wins_some() -> None:
    # the last prompt only the weak tier answers: routing everything up loses it again
    weak, strong = [False, False, True], [True, True, False]
    assert apgr([3.0, 2.0, 1.0], weak, strong) > 1.0


def test_no_gap_is_an_error() -> None:
    with pytest.raises(ValueError, match="no performance gap"):
        apgr([1.0, 2.0], [True, True], [True, False])


def test_routing_figures_auc_counts_where_routing_up_pays_off() -> None:
    figures = routing_figures([4.0, 3.0, 2.0, 1.0], WEAK, STRONG)
    assert figures.auc == 1.0
    assert figures.weak_accuracy == 0.5 and figures.strong_accuracy == 1.0
    assert figures.to_dict()["apgr"] == pytest.approx(0.75)


# -- the outcome file ---------------------------------------------------------------
def test_the_sample_reads_and_groups_by_bench() -> None:
    items = load_outcomes(SAMPLE)
    assert len(items) == 239
    assert {o.group for o in items} == {"gsm8k", "mmlu"}
    assert all(isinstance(o, Outcome) for o in items)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"prompt": "x", "weak": "yes", "strong": true}', "booleans 'weak' and 'strong'"),
        ('{"prompt": 3, "weak": true, "strong": true}', "string 'prompt'"),
        ('{"prompt": "x", "weak": true, "strong": true, "bench": 5}', "'bench' must be a string"),
    ],
)
def test_a_bad_line_is_named(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "outcomes.jsonl"
    path.write_text('{"prompt": "ok", "weak": true, "strong": true}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(OutcomeFileError, match=problem) as info:
        load_outcomes(path)
    assert f"{path}:2:" in str(info.value)


def test_missing_and_empty_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(OutcomeFileError, match="no such outcome file") as info:
        load_outcomes(tmp_path / "nope.jsonl")
    assert info.value.status_code == 404
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(OutcomeFileError, match="no outcomes"):
        load_outcomes(empty)


def test_folds_are_by_question_and_stable() -> None:
    items = load_outcomes(SAMPLE)
    parts = split_folds(items + items[:10], 5)  # the first ten asked twice
    assert sorted(i for p in parts for i in p) == list(range(len(items) + 10))
    for k, part in enumerate(parts):
        assert {fold_of((items + items[:10])[i].prompt, 5) for i in part} == {k}
    assert all(parts)
    with pytest.raises(ValueError):
        split_folds(items, 1)


# -- magi scorer eval ----------------------------------------------------------------
def test_cli_eval_reports_each_scorer_per_bench(capsys: pytest.CaptureFixture[str]) -> None:
    # named: other test modules register scorers of their own in this process, and
    # without --scorer every registered one is judged
    assert main(["scorer", "eval", str(SAMPLE), "--scorer", "heuristic", "--scorer", "learned"]) == 0
    out = capsys.readouterr().out
    for scorer in ("heuristic", "learned"):
        for bench in ("gsm8k", "mmlu", "all"):
            assert any(line.split()[:2] == [scorer, bench] for line in out.splitlines()), (scorer, bench)
    assert "APGR" in out and "CPT50" in out and "CPT80" in out


def test_cli_eval_json_one_scorer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scorer", "eval", str(SAMPLE), "--scorer", "heuristic", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report) == ["heuristic"]
    assert set(report["heuristic"]) == {"gsm8k", "mmlu", "all"}
    gsm8k = report["heuristic"]["gsm8k"]
    assert gsm8k["prompts"] == 80 and 0 <= gsm8k["cpt50"] <= gsm8k["cpt80"] <= 1


def test_cli_eval_user_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scorer", "eval", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl: no such outcome file" in capsys.readouterr().err
    assert main(["scorer", "eval", str(SAMPLE), "--scorer", "heuristc"]) == 2
    assert "Did you mean 'heuristic'" in capsys.readouterr().err
    assert main(["scorer", "eval", str(SAMPLE), "--model", str(tmp_path / "none.json")]) == 2
    assert "none.json" in capsys.readouterr().err


def test_eval_scorer_script_reads_outcomes_and_fast_shares(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "eval_scorer.py"
    spec = importlib.util.spec_from_file_location("eval_scorer", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    prompts = Path(__file__).resolve().parents[1] / "data" / "prompts" / "labelled.jsonl"
    assert module.main(["--no-table", "--outcomes", str(SAMPLE), "--fast-share", str(prompts)]) == 0
    out = capsys.readouterr().out
    assert "heuristic    gsm8k" in out and "APGR" in out
    assert "64 prompts: 50.00% at or under 5" in out  # half of labelled is easy


def test_cli_eval_judges_every_registered_scorer_by_default() -> None:
    import subprocess
    import sys

    # a fresh process: only MAGI's own scorers are registered there
    done = subprocess.run(
        [sys.executable, "-m", "magi.cli", "scorer", "eval", str(SAMPLE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = {tuple(line.split()[:2]) for line in done.stdout.splitlines()}
    assert {("heuristic", "gsm8k"), ("heuristic", "mmlu"), ("learned", "gsm8k"), ("learned", "mmlu")} <= rows


# -- a task=tiers run folder as outcomes -----------------------------------------------
def _tiers_run(folder: Path, *, two_stage: bool) -> Path:
    """A run folder written as run_tiers writes one (records, then tiers_summary's
    summary) for three prompts: the fast tier answers 'a' only; powerful alone answers
    'a' and 'b'; the two-stage path answers 'a' and 'c'."""
    from magi.config.profile import ModelProfile
    from magi.sweeps.tiers import TWO_STAGE, tiers_summary, write_records, write_summary

    grades = {"fast": [1.0, 0.0, 0.0], "powerful": [1.0, 1.0, 0.0], TWO_STAGE: [1.0, 0.0, 1.0]}
    records = [
        {"id": i, "prompt": f"question {i}", "arm": arm, "grade": g, "total_s": 1.0}
        for arm, row in grades.items()
        if two_stage or arm != TWO_STAGE
        for i, g in zip("abc", row, strict=True)
    ]
    profile = ModelProfile(
        name="p",
        enabled_models=["m1", "m2"],
        tier_config=[{"name": "fast", "max_score": 5.0}, {"name": "powerful"}],
        two_stage={"enabled": two_stage},
    )
    folder.mkdir(parents=True)
    write_records(folder, records)
    write_summary(folder, tiers_summary(records, {"a": 1.0, "b": 2.0, "c": 3.0}, profile=profile))
    return folder


@pytest.mark.parametrize(
    ("two_stage", "strong_arm", "strong"),
    [(False, "powerful", [True, True, False]), (True, "two-stage", [True, False, True])],
)
def test_a_tiers_run_folder_reads_as_weakest_against_strongest_arm(
    tmp_path: Path, two_stage: bool, strong_arm: str, strong: list[bool]
) -> None:
    from magi.routing.outcomes import outcome_source, run_arms

    folder = _tiers_run(tmp_path / "run", two_stage=two_stage)
    # the two-stage arm is the strong one when the profile refines on its strongest tier
    assert run_arms(folder) == ("fast", strong_arm)
    assert load_outcomes(folder) == [
        Outcome(f"question {i}", weak, s)
        for i, weak, s in zip("abc", [True, False, False], strong, strict=True)
    ]
    assert outcome_source(folder) == folder / "tiers.jsonl" and outcome_source(SAMPLE) == SAMPLE


def test_a_folder_that_is_not_a_usable_run_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["scorer", "eval", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert (
        f"{tmp_path / 'empty'}: not a task=tiers run folder (no tiers.jsonl)" in err
        and "Traceback" not in err
    )
    assert main(["scorer", "train", str(tmp_path / "empty"), "-o", str(tmp_path / "m.json")]) == 2
    assert "no tiers.jsonl" in capsys.readouterr().err and not (tmp_path / "m.json").exists()

    folder = _tiers_run(tmp_path / "run", two_stage=False)
    lines = (folder / "tiers.jsonl").read_text(encoding="utf-8").splitlines()
    (folder / "tiers.jsonl").write_text(
        "\n".join([*lines[:2], '{"id": "x"}', *lines[2:]]) + "\n", encoding="utf-8"
    )
    with pytest.raises(OutcomeFileError, match=r"tiers\.jsonl:3: not a task=tiers record"):
        load_outcomes(folder)
    (folder / "tiers_summary.json").unlink()
    with pytest.raises(OutcomeFileError, match=r"tiers_summary\.json: no such file"):
        load_outcomes(folder)

    from magi.sweeps.tiers import write_summary

    write_summary(folder, {"profile": "p", "tiers": ["fast"]})  # a one-tier profile: no figures
    with pytest.raises(
        OutcomeFileError, match=r"no weak and strong arm to compare \(tiers answered: \['fast'\]\)"
    ):
        load_outcomes(folder)


def test_scorer_eval_and_train_on_a_tiers_run_of_the_tiny_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`magi evaluate` on tiny models (random weights on the fast tier, echo weights on
    the powerful one: the echo answers '::::::::'), then both scorer commands on its folder."""
    import hashlib

    from magi.routing.learned import load_model
    from magi.runtime.pool import shared_pool
    from magi.sweeps.tiers import SUMMARY_FILE, TIERS_FILE
    from magi.testing.runtime import CODER, REASONER, TinyRuntime

    env = TinyRuntime.create(tmp_path, echo={REASONER, CODER})
    prompts = tmp_path / "set.jsonl"
    lines = [
        {"id": "hit", "prompt": "Say hello", "grader": "contains", "expected": [":::"]},  # powerful only
        {
            "id": "num",
            "prompt": "What is 2+2? Explain step by step and prove it.",
            "grader": "number",
            "expected": 4,
        },
    ]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    run = tmp_path / "run"
    argv = ["evaluate", "development", "--prompts", str(prompts), "--output-dir", str(run)]
    argv += ["--cache-dir", str(tmp_path / "cache"), "-o", "task.progress=false"]
    try:
        assert main([*argv, *(arg for o in env.overrides for arg in ("-o", o))]) == 0
    finally:
        shared_pool().close()  # the models magi evaluate loaded
    capsys.readouterr()
    figures = json.loads((run / SUMMARY_FILE).read_text(encoding="utf-8"))["routellm"]
    assert (figures["weak"], figures["strong"]) == ("fast", "two-stage")  # development refines on powerful

    assert main(["scorer", "eval", str(run), "--scorer", "heuristic"]) == 0
    out = capsys.readouterr().out
    assert f"{run}: 2 prompts with outcomes (weak arm 'fast', strong arm 'two-stage')" in out
    assert any(line.split()[:3] == ["heuristic", "all", "2"] for line in out.splitlines()), out
    assert main(["scorer", "eval", str(run), "--scorer", "heuristic", "--json"]) == 0
    heuristic = json.loads(capsys.readouterr().out)["heuristic"]["all"]
    # the heuristic scores the small talk that needs the strong tier below the arithmetic
    # both tiers miss: the reversed router of two prompts, as the run's own figures say
    for name in ("apgr", "cpt50", "cpt80", "auc", "weak_accuracy", "strong_accuracy"):
        assert heuristic[name] == pytest.approx(figures[name]), name
    assert (heuristic["weak_accuracy"], heuristic["strong_accuracy"], heuristic["apgr"]) == (0.0, 0.5, 0.25)

    model_path = tmp_path / "learned.json"
    assert main(["scorer", "train", str(run), "-o", str(model_path)]) == 0
    captured = capsys.readouterr()
    assert "trained on 2 prompts (1 where the weak tier fails" in captured.out
    # written, but with a warning: one example of routing up paying off is no router
    assert "warning: only 1 prompt where the weak tier fails and the strong one succeeds" in captured.err
    model = load_model(model_path)
    digest = hashlib.sha256((run / TIERS_FILE).read_bytes()).hexdigest()
    assert dict(model.trained_on) == {
        "file": "run/tiers.jsonl",
        "sha256": digest,
        "prompts": 2,
        "positives": 1,
    }
    argv = ["scorer", "eval", str(run), "--scorer", "learned", "--model", str(model_path), "--json"]
    assert main(argv) == 0
    learned = json.loads(capsys.readouterr().out)["learned"]["all"]
    assert learned["auc"] == 1.0 and learned["apgr"] == 0.75  # on its own training prompts: 'hit' first


# -- no weak/strong gap -------------------------------------------------------------------
def _outcome_file(path: Path, rows: list[tuple[str, bool, bool]]) -> Path:
    lines = [
        {"bench": b, "prompt": f"{b} question {k}", "weak": w, "strong": s}
        for k, (b, w, s) in enumerate(rows)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_eval_without_a_gap_says_so_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # both tiers right on three prompts, both wrong on one: nothing where routing up pays off
    path = _outcome_file(tmp_path / "same.jsonl", [("gsm8k", True, True)] * 3 + [("gsm8k", False, False)])
    assert main(["scorer", "eval", str(path), "--scorer", "heuristic"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: nothing to score" in err and "Traceback" not in err
    assert (
        "gsm8k: no prompt where the weak tier fails and the strong one succeeds (weak 75.0%, strong 75.0%)"
        in err
    )
    assert "APGR and CPT are undefined" in err and "AUC" in err
    assert main(["scorer", "eval", str(path), "--scorer", "heuristic", "--json"]) == 2
    assert "nothing to score" in capsys.readouterr().err


def test_eval_names_each_group_without_a_gap_and_scores_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [("gsm8k", False, True), ("gsm8k", True, True), ("gsm8k", False, False)]
    rows += [("mmlu/x", False, True), ("mmlu/x", True, False), ("mmlu/y", True, False)]  # weak wins
    path = _outcome_file(tmp_path / "mixed.jsonl", rows)
    assert main(["scorer", "eval", str(path), "--scorer", "heuristic"]) == 0
    out = capsys.readouterr().out
    rows_out = {tuple(line.split()[:2]) for line in out.splitlines()}
    assert ("heuristic", "gsm8k") in rows_out and ("heuristic", "mmlu") not in rows_out
    assert (
        "mmlu: not scored: the strong tier is not better than the weak one (weak 66.7%, strong 33.3%)" in out
    )
    assert main(["scorer", "eval", str(path), "--scorer", "heuristic", "--json"]) == 0
    captured = capsys.readouterr()
    assert "all: not scored: the strong tier is not better" in out  # 3 of 6 right on each
    assert set(json.loads(captured.out)["heuristic"]) == {"gsm8k"}
    assert "mmlu: not scored" in captured.err


def test_train_without_a_gap_is_refused_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _outcome_file(tmp_path / "same.jsonl", [("gsm8k", True, True), ("gsm8k", False, False)] * 3)
    model = tmp_path / "m.json"
    assert main(["scorer", "train", str(path), "-o", str(model)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: nothing to learn: no prompt of 6 where the weak tier fails" in err
    assert "no model written" in err and not model.exists() and "Traceback" not in err
    # every prompt a positive: nothing to tell them from
    path = _outcome_file(tmp_path / "all.jsonl", [("gsm8k", False, True)] * 4)
    assert main(["scorer", "train", str(path), "-o", str(model)]) == 2
    assert "every prompt" in capsys.readouterr().err and not model.exists()


def test_train_refuses_to_write_the_model_into_its_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _tiers_run(tmp_path / "run", two_stage=False)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    for output in (run / "tiers.jsonl", run / "tiers_summary.json"):
        assert main(["scorer", "train", str(run), "-o", str(output)]) == 2
        err = capsys.readouterr().err
        assert f"-o {output}: is a file of the run folder being trained on ({run})" in err
        assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_eval_scorer_script_user_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "eval_scorer.py"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n", encoding="utf-8")
    cases = {
        "bad.jsonl:1": ["--outcomes", str(bad)],
        "no such outcome file": ["--outcomes", str(tmp_path / "gone.jsonl")],
        "Did you mean 'heuristic'": ["--scorer", "heuristc", "--outcomes", str(SAMPLE)],
    }
    for expected, argv in cases.items():
        command = [sys.executable, str(script), "--no-table", *argv]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 2, (argv, done.stderr)
        # as magi's commands say it: an `error:` message (a config error lists its problems)
        assert done.stderr.startswith("error: ") and expected in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
