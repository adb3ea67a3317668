"""Answer every prompt on every tier once, then sweep thresholds offline.

``task=tiers`` (``python run.py task=tiers profile=P``) and ``magi evaluate P`` answer
each prompt of a set on each tier of a profile *alone* (one stage, the tier forced,
no routing and no fallback to another tier) and, when the profile uses two-stage
processing, through the two-stage path too (a draft on ``stage1_tier``, refined on
``stage2_tier``). Each answer is graded with the set's grader
(:mod:`magi.sweeps.graders`) and stored, with its tokens and times, as one record per
``(prompt id, arm)``; an *arm* is a tier name or :data:`TWO_STAGE`.

Answers are cached by a key (:func:`answer_key`) over the arm's models' files
(path, size, modification time), their load and sampling settings, the settings of
the runtime that change answers, the two-stage settings and the prompt's text. A
rerun with the same models and settings reuses the stored answer and asks no model;
changing a model file, ``runtime.max_tokens`` or the prompt asks again. A cached
answer is graded again only when the prompt's grading fields changed.

From the records alone, :func:`offline_sweep` routes the prompts for any thresholds
as the router would (the scorer's scores were kept) and reads the quality (mean
grade), the share of prompts per tier and the cost (seconds and tokens);
:func:`tiers_summary` adds the curve of quality against the share sent to the
strongest tier and RouteLLM's APGR, CPT(50%) and CPT(80%)
(:func:`magi.routing.metrics.routing_figures`).

With more than two tiers the RouteLLM figures compare the weakest tier alone with
the strongest tier's arm (the two-stage path when the strongest tier refines), and
the curve moves only the boundary below the strongest tier: the intermediate tiers
keep the profile's thresholds (each clipped to the moving one), so a point of the
curve is a profile one could deploy.

Files in the run folder: :data:`TIERS_FILE` (one record per prompt and arm),
:data:`SUMMARY_FILE` (per arm, the sweep points, the curve, the RouteLLM figures)
and :data:`SUMMARY_MD` (the table printed at the end); :data:`SUMMARY_PNG`, the
cost-quality plot (:func:`plot_tiers`), when matplotlib (the ``bench`` extra) is there.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from magi.config.app import MagiConfig
from magi.config.profile import ModelProfile
from magi.config.task import TiersTaskConfig
from magi.errors import ConfigError, MAGIException
from magi.fileio import atomic_write_text
from magi.routing.scorer import MAX_SCORE, ComplexityScore
from magi.runtime.backend import ModelSpec
from magi.runtime.pool import ModelPool, shared_pool
from magi.sweeps.graders import Grade, JudgeAsk, grade_answer
from magi.sweeps.jobs import JobInfo
from magi.sweeps.prompts import Prompt, PromptSetError, load_prompts

logger = logging.getLogger(__name__)

#: The arm of the two-stage path (draft on ``stage1_tier``, refine on ``stage2_tier``).
TWO_STAGE = "two-stage"
#: Records of the run: one JSON object per (prompt, arm).
TIERS_FILE = "tiers.jsonl"
#: The summary: per arm, sweep points, curve, APGR/CPT.
SUMMARY_FILE = "tiers_summary.json"
#: The same as a Markdown table.
SUMMARY_MD = "tiers_summary.md"
#: The cost-quality plot of a run (:func:`plot_tiers`), when matplotlib is installed.
SUMMARY_PNG = "tiers.png"
#: The answer cache, in ``task.cache_dir`` (default: beside the run folder's parent).
CACHE_FILE = "tiers-cache.jsonl"
#: A grade of at least this counts as a correct answer in the RouteLLM figures.
CORRECT_GRADE = 0.5
#: Runtime settings that do not change an answer (left out of the cache key).
_NOT_ANSWER_SETTINGS = (
    "models",
    "memory_budget_mb",
    "gpu_memory_budget_mb",
    "max_loaded_models",
    "failure_threshold",
    "cooldown_seconds",
    "state_cache_mb",
)


def tiers_settings(config: MagiConfig) -> TiersTaskConfig:
    """The ``task=tiers`` settings of ``config`` (defaults under another task)."""
    return config.task if isinstance(config.task, TiersTaskConfig) else TiersTaskConfig()


# -- arms: one tier forced, or the two-stage path ---------------------------------------
@dataclasses.dataclass(frozen=True)
class Arm:
    """One way of answering every prompt: a tier alone, or the two-stage path."""

    name: str
    tiers: tuple[str, ...]
    """The tier alone, or ``(stage1_tier, stage2_tier)``."""
    models: dict[str, list[str]]
    """The tiers' models (in the order the router tries them)."""

    @property
    def two_stage(self) -> bool:
        return self.name == TWO_STAGE


def threshold_cut(setting: float | Sequence[float]) -> tuple[float, ...]:
    """One threshold setting as a tuple: a number for two tiers, a list for more."""
    return (float(setting),) if isinstance(setting, int | float) else tuple(float(t) for t in setting)


