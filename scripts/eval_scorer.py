"""How well does a complexity scorer tell hard prompts from easy ones?

For each labelled prompt set (JSON lines: ``{"prompt": ..., "label": "easy"|"hard"}``)
this prints the ROC AUC (ranking quality, independent of thresholds), the share of
prompts on the right side of a routing threshold, and a ranking table with each
prompt's score and explanation, so misranked prompts are easy to spot.

    python scripts/eval_scorer.py                                  # labelled + holdout sets
    python scripts/eval_scorer.py data/prompts/holdout.jsonl --threshold 4
    python scripts/eval_scorer.py --scorer heuristic --no-table

``data/prompts/labelled.jsonl`` is the set the heuristic weights were set on;
``data/prompts/holdout.jsonl`` was written after they were fixed and is the honest
figure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import magi  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from magi.routing.metrics import best_threshold, load_labelled, roc_auc, threshold_accuracy  # noqa: E402
from magi.routing.scorer import get_scorer  # noqa: E402

DEFAULT_SETS = [ROOT / "data/prompts/labelled.jsonl", ROOT / "data/prompts/holdout.jsonl"]


def evaluate(path: Path, scorer_name: str, threshold: float, table: bool, width: int) -> float:
    """Print the figures (and optionally the ranking) for one prompt set; return its AUC."""
    scorer = get_scorer(scorer_name)
    items = load_labelled(path)
    results = [(scorer.score(item.prompt), item) for item in items]
    scores = [r.score for r, _ in results]
    hard = [item.hard for _, item in results]
    auc = roc_auc(scores, hard)
    accuracy = threshold_accuracy(scores, hard, threshold)
    n_hard = sum(hard)
    missed = sum(1 for s, h in zip(scores, hard, strict=True) if h and s <= threshold)
    spared = sum(1 for s, h in zip(scores, hard, strict=True) if not h and s > threshold)
    print(f"== {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    print(
        f"   {len(items)} prompts ({n_hard} hard, {len(items) - n_hard} easy)  "
        f"ROC AUC {auc:.3f}  accuracy at threshold {threshold:g}: {accuracy:.1%} "
        f"(hard at or below: {missed}, easy above: {spared})"
    )
    best, best_accuracy = best_threshold(scores, hard)
    print(f"   best-separating threshold on this set: {best:.2f} (accuracy {best_accuracy:.1%})")
    if table:
        print(f"   {'score':>5}  {'label':5}  {'prompt':{width}}  explanation")
        for result, item in sorted(results, key=lambda pair: pair[0].score):
            wrong = (result.score > threshold) != item.hard
            prompt = " ".join(item.prompt.split())
            prompt = prompt if len(prompt) <= width else prompt[: width - 1] + "\u2026"
            explanation = result.explain().split(" = ", 1)[-1]
            flag = "!" if wrong else " "
            print(f"  {flag}{result.score:5.2f}  {item.label:5}  {prompt:{width}}  {explanation[:110]}")
    print()
    return auc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "sets", nargs="*", type=Path, help="JSON-lines prompt sets (default: labelled + holdout)"
    )
    parser.add_argument("--scorer", default="heuristic", help="registered scorer name (default: heuristic)")
    parser.add_argument(
        "--threshold", type=float, default=5.0, help="routing threshold: hard above it (default: 5.0)"
    )
    parser.add_argument("--no-table", dest="table", action="store_false", help="figures only")
    parser.add_argument("--width", type=int, default=60, help="prompt column width")
    args = parser.parse_args(argv)
    sets = args.sets or [p for p in DEFAULT_SETS if p.exists()]
    for path in sets:
        evaluate(path.resolve(), args.scorer, args.threshold, args.table, args.width)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
