"""The learned scorer: the chance that the fast tier fails where the strong one succeeds.

``scorer: learned`` rates a prompt with a logistic regression trained on routing
outcomes (:mod:`magi.routing.outcomes`: which prompts a weak and a strong model each
answered correctly). Its inputs are

* fifteen measures, log-scaled and standardised: the heuristic scorer's
  character-level cues (code and maths symbols, code fences, questions, sentences) and
  the prompt's shape (characters, words, distinct words, digits, answer-option lines),
  each counted in C; then the same again for prompts without answer options, so an
  open question (a word problem) and a multiple-choice one get their own weights;
* words (unigrams; bigrams with ``bigrams=True``) from a vocabulary fixed at training
  time: those found in at least ``min_count`` training prompts, up to ``max_vocab``.
  They stand in for the heuristic's lexicons (its code, maths and reasoning words are
  words here too) with weights learned from outcomes. A fixed vocabulary rather than
  hashing: a lookup costs the same, no two words share a weight, and the trace names
  the very words that moved the score.

The heuristic scorer itself is not called: at 2,000 characters it costs about as much
as this whole scorer (docs/ROUTING.md); a first version that used its features took
2.8-3.2x the heuristic's time, over the 200 us budget, for no better cross-validated
APGR. Bigrams do not raise it either (5-fold, GSM8K/MMLU: 0.640/0.638 without,
0.634/0.640 with) and cost more time.

The score is ``10 * p``, ``p`` the predicted probability that routing up pays off,
so 5.0 means "even odds"; the order of prompts is the order of ``p``. Because outcome
data sets are mostly prompts both tiers answer alike, ``p`` stays low on most prompts:
set the thresholds with ``magi calibrate`` rather than reusing the heuristic's.

Training (:func:`train`, ``magi scorer train FILE -o PATH``) is deterministic: full-batch
gradient descent (Adam) from zeros, a vocabulary sorted by count then text, no random
numbers. The model is one JSON file (:func:`save_model`, :func:`load_model`); a missing,
damaged or other-version file is a :class:`ScorerModelError` naming the file.

    >>> from magi.routing.outcomes import Outcome
    >>> data = [Outcome("Prove the theorem about primes", False, True),
    ...         Outcome("Say hello", True, True)] * 4
    >>> scorer = LearnedScorer(model=train(data, min_count=1, iterations=200))
    >>> scorer.score("Prove it").score > scorer.score("hello").score
    True
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from magi.errors import MAGIException
from magi.routing.outcomes import Outcome
from magi.routing.scorer import (
    _SEPARATORS,
    MAX_SCORE,
    ComplexityScore,
)

MODEL_FORMAT = "magi-learned-scorer"
MODEL_VERSION = 1
#: The shipped model (trained on the RouteLLM development half), used when no path is given.
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "data" / "scorers" / "learned-routellm.json"
#: How many contributions the trace names; the rest are summed as "other features".
TOP_CONTRIBUTIONS = 5


class ScorerModelError(MAGIException):
    """A learned scorer's model file is missing, unreadable, damaged, or of another version."""

    status_code = 422


class TrainingDataError(MAGIException):
    """Outcomes a model cannot be learned from: no prompt where the weak tier fails and
    the strong one succeeds, or nothing else (:func:`check_trainable`)."""

    status_code = 422


#: Fewer prompts than this where routing up pays off: ``magi scorer train`` warns that
#: the model learns those few prompts rather than what makes a prompt need the strong tier.
FEW_POSITIVES = 10


def check_trainable(outcomes: Sequence[Outcome]) -> None:
    """Refuse outcomes with one class only. With no positive (no prompt where routing up
    pays off) the fit drives every weight to "never": the model would score every prompt
    alike and route nothing by what it asks, yet look trained; with positives only there
    is nothing to tell them from.

    Raises:
        TrainingDataError: one class is empty (the message says which and what to do).
    """
    if not outcomes:
        raise TrainingDataError("no outcomes to train on")
    positives = sum(o.upgrade_helps for o in outcomes)
    n = len(outcomes)
    weak, strong = sum(o.weak for o in outcomes) / n, sum(o.strong for o in outcomes) / n
    if positives == 0:
        raise TrainingDataError(
            f"nothing to learn: no prompt of {n} where the weak tier fails and the strong one succeeds "
            f"(weak {weak:.1%}, strong {strong:.1%} correct), so a model would score every prompt alike; "
            "train on outcomes where the tiers differ (more or harder prompts, or tiers further apart)"
        )
    if positives == n:
        raise TrainingDataError(
            f"nothing to learn: every prompt ({n}) is one where the weak tier fails and the strong one "
            "succeeds, so there is nothing to tell them from; add prompts both tiers answer alike"
        )