def check_thresholds(settings: Sequence[float | Sequence[float]], tiers: Sequence[str]) -> None:
    """Refuse ``task.thresholds`` that do not fit the tiers (one cut fewer than tiers),
    before any model is asked (422 naming the setting)."""
    for setting in settings:
        cut = threshold_cut(setting)
        if len(cut) != len(tiers) - 1:
            raise ConfigError(
                [
                    f"task.thresholds: {list(cut)} has {len(cut)} threshold(s); the tiers with models "
                    f"({', '.join(tiers)}) need {len(tiers) - 1} (a number for two tiers, a list for more)"
                ]
            )


def profile_arms(profile: ModelProfile, members: Mapping[str, Sequence[str]]) -> list[Arm]:
    """The profile's tiers that have models, in order, then the two-stage path when
    the profile enables it (and both of its tiers have models)."""
    arms = [Arm(t, (t,), {t: list(members[t])}) for t in profile.tier_names if members.get(t)]
    ts = profile.two_stage
    if ts.enabled and members.get(ts.stage1_tier) and members.get(ts.stage2_tier):
        tiers = (ts.stage1_tier, ts.stage2_tier)
        arms.append(Arm(TWO_STAGE, tiers, {t: list(members[t]) for t in tiers}))
    return arms


def arm_profile(profile: ModelProfile, arm: Arm) -> ModelProfile:
    """A copy of ``profile`` that can only answer as ``arm`` does: its tier(s) and models
    alone, so no prompt is routed elsewhere or falls back to another tier. A two-stage
    arm keeps ``stage1_tier`` below ``stage2_tier`` (``max_score`` 0) and is run with
    a scorer that sends every prompt to ``stage2_tier`` (:class:`_ForcedScorer`)."""
    models = [m for t in arm.tiers for m in arm.models[t]]
    enabled = list(dict.fromkeys(models))

    def tier(name: str, max_score: float) -> dict[str, Any]:
        return {**profile.tier(name).model_dump(), "max_score": max_score}

    data = profile.model_dump()
    data["enabled_models"] = enabled
    data["model_tiers"] = {m: [t for t in arm.tiers if m in arm.models[t]] for m in enabled}
    data["load_balancing"] = {**data["load_balancing"], "enabled": False}
    if arm.two_stage:
        data["tier_config"] = [tier(arm.tiers[0], 0.0), tier(arm.tiers[1], math.inf)]
    else:
        data["tier_config"] = [tier(arm.name, math.inf)]
        data["two_stage"] = {**data["two_stage"], "enabled": False}
    return ModelProfile.model_validate(data)


class _ForcedScorer:
    """Scores every prompt :data:`MAX_SCORE`: the two-stage arm's router sends it to
    ``stage2_tier`` (the real scorer's score is recorded separately)."""

    name = "forced"

    def score(self, prompt: str) -> ComplexityScore:
        return ComplexityScore(MAX_SCORE, {}, {"forced": MAX_SCORE}, scorer=self.name)


def arm_runner(config: MagiConfig, arm: Arm, specs: Mapping[str, ModelSpec], pool: ModelPool) -> Any:
    """A :class:`~magi.runtime.runner.Runner` restricted to ``arm`` (see :func:`arm_profile`)."""
    from magi.routing.router import Router
    from magi.runtime.runner import Runner

    profile = arm_profile(config.profile, arm)
    arm_config = config.model_copy(update={"profile": profile})
    members = {t: list(arm.models[t]) for t in arm.tiers}
    arm_specs = {m: specs[m] for m in profile.enabled_models}
    runner = Runner(arm_config, specs=arm_specs, tier_members=members, pool=pool, start_health_checks=False)
    if arm.two_stage:
        runner.router = Router(profile, members, _ForcedScorer(), runner.health, seed=config.runtime.seed)
    return runner


# -- the cache key ----------------------------------------------------------------------
def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_identity(spec: ModelSpec) -> dict[str, Any]:
    """What makes a model's answers the same: its file (path, size, modification time)
    or its server, and its load and sampling settings."""
    identity: dict[str, Any] = {
        "model_id": spec.model_id,
        "load": spec.load.model_dump(mode="json"),
        "sampling": spec.sampling.model_dump(mode="json"),
    }
    if spec.path is not None:
        path = Path(spec.path)
        try:
            stat = path.stat()
            identity["file"] = {
                "path": str(path.resolve()),
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
            }
        except OSError:
            identity["file"] = {"path": str(path), "missing": True}
    if spec.remote is not None:
        identity["remote"] = repr(spec.remote)
    return identity


