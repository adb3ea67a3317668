"""Small, dependency-free metrics for judging a complexity scorer.

The scorer's job is to *rank* prompts: hard ones above easy ones. ROC AUC measures
exactly that (the probability that a random hard prompt outscores a random easy
one, ties counting half) and does not depend on where the tier thresholds sit, so
it is the headline figure of ``scripts/eval_scorer.py``. ``threshold_accuracy``
then says how well the default threshold (``max_score: 5.0`` of the development
profile) separates the two labels.

For prompts with known *outcomes* (did the weak tier and the strong tier each answer
correctly? :mod:`magi.routing.outcomes`), :func:`quality_curve`, :func:`apgr` and
:func:`cpt` give the RouteLLM figures (arXiv 2406.18665): route the top-scored share of
prompts to the strong tier and read the quality (share answered correctly) against
that share. The *performance gap recovered* at a share is
``(quality - weak quality) / (strong quality - weak quality)``; **APGR** is its average
over the share from 0 to 1 (the area under the curve, trapezoids), and **CPT(x%)** the
smallest share of strong calls that recovers ``x%`` of the gap. RouteLLM evaluates ten
thresholds; here every cut between distinct scores is a point, the same integral read
finer. Prompts with equal scores are routed together, so within a tie the curve is the
straight line between its ends (the expected quality of a random order within the
tie): a constant scorer, like a random router, scores APGR 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LABELS = ("easy", "hard")


def roc_auc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """ROC AUC of ``scores`` for telling positives (hard prompts) from negatives.

    Computed as the Mann-Whitney U statistic with average ranks for ties, in
    O(n log n). Raises ``ValueError`` when either class is empty (AUC is undefined).

    Example:
        >>> roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
        0.75
    """
    if len(scores) != len(positives):
        raise ValueError(f"{len(scores)} scores but {len(positives)} labels")
    n_pos = sum(1 for p in positives if p)
    n_neg = len(positives) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs at least one positive and one negative example")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        average_rank = (i + j) / 2 + 1  # ranks are 1-based
        for k in range(i, j + 1):
            ranks[order[k]] = average_rank
        i = j + 1
    rank_sum = sum(r for r, p in zip(ranks, positives, strict=True) if p)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def threshold_accuracy(scores: Sequence[float], positives: Sequence[bool], threshold: float) -> float:
    """Share of prompts on the right side of ``threshold`` (hard: score > threshold).

    ``score == threshold`` counts as easy, matching the router (a score equal to a
    tier's ``max_score`` stays in that tier).
    """
    if not scores:
        raise ValueError("no scores")
    right = sum(1 for s, p in zip(scores, positives, strict=True) if (s > threshold) == p)
    return right / len(scores)


def best_threshold(scores: Sequence[float], positives: Sequence[bool]) -> tuple[float, float]:
    """The routing threshold that puts most prompts on the right side, and its accuracy.

    Candidates are midpoints between consecutive distinct scores (and just below the
    lowest); on ties of accuracy the lowest threshold wins (prefer the stronger
    tier when unsure). Use it to *read* where a set's classes separate, not to tune on
    a holdout set.

    Example:
        >>> best_threshold([0.5, 1.0, 3.0, 4.0], [False, False, True, True])
        (2.0, 1.0)
    """
    distinct = sorted(set(scores))
    candidates = [distinct[0] - 1.0] + [(a + b) / 2 for a, b in zip(distinct, distinct[1:], strict=False)]
    best = max(candidates, key=lambda t: (threshold_accuracy(scores, positives, t), -t))
    return best, threshold_accuracy(scores, positives, best)


def quality_curve(
    scores: Sequence[float], weak: Sequence[bool], strong: Sequence[bool]
) -> list[tuple[float, float]]:
    """Points ``(strong share, quality)`` from 0 to 1, routing the highest scores up.

    Quality is the share of prompts answered correctly when the prompts scoring above
    the cut go to the strong tier and the rest to the weak one. One point per cut
    between distinct scores (ties move together), starting at ``(0, weak accuracy)``
    and ending at ``(1, strong accuracy)``.

    Example:
        >>> quality_curve([0.9, 0.1], [False, True], [True, True])
        [(0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]
    """
    n = len(scores)
    if n == 0:
        raise ValueError("no scores")
    if not len(weak) == len(strong) == n:
        raise ValueError(f"{n} scores but {len(weak)} weak and {len(strong)} strong outcomes")
    order = sorted(range(n), key=lambda i: -scores[i])
    correct = sum(1 for w in weak if w)
    points = [(0.0, correct / n)]
    i = 0
    while i < n:
        j = i
        while j < n and scores[order[j]] == scores[order[i]]:
            correct += int(strong[order[j]]) - int(weak[order[j]])
            j += 1
        points.append((j / n, correct / n))
        i = j
    return points


def _gap(weak: Sequence[bool], strong: Sequence[bool]) -> tuple[float, float]:
    n = len(weak)
    low, high = sum(1 for w in weak if w) / n, sum(1 for s in strong if s) / n
    if high <= low:
        raise ValueError(
            f"the strong tier ({high:.1%} correct) is not better than the weak one ({low:.1%}): "
            "there is no performance gap to recover"
        )
    return low, high


def apgr(scores: Sequence[float], weak: Sequence[bool], strong: Sequence[bool]) -> float:
    """Average performance gap recovered over the strong share from 0 to 1 (RouteLLM).

    1 would recover the whole gap from the first strong call on; a random router scores
    0.5; routing the wrong prompts up scores below it. It can pass 1 slightly when the
    weak tier answers some prompts the strong one gets wrong. Raises ``ValueError`` when
    the strong tier is not better than the weak one (no gap).

    Example:
        >>> apgr([0.9, 0.1], [False, True], [True, True])  # gap closed at share 0.5
        0.75
    """
    low, high = _gap(weak, strong)
    points = quality_curve(scores, weak, strong)
    area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False))
    return (area - low) / (high - low)


def cpt(scores: Sequence[float], weak: Sequence[bool], strong: Sequence[bool], recovered: float) -> float:
    """Call-performance threshold: the smallest strong share that recovers ``recovered``
    (0-1) of the performance gap, read on :func:`quality_curve` between its points.

    Example:
        >>> cpt([0.9, 0.5, 0.1, 0.0], [False, False, True, True], [True, True, True, True], 0.5)
        0.25
    """
    if not 0 <= recovered <= 1:
        raise ValueError(f"recovered must be between 0 and 1, got {recovered}")
    low, high = _gap(weak, strong)
    target = low + recovered * (high - low)
    points = quality_curve(scores, weak, strong)
    if points[0][1] >= target:
        return 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if y1 >= target:
            return x0 + (x1 - x0) * (target - y0) / (y1 - y0)
    return 1.0  # unreachable: the last point is the strong accuracy


@dataclass(frozen=True)
class RoutingFigures:
    """How well a scorer's ranking routes one set of outcomes (see :func:`routing_figures`)."""

    prompts: int
    weak_accuracy: float
    strong_accuracy: float
    auc: float
    apgr: float
    cpt50: float
    cpt80: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "prompts": self.prompts,
            "weak_accuracy": self.weak_accuracy,
            "strong_accuracy": self.strong_accuracy,
            "auc": self.auc,
            "apgr": self.apgr,
            "cpt50": self.cpt50,
            "cpt80": self.cpt80,
        }


def routing_figures(scores: Sequence[float], weak: Sequence[bool], strong: Sequence[bool]) -> RoutingFigures:
    """AUC, APGR, CPT(50%) and CPT(80%) of ``scores`` on these outcomes.

    The AUC's positives are the prompts where the weak tier fails and the strong one
    succeeds (where routing up pays off).
    """
    helps = [s and not w for w, s in zip(weak, strong, strict=True)]
    return RoutingFigures(
        prompts=len(scores),
        weak_accuracy=sum(weak) / len(weak),
        strong_accuracy=sum(strong) / len(strong),
        auc=roc_auc(scores, helps),
        apgr=apgr(scores, weak, strong),
        cpt50=cpt(scores, weak, strong, 0.5),
        cpt80=cpt(scores, weak, strong, 0.8),
    )


@dataclass(frozen=True)
class LabelledPrompt:
    """One line of a ``data/prompts/*.jsonl`` file."""

    prompt: str
    label: str

    @property
    def hard(self) -> bool:
        return self.label == "hard"


def load_labelled(path: str | Path) -> list[LabelledPrompt]:
    """Read a JSON-lines prompt set: ``{"prompt": ..., "label": "easy"|"hard"}`` per line.

    Raises ``ValueError`` naming the file and line of the first malformed entry.
    """
    from magi.sweeps.prompts import json_object

    path = Path(path)
    items: list[LabelledPrompt] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        data = json_object(path, number, line, ValueError)
        prompt, label = data.get("prompt"), data.get("label")
        if not isinstance(prompt, str) or label not in LABELS:
            raise ValueError(
                f"{path}:{number}: expected a string 'prompt' and 'label' one of {', '.join(LABELS)}"
            )
        items.append(LabelledPrompt(prompt, label))
    return items