# -- features ---------------------------------------------------------------------
_MEASURES = (
    "chars",
    "words",
    "distinct words",
    "word length",
    "digits",
    "capitals",
    "lines",
    "questions",
    "sentences",
    "commas",
    "brackets",
    "code chars",
    "math chars",
    "code fences",
    "option lines",
)
# Character classes counted by deleting them from the UTF-8 bytes (bytes.translate
# runs a 256-entry table in C; str.translate with deletions goes through a dict per
# character, ten times slower on a 2,000-character prompt).
_DIGITS = b"0123456789"
_CAPITALS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CODE_BYTES = b"{};_"
_MATH_BYTES = b"=^\\$+*/<>%"
_log1p = math.log1p


def _dense_names() -> list[str]:
    return [f"measure {m}" for m in _MEASURES] + [f"open question {m}" for m in _MEASURES]


def _tokens(prompt: str) -> list[str]:
    return prompt.lower().translate(_SEPARATORS).split()


def _ngrams(tokens: Sequence[str]) -> set[str]:
    """The unigrams and bigrams (``"a b"``) of ``tokens``; the vocabulary's keys."""
    grams = set(tokens)
    grams.update([f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)])
    return grams


def _dense_raw(prompt: str, tokens: Sequence[str], distinct: int) -> list[float]:
    """The dense inputs, counts measured in C (``str.count``, ``str.translate``) and
    log-scaled: the heuristic scorer's character-level cues (code and maths symbols,
    fences, questions, sentences) and the shape of the prompt; its word lexicons are
    covered by the n-grams. Then the same again for prompts without answer options (else
    zeros): what makes an open question (a word problem) hard differs from what makes a
    multiple-choice one hard."""
    data = prompt.encode("utf-8", "surrogatepass")
    n = len(data)
    words = len(tokens)
    option_lines = prompt.count("\nA") + prompt.count("\nB") + prompt.count("\nC") + prompt.count("\nD")
    counts = (
        n,
        words,
        distinct,
        n / words if words else 0.0,
        n - len(data.translate(None, _DIGITS)),
        n - len(data.translate(None, _CAPITALS)),
        prompt.count("\n"),
        prompt.count("?"),
        prompt.count(". ") + prompt.count(".\n"),
        prompt.count(","),
        prompt.count("("),
        n - len(data.translate(None, _CODE_BYTES)),
        n - len(data.translate(None, _MATH_BYTES)),
        prompt.count("```") // 2,
        option_lines,
    )
    values = list(map(_log1p, counts))
    return values + (values if option_lines < 2 else [0.0] * len(values))


# -- the model --------------------------------------------------------------------
@dataclass(frozen=True)
class LearnedModel:
    """The trained weights and what they were trained on (one JSON file)."""

    bias: float
    dense_names: tuple[str, ...]
    dense_mean: tuple[float, ...]
    dense_scale: tuple[float, ...]
    dense_weights: tuple[float, ...]
    ngrams: Mapping[str, float]
    trained_on: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "target": "weak tier fails where the strong tier succeeds",
            "trained_on": dict(self.trained_on),
            "options": dict(self.options),
            "bias": self.bias,
            "dense": {
                "names": list(self.dense_names),
                "mean": list(self.dense_mean),
                "scale": list(self.dense_scale),
                "weights": list(self.dense_weights),
            },
            "ngrams": dict(self.ngrams),
        }


def save_model(model: LearnedModel, path: str | Path) -> Path:
    """Write ``model`` as JSON (sorted keys, so the same training writes the same bytes)."""
    from magi.fileio import atomic_write_text

    path = Path(path)
    try:
        atomic_write_text(path, json.dumps(model.to_dict(), sort_keys=True, indent=1) + "\n")
    except OSError as exc:
        problem = exc.strerror or str(exc)
        raise ScorerModelError(f"{path}: cannot write the learned-scorer model ({problem})") from None
    return path