def arm_identity(config: MagiConfig, arm: Arm, specs: Mapping[str, ModelSpec]) -> str:
    """The digest of everything but the prompt that decides an arm's answers."""
    profile = config.profile
    runtime = config.runtime.model_dump(mode="json", exclude=set(_NOT_ANSWER_SETTINGS))
    data: dict[str, Any] = {
        "arm": arm.name,
        "tiers": {t: [model_identity(specs[m]) for m in arm.models[t]] for t in arm.tiers},
        "expected_time_s": {t: profile.tier(t).expected_time_seconds for t in arm.tiers},
        "system_prompt": profile.system_prompt,
        "runtime": runtime,
    }
    if arm.two_stage:
        ts = profile.two_stage
        data["two_stage"] = {"stage1_max_tokens": ts.stage1_max_tokens, "refine_template": ts.refine_template}
    return _digest(data)


def answer_key(identity: str, prompt: Prompt) -> str:
    """The cache key of one answer: the arm's identity and the prompt's text."""
    return _digest({"arm": identity, "prompt": prompt.prompt})


def grade_key(prompt: Prompt) -> str:
    """The digest of what a grade depends on besides the answer (every prompt field)."""
    # the fields a prompt compares by (not ``line``: where it sits in its file)
    compared = {f.name for f in dataclasses.fields(prompt) if f.compare}
    return _digest({k: v for k, v in dataclasses.asdict(prompt).items() if k in compared})


