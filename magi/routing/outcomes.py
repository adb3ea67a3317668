"""Routing outcomes: which prompts the weak tier and the strong tier answered correctly.

An outcome file is JSON lines in RouteLLM's shape, one prompt a line:

    {"bench": "gsm8k", "prompt": "James decides to run 3 sprints...", "weak": true, "strong": true}

``weak`` and ``strong`` say whether the weaker and the stronger model answered correctly;
``bench`` is optional (``"mmlu/<subject>"`` rows are grouped as ``mmlu`` by
:attr:`Outcome.group`). ``magi scorer eval`` judges scorers on such a file and ``magi
scorer train`` fits the learned scorer from one (:mod:`magi.routing.learned`).

A ``task=tiers`` run folder (``magi evaluate``, :mod:`magi.sweeps.tiers`) is read as
outcomes too: its ``tiers.jsonl`` records give, per prompt graded on both, whether the
weakest tier's arm and the strongest tier's arm answered correctly (a grade of at least
:data:`magi.sweeps.tiers.CORRECT_GRADE`) — the same two arms as the run's RouteLLM
figures (``tiers_summary.json``: the two-stage arm when the profile refines on the
strongest tier).

``data/routing/outcomes-sample.jsonl`` is a small sample of the RouteLLM data for tests
and examples (its ``README.md`` says where it comes from).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magi.errors import MAGIException

if TYPE_CHECKING:
    from magi.routing.scorer import Scorer


class OutcomeFileError(MAGIException):
    """An outcome file is missing, unreadable, or has a malformed line (named)."""

    status_code = 422


@dataclass(frozen=True)
class Outcome:
    """One prompt and whether each tier answered it correctly."""

    prompt: str
    weak: bool
    strong: bool
    bench: str = ""

    @property
    def group(self) -> str:
        """The benchmark without its subject: ``"mmlu/anatomy"`` -> ``"mmlu"``."""
        return self.bench.split("/", 1)[0] if self.bench else "all"

    @property
    def upgrade_helps(self) -> bool:
        """The weak tier fails where the strong tier succeeds: routing up pays off."""
        return self.strong and not self.weak


def load_outcomes(path: str | Path) -> list[Outcome]:
    """Read an outcome file, or a ``task=tiers`` run folder (:func:`load_run_outcomes`);
    see the module docstring.

    Raises:
        OutcomeFileError: the file is missing or not UTF-8, or a line is not a JSON
            object with a string ``prompt`` and booleans ``weak`` and ``strong`` (the
            message names the file and line); or the folder is not a usable run.
    """
    path = Path(path)
    if path.is_dir():
        return load_run_outcomes(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OutcomeFileError(f"{path}: no such outcome file", status_code=404) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OutcomeFileError(f"{path}: cannot read the outcome file ({exc})") from None
    from magi.sweeps.prompts import json_object

    items: list[Outcome] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        data = json_object(path, number, line, OutcomeFileError)
        prompt, weak, strong = data.get("prompt"), data.get("weak"), data.get("strong")
        bench = data.get("bench", "")
        if not isinstance(prompt, str) or not isinstance(weak, bool) or not isinstance(strong, bool):
            raise OutcomeFileError(
                f"{path}:{number}: expected a string 'prompt' and booleans 'weak' and 'strong' "
                '(e.g. {"prompt": "...", "weak": false, "strong": true})'
            )
        if not isinstance(bench, str):
            raise OutcomeFileError(f"{path}:{number}: 'bench' must be a string")
        items.append(Outcome(prompt, weak, strong, bench))
    if not items:
        raise OutcomeFileError(f"{path}: no outcomes in the file")
    return items


def outcome_source(path: str | Path) -> Path:
    """The file outcomes are read from: ``path`` itself, or a run folder's ``tiers.jsonl``."""
    from magi.sweeps.tiers import TIERS_FILE

    path = Path(path)
    return path / TIERS_FILE if path.is_dir() else path