def _first_not_finite(
    bias: float, columns: Sequence[Sequence[float]], ngrams: Mapping[str, float]
) -> str | None:
    """The first number of a model that is NaN or infinite, named (``dense.weights[0] is
    nan``); None when all are finite. Names are made only for that one, not for each of
    a model's thousands of n-grams."""
    if not math.isfinite(bias):
        return f"bias is {bias}"
    for key, column in zip(("mean", "scale", "weights"), columns, strict=True):
        for i, v in enumerate(column):
            if not math.isfinite(v):
                return f"dense.{key}[{i}] is {v}"
    return next((f"ngrams[{k!r}] is {v}" for k, v in ngrams.items() if not math.isfinite(v)), None)


def load_model(path: str | Path) -> LearnedModel:
    """Read a model file written by :func:`save_model`.

    Raises:
        ScorerModelError: naming the file: missing, not JSON, not a learned-scorer model,
            another format version, or a field of the wrong shape.
    """
    path = Path(path)
    hint = "train one with: magi scorer train OUTCOMES.jsonl -o " + str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScorerModelError(
            f"{path}: no such learned-scorer model file; {hint}", status_code=404
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScorerModelError(f"{path}: cannot read the learned-scorer model ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ScorerModelError(
            f"{path}: not a learned-scorer model: invalid JSON at line {exc.lineno} ({exc.msg}); {hint}"
        ) from None
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        raise ScorerModelError(f'{path}: not a learned-scorer model (no "format": "{MODEL_FORMAT}"); {hint}')
    version = data.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise ScorerModelError(
            f'{path}: damaged learned-scorer model: "version" must be a whole number (got the '
            f"{'string' if isinstance(version, str) else type(version).__name__} {version!r}, "
            f"expected {MODEL_VERSION}); {hint}"
        )
    if version != MODEL_VERSION:
        raise ScorerModelError(
            f"{path}: learned-scorer model version {data.get('version')!r}, this MAGI reads version "
            f"{MODEL_VERSION}; retrain it: magi scorer train OUTCOMES.jsonl -o {path}"
        )
    try:
        dense = data["dense"]
        names = tuple(str(n) for n in dense["names"])
        columns = [tuple(float(v) for v in dense[k]) for k in ("mean", "scale", "weights")]
        ngrams = {str(k): float(v) for k, v in data["ngrams"].items()}
        bias = float(data["bias"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ScorerModelError(
            f"{path}: damaged learned-scorer model ({type(exc).__name__}: {exc}); {hint}"
        ) from None
    bad = _first_not_finite(bias, columns, ngrams)
    if bad is not None:  # NaN or an infinity would score every prompt 10.00
        raise ScorerModelError(f"{path}: damaged learned-scorer model ({bad}, not a finite number); {hint}")
    if any(not v > 0 for v in columns[1]):
        raise ScorerModelError(f"{path}: damaged learned-scorer model (a scale is not positive); {hint}")
    expected = tuple(_dense_names())
    if names != expected or any(len(c) != len(names) for c in columns):
        raise ScorerModelError(
            f"{path}: the model's features do not match this MAGI's heuristic features "
            f"(trained on another version); retrain it: magi scorer train OUTCOMES.jsonl -o {path}"
        )
    return LearnedModel(bias, names, *columns, ngrams, data.get("trained_on", {}), data.get("options", {}))


# -- the scorer -------------------------------------------------------------------
class LearnedScorer:
    """Logistic regression over the heuristic's features and word n-grams (module docstring).

    Registered as ``learned`` by :mod:`magi.routing.scorer` (imported when first asked for,
    so the heuristic's users do not load numpy for it).

    Args:
        path: The model file (JSON, :func:`save_model`); default :data:`DEFAULT_MODEL`,
            the model shipped in ``data/scorers/``.
        model: An already-loaded model (tests, training); overrides ``path``.
    """

    name: ClassVar[str] = "learned"

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, model: LearnedModel | None = None
    ) -> None:
        self.path: Path | None = Path(path) if path is not None else None if model else DEFAULT_MODEL
        self.model = model if model is not None else load_model(self.path or DEFAULT_MODEL)
        m = self.model
        # standardise and weigh in one step: w (x - mean) / scale = (w / scale) x - w mean / scale
        self._dense_w = np.asarray(m.dense_weights) / np.asarray(m.dense_scale)
        self._dense_centre = self._dense_w * np.asarray(m.dense_mean)
        self._names = m.dense_names
        # unigrams by word, bigrams by word pair: a set of pairs is built in C (zip), where
        # joining each pair into a string would cost more than the rest of the scoring
        self._unigrams = {g: w for g, w in m.ngrams.items() if " " not in g}
        self._bigrams = {tuple(g.split(" ", 1)): w for g, w in m.ngrams.items() if " " in g}
        # every n-gram's rank by weight size: the largest of a prompt's n-grams are the
        # smallest ranks, found by sorting ints in C instead of a keyed heap in Python
        by_size = sorted(m.ngrams, key=lambda g: (-abs(m.ngrams[g]), g))
        self._by_rank = [(f"'{g}'", m.ngrams[g]) for g in by_size]
        rank = {g: i for i, g in enumerate(by_size)}
        self._unigram_rank = {g: rank[g] for g in self._unigrams}
        self._bigram_rank = {g: rank[" ".join(g)] for g in self._bigrams}

    def __repr__(self) -> str:
        return f"LearnedScorer(path={str(self.path) if self.path else None!r})"

    def score(self, prompt: str) -> ComplexityScore:
        """Rate ``prompt``: ``10 * p``, with the largest contributions named."""
        tokens = prompt.lower().translate(_SEPARATORS).split()
        vocabulary = set(tokens)
        # dense terms centred on the training mean: a typical value contributes about 0
        terms = self._dense_w * np.asarray(_dense_raw(prompt, tokens, len(vocabulary))) - self._dense_centre
        unigrams, bigrams = self._unigrams, self._bigrams
        uni_hits = unigrams.keys() & vocabulary
        bi_hits = bigrams.keys() & set(zip(tokens, tokens[1:], strict=False)) if bigrams else set()
        logit = (
            self.model.bias
            + float(terms.sum())
            + sum(map(unigrams.__getitem__, uni_hits))
            + sum(map(bigrams.__getitem__, bi_hits))
        )
        probability = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, logit))))

        # the trace: the largest terms by size, the rest summed, and the base rate
        k = TOP_CONTRIBUTIONS
        candidates = [
            (self._names[i], float(terms[i])) for i in np.argsort(-np.abs(terms), kind="stable")[:k]
        ]
        ranks = sorted(
            [*map(self._unigram_rank.__getitem__, uni_hits), *map(self._bigram_rank.__getitem__, bi_hits)]
        )
        candidates += map(self._by_rank.__getitem__, ranks[:k])
        top = heapq.nlargest(k, candidates, key=_size)
        base = self.model.bias
        contributions = {name: round(v, 4) for name, v in top}
        contributions["other features"] = round(logit - base - sum(v for _, v in top), 4)
        contributions["base rate"] = round(base, 4)
        return ComplexityScore(
            score=round(MAX_SCORE * probability, 2),
            features={
                "probability": round(probability, 4),
                "other features_ngrams": len(uni_hits) + len(bi_hits),
            },
            contributions=contributions,
            scorer=self.name,
        )