class AnswerCache:
    """Stored answers by :func:`answer_key`: a JSON-lines file, one record a line,
    appended as answers come (the last record of a key wins)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    record = json.loads(line)
                    self.records[record["key"]] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    logger.warning("%s:%d: not a cached answer; ignored", self.path, number)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def put(self, record: dict[str, Any]) -> None:
        self.records[record["key"]] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        # one write on an O_APPEND descriptor: jobs of a parallel sweep sharing the cache
        # append whole lines, never interleaved halves
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def cache_path(settings: TiersTaskConfig, job: JobInfo) -> Path:
    """``task.cache_dir/tiers-cache.jsonl``, else beside the run folder's parent
    (``outputs/<date>/<time>`` → ``outputs/tiers-cache.jsonl``), so later runs find it."""
    folder = settings.cache_dir if settings.cache_dir is not None else Path(job.output_dir).parent.parent
    return Path(folder) / CACHE_FILE


# -- answering ---------------------------------------------------------------------------
def run_tiers(
    config: MagiConfig, job: JobInfo, *, pool: ModelPool | None = None, setting: str = "task.prompts"
) -> dict[str, Any]:
    """Answer (or reuse) every prompt on every arm, grade, write the records and the
    summary into ``job.output_dir``; return the summary (:func:`tiers_summary`).

    Raises:
        PromptSetError: the prompt set is missing or malformed, or uses an id twice
            (before any model runs).
        ConfigError: the profile's models cannot be resolved, or no tier has a model.
    """
    from magi.config.task import BenchTaskConfig
    from magi.routing.scorer import config_scorer
    from magi.runtime.resolve import resolve_models
    from magi.runtime.runner import Runner
    from magi.sweeps.bench import prepare_judges

    settings = tiers_settings(config)
    pool = pool if pool is not None else shared_pool()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    prompts = load_prompts(settings.prompts, limit=settings.limit, setting=setting)
    seen: dict[str, int] = {}
    for item in prompts:
        if item.id in seen:  # records are per (prompt id, arm): a second one would hide the first
            raise PromptSetError(
                f"{settings.prompts}:{item.line}: prompt id '{item.id}' is used twice (first on line "
                f"{seen[item.id]}); task=tiers keys its records by prompt id (give each line its own 'id')",
                details={"path": str(settings.prompts), "line": item.line, "field": "id", "id": item.id},
            )
        seen[item.id] = item.line
    scorer = config_scorer(config)
    scores = {p.id: scorer.score(p.prompt).score for p in prompts}
    specs, members = resolve_models(config)
    arms = profile_arms(config.profile, members)
    if not arms:
        raise ConfigError([f"profile '{config.profile.name}': no tier has a model to answer with"])
    check_thresholds(settings.thresholds, [a.name for a in arms if a.name != TWO_STAGE])
    cache = AnswerCache(cache_path(settings, job)) if settings.reuse else None
    job.output_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    asked = 0
    with Runner(config, specs=specs, tier_members=members, pool=pool, start_health_checks=False) as full:
        strongest = arms_by_strength(arms)[-1].tiers[-1]
        prompts, judge = prepare_judges(
            full, prompts, BenchTaskConfig(prompts=settings.prompts, strong_tier=strongest)
        )
        for arm in arms:
            identity = arm_identity(config, arm, specs)
            rows, new = _answer_arm(config, arm, specs, pool, prompts, identity, cache, judge, settings)
            asked += new
            for row in rows:
                row["score"] = scores[row["id"]]
            records.extend(rows)
    write_records(job.output_dir, records)
    summary = tiers_summary(
        records,
        scores,
        profile=config.profile,
        thresholds=[list(t) if isinstance(t, list) else t for t in settings.thresholds],
    )
    summary.update(
        {
            "task": "tiers",
            "profile_key": job.profile_key,
            "prompts": {"file": str(settings.prompts), "count": len(prompts)},
            "scorer": config.scorer,
            "arms": {a.name: {"tiers": list(a.tiers), "models": a.models} for a in arms},
            "asked": asked,
            "reused": len(records) - asked,
            "cache": str(cache.path) if cache is not None else None,
            "records_file": TIERS_FILE,
            "started_at": started.isoformat(timespec="seconds"),
            "wall_s": time.perf_counter() - t0,
        }
    )
    write_summary(job.output_dir, summary)
    return summary


def arms_by_strength(arms: Sequence[Arm]) -> list[Arm]:
    """The tier arms from weakest to strongest (the two-stage arm left out)."""
    return [a for a in arms if not a.two_stage]


def _answer_arm(
    config: MagiConfig,
    arm: Arm,
    specs: Mapping[str, ModelSpec],
    pool: ModelPool,
    prompts: Sequence[Prompt],
    identity: str,
    cache: AnswerCache | None,
    judge: JudgeAsk | None,
    settings: TiersTaskConfig,
) -> tuple[list[dict[str, Any]], int]:
    """The records of one arm, in prompt order: reused from ``cache`` when stored (and
    graded again only if the grading fields changed), else answered by a runner
    restricted to the arm (made only when some answer is missing). Returns the
    records and how many prompts a model was asked."""
    from tqdm.auto import tqdm

    from magi.sweeps.bench import failure_row, result_row
    from magi.sweeps.metrics import prompt_failure

    keys = [answer_key(identity, p) for p in prompts]
    stored = [cache.get(k) if cache is not None else None for k in keys]
    missing = [i for i, s in enumerate(stored) if s is None]
    rows: list[dict[str, Any]] = []
    runner = arm_runner(config, arm, specs, pool) if missing else None
    desc = f"tiers {config.profile.name}: {arm.name}"
    try:
        with tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not settings.progress) as bar:
            for item, key, old in zip(prompts, keys, stored, strict=True):
                if old is not None:
                    row = copy.deepcopy(old)
                    if row.get("grade_key") != grade_key(item) and row.get("answer") is not None:
                        row.update(_graded(item, row["answer"], judge))
                        row["grade_key"] = grade_key(item)
                    expected = list(item.expected) or (item.reference if item.reference else None)
                    row.update({"id": item.id, "label": item.label, "expected": expected, "cached": True})
                    rows.append(row)
                    bar.update()
                    continue
                assert runner is not None
                t_start = time.perf_counter()
                try:
                    result = runner.run(item.prompt)
                except ConfigError:
                    raise
                except MAGIException as exc:
                    failure = prompt_failure(item, exc, routed_tier=arm.tiers[-1])
                    failure["elapsed_s"] = time.perf_counter() - t_start
                    row = failure_row(item, failure)
                else:
                    t_grade = time.perf_counter()
                    grade = grade_answer(item, result.text, judge=judge)
                    row = result_row(item, result, grade, grade_s=time.perf_counter() - t_grade)
                row.update({"arm": arm.name, "key": key, "grade_key": grade_key(item)})
                if cache is not None and row.get("error") is None:
                    cache.put(row)  # a failed answer is asked again next time
                rows.append({**row, "cached": False})
                bar.update()
    finally:
        if runner is not None:
            runner.close()
    for row in rows:
        row["arm"] = arm.name
    return rows, len(missing)


def _graded(item: Prompt, answer: str, judge: JudgeAsk | None) -> dict[str, Any]:
    from magi.sweeps.bench import _grade_fields

    t_grade = time.perf_counter()
    grade: Grade | None = grade_answer(item, answer, judge=judge)
    return {**_grade_fields(item, grade), "grade_s": time.perf_counter() - t_grade}


def write_records(folder: Path, records: Sequence[dict[str, Any]]) -> Path:
    """Write ``folder/tiers.jsonl`` atomically: one record per (prompt, arm)."""
    path = Path(folder) / TIERS_FILE
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))
    return path


class RecordError(ValueError):
    """A line of ``tiers.jsonl`` that is not a record; the message names the file and line."""


def read_records(folder: Path) -> list[dict[str, Any]]:
    """The records of a ``task=tiers`` run folder (``tiers.jsonl``).

    Raises:
        RecordError: a line is not JSON, or not an object with an ``id`` and an
            ``arm`` (the message is ``<path>:<line>: ...``).
    """
    from magi.sweeps.prompts import json_object

    path = Path(folder) / TIERS_FILE
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        record = json_object(path, number, line, RecordError, "a task=tiers record (a JSON object)")
        missing = [k for k in ("id", "arm") if k not in record]
        if missing:
            raise RecordError(
                f"{path}:{number}: not a task=tiers record (no {' and no '.join(repr(k) for k in missing)})"
            )
        records.append(record)
    return records


# -- the offline sweep -----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """What one setting of thresholds gives, read from the records (no generation).

    ``quality`` is the mean grade of the graded prompts (a prompt whose arm failed
    counts 0, as in a bench; an answer no grade could be given to is left out);
    ``tier_share`` the share of all prompts routed to each tier; ``seconds`` and the
    token counts are the sums over the prompts of the arms they were routed to.
    """

    thresholds: tuple[float, ...]
    quality: float | None
    graded: int
    tier_share: dict[str, float]
    strong_share: float
    seconds: float
    seconds_per_prompt: float
    prompt_tokens: int
    completion_tokens: int

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["thresholds"] = [_json_float(t) for t in self.thresholds]
        return data


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def _by_prompt(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Mapping[str, Any]]]:
    table: dict[str, dict[str, Mapping[str, Any]]] = {}
    for record in records:
        table.setdefault(str(record["id"]), {})[str(record["arm"])] = record
    return table


def route_arm(
    score: float,
    thresholds: Sequence[float],
    tiers: Sequence[str],
    two_stage_tier: str | None = None,
) -> tuple[str, str]:
    """The ``(tier, arm)`` a prompt scoring ``score`` gets with these ``max_score``s (one
    per tier but the last), as the router decides: the first tier whose threshold is at
    least the score, else the last; that tier answers alone, or through the two-stage
    path when it is ``two_stage_tier``."""
    tier = tiers[-1]
    for name, max_score in zip(tiers, thresholds, strict=False):
        if score <= max_score:
            tier = name
            break
    return tier, (TWO_STAGE if tier == two_stage_tier else tier)


def offline_sweep(
    records: Sequence[Mapping[str, Any]],
    scores: Mapping[str, float],
    thresholds: Sequence[float | Sequence[float]],
    *,
    tiers: Sequence[str] | None = None,
    two_stage_tier: str | None = None,
) -> list[SweepPoint]:
    """Quality, share per tier and cost for each setting of ``thresholds``, from the
    stored records alone.

    Args:
        records: ``tiers.jsonl`` records (``id``, ``arm``, ``grade``, ``total_s``,
            ``prompt_tokens``, ``completion_tokens``).
        scores: The scorer's score of each prompt id.
        thresholds: One item per point: the ``max_score`` of each tier but the last
            (a number alone for two tiers).
        tiers: The tiers from weakest to strongest (default: the record arms other
            than two-stage, in first-seen order).
        two_stage_tier: The tier answered through the two-stage path (the profile's
            ``stage2_tier`` when two-stage is on), else ``None``.

    Raises:
        ValueError: a prompt has no record for the arm it is routed to, or a
            threshold setting has the wrong length.
    """
    table = _by_prompt(records)
    if tiers is None:
        tiers = list(dict.fromkeys(str(r["arm"]) for r in records if r["arm"] != TWO_STAGE))
    ids = [i for i in table if i in scores]
    if not ids:
        raise ValueError("no prompt has both records and a score")
    points = []
    for setting in thresholds:
        cut = threshold_cut(setting)
        if len(cut) != len(tiers) - 1:
            raise ValueError(f"{len(tiers)} tiers need {len(tiers) - 1} threshold(s), got {list(cut)}")
        counts = dict.fromkeys(tiers, 0)
        grades: list[float] = []
        seconds, prompt_tokens, completion_tokens = 0.0, 0, 0
        for prompt_id in ids:
            tier, arm = route_arm(scores[prompt_id], cut, tiers, two_stage_tier)
            record = table[prompt_id].get(arm)
            if record is None:
                raise ValueError(f"prompt {prompt_id!r} has no record of arm {arm!r}")
            counts[tier] += 1
            if record.get("grade") is not None:
                grades.append(float(record["grade"]))
            seconds += float(record.get("total_s") or 0.0)
            prompt_tokens += int(record.get("prompt_tokens") or 0)
            completion_tokens += int(record.get("completion_tokens") or 0)
        n = len(ids)
        points.append(
            SweepPoint(
                thresholds=cut,
                quality=sum(grades) / len(grades) if grades else None,
                graded=len(grades),
                tier_share={t: c / n for t, c in counts.items()},
                strong_share=counts[tiers[-1]] / n,
                seconds=seconds,
                seconds_per_prompt=seconds / n,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            )
        )
    return points


def curve_thresholds(scores: Sequence[float], base: Sequence[float]) -> list[tuple[float, ...]]:
    """Threshold settings that sweep the share sent to the strongest tier from 0 to 1:
    the boundary below the strongest tier at every cut between distinct scores (above
    the highest, between neighbours, below the lowest), the earlier tiers keeping
    ``base`` (the profile's ``max_score``s) clipped to it."""
    distinct = sorted(set(scores))
    down = distinct[::-1]
    cuts = [down[0]] + [(a + b) / 2 for a, b in zip(down[1:], down[:-1], strict=True)]
    cuts.append(distinct[0] - 1.0)
    return [tuple(min(b, cut) for b in base[:-2]) + (cut,) for cut in cuts]


def tiers_summary(
    records: Sequence[Mapping[str, Any]],
    scores: Mapping[str, float],
    *,
    profile: ModelProfile,
    thresholds: Sequence[float | Sequence[float]] = (),
) -> dict[str, Any]:
    """Per arm (quality and cost alone), the profile's own thresholds and ``thresholds``
    as sweep points, the curve (every cut, :func:`curve_thresholds`), and the RouteLLM
    figures of the weakest tier against the strongest arm (grades of at least
    :data:`CORRECT_GRADE` counted correct)."""
    arms = list(dict.fromkeys(str(r["arm"]) for r in records))
    tiers = [t for t in profile.tier_names if t in arms]
    ts = profile.two_stage
    two_stage_tier = ts.stage2_tier if ts.enabled and TWO_STAGE in arms else None
    per_arm = {}
    for arm in arms:
        rows = [r for r in records if r["arm"] == arm]
        graded = [float(r["grade"]) for r in rows if r.get("grade") is not None]
        per_arm[arm] = {
            "prompts": len(rows),
            "quality": sum(graded) / len(graded) if graded else None,
            "graded": len(graded),
            "failed": sum(1 for r in rows if r.get("error")),
            "seconds": sum(float(r.get("total_s") or 0.0) for r in rows),
            "prompt_tokens": sum(int(r.get("prompt_tokens") or 0) for r in rows),
            "completion_tokens": sum(int(r.get("completion_tokens") or 0) for r in rows),
        }
    summary: dict[str, Any] = {
        "profile": profile.name,
        "tiers": tiers,
        "two_stage_tier": two_stage_tier,
        "per_arm": per_arm,
    }
    if not tiers:
        return summary
    own = tuple(t.max_score for t in profile.tier_config if t.name in tiers)[:-1]
    settings: list[tuple[str, float | Sequence[float]]] = [("profile", own)] if len(tiers) > 1 else []
    settings += [(f"thresholds={t}", t) for t in thresholds]
    kwargs = {"tiers": tiers, "two_stage_tier": two_stage_tier}
    points = offline_sweep(records, scores, [s for _, s in settings], **kwargs) if settings else []
    summary["points"] = [
        {"label": label, **p.to_dict()} for (label, _), p in zip(settings, points, strict=True)
    ]
    if len(tiers) < 2:
        return summary
    ids = [i for i in _by_prompt(records) if i in scores]
    base = [t.max_score for t in profile.tier_config if t.name in tiers]
    curve = offline_sweep(records, scores, curve_thresholds([scores[i] for i in ids], base), **kwargs)
    summary["curve"] = [{"strong_share": p.strong_share, **p.to_dict()} for p in curve]
    weak_arm, strong_arm = tiers[0], (TWO_STAGE if two_stage_tier == tiers[-1] else tiers[-1])
    summary["routellm"] = routellm_figures(records, scores, weak_arm, strong_arm)
    summary["routellm"]["graded_apgr"] = graded_apgr([(p.strong_share, p.quality) for p in curve])
    return summary


def graded_apgr(curve: Sequence[tuple[float, float | None]]) -> float | None:
    """APGR read on a curve of *mean grades* (partial credit kept, no 0.5 cut):
    ``(area under the curve - quality at share 0) / (quality at share 1 - quality at
    share 0)``, the area by trapezoids over the strong share from 0 to 1. With 0/1
    grades and two tiers it is :func:`magi.routing.metrics.apgr`; with more tiers its
    ends are the curve's (the lower tiers placed by the profile's thresholds).
    ``None`` when a point has no graded prompt or there is no gap to recover."""
    if len(curve) < 2 or any(q is None for _, q in curve):
        return None
    points = [(float(x), float(q)) for x, q in curve if q is not None]
    low, high = points[0][1], points[-1][1]
    if high <= low:
        return None
    area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False))
    return (area - low) / (high - low)


