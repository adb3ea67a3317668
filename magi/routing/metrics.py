"""Small, dependency-free metrics for judging a complexity scorer.

The scorer's job is to *rank* prompts: hard ones above easy ones. ROC AUC measures
exactly that (the probability that a random hard prompt outscores a random easy
one, ties counting half) and does not depend on where the tier thresholds sit, so
it is the headline figure of ``scripts/eval_scorer.py``. ``threshold_accuracy``
then says how well the default threshold (``max_score: 5.0`` of the development
profile) separates the two labels.
"""

from __future__ import annotations

import json
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
    path = Path(path)
    items: list[LabelledPrompt] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        prompt, label = data.get("prompt"), data.get("label")
        if not isinstance(prompt, str) or label not in LABELS:
            raise ValueError(
                f"{path}:{number}: expected a string 'prompt' and 'label' one of {', '.join(LABELS)}"
            )
        items.append(LabelledPrompt(prompt, label))
    return items
