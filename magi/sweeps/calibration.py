"""Threshold calibration: pick each tier's ``max_score`` so it gets a target share of prompts.

RouteLLM's lesson: a router threshold means little by itself; what an operator
decides is *how much traffic may go to the strong model*. Given a prompt set and
target shares (``powerful: 0.3``), each tier boundary is placed at the matching
quantile of the scorer's scores, the new thresholds are written as a new profile
variant (``<profile>-calibrated``) through the :class:`~magi.profiles.ProfileManager`,
and the shares actually achieved are reported on the calibration set and on a
held-out set, which is the honest figure; a held-out share that misses its target by
more than :data:`HOLDOUT_TOLERANCE` is a warning in the report, with the sampling
error such a set allows. Only the scorer runs: no model is loaded.

The default set, ``data/prompts/calibration.jsonl`` (606 prompts, about 100 of each of
six kinds: small talk, factual, maths, code, writing, reasoning; the kind is each line's
``label``),
is split into a fitted part and a held-out part stratified by label
(:func:`split_holdout`), so both parts hold the same mix of kinds.

Boundaries fall between two distinct scores (a score equal to ``max_score`` stays in
the lower tier, as in the router), so on its own prompts a calibration is exact up
to ties: when many prompts share one score, the nearest achievable split is taken.

Example:
    >>> import magi
    >>> from magi.sweeps.calibration import calibrate
    >>> from magi.sweeps.prompts import load_prompts
    >>> profile = magi.compose(profile="development").profile
    >>> report = calibrate(profile, load_prompts("data/prompts/labelled.jsonl"), shares={"powerful": 0.3})
    >>> round(report.achieved["powerful"], 1)
    0.3
    >>> report.profile.name
    'Development calibrated'
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from magi.config.profile import ModelProfile, TierConfig
from magi.errors import ConfigError, ProfileExistsError
from magi.render import fmt_score, table
from magi.routing.scorer import MAX_SCORE, Scorer, get_scorer
from magi.sweeps.prompts import Prompt

_EPS = 1e-9
#: A held-out share further than this from its target is a warning in the report.
HOLDOUT_TOLERANCE = 0.05
#: The default held-out part of the calibration set.
DEFAULT_HOLDOUT_FRACTION = 0.3


def target_shares(
    profile: ModelProfile, shares: Mapping[str, float], *, setting: str = "task.shares"
) -> dict[str, float]:
    """The target share of every tier of ``profile``, in tier order.

    Shares of all tiers but one may be given (the missing tier gets the rest).

    Raises:
        ConfigError: the profile has a single tier, a tier is unknown, too few shares
            are given, or they do not add up to 1; every problem is listed.
    """
    tiers = profile.tier_names
    problems: list[str] = []
    if len(tiers) < 2:
        problems.append(
            f"profile '{profile.name}' has one tier ({tiers[0]}): calibration places the boundaries "
            "between tiers; choose a profile with two or more tiers"
        )
    unknown = [t for t in shares if t not in tiers]
    if unknown:
        problems.append(
            f"{setting}: tier(s) {', '.join(unknown)} not in profile '{profile.name}' "
            f"(tiers: {', '.join(tiers)})"
        )
    bad = [f"{t}={v}" for t, v in shares.items() if not (isinstance(v, int | float) and 0 <= v <= 1)]
    if bad:
        problems.append(f"{setting}: shares are fractions between 0 and 1 (got {', '.join(bad)})")
    if problems:
        raise ConfigError(problems, headline="Cannot calibrate")
    missing = [t for t in tiers if t not in shares]
    total = sum(shares.values())
    if len(missing) > 1:
        problems.append(
            f"{setting}: give the shares of at least {len(tiers) - 1} of the {len(tiers)} tiers "
            f"({', '.join(tiers)}); missing: {', '.join(missing)}"
        )
    elif len(missing) == 1 and total > 1 + 1e-6:
        problems.append(
            f"{setting}: the given shares add up to {total:g}, leaving nothing for '{missing[0]}'"
        )
    elif not missing and abs(total - 1) > 1e-6:
        problems.append(f"{setting}: the shares of all tiers must add up to 1 (they add up to {total:g})")
    if problems:
        raise ConfigError(problems, headline="Cannot calibrate")
    out = {t: float(shares[t]) for t in tiers if t in shares}
    if missing:
        out[missing[0]] = max(1.0 - total, 0.0)
    return {t: out[t] for t in tiers}


def _nice(lo: float, hi: float, *, inclusive: bool = False) -> float:
    """The shortest decimal near the middle of ``(lo, hi)`` (``[lo, hi)`` when
    ``inclusive``): a readable threshold in YAML that stays clear of both
    neighbouring scores, so prompts scoring close to them on other sets split the
    same way."""
    if math.isinf(hi):
        return math.ceil(lo * 100) / 100
    mid = (lo + hi) / 2
    for digits in range(0, 7):
        t = round(mid, digits)
        if (lo <= t if inclusive else lo < t) and t < hi:
            return t
    return mid


def _feasible_counts(scores: Sequence[float]) -> list[int]:
    """Counts ``k`` of lowest-scoring prompts a threshold can put at or below itself."""
    n = len(scores)
    counts = [k for k in range(1, n) if scores[k - 1] < scores[k]]
    if scores[0] > 0:
        counts.insert(0, 0)  # a threshold below every score (thresholds are >= 0)
    counts.append(n)
    return counts


def fit_thresholds(scores: Sequence[float], cumulative: Sequence[float]) -> list[float]:
    """Thresholds that put the closest achievable share of ``scores`` at or below each
    cumulative target (ties go to the lower count, i.e. the stronger tier).

    Example:
        >>> fit_thresholds([1.0, 2.0, 3.0, 4.0], [0.5])
        [2.5]
    """
    ordered = sorted(scores)
    n = len(ordered)
    feasible = _feasible_counts(ordered)
    thresholds: list[float] = []
    last_k = 0
    for target in cumulative:
        want = target * n
        k = min((c for c in feasible if c >= last_k), key=lambda c: (abs(c - want), c))
        lo = ordered[k - 1] if k > 0 else 0.0
        hi = ordered[k] if k < n else math.inf
        t = _nice(lo, hi, inclusive=k == 0)
        if thresholds and t <= thresholds[-1]:  # two boundaries in one gap: keep them ordered
            t = _nice(thresholds[-1] + _EPS, hi) if hi > thresholds[-1] + _EPS else thresholds[-1] + _EPS
        thresholds.append(t)
        last_k = k
    return thresholds


def routed_shares(profile: ModelProfile, scores: Sequence[float]) -> tuple[dict[str, float], dict[str, int]]:
    """Share and count of ``scores`` each tier of ``profile`` receives (the router's rule)."""
    counts = {t: 0 for t in profile.tier_names}
    for score in scores:
        counts[profile.tier_for_score(score).name] += 1
    n = len(scores)
    return ({t: c / n if n else 0.0 for t, c in counts.items()}, counts)


def _report_footer(report: CalibrationReport | QualityCalibrationReport) -> list[str]:
    """The lines every calibration report ends with: its notes and warnings, and where the
    calibrated profile was saved and how to run it."""
    lines = [f"note: {n}" for n in report.notes] + [f"warning: {w}" for w in report.warnings]
    if report.path is not None:
        lines += ["", f"Saved profile '{report.profile.name}' to {report.path}"]
        lines.append(f"Use it: python run.py profile={report.profile_key}")
    return lines


@dataclass
class CalibrationReport:
    """The calibrated profile and how close it comes to the targets."""

    source: ModelProfile
    profile: ModelProfile
    scorer: str
    targets: dict[str, float]
    prompts_file: str
    n_prompts: int
    achieved: dict[str, float]
    counts: dict[str, int]
    holdout_file: str | None = None
    n_holdout: int = 0
    holdout_achieved: dict[str, float] | None = None
    holdout_counts: dict[str, int] | None = None
    path: Path | None = None
    profile_key: str | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Held-out shares that miss their target by more than :data:`HOLDOUT_TOLERANCE`, and why."""

    def holdout_miss(self, tier: str) -> float | None:
        """The held-out share of ``tier`` minus its target (``None``: no holdout)."""
        if self.holdout_achieved is None:
            return None
        return self.holdout_achieved[tier] - self.targets[tier]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``calibration.json`` and ``--json``."""
        return {
            "source_profile": self.source.name,
            "profile": self.profile.name,
            "profile_key": self.profile_key,
            "path": str(self.path) if self.path else None,
            "scorer": self.scorer,
            "prompts": {"file": self.prompts_file, "count": self.n_prompts},
            "holdout": {"file": self.holdout_file, "count": self.n_holdout} if self.holdout_file else None,
            "tiers": [
                {
                    "name": new.name,
                    "max_score_before": old.max_score,
                    "max_score": new.max_score,
                    "target": self.targets[new.name],
                    "achieved": self.achieved[new.name],
                    "achieved_holdout": (self.holdout_achieved or {}).get(new.name),
                    "holdout_miss": self.holdout_miss(new.name),
                }
                for old, new in zip(self.source.tier_config, self.profile.tier_config, strict=True)
            ],
            "holdout_tolerance": HOLDOUT_TOLERANCE,
            "notes": self.notes,
            "warnings": self.warnings,
        }

    def to_text(self) -> str:
        """The table of thresholds and shares, and how to use the new profile."""
        headers = ["tier", "max_score", "target", f"calibration ({self.n_prompts})"]
        if self.holdout_achieved is not None:
            headers += [f"holdout ({self.n_holdout})", "holdout - target"]
        rows = []
        for old, new in zip(self.source.tier_config, self.profile.tier_config, strict=True):
            before, after = fmt_score(old.max_score), fmt_score(new.max_score)
            row = [
                new.name,
                after if before == after else f"{before} -> {after}",
                f"{self.targets[new.name]:.0%}",
                f"{self.achieved[new.name]:.1%} ({self.counts[new.name]})",
            ]
            if self.holdout_achieved is not None and self.holdout_counts is not None:
                miss = self.holdout_miss(new.name) or 0.0
                row.append(f"{self.holdout_achieved[new.name]:.1%} ({self.holdout_counts[new.name]})")
                row.append(f"{100 * miss:+.1f} pts" + (" !" if abs(miss) > HOLDOUT_TOLERANCE + _EPS else ""))
            rows.append(row)
        lines = [
            f"Calibrated '{self.source.name}' on {self.prompts_file} "
            f"({self.n_prompts} prompts, scorer {self.scorer})"
            + (f"; holdout {self.holdout_file}" if self.holdout_file else ""),
            "",
            table(headers, rows),
        ]
        return "\n".join(lines + _report_footer(self))

    def __str__(self) -> str:
        return self.to_text()


def check_holdout_fraction(fraction: float, setting: str = "task.holdout_fraction") -> None:
    """A held-out fraction is strictly between 0 and 1 (both calibrations' one rule).

    Raises:
        ConfigError: naming ``setting`` and the value.
    """
    if not 0 < fraction < 1:  # NaN too
        raise ConfigError(
            [f"{setting}: must be between 0 and 1 (got {fraction:g}), e.g. 0.3"], headline="Cannot calibrate"
        )


def held_out_indices(labels: Sequence[str | None], fraction: float, seed: int = 0) -> set[int]:
    """Indices of the ``round(fraction * n)`` items held out, in proportion per label
    (seeded, reproducible; at least one item on each side)."""
    rng = random.Random(seed)
    groups: dict[str | None, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    ranked: list[tuple[float, float, int]] = []
    for members in groups.values():
        rng.shuffle(members)
        ranked += [((j + 0.5) / len(members), rng.random(), i) for j, i in enumerate(members)]
    ranked.sort()
    n_hold = min(max(round(fraction * len(labels)), 1), len(labels) - 1)
    return {i for _, _, i in ranked[:n_hold]}


def split_holdout(
    prompts: Sequence[Prompt], fraction: float, seed: int = 0
) -> tuple[list[Prompt], list[Prompt]]:
    """A reproducible split: ``(fit, holdout)`` with ``round(fraction * n)`` held out,
    stratified by ``label``: each label's prompts are held out in proportion, so both
    parts hold the same mix of kinds (prompts without a label are one group).

    Stratifying halves neither part's randomness within a kind, but it removes the
    error of a split that happens to hold out more code than small talk: on
    ``calibration.jsonl`` it brings the spread of the held-out share of a 30% target
    over 200 seeds from 4.1 to 3.1 points (standard deviation).
    """
    held = held_out_indices([p.label for p in prompts], fraction, seed)
    return [p for i, p in enumerate(prompts) if i not in held], [
        p for i, p in enumerate(prompts) if i in held
    ]


def _rater(scorer: str | Scorer) -> tuple[Scorer, str]:
    """The scorer to score with and its name: ``scorer`` itself when built, else the
    registered scorer of that name with its defaults."""
    if isinstance(scorer, str):
        return get_scorer(scorer), scorer
    return scorer, scorer.name


def calibrate(
    profile: ModelProfile,
    prompts: Sequence[Prompt],
    *,
    shares: Mapping[str, float],
    scorer: str | Scorer = "heuristic",
    holdout: Sequence[Prompt] | None = None,
    name: str | None = None,
    prompts_file: str = "(prompts)",
    holdout_file: str | None = None,
    setting: str = "task.shares",
) -> CalibrationReport:
    """Fit ``profile``'s thresholds to ``shares`` on ``prompts``; nothing is saved.

    The last tier keeps its ``max_score`` (the catch-all, usually ``.inf``) unless it
    would no longer be above the new boundaries, in which case it becomes ``.inf``.
    ``scorer`` is a built scorer (a config's: :func:`magi.routing.scorer.config_scorer`,
    with its ``scorer_options``) or a registered name (built with its defaults).
    """
    if not prompts:
        raise ConfigError(["no prompts to calibrate on"], headline="Cannot calibrate")
    targets = target_shares(profile, shares, setting=setting)
    rater, scorer = _rater(scorer)
    scores = [rater.score(p.prompt).score for p in prompts]
    tiers = profile.tier_names
    cumulative = []
    running = 0.0
    for tier in tiers[:-1]:
        running += targets[tier]
        cumulative.append(min(running, 1.0))
    thresholds = fit_thresholds(scores, cumulative)
    last = profile.tier_config[-1]
    last_max = last.max_score if last.max_score > thresholds[-1] else math.inf
    new_tiers = [
        TierConfig(name=t.name, max_score=m, expected_time_seconds=t.expected_time_seconds)
        for t, m in zip(profile.tier_config, [*thresholds, last_max], strict=True)
    ]
    targets_text = ", ".join(f"{t} {s:.0%}" for t, s in targets.items())
    data = profile.model_dump()
    data.update(
        name=name or f"{profile.name} calibrated",
        description=(
            f"{profile.name} with tier thresholds calibrated to {targets_text} on "
            f"{Path(prompts_file).name} ({len(prompts)} prompts, scorer {scorer})"
        ),
        tier_config=[t.model_dump() for t in new_tiers],
    )
    new_profile = ModelProfile.model_validate(data)
    achieved, counts = routed_shares(new_profile, scores)
    report = CalibrationReport(
        source=profile,
        profile=new_profile,
        scorer=scorer,
        targets=targets,
        prompts_file=prompts_file,
        n_prompts=len(prompts),
        achieved=achieved,
        counts=counts,
    )
    n = len(prompts)
    for tier in tiers:
        if abs(counts[tier] - targets[tier] * n) > 1:
            report.notes.append(
                f"'{tier}' gets {counts[tier]} of {n} prompts instead of about {targets[tier] * n:.0f}: "
                "too many prompts share the boundary score"
            )
    if max(thresholds) > MAX_SCORE:
        report.notes.append(f"a threshold is above the score scale's maximum ({MAX_SCORE:g})")
    if holdout:
        h_scores = [rater.score(p.prompt).score for p in holdout]
        report.holdout_achieved, report.holdout_counts = routed_shares(new_profile, h_scores)
        report.holdout_file = holdout_file or "(holdout)"
        report.n_holdout = len(holdout)
        report.warnings = holdout_warnings(report, scores, h_scores)
    return report


def sampling_error(share: float, n_fit: int, n_holdout: int) -> float:
    """One standard deviation of a held-out share around its target when both sets are
    random draws of the same traffic: ``sqrt(p (1 - p) (1/n_fit + 1/n_holdout))``
    (the fitted quantile's error plus the held-out set's own)."""
    if n_fit <= 0 or n_holdout <= 0:
        return 0.0
    return math.sqrt(share * (1 - share) * (1 / n_fit + 1 / n_holdout))


def holdout_warnings(
    report: CalibrationReport, scores: Sequence[float], holdout_scores: Sequence[float]
) -> list[str]:
    """A line for each tier whose held-out share misses its target by more than
    :data:`HOLDOUT_TOLERANCE`, saying what that set's size allows and how the two sets'
    scores differ (the usual cause: the held-out prompts are not like the fitted ones)."""
    import statistics

    out: list[str] = []
    n_fit, n_held = len(scores), len(holdout_scores)
    tiers = report.profile.tier_names
    # of two tiers, the second's miss is the first's mirrored: name the stronger one only
    for tier in tiers[1:] if len(tiers) == 2 else tiers:
        miss = report.holdout_miss(tier)
        if miss is None or abs(miss) <= HOLDOUT_TOLERANCE + _EPS:
            continue
        target = report.targets[tier]
        sd = sampling_error(target, n_fit, n_held)
        achieved = (report.holdout_achieved or {})[tier]
        why = (
            f"{abs(miss) / sd:.1f} times the sampling error of {n_fit} and {n_held} prompts "
            f"(±{100 * sd:.1f} points)"
            if sd
            else "the target leaves no room for sampling error"
        )
        fit_median, held_median = statistics.median(scores), statistics.median(holdout_scores)
        cause = (
            f"; the held-out prompts score {'lower' if held_median < fit_median else 'higher'} "
            f"(median {held_median:.2f} against {fit_median:.2f}): they are not like the "
            "calibration prompts, so calibrate on prompts like the traffic the profile will serve"
            if abs(miss) > 2 * sd
            else "; within 2 sampling errors: more calibration prompts narrow it"
        )
        out.append(
            f"'{tier}' gets {achieved:.1%} of the held-out prompts against a target of {target:.0%} "
            f"({100 * miss:+.1f} points, more than {100 * HOLDOUT_TOLERANCE:.0f}): {why}{cause}"
        )
    return out


# -- calibrating for quality: from the answers of a task=tiers run ----------------------------


def parse_quality(value: Any, *, setting: str = "--quality") -> float:
    """A quality target as a fraction in (0, 1]: ``0.95``, ``"0.95"`` or ``"95%"``.

    Raises:
        ConfigError: not a number, or outside (0, 1] (``95`` without ``%`` is refused
            rather than guessed).
    """
    text = str(value).strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        number = math.nan
    if not 0 < number <= 1:
        raise ConfigError(
            [
                f"{setting}: a quality target is a fraction in (0, 1] of the strongest tier's quality, "
                f"e.g. 0.95 or 95% (got {value!r})"
            ],
            headline="Cannot calibrate",
        )
    return number


def read_tiers_run(
    run_dir: Path | str, *, setting: str = "--from"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The records (``tiers.jsonl``) and summary (``tiers_summary.json``, ``{}`` if absent)
    of a ``task=tiers`` run folder.

    Raises:
        ConfigError: the folder does not exist, or holds no ``tiers.jsonl``, or the
            records are unreadable; the message names the folder and how to make one.
    """
    import json

    from magi.sweeps.tiers import SUMMARY_FILE, TIERS_FILE, RecordError, read_records

    folder = Path(run_dir).expanduser()
    how = "make one with: python run.py task=tiers profile=PROFILE (or magi evaluate PROFILE)"
    if folder.is_file():
        raise ConfigError(
            [
                f"{setting}: {folder} is a file, not a run folder: give the task=tiers run folder "
                f"that holds {TIERS_FILE}, e.g. {setting} {folder.parent}"
                if folder.name == TIERS_FILE
                else f"{setting}: {folder} is a file, not a run folder ({how})"
            ],
            headline="Cannot calibrate",
        )
    if not folder.is_dir():
        raise ConfigError([f"{setting}: run folder not found: {folder} ({how})"], headline="Cannot calibrate")
    if not (folder / TIERS_FILE).is_file():
        raise ConfigError(
            [f"{setting}: {folder} is not a task=tiers run folder (no {TIERS_FILE} in it; {how})"],
            headline="Cannot calibrate",
        )
    try:
        records = read_records(folder)
    except RecordError as exc:  # names the file and the line
        raise ConfigError([f"{setting}: {exc}"], headline="Cannot calibrate") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            [f"{setting}: {folder / TIERS_FILE} is unreadable: {exc}"], headline="Cannot calibrate"
        ) from None
    summary: dict[str, Any] = {}
    if (folder / SUMMARY_FILE).is_file():
        try:
            summary = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = {}
    return records, summary


def check_run_profile(
    profile: ModelProfile,
    summary: Mapping[str, Any],
    *,
    run_dir: str,
    setting: str = "--from",
    profile_key: str | None = None,
) -> None:
    """Refuse a ``task=tiers`` run made with another profile than ``profile``, unless
    its tiers and their models (the summary's ``tiers`` and each arm's ``models``) are
    the profile's: its tiers in order, its enabled models and no model in a tier that
    ``model_tiers`` does not put it in. A summary that names no profile is not checked.

    Raises:
        ConfigError: naming both profiles and how to make a run of this one.
    """
    ran = summary.get("profile")
    if not ran or ran == profile.name:
        return
    run_models: dict[str, set[str]] = {}
    for arm in (summary.get("arms") or {}).values():
        for tier, models in ((arm or {}).get("models") or {}).items():
            run_models.setdefault(str(tier), set()).update(str(m) for m in models)
    placed = all(
        profile.tier_override(m) is None or tier in (profile.tier_override(m) or [])
        for tier, models in run_models.items()
        for m in models
    )
    same = (
        list(summary.get("tiers") or []) == profile.tier_names
        and set().union(*run_models.values()) == set(profile.enabled_models)
        and placed
    )
    if same:
        return
    seen = "; ".join(f"{t}: {', '.join(sorted(m))}" for t, m in sorted(run_models.items())) or "none recorded"
    key = profile_key or "PROFILE"
    raise ConfigError(
        [
            f"{setting}: {run_dir} was made with profile '{ran}' (models {seen}), not '{profile.name}', "
            "and its tiers and models are not this profile's: its grades say nothing about this "
            f"profile's models; make a run of this profile with: magi evaluate {key} "
            f"(or python run.py task=tiers profile={key})"
        ],
        headline="Cannot calibrate",
    )


def _quality_candidates(scores: Sequence[float], base: Sequence[float]) -> list[tuple[float, ...]]:
    """Threshold settings from "everything to the strongest tier" to "nothing": the
    boundary below the strongest tier at every readable cut between distinct scores
    (:func:`_nice`; ``0`` below them all when the lowest score is above 0), the earlier
    tiers keeping ``base`` (their ``max_score``) when it is below the cut."""
    distinct = sorted(set(scores))
    cuts: list[float] = [0.0] if distinct[0] > 0 else []
    cuts += [_nice(a, b) for a, b in zip(distinct, distinct[1:], strict=False)]
    cuts.append(math.ceil(distinct[-1] * 100) / 100)
    out = []
    for cut in cuts:
        lower = [b for b in base[:-2] if b < cut]
        if len(lower) == len(base) - 2:  # the intermediate tiers still have room below the cut
            out.append((*lower, cut))
    return out


def _fmt_quality(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@dataclass
class QualityCalibrationReport:
    """Thresholds chosen for a quality target on one part of a ``task=tiers`` run's graded
    prompts, and what they give on the rest."""

    source: ModelProfile
    profile: ModelProfile
    run_dir: str
    scorer: str
    target: float
    strong_tier: str
    thresholds: tuple[float, ...]
    n_fit: int
    n_holdout: int
    fit: dict[str, Any]
    holdout: dict[str, Any]
    fit_ids: list[str] = field(default_factory=list)
    holdout_ids: list[str] = field(default_factory=list)
    path: Path | None = None
    profile_key: str | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``calibration.json`` and ``--json``."""
        return {
            "mode": "quality",
            "source_profile": self.source.name,
            "profile": self.profile.name,
            "profile_key": self.profile_key,
            "path": str(self.path) if self.path else None,
            "run_dir": self.run_dir,
            "scorer": self.scorer,
            "quality_target": self.target,
            "strong_tier": self.strong_tier,
            "tiers": [
                {"name": new.name, "max_score_before": old.max_score, "max_score": new.max_score}
                for old, new in zip(self.source.tier_config, self.profile.tier_config, strict=True)
            ],
            "fit": {"count": self.n_fit, **self.fit},
            "holdout": {"count": self.n_holdout, **self.holdout, "ids": self.holdout_ids},
            "notes": self.notes,
            "warnings": self.warnings,
        }

    def to_text(self) -> str:
        """The chosen thresholds, quality and shares on both parts, and how to use them."""
        tiers = self.profile.tier_names
        headers = ["part", "prompts", "quality", f"all {self.strong_tier}", "of strongest"]
        headers += [f"{t} %" for t in tiers] + ["s/prompt"]
        rows = []
        for part, n, figures in (
            ("calibration", self.n_fit, self.fit),
            ("holdout", self.n_holdout, self.holdout),
        ):
            rows.append(
                [
                    part,
                    str(n),
                    _fmt_quality(figures["quality"]),
                    _fmt_quality(figures["strong_quality"]),
                    "-" if figures["relative_quality"] is None else f"{figures['relative_quality']:.1%}",
                    *[f"{100 * figures['tier_share'][t]:.1f}" for t in tiers],
                    f"{figures['seconds_per_prompt']:.3f}",
                ]
            )
        maxima = ", ".join(
            f"{new.name} {fmt_score(old.max_score)} -> {fmt_score(new.max_score)}"
            for old, new in zip(self.source.tier_config, self.profile.tier_config, strict=True)
            if new.max_score != old.max_score
        )
        lines = [
            f"Calibrated '{self.source.name}' for {self.target:.0%} of the '{self.strong_tier}' tier's "
            f"quality on the graded answers of {self.run_dir} (scorer {self.scorer})",
            f"max_score: {maxima or 'unchanged'}",
            "",
            table(headers, rows),
        ]
        return "\n".join(lines + _report_footer(self))

    def __str__(self) -> str:
        return self.to_text()


def calibrate_quality(
    profile: ModelProfile,
    records: Sequence[Mapping[str, Any]],
    *,
    quality: float,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    seed: int = 0,
    name: str | None = None,
    run_dir: str = "(records)",
    scorer: str | Scorer | None = None,
    run_scorer: str | None = None,
    setting: str = "--from",
    run_summary: Mapping[str, Any] | None = None,
    profile_key: str | None = None,
    fraction_setting: str = "task.holdout_fraction",
) -> QualityCalibrationReport:
    """The cheapest thresholds (fewest prompts to the strongest tier) whose quality stays
    within ``quality`` of always using the strongest tier, chosen on a part of the
    graded prompts of ``records`` (a ``task=tiers`` run's) and reported on the rest.

    Only the boundary below the strongest tier moves; the tiers below it keep their
    ``max_score`` (a cut that would leave one of them no room is not a candidate). The
    prompts are split as :func:`split_holdout` splits a prompt set (by label); the
    quality of a setting is read off the records as :func:`magi.sweeps.tiers.offline_sweep`
    reads it. "Always the strongest tier" is the strongest tier's answers (through the
    two-stage path when the profile refines on that tier), the same arm routing uses.

    The prompts' scores are the ones stored in the records when ``scorer`` (the scorer
    the thresholds are for) is the run's (``run_scorer``) or not given; otherwise the
    records' prompt texts are scored again with ``scorer``, so the thresholds are on
    the scale of the scorer that will route. A built scorer (``scorer`` as
    :func:`magi.routing.scorer.config_scorer` makes it, with the config's
    ``scorer_options``) scores the texts again whenever the records keep them, since
    options such as a learned model's file are not in the run's record of its scorer.

    ``run_summary`` (the run's ``tiers_summary.json``) names the profile the run was
    made with and each arm's models: a run of another profile is refused unless its
    tiers and their models are this profile's (:func:`check_run_profile`).

    Raises:
        ConfigError: the run was made with another profile, the records lack a tier
            of the profile, have no scores, or too few prompts graded on every arm to split.
    """
    from magi.sweeps.tiers import TWO_STAGE, offline_sweep

    check_holdout_fraction(holdout_fraction, fraction_setting)
    if run_summary:
        check_run_profile(profile, run_summary, run_dir=run_dir, setting=setting, profile_key=profile_key)

    if not 0 < quality <= 1:
        raise ConfigError([f"quality target must be in (0, 1] (got {quality})"], headline="Cannot calibrate")
    tiers = profile.tier_names
    if len(tiers) < 2:
        raise ConfigError(
            [f"profile '{profile.name}' has one tier ({tiers[0]}): there is no threshold to calibrate"],
            headline="Cannot calibrate",
        )
    arms_present = {str(r.get("arm")) for r in records}
    ts = profile.two_stage
    two_stage_tier = ts.stage2_tier if ts.enabled and TWO_STAGE in arms_present else None
    needed = [t for t in tiers if t != two_stage_tier] + ([TWO_STAGE] if two_stage_tier else [])
    missing = [a for a in needed if a not in arms_present]
    if missing:
        raise ConfigError(
            [
                f"{setting}: {run_dir} has no answers of {', '.join(missing)} (arms in it: "
                f"{', '.join(sorted(arms_present)) or 'none'}); was it made with profile '{profile.name}'?"
            ],
            headline="Cannot calibrate",
        )
    by_id: dict[str, dict[str, Mapping[str, Any]]] = {}
    for record in records:
        by_id.setdefault(str(record["id"]), {})[str(record["arm"])] = record
    graded = [
        i
        for i, arms in by_id.items()
        if all(a in arms and arms[a].get("grade") is not None for a in needed)
        and any(arms[a].get("score") is not None for a in arms)
    ]
    if len(graded) < 4:
        raise ConfigError(
            [
                f"{setting}: {run_dir} has {len(graded)} prompt(s) graded on every arm "
                f"({', '.join(needed)}); quality calibration needs at least 4 "
                "(a graded prompt set: see docs/SWEEPS.md, Graders)"
            ],
            headline="Cannot calibrate",
        )
    scores = {
        i: float(next(r["score"] for r in by_id[i].values() if r.get("score") is not None)) for i in graded
    }
    texts = {i: next((r.get("prompt") for r in by_id[i].values() if r.get("prompt")), None) for i in graded}
    has_texts = all(t is not None for t in texts.values())
    built = scorer is not None and not isinstance(scorer, str)
    rater: Scorer | None = None
    if scorer is not None:
        rater, scorer = _rater(scorer)
    if rater is not None and (scorer != run_scorer or (has_texts and built)):
        if not has_texts:
            raise ConfigError(
                [
                    f"{setting}: {run_dir} was scored by {run_scorer or 'an unknown scorer'} and its records "
                    f"keep no prompt text to score with {scorer}: calibrate with --scorer {run_scorer}"
                ],
                headline="Cannot calibrate",
            )
        scores = {i: rater.score(str(texts[i])).score for i in graded}
    labels = [next((r.get("label") for r in by_id[i].values()), None) for i in graded]
    held_idx = held_out_indices(labels, holdout_fraction, seed)
    fit_ids = [i for k, i in enumerate(graded) if k not in held_idx]
    held_ids = [i for k, i in enumerate(graded) if k in held_idx]
    base = [t.max_score for t in profile.tier_config]
    always_strong = tuple(-1.0 for _ in tiers[:-1])
    # (no cut above the middle tiers' max_score: only the profile's own thresholds are left)
    candidates = _quality_candidates([scores[i] for i in fit_ids], base) or [tuple(base[:-1])]
    kwargs = {"tiers": tiers, "two_stage_tier": two_stage_tier}

    def part(ids: Sequence[str], settings: Sequence[tuple[float, ...]]) -> list[Any]:
        chosen = set(ids)
        return offline_sweep(
            [r for r in records if str(r["id"]) in chosen],
            {i: scores[i] for i in ids},
            list(settings),
            **kwargs,
        )

    strong_fit, *points = part(fit_ids, [always_strong, *candidates])
    floor = quality * (strong_fit.quality or 0.0)
    passing = [
        (p.strong_share, -(p.quality or 0.0), k)
        for k, p in enumerate(points)
        if (p.quality or 0.0) >= floor - _EPS
    ]
    if passing:
        best = points[min(passing)[2]]
        thresholds = best.thresholds
    else:  # the lowest cut there is (a max_score is at least 0): what it gives is reported
        thresholds = candidates[0]
        (best,) = part(fit_ids, [thresholds])
    strong_held, held_point = part(held_ids, [always_strong, thresholds])

    def figures(point: Any, strong: Any) -> dict[str, Any]:
        # no ratio when the strongest tier got nothing right: any threshold "keeps" 0
        rel = point.quality / strong.quality if strong.quality and point.quality is not None else None
        return {
            "quality": point.quality,
            "strong_quality": strong.quality,
            "relative_quality": rel,
            "tier_share": point.tier_share,
            "strong_share": point.strong_share,
            "seconds_per_prompt": point.seconds_per_prompt,
            "strong_seconds_per_prompt": strong.seconds_per_prompt,
            "tokens": point.prompt_tokens + point.completion_tokens,
        }

    last = profile.tier_config[-1]
    new_tiers = [
        TierConfig(name=t.name, max_score=m, expected_time_seconds=t.expected_time_seconds)
        for t, m in zip(
            profile.tier_config,
            [*thresholds, last.max_score if last.max_score > thresholds[-1] else math.inf],
            strict=True,
        )
    ]
    data = profile.model_dump()
    data.update(
        name=name or f"{profile.name} calibrated",
        description=(
            f"{profile.name} with tier thresholds calibrated to {quality:.0%} of the {tiers[-1]} tier's "
            f"quality on {len(fit_ids)} graded prompts of {Path(run_dir).name} "
            f"(scorer {scorer or run_scorer or '?'})"
        ),
        tier_config=[t.model_dump() for t in new_tiers],
    )
    report = QualityCalibrationReport(
        source=profile,
        profile=ModelProfile.model_validate(data),
        run_dir=run_dir,
        scorer=scorer or run_scorer or "(the run's)",
        target=quality,
        strong_tier=tiers[-1],
        thresholds=tuple(thresholds),
        n_fit=len(fit_ids),
        n_holdout=len(held_ids),
        fit=figures(best, strong_fit),
        holdout=figures(held_point, strong_held),
        fit_ids=fit_ids,
        holdout_ids=held_ids,
    )
    if not passing:
        report.notes.append(
            f"no threshold keeps {quality:.0%} of the strongest tier's quality on the calibration part "
            "but sending everything there: the boundary is put at the lowest cut there is "
            f"({fmt_score(thresholds[-1])}; a max_score is at least 0, so prompts scoring 0 stay below it)"
        )
    if not strong_fit.quality:
        report.notes.append(
            f"the '{tiers[-1]}' tier's answers to the calibration part have quality "
            f"{_fmt_quality(strong_fit.quality)}: every threshold keeps that, so the cheapest (nothing to "
            f"'{tiers[-1]}') is chosen; grade more prompts, or prompts the strongest tier gets right"
        )
    held_ratio = report.holdout["relative_quality"]
    if held_ratio is not None and held_ratio < quality - _EPS:
        report.warnings.append(
            f"on the held-out prompts the quality is {report.holdout['relative_quality']:.1%} of the "
            f"'{tiers[-1]}' tier's, under the {quality:.0%} target ({len(held_ids)} prompts; "
            f"calibration part {report.fit['relative_quality'] or 0.0:.1%}): grade more prompts, "
            "or aim higher"
        )
    return report


def save_calibrated(
    report: CalibrationReport | QualityCalibrationReport,
    *,
    profiles_dir: Path | str | None = None,
    source_key: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write the calibrated profile with the :class:`ProfileManager` (at once selectable
    as ``profile=<name>``); refuses to replace the profile it was calibrated from."""
    from magi.profiles import ProfileManager
    from magi.profiles.manager import normalize_profile_name

    manager = ProfileManager(profiles_dir)
    key = normalize_profile_name(report.profile.name)
    if source_key is not None and key == normalize_profile_name(source_key):
        raise ProfileExistsError(
            f"The calibrated profile would replace the profile it comes from ({manager.path_for(key)}); "
            "give it another name (task.output=NAME or magi calibrate --name NAME).",
            details={"name": key},
        )
    report.path = manager.save_profile(report.profile, overwrite=overwrite)
    report.profile_key = report.path.stem
    return report.path


def load_sets(
    prompts: Path | str,
    holdout: Path | str | None,
    holdout_fraction: float | None = None,
    *,
    seed: int = 0,
    settings: tuple[str, str, str] = ("task.prompts", "task.holdout", "task.holdout_fraction"),
) -> tuple[list[Prompt], list[Prompt] | None, str, str | None]:
    """The calibration and holdout prompts (a file, a split of the calibration set, or none).

    A ``holdout`` file wins over ``holdout_fraction`` (which may be the default split).

    ``settings`` name the prompts, holdout and fraction options in error messages
    (``task.*`` for run.py, ``--prompts`` etc. for the CLI).
    """
    from magi.sweeps.prompts import load_prompts, resolve_prompt_file

    prompts_setting, holdout_setting, fraction_setting = settings
    fit = load_prompts(prompts, setting=prompts_setting)
    fit_name = str(prompts)
    if holdout_fraction is not None and holdout is None:
        check_holdout_fraction(holdout_fraction, fraction_setting)
        if len(fit) < 2:
            raise ConfigError(
                [f"{fraction_setting}: a held-out part needs at least 2 prompts ({fit_name} has {len(fit)})"]
            )
        fit, held = split_holdout(fit, holdout_fraction, seed)
        return fit, held, fit_name, f"{holdout_fraction:.0%} of {fit_name} (seed {seed}, by label)"
    if holdout is None:
        return fit, None, fit_name, None
    held = load_prompts(holdout, setting=holdout_setting)
    if resolve_prompt_file(holdout) == resolve_prompt_file(prompts):
        raise ConfigError([f"{holdout_setting}: is the calibration set itself; give another file or none"])
    return fit, held, fit_name, str(holdout)


__all__ = [
    "DEFAULT_HOLDOUT_FRACTION",
    "HOLDOUT_TOLERANCE",
    "CalibrationReport",
    "QualityCalibrationReport",
    "calibrate",
    "calibrate_quality",
    "check_holdout_fraction",
    "check_run_profile",
    "held_out_indices",
    "parse_quality",
    "read_tiers_run",
    "holdout_warnings",
    "sampling_error",
    "fit_thresholds",
    "load_sets",
    "routed_shares",
    "save_calibrated",
    "split_holdout",
    "target_shares",
]