def routellm_figures(
    records: Sequence[Mapping[str, Any]], scores: Mapping[str, float], weak_arm: str, strong_arm: str
) -> dict[str, Any]:
    """APGR, CPT(50%), CPT(80%) and AUC (:func:`magi.routing.metrics.routing_figures`) of
    the scores routing between ``weak_arm`` and ``strong_arm``, on the prompts graded on
    both, a grade of at least :data:`CORRECT_GRADE` being a correct answer. ``auc`` is
    ``None`` when every prompt is alike (no prompt, or every prompt, where the weak arm
    fails and the strong one succeeds); ``error`` says why there are no figures at all
    (no prompt graded on both; the strong arm not better: no gap to recover)."""
    from magi.routing.metrics import apgr, cpt, routing_figures

    table = _by_prompt(records)
    both = [
        (scores[i], arms[weak_arm]["grade"], arms[strong_arm]["grade"])
        for i, arms in table.items()
        if i in scores
        and weak_arm in arms
        and strong_arm in arms
        and arms[weak_arm].get("grade") is not None
        and arms[strong_arm].get("grade") is not None
    ]
    out: dict[str, Any] = {"weak": weak_arm, "strong": strong_arm, "prompts": len(both)}
    if not both:
        return {**out, "error": "no prompt is graded on both arms"}
    values = [s for s, _, _ in both]
    weak = [w >= CORRECT_GRADE for _, w, _ in both]
    strong = [g >= CORRECT_GRADE for _, _, g in both]
    try:
        return {**out, **routing_figures(values, weak, strong).to_dict()}
    except ValueError:
        pass  # no gap (below), or one AUC class empty: the rest is still defined
    try:
        figures = {
            "weak_accuracy": sum(weak) / len(weak),
            "strong_accuracy": sum(strong) / len(strong),
            "auc": None,
            "apgr": apgr(values, weak, strong),
            "cpt50": cpt(values, weak, strong, 0.5),
            "cpt80": cpt(values, weak, strong, 0.8),
        }
    except ValueError as exc:
        return {**out, "error": str(exc)}
    return {**out, **figures}