def _size(item: tuple[str, float]) -> tuple[float, str]:
    return (abs(item[1]), item[0])


# -- training -----------------------------------------------------------------------
DEFAULT_TRAINING: Mapping[str, Any] = {
    "min_count": 3,
    "max_vocab": 20000,
    "l2": 100.0,
    "iterations": 300,
    "learning_rate": 0.05,
    "bigrams": False,
}


def train(
    outcomes: Sequence[Outcome],
    *,
    min_count: int = DEFAULT_TRAINING["min_count"],
    max_vocab: int = DEFAULT_TRAINING["max_vocab"],
    l2: float = DEFAULT_TRAINING["l2"],
    iterations: int = DEFAULT_TRAINING["iterations"],
    learning_rate: float = DEFAULT_TRAINING["learning_rate"],
    bigrams: bool = DEFAULT_TRAINING["bigrams"],
    trained_on: Mapping[str, Any] | None = None,
) -> LearnedModel:
    """Fit the model on ``outcomes``: target 1 where the weak tier fails and the strong
    one succeeds (:attr:`Outcome.upgrade_helps`), 0 otherwise.

    ``l2`` is the penalty on the weights' squares (summed, not averaged, over the
    prompts: larger data weighs more against it). Deterministic: the same outcomes and
    options give the same model.

    Raises:
        TrainingDataError: see :func:`check_trainable`.
    """
    check_trainable(outcomes)
    labels = np.asarray([o.upgrade_helps for o in outcomes], dtype=float)
    token_lists = [_tokens(o.prompt) for o in outcomes]
    gram_sets = [_ngrams(t) if bigrams else set(t) for t in token_lists]
    dense = np.asarray(
        [_dense_raw(o.prompt, t, len(set(t))) for o, t in zip(outcomes, token_lists, strict=True)]
    )
    mean = dense.mean(axis=0)
    scale = dense.std(axis=0)
    scale[scale < 1e-6] = 1.0  # a constant input: no division by (nearly) zero
    x_dense = (dense - mean) / scale

    counts = Counter(g for grams in gram_sets for g in grams)
    frequent = [g for g, c in counts.items() if c >= min_count]
    vocab = sorted(frequent, key=lambda g: (-counts[g], g))[:max_vocab]
    index = {g: i for i, g in enumerate(vocab)}
    rows = [sorted(index[g] for g in grams if g in index) for grams in gram_sets]
    row_ids = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    col_ids = np.asarray([c for r in rows for c in r], dtype=np.int64)

    n, d_dense, d_sparse = len(outcomes), x_dense.shape[1], len(vocab)
    w_dense, w_sparse, bias = np.zeros(d_dense), np.zeros(d_sparse), 0.0
    state = [np.zeros(d_dense + d_sparse + 1), np.zeros(d_dense + d_sparse + 1)]  # Adam moments
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, iterations + 1):
        logits = bias + x_dense @ w_dense
        if d_sparse:
            logits = logits + np.bincount(row_ids, weights=w_sparse[col_ids], minlength=n)
        p = 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))
        residual = p - labels
        g_dense = x_dense.T @ residual + l2 * w_dense
        g_sparse = (
            np.bincount(col_ids, weights=residual[row_ids], minlength=d_sparse) + l2 * w_sparse
            if d_sparse
            else np.zeros(0)
        )
        grad = np.concatenate([g_dense, g_sparse, [residual.sum()]]) / n
        state[0] = beta1 * state[0] + (1 - beta1) * grad
        state[1] = beta2 * state[1] + (1 - beta2) * grad * grad
        update = (
            learning_rate * (state[0] / (1 - beta1**step)) / (np.sqrt(state[1] / (1 - beta2**step)) + eps)
        )
        w_dense -= update[:d_dense]
        w_sparse -= update[d_dense : d_dense + d_sparse]
        bias -= float(update[-1])

    ngrams = {g: round(float(w), 5) for g, w in zip(vocab, w_sparse, strict=True) if abs(w) >= 1e-4}
    info = dict(trained_on or {})
    info.setdefault("prompts", n)
    info.setdefault("positives", int(labels.sum()))
    return LearnedModel(
        bias=round(bias, 6),
        dense_names=tuple(_dense_names()),
        dense_mean=tuple(round(float(v), 6) for v in mean),
        dense_scale=tuple(round(float(v), 6) for v in scale),
        dense_weights=tuple(round(float(v), 6) for v in w_dense),
        ngrams=ngrams,
        trained_on=info,
        options={
            "min_count": min_count,
            "max_vocab": max_vocab,
            "l2": l2,
            "iterations": iterations,
            "learning_rate": learning_rate,
            "bigrams": bigrams,
        },
    )


