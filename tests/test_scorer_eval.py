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