def tiers_outcomes(
    records: Sequence[Mapping[str, Any]], weak_arm: str, strong_arm: str
) -> list[dict[str, Any]]:
    """The records as routing outcomes in RouteLLM's shape (:mod:`magi.routing.outcomes`):
    ``{"prompt", "weak", "strong"}`` per prompt graded on both arms, a grade of
    at least :data:`CORRECT_GRADE` being correct (for ``magi scorer eval``/``train``)."""
    out = []
    for arms in _by_prompt(records).values():
        weak, strong = arms.get(weak_arm), arms.get(strong_arm)
        if weak is None or strong is None or weak.get("grade") is None or strong.get("grade") is None:
            continue
        out.append(
            {
                "prompt": weak["prompt"],
                "weak": float(weak["grade"]) >= CORRECT_GRADE,
                "strong": float(strong["grade"]) >= CORRECT_GRADE,
            }
        )
    return out


# -- output ------------------------------------------------------------------------------
def summary_table(summary: Mapping[str, Any]) -> str:
    """The Markdown table of a summary: each arm alone, then the sweep points, then the
    RouteLLM figures."""

    def fmt(value: float | None, pattern: str = "{:.3f}") -> str:
        return "-" if value is None else pattern.format(value)

    tiers = summary.get("tiers") or []
    head = ["setting", "quality", "graded", *[f"{t} %" for t in tiers], "seconds", "s/prompt", "tokens"]
    rows = []
    for arm, f in (summary.get("per_arm") or {}).items():
        shares = [
            "100" if arm == t or (arm == TWO_STAGE and t == summary.get("two_stage_tier")) else "0"
            for t in tiers
        ]
        n = f["prompts"] or 1
        tokens = f["prompt_tokens"] + f["completion_tokens"]
        rows.append(
            [
                f"all {arm}",
                fmt(f["quality"]),
                str(f["graded"]),
                *shares,
                f"{f['seconds']:.2f}",
                f"{f['seconds'] / n:.3f}",
                str(tokens),
            ]
        )
    for p in summary.get("points") or []:
        shares = [f"{100 * p['tier_share'][t]:.0f}" for t in tiers]
        tokens = p["prompt_tokens"] + p["completion_tokens"]
        rows.append(
            [
                p["label"],
                fmt(p["quality"]),
                str(p["graded"]),
                *shares,
                f"{p['seconds']:.2f}",
                f"{p['seconds_per_prompt']:.3f}",
                str(tokens),
            ]
        )
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    figures = summary.get("routellm")
    if figures:
        if figures.get("error"):
            lines.append(f"\nRouteLLM figures ({figures['weak']} vs {figures['strong']}): {figures['error']}")
        else:
            lines.append(
                f"\nRouteLLM figures ({figures['weak']} vs {figures['strong']}, "
                f"{figures['prompts']} prompts, grade >= {CORRECT_GRADE} correct): "
                f"APGR {figures['apgr']:.3f}, CPT(50%) {figures['cpt50']:.1%}, "
                f"CPT(80%) {figures['cpt80']:.1%}, AUC "
                + ("-" if figures["auc"] is None else f"{figures['auc']:.3f}")
            )
        if figures.get("graded_apgr") is not None:
            lines.append(f"APGR on mean grades (partial credit kept): {figures['graded_apgr']:.3f}")
    return "\n".join(lines)