def file_digest(path: str | Path) -> str:
    """sha256 of a file, recorded in the model so it says what it was trained on."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cross_validate(outcomes: Sequence[Outcome], *, folds: int = 5, **options: Any) -> dict[str, list[Any]]:
    """k-fold cross-validation by question (:func:`~magi.routing.outcomes.split_folds`):
    train on the other folds, score the held-out one, and compute the routing figures
    (:func:`~magi.routing.metrics.routing_figures`) per benchmark group on each fold.

    Returns ``{group: [RoutingFigures of fold 0, fold 1, ...]}``.
    """
    from magi.routing.metrics import routing_figures
    from magi.routing.outcomes import groups, split_folds

    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    parts = split_folds(outcomes, folds)
    result: dict[str, list[Any]] = {}
    for held in parts:
        held_set = set(held)
        training = [o for i, o in enumerate(outcomes) if i not in held_set]
        try:
            check_trainable(training)
        except TrainingDataError:
            continue  # the other folds hold no positive (or nothing else): no model for this fold
        scorer = LearnedScorer(model=train(training, **options))
        for group, items in groups(outcomes[i] for i in held).items():
            scores = [scorer.score(o.prompt).score for o in items]
            try:
                figures = routing_figures(scores, [o.weak for o in items], [o.strong for o in items])
            except ValueError:
                continue  # this fold of the group has no gap to recover, or one AUC class is empty
            result.setdefault(group, []).append(figures)
    return result
