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

Two more measures (docs/ROUTING.md):

    python scripts/eval_scorer.py --no-table --outcomes ../shared/data/routellm/dev.jsonl
    python scripts/eval_scorer.py --no-table --small-talk /tmp/chitchat/dataset.json

``--outcomes`` prints AUC, APGR and CPT on a file of routing outcomes, per bench (as
``magi scorer eval``). ``--small-talk`` prints the share of small-talk messages at or
under the threshold (the fast tier): a ``.jsonl``/``.txt`` prompt file, or the
``dataset.json`` of the PyPI package ``chitchat-dataset`` (MIT; 258,145 messages of
open-domain chat), which is not shipped: ``pip download --no-deps chitchat-dataset==0.9.0``
and unzip the wheel.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import magi  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from magi.routing.metrics import best_threshold, load_labelled, roc_auc, threshold_accuracy  # noqa: E402
from magi.routing.outcomes import evaluate_scorers, format_report, load_outcomes  # noqa: E402
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


def small_talk_messages(path: Path) -> list[str]:
    """Messages of a small-talk file: chitchat-dataset's ``dataset.json`` (every message
    of every conversation) or a prompt file (``.jsonl`` with ``prompt``, or ``.txt``)."""
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return [m["text"] for chat in data.values() for turn in chat["messages"] for m in turn]
    from magi.sweeps.prompts import load_prompts

    return [p.prompt for p in load_prompts(path)]


def small_talk(path: Path, scorer_name: str, threshold: float) -> None:
    """Print the share of ``path``'s messages that stay on the fast tier."""
    scorer = get_scorer(scorer_name)
    messages = small_talk_messages(path)
    kept = sum(1 for m in messages if scorer.score(m).score <= threshold)
    print(
        f"== {path}\n   {len(messages)} small-talk messages: {kept / len(messages):.2%} "
        f"at or under {threshold:g} (fast tier), {len(messages) - kept} above\n"
    )


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
    parser.add_argument(
        "--outcomes", type=Path, action="append", default=[], help="routing-outcome file: AUC/APGR/CPT"
    )
    parser.add_argument(
        "--small-talk", type=Path, action="append", default=[], help="small-talk file: share on the fast tier"
    )
    args = parser.parse_args(argv)
    sets = args.sets or ([] if args.outcomes or args.small_talk else [p for p in DEFAULT_SETS if p.exists()])
    for path in sets:
        evaluate(path.resolve(), args.scorer, args.threshold, args.table, args.width)
    for path in args.outcomes:
        print(f"== {path}")
        print(format_report(evaluate_scorers(load_outcomes(path), {args.scorer: get_scorer(args.scorer)})))
        print()
    for path in args.small_talk:
        small_talk(path, args.scorer, args.threshold)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