def write_summary(folder: Path, summary: Mapping[str, Any]) -> None:
    """Write :data:`SUMMARY_FILE` and :data:`SUMMARY_MD` into ``folder``, and
    :data:`SUMMARY_PNG` (:func:`plot_tiers`) when the summary has a curve and
    matplotlib is installed."""
    folder = Path(folder)
    atomic_write_text(folder / SUMMARY_FILE, json.dumps(summary, indent=2, default=str) + "\n")
    atomic_write_text(folder / SUMMARY_MD, f"# Tiers: {summary.get('profile')}\n\n{summary_table(summary)}\n")
    if summary.get("curve"):
        try:
            import matplotlib  # noqa: F401
        except ImportError:  # the bench extra is missing: the table and the JSON say it all
            return
        plot_tiers(summary, folder / SUMMARY_PNG)


def plot_tiers(summary: Mapping[str, Any], path: Path | str | None = None) -> Any:
    """The cost-quality plot of a tiers run: quality (mean grade) against the share of
    prompts sent to the strongest tier (left) and against the answer seconds per prompt
    (right), the curve of every cut (:func:`tiers_summary`'s ``curve``) as a line, the
    profile's thresholds and ``task.thresholds`` as labelled points on it; the left
    panel's dashed line is a random router (APGR 0.5), its title the RouteLLM figures.
    Saved as PNG to ``path`` when given; returns the matplotlib ``Figure`` (no pyplot).
    """
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from magi.sweeps.summary import _figure_class

    curve = [p for p in summary.get("curve") or [] if p.get("quality") is not None]
    points = [p for p in summary.get("points") or [] if p.get("quality") is not None]
    tiers = summary.get("tiers") or ["?"]
    fig = _figure_class()(figsize=(12.0, 4.6), dpi=110)
    FigureCanvasAgg(fig)
    share_ax, time_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for ax, key, scale in ((share_ax, "strong_share", 100.0), (time_ax, "seconds_per_prompt", 1.0)):
        line = sorted((scale * p[key], p["quality"]) for p in curve)
        if line:
            xs, ys = zip(*line, strict=True)
            ax.plot(xs, ys, "-", color="#8c959f", linewidth=1, marker=".", markersize=4, zorder=1)
        for i, p in enumerate(points):
            x, y = scale * p[key], p["quality"]
            ax.plot([x], [y], "o", markersize=7, color=f"C{i % 10}", zorder=2)
            ax.annotate(
                p["label"],
                (x, y),
                textcoords="offset points",
                xytext=(7, 6 if i % 2 == 0 else -12),
                fontsize=8,
            )
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel("quality: mean grade (0-1)")
        ax.grid(True, alpha=0.3)
    if curve:
        low, high = min(curve, key=lambda p: p["strong_share"]), max(curve, key=lambda p: p["strong_share"])
        share_ax.plot(
            [0, 100], [low["quality"], high["quality"]], "--", color="#d0d7de", linewidth=1, zorder=0
        )
    share_ax.set_xlim(-5, 105)
    share_ax.set_xlabel(f"prompts routed to the '{tiers[-1]}' tier (% of all prompts)")
    time_ax.set_xlabel("cost: answer seconds per prompt")
    figures = summary.get("routellm") or {}
    arms = f"{figures.get('weak', tiers[0])} vs {figures.get('strong', tiers[-1])}"
    if figures.get("apgr") is not None:
        title = (
            f"{arms}, {figures['prompts']} prompts: APGR {figures['apgr']:.3f}, "
            f"CPT(50%) {figures['cpt50']:.1%}, CPT(80%) {figures['cpt80']:.1%}"
        )
    else:
        title = f"{arms}: {figures.get('error', 'no figures')}"
    share_ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=9)  # a no-gap reason is long
    time_ax.set_title(f"Tiers: {summary.get('profile')}, quality against time", fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(str(path))
    return fig


def evaluate(
    profile: str,
    overrides: Sequence[str] = (),
    *,
    prompts: str | Path | None = None,
    limit: int | None = None,
    cache_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    pool: ModelPool | None = None,
) -> dict[str, Any]:
    """``magi evaluate PROFILE``: :func:`run_tiers` on ``profile`` (composed with
    ``task=tiers`` and ``overrides``) into ``output_dir`` (default
    ``outputs/<date>/<time>``, as ``run.py``), print the table; return the summary.

    Raises:
        ConfigError: an unknown profile (the message lists them) or a bad override.
        PromptSetError: the prompt set is missing or malformed.
    """
    from magi.config import compose
    from magi.sweeps.jobs import current_job

    options = ["task=tiers"]
    if cache_dir is None and output_dir is not None:
        cache_dir = Path(output_dir).resolve().parent  # beside the run folder the caller named
    for key, value in (("prompts", prompts), ("cache_dir", cache_dir)):
        if value is not None:
            options.append(f"task.{key}={json.dumps(str(value))}")
    if limit is not None:
        options.append(f"task.limit={limit}")
    config = compose(profile, [*options, *overrides])
    job = current_job()
    if output_dir is not None:
        job = JobInfo(output_dir=Path(output_dir).resolve())
    job.profile_key = profile
    summary = run_tiers(config, job, pool=pool, setting="--prompts")
    print(summary_table(summary))
    print(
        f"\n{summary['asked']} answer(s) asked, {summary['reused']} reused (cache {summary['cache']}); "
        f"records and summary in {job.output_dir}",
        flush=True,
    )
    return summary
