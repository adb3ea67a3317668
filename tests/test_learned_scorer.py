"""The learned scorer: training, its model file, explanations, the registry and `magi scorer train`."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest

from magi.cli import main
from magi.errors import MAGIException
from magi.routing.learned import (
    DEFAULT_MODEL,
    MODEL_VERSION,
    LearnedScorer,
    ScorerModelError,
    cross_validate,
    load_model,
    save_model,
    train,
)
from magi.routing.outcomes import Outcome, load_outcomes
from magi.routing.scorer import available_scorers, get_scorer

from .conftest import ODD_PROMPTS

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "routing" / "outcomes-sample.jsonl"
DEV = ROOT.parent / "shared" / "data" / "routellm" / "dev.jsonl"


@pytest.fixture(scope="module")
def sample() -> list[Outcome]:
    return load_outcomes(SAMPLE)


@pytest.fixture(scope="module")
def model_file(sample: list[Outcome], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(train(sample, min_count=2), tmp_path_factory.mktemp("model") / "learned.json")


def test_training_is_deterministic(sample: list[Outcome], tmp_path: Path) -> None:
    a = save_model(train(sample, min_count=2), tmp_path / "a.json").read_bytes()
    b = save_model(train(list(sample), min_count=2), tmp_path / "b.json").read_bytes()
    assert a == b


def test_it_learns_the_words_that_mark_failures() -> None:
    hard = [Outcome(f"Prove the lemma number {i}", False, True) for i in range(10)]
    easy = [Outcome(f"Greet the fella number {i}", True, True) for i in range(10)]
    scorer = LearnedScorer(model=train(hard + easy, min_count=2, l2=0.1))
    hard_score = scorer.score("Prove the lemma number 99").score
    assert hard_score > 5.0 > scorer.score("Greet the fella number 99").score
    model = scorer.model
    assert model.ngrams["prove"] > 0 > model.ngrams["greet"]
    assert "'prove'" in scorer.score("Prove the lemma number 99").contributions


def test_score_is_ten_times_the_probability_and_explains_itself(model_file: Path) -> None:
    scorer = LearnedScorer(model_file)
    result = scorer.score("Natalia sold clips to 48 of her friends in April, and then half as many in May?")
    p = result.features["probability"]
    assert result.score == pytest.approx(10 * p, abs=0.01)
    assert result.scorer == "learned"
    # the contributions add up to the logit: raw is the model's log-odds
    assert 1 / (1 + 2.718281828459045**-result.raw) == pytest.approx(p, abs=1e-3)
    names = list(result.contributions)
    assert names[-2:] == ["other features", "base rate"]
    assert len(names) == 5 + 2
    explanation = result.explain()
    assert explanation.startswith(f"{result.score:.2f} = ")
    assert "base rate" in explanation and "on the 0-10 scale" in explanation
    # the named contributions are the largest ones: words in quotes or measures
    assert all(n.startswith(("'", "measure ", "open question ")) for n in names[:5])


@pytest.mark.parametrize("prompt", ODD_PROMPTS)
def test_any_text_scores_on_the_scale(model_file: Path, prompt: str) -> None:
    result = LearnedScorer(model_file).score(prompt)
    assert 0.0 <= result.score <= 10.0
    assert result.explain().startswith(f"{result.score:.2f} = ")
    json.dumps(result.to_dict())


def test_same_prompt_same_score(model_file: Path) -> None:
    a, b = LearnedScorer(model_file), LearnedScorer(model_file)
    prompt = "Which of the following is a prime number?\nA. 4\nB. 6\nC. 7\nD. 9\nAnswer:"
    assert a.score(prompt) == b.score(prompt) == a.score(prompt)


def test_registered_like_the_heuristic(model_file: Path) -> None:
    assert "learned" in available_scorers()
    scorer = get_scorer("learned", path=str(model_file))
    assert scorer.path == model_file
    assert get_scorer("learned").path == DEFAULT_MODEL  # the shipped model


def test_the_shipped_model_loads_and_says_what_it_was_trained_on() -> None:
    model = load_model(DEFAULT_MODEL)
    assert model.trained_on["file"] == "dev.jsonl" and model.trained_on["prompts"] == 7660
    assert len(model.trained_on["sha256"]) == 64


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ScorerModelError, match="no such learned-scorer model file") as info:
        get_scorer("learned", path=str(tmp_path / "gone.json"))
    assert str(tmp_path / "gone.json") in str(info.value)
    assert "magi scorer train" in str(info.value)
    assert isinstance(info.value, MAGIException)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "invalid JSON at line 1"),
        ('{"weights": [1, 2]}', "not a learned-scorer model"),
        ("[]", "not a learned-scorer model"),
        ('{"format": "magi-learned-scorer", "version": 99}', "model version 99, this MAGI reads version"),
        ('{"format": "magi-learned-scorer", "version": 1, "bias": 0}', "damaged learned-scorer model"),
    ],
)
def test_a_corrupt_model_file_is_named(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ScorerModelError, match=problem) as info:
        LearnedScorer(path)
    assert str(info.value).startswith(f"{path}: ")


def test_a_model_with_other_features_is_refused(model_file: Path, tmp_path: Path) -> None:
    data = json.loads(model_file.read_text(encoding="utf-8"))
    assert data["version"] == MODEL_VERSION
    data["dense"]["names"][0] = "measure something else"
    path = tmp_path / "other.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ScorerModelError, match="features do not match"):
        LearnedScorer(path)


def test_cli_train_writes_a_model_the_scorer_loads(tmp_path: Path, capsys) -> None:
    out = tmp_path / "models" / "learned.json"
    assert main(["scorer", "train", str(SAMPLE), "-o", str(out), "--cv", "3"]) == 0
    text = capsys.readouterr().out
    assert "3-fold cross-validation, gsm8k: APGR" in text and "3-fold cross-validation, mmlu: APGR" in text
    assert f"wrote {out}" in text
    assert LearnedScorer(out).model.trained_on["prompts"] == 239
    assert main(["scorer", "eval", str(SAMPLE), "--scorer", "learned", "--model", str(out)]) == 0
    assert "learned      gsm8k" in capsys.readouterr().out


def test_cli_train_user_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scorer", "train", str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "m.json")]) == 2
    assert "none.jsonl: no such outcome file" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()
    with pytest.raises(SystemExit) as info:  # argparse: -o is required
        main(["scorer", "train", str(SAMPLE)])
    assert info.value.code == 2


def test_scoring_2000_characters_costs_about_a_heuristic_score() -> None:
    # A load-independent guard (the absolute p50, budget 200 us, comes from
    # scripts/bench_router.py): the learned scorer's median time over the heuristic's on
    # the same 2,000 characters, interleaved in this run (about 0.8-1.1x measured).
    prompt = (ROOT / "data" / "prompts" / "labelled.jsonl").read_text(encoding="utf-8")[:2000]
    learned, heuristic = get_scorer("learned"), get_scorer("heuristic")
    for _ in range(50):
        learned.score(prompt)
        heuristic.score(prompt)
    ours, theirs = [], []
    for _ in range(300):
        start = time.perf_counter()
        learned.score(prompt)
        middle = time.perf_counter()
        heuristic.score(prompt)
        ours.append(middle - start)
        theirs.append(time.perf_counter() - middle)
    assert statistics.median(ours) / statistics.median(theirs) < 2.0


@pytest.mark.slow
@pytest.mark.skipif(not DEV.exists(), reason="needs ../shared/data/routellm/dev.jsonl")
def test_cross_validated_apgr_meets_the_issue_targets() -> None:
    figures = cross_validate(load_outcomes(DEV), folds=5)
    assert statistics.mean(f.apgr for f in figures["gsm8k"]) >= 0.60
    assert statistics.mean(f.apgr for f in figures["mmlu"]) >= 0.58


def test_cli_train_unwritable_output_and_bad_folds_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    target = blocker / "model.json"
    assert main(["scorer", "train", str(SAMPLE), "-o", str(target)]) == 2
    assert f"{target}: cannot write the learned-scorer model" in capsys.readouterr().err
    assert main(["scorer", "train", str(SAMPLE), "-o", str(tmp_path / "m.json"), "--cv", "1"]) == 2
    assert "--cv" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_cross_validation_skips_a_bench_without_both_outcomes() -> None:
    # one 'tiny' question per fold at most: its folds have no gap to recover
    data = load_outcomes(SAMPLE) + [Outcome("What is 2+2?", True, True, "tiny")]
    figures = cross_validate(data, folds=3, min_count=2)
    assert set(figures) == {"gsm8k", "mmlu"}


def test_the_config_names_the_model_file(model_file: Path, tmp_path: Path, capsys) -> None:
    """``scorer_options`` reach the scorer everywhere the config's scorer is built: the
    Runner's router and ``magi route``; a missing file is the route's error, exit 2."""
    import magi
    from magi.routing.router import Router

    config = magi.compose("development", ["scorer=learned", f"+scorer_options.path={model_file}"])
    router = Router.from_config(config, {"fast": [], "powerful": []})
    assert router.scorer.path == model_file  # type: ignore[attr-defined]
    learned = ["-o", "scorer=learned", "-o", f"+scorer_options.path={model_file}"]
    assert main(["route", "--profile", "development", *learned, "Hi"]) == 0
    assert "scorer learned" in capsys.readouterr().out
    missing = tmp_path / "nope.json"
    assert main(["route", "-o", "scorer=learned", "-o", f"+scorer_options.path={missing}", "Hi"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_cli_train_refuses_to_write_the_model_over_its_outcomes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes = tmp_path / "outcomes.jsonl"
    outcomes.write_bytes(SAMPLE.read_bytes())
    # the same file, spelled another way: resolved paths are compared
    for output in (outcomes, tmp_path / "sub" / ".." / "outcomes.jsonl"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        assert main(["scorer", "train", str(outcomes), "-o", str(output)]) == 2
        err = capsys.readouterr().err
        assert f"-o {output}: is the outcome file being trained on" in err and "Traceback" not in err
        assert outcomes.read_bytes() == SAMPLE.read_bytes()


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("bias", "1e999", "bias"),
        ("weight", "NaN", "dense.weights[0]"),
        ("mean", "-Infinity", "dense.mean[0]"),
        ("ngram", "Infinity", "ngrams['"),
    ],
)
def test_a_model_with_a_weight_that_is_not_a_number_is_damaged(
    model_file: Path, tmp_path: Path, field: str, value: str, named: str
) -> None:
    """NaN or an infinity (JSON lets Python write and read both) would score every prompt
    10.00: refused when the file is read, naming the field."""
    data = json.loads(model_file.read_text(encoding="utf-8"))
    marker = 12345.678
    if field == "bias":
        data["bias"] = marker
    elif field == "ngram":
        data["ngrams"][next(iter(data["ngrams"]))] = marker
    else:
        data["dense"][{"weight": "weights", "mean": "mean"}[field]][0] = marker
    path = tmp_path / "inf.json"
    path.write_text(json.dumps(data).replace(str(marker), value), encoding="utf-8")
    with pytest.raises(ScorerModelError, match="damaged learned-scorer model") as info:
        LearnedScorer(path)
    assert str(info.value).startswith(f"{path}: ") and f"{named}" in str(info.value)
    assert "not a finite number" in str(info.value)


def test_a_model_version_of_the_wrong_type_says_so(model_file: Path, tmp_path: Path) -> None:
    data = json.loads(model_file.read_text(encoding="utf-8"))
    data["version"] = str(MODEL_VERSION)
    path = tmp_path / "v.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ScorerModelError) as info:
        LearnedScorer(path)
    message = str(info.value)
    wrong = f"\"version\" must be a whole number (got the string '{MODEL_VERSION}', expected {MODEL_VERSION})"
    assert wrong in message, message
    assert "this MAGI reads version" not in message


def test_cli_train_cross_validation_says_how_many_folds_were_scored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fold of a bench without a prompt where routing up pays off (in training or in
    test) is not scored: the line says how many of the K were."""
    out = tmp_path / "m.json"
    assert main(["scorer", "train", str(SAMPLE), "-o", str(out), "--cv", "10"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "cross-validation" in line]
    scored = {g: len(f) for g, f in cross_validate(load_outcomes(SAMPLE), folds=10).items()}
    assert scored["gsm8k"] < 10  # the sample's gsm8k has few such prompts
    for line in lines:
        group = line.split(", ")[1].split(":")[0]
        assert line.startswith(f"10-fold cross-validation, {group}: {scored[group]} of 10 folds scored"), line
        assert (
            line.count("(folds ") == 1
            and len(line.split("(folds ")[1].split(")")[0].split(", ")) == scored[group]
        )


def test_cli_train_refuses_more_folds_than_questions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.json"
    assert main(["scorer", "train", str(SAMPLE), "-o", str(out), "--cv", "240"]) == 2
    err = capsys.readouterr().err
    assert "--cv 240: more folds than the 239 questions" in err and "Traceback" not in err
    assert not out.exists()


def test_route_says_one_message_in_the_singular(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = tmp_path / "one.json"
    one.write_text(json.dumps([{"role": "user", "content": "Hi"}]), encoding="utf-8")
    assert main(["route", "--profile", "development", "--messages", str(one)]) == 0
    out = capsys.readouterr().out
    assert f"{one} (1 message): 'Hi'" in out, out