def run_arms(folder: str | Path) -> tuple[str, str]:
    """The ``(weak, strong)`` arms of a ``task=tiers`` run: those its summary's RouteLLM
    figures compare (:func:`magi.sweeps.tiers.tiers_summary` chose them from the profile:
    the weakest tier, and the strongest tier or the two-stage path refining on it).

    Raises:
        OutcomeFileError: the folder has no ``tiers.jsonl`` or no readable summary, or
            the run answered fewer than two tiers.
    """
    from magi.sweeps.tiers import SUMMARY_FILE, TIERS_FILE

    folder = Path(folder)
    if not (folder / TIERS_FILE).is_file():
        raise OutcomeFileError(
            f"{folder}: not a task=tiers run folder (no {TIERS_FILE}); give an outcome file (.jsonl) "
            f"or the output folder of `magi evaluate` / `python run.py task=tiers`",
            status_code=404,
        )
    path = folder / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OutcomeFileError(
            f"{path}: no such file; it names the run's weak and strong arms (rerun the task: "
            f"stored answers are reused)",
            status_code=404,
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OutcomeFileError(f"{path}: cannot read the run's summary ({exc})") from None
    figures = summary.get("routellm") if isinstance(summary, dict) else None
    if not isinstance(figures, dict) or not figures.get("weak") or not figures.get("strong"):
        tiers = summary.get("tiers") if isinstance(summary, dict) else None
        raise OutcomeFileError(
            f"{path}: the run has no weak and strong arm to compare (tiers answered: {tiers or 'none'}); "
            f"outcomes need a profile with two tiers or more"
        )
    return str(figures["weak"]), str(figures["strong"])


def load_run_outcomes(folder: str | Path) -> list[Outcome]:
    """The outcomes of a ``task=tiers`` run folder: per prompt graded on both arms of
    :func:`run_arms`, whether each answered correctly
    (:func:`magi.sweeps.tiers.tiers_outcomes`); ``bench`` is left empty.

    Raises:
        OutcomeFileError: see :func:`run_arms`; or ``tiers.jsonl`` has a line that is
            not a record (named), or no prompt is graded on both arms.
    """
    from magi.sweeps.tiers import RecordError, read_records, tiers_outcomes

    folder = Path(folder)
    weak, strong = run_arms(folder)
    path = outcome_source(folder)
    try:
        records = read_records(folder)
        rows = tiers_outcomes(records, weak, strong)
    except (OSError, UnicodeDecodeError) as exc:
        raise OutcomeFileError(f"{path}: cannot read the run's records ({exc})") from None
    except RecordError as exc:  # names the file and the line
        raise OutcomeFileError(str(exc)) from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise OutcomeFileError(f"{_bad_record(path)}: not a task=tiers record ({exc!r})") from None
    if not rows:
        raise OutcomeFileError(f"{path}: no prompt is graded on both the {weak!r} and the {strong!r} arm")
    return [Outcome(r["prompt"], r["weak"], r["strong"]) for r in rows]


def _bad_record(path: Path) -> str:
    """``path:line`` of the first line of ``path`` that is not a record with an ``id``,
    an ``arm`` and a ``prompt`` (``path`` alone when every line is one)."""
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            return f"{path}:{number}"
        if not isinstance(data, dict) or not all(k in data for k in ("id", "arm", "prompt")):
            return f"{path}:{number}"
    return str(path)


def groups(outcomes: Iterable[Outcome]) -> dict[str, list[Outcome]]:
    """Outcomes by :attr:`Outcome.group`, groups in first-seen order."""
    result: dict[str, list[Outcome]] = {}
    for item in outcomes:
        result.setdefault(item.group, []).append(item)
    return result


def fold_of(prompt: str, folds: int) -> int:
    """The cross-validation fold of a question: a stable hash of its text, so a
    question asked twice lands in one fold and every run splits the same way."""
    return zlib.crc32(prompt.encode("utf-8")) % folds


def split_folds(outcomes: Sequence[Outcome], folds: int) -> list[list[int]]:
    """Indices of ``outcomes`` in each of ``folds`` folds (by question, see :func:`fold_of`)."""
    if folds < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    parts: list[list[int]] = [[] for _ in range(folds)]
    for index, item in enumerate(outcomes):
        parts[fold_of(item.prompt, folds)].append(index)
    return parts


# -- judging scorers ----------------------------------------------------------------
def gap_problem(outcomes: Sequence[Outcome]) -> str | None:
    """Why no routing figures can be computed on ``outcomes`` (a sentence saying what it
    means for AUC, APGR and CPT), or ``None`` when they can: there must be a prompt where
    the weak tier fails and the strong one succeeds, the strong tier must be right more
    often than the weak one, and (for the AUC) not every prompt may be such a prompt."""
    n = len(outcomes)
    if not n:
        return "no prompts"
    weak = sum(o.weak for o in outcomes) / n
    strong = sum(o.strong for o in outcomes) / n
    helps = sum(o.upgrade_helps for o in outcomes)
    accuracy = f"(weak {weak:.1%}, strong {strong:.1%})"
    if helps == 0:
        return (
            f"no prompt where the weak tier fails and the strong one succeeds {accuracy}: there is "
            "no quality gap to recover, so APGR and CPT are undefined, and AUC has no such prompt "
            "to rank first"
        )
    if strong <= weak:
        return (
            f"the strong tier is not better than the weak one {accuracy}: there is no quality gap "
            "to recover, so APGR and CPT are undefined"
        )
    if helps == n:
        return (
            "every prompt is one where the weak tier fails and the strong one succeeds: AUC has "
            "no other prompt to rank them against"
        )
    return None


def report_groups(outcomes: Sequence[Outcome]) -> dict[str, list[Outcome]]:
    """The groups :func:`evaluate_scorers` reports: each benchmark group, and ``all`` of
    them together when there are several."""
    parts = groups(outcomes)
    if len(parts) > 1:
        parts["all"] = list(outcomes)
    return parts


def unscored_groups(outcomes: Sequence[Outcome]) -> dict[str, str]:
    """``{group: why}`` for each group of :func:`report_groups` that no scorer can be
    judged on (:func:`gap_problem`)."""
    problems = {group: gap_problem(items) for group, items in report_groups(outcomes).items()}
    return {group: why for group, why in problems.items() if why is not None}


def evaluate_scorers(outcomes: Sequence[Outcome], scorers: Mapping[str, Scorer]) -> dict[str, dict[str, Any]]:
    """The routing figures (:func:`~magi.routing.metrics.routing_figures`) of each scorer
    on each group of :func:`report_groups`: ``{scorer: {group: RoutingFigures}}``. A group
    with no gap to recover (:func:`unscored_groups` says why) is left out.
    """
    from magi.routing.metrics import routing_figures

    skipped = unscored_groups(outcomes)
    parts = {g: items for g, items in report_groups(outcomes).items() if g not in skipped}
    report: dict[str, dict[str, Any]] = {}
    for name, scorer in scorers.items():
        scores = {id(o): scorer.score(o.prompt).score for o in outcomes}
        report[name] = {
            group: routing_figures(
                [scores[id(o)] for o in items], [o.weak for o in items], [o.strong for o in items]
            )
            for group, items in parts.items()
        }
    return report


def format_report(report: Mapping[str, Mapping[str, Any]]) -> str:
    """A table: one row per scorer and group (APGR, CPT(50%), CPT(80%), AUC)."""
    lines = [
        f"{'scorer':<12} {'bench':<8} {'prompts':>7} {'weak':>6} {'strong':>6} "
        f"{'AUC':>6} {'APGR':>6} {'CPT50':>6} {'CPT80':>6}"
    ]
    for name, figures in report.items():
        for group, f in figures.items():
            lines.append(
                f"{name:<12} {group:<8} {f.prompts:>7} {f.weak_accuracy:>6.1%} {f.strong_accuracy:>6.1%} "
                f"{f.auc:>6.3f} {f.apgr:>6.3f} {f.cpt50:>6.1%} {f.cpt80:>6.1%}"
            )
    lines.append(
        "APGR: average share of the weak-strong quality gap recovered over 0-100% strong calls "
        "(random 0.5); CPTx: strong calls needed to recover x% of it; AUC: ranking of the "
        "prompts where the weak tier fails and the strong one succeeds."
    )
    return "\n".join(lines)
