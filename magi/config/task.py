"""The ``task`` section: which job ``run.py`` does and that job's settings.

``conf/task/<name>.yaml`` is the Hydra ``task`` group; its ``name`` picks both the
function (:mod:`magi.tasks`) and the schema below, so ``task.limit=-3`` or a typo
such as ``task.limt=3`` is refused with the field named, like any other setting.

The built-in schemas live here (not next to the task functions) so that
``magi.compose(overrides=["task=bench"])`` validates fully without importing the
runtime. A task registered by a plugin without a schema of its own gets
:class:`GenericTaskConfig`, which accepts any keys.

Example:
    >>> from magi.config.task import task_config
    >>> task_config({"name": "bench", "limit": 5}).limit
    5
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator

from magi.config.base import ConsistencyError, MagiModel, describe_validation_error

#: Shipped prompt sets, relative to the project root (see :func:`magi.sweeps.prompts.resolve_prompt_file`).
DEFAULT_BENCH_PROMPTS = Path("data/prompts/bench.jsonl")
DEFAULT_CALIBRATION_PROMPTS = Path("data/prompts/calibration.jsonl")
DEFAULT_HOLDOUT_PROMPTS = Path("data/prompts/holdout.jsonl")


class TaskConfig(MagiModel):
    """What every task's settings have: the task's registered name."""

    name: str = Field(min_length=1, description="Registered task name (conf/task/<name>.yaml).")


class GenericTaskConfig(TaskConfig):
    """Settings of a task registered without a schema: any keys are kept as they are."""

    model_config = ConfigDict(extra="allow")


class RunTaskConfig(TaskConfig):
    """``task=run`` (the default): answer ``prompt`` or built-in prompts, show the routing."""

    name: Literal["run"] = "run"
    messages: Path | None = Field(
        default=None,
        description=(
            "A conversation to answer: a JSON file of messages ([{'role': 'user', 'content': "
            "'...'}, ...], or {'messages': [...]}), read by magi.conversation.load_messages. "
            "Relative paths are tried from the working directory, then from the project root. "
            "With prompt= too, both are answered (the prompt first); null: none."
        ),
    )


class BenchTaskConfig(TaskConfig):
    """``task=bench``: time a prompt set through the runner and write ``metrics.json``."""

    name: Literal["bench"] = "bench"
    prompts: Path = Field(
        default=DEFAULT_BENCH_PROMPTS,
        description=(
            "Prompt set: JSON lines with 'prompt' (and optional 'id', 'label', 'expected'), "
            "or a .txt file with one prompt per line. Relative paths are tried from the "
            "working directory, then from the project root."
        ),
    )
    limit: int | None = Field(default=None, gt=0, description="Use only the first N prompts.")
    preload: bool = Field(
        default=True,
        description=(
            "Load the profile's models before the clock starts, so the first variant of a "
            "sweep does not carry the load time in its latencies (loads are still counted)."
        ),
    )
    warmup: bool = Field(
        default=True,
        description=(
            "After preloading, let each model generate one token untimed: llama.cpp's first "
            "generation after a load is several times slower than the next ones."
        ),
    )
    progress: bool = Field(default=True, description="Show a progress bar (tqdm) while prompts run.")
    strong_tier: str = Field(
        default="powerful",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Tier whose share of prompts the summary plots against latency.",
    )


class CalibrateTaskConfig(TaskConfig):
    """``task=calibrate``: set tier thresholds so each tier gets a target share of prompts."""

    name: Literal["calibrate"] = "calibrate"
    prompts: Path = Field(
        default=DEFAULT_CALIBRATION_PROMPTS,
        description="Prompt set the thresholds are fitted on (same formats as task=bench).",
    )
    holdout: Path | None = Field(
        default=None,
        description=(
            "Held-out prompt set the achieved shares are checked on (e.g. "
            "data/prompts/holdout.jsonl); it wins over holdout_fraction. null: a split of 'prompts'."
        ),
    )
    holdout_fraction: float | None = Field(
        default=0.3,
        gt=0,
        lt=1,
        description=(
            "Without a holdout file, hold out this fraction of 'prompts' (a seeded split, "
            "stratified by label) and fit on the rest; null with no holdout: none."
        ),
    )
    shares: dict[str, float] = Field(
        default_factory=lambda: {"powerful": 0.3},
        description=(
            "Target share of prompts per tier, e.g. {powerful: 0.3}. Shares of all tiers but "
            "one may be given; the missing one gets the rest. They must add up to 1."
        ),
    )
    output: str | None = Field(
        default=None,
        description=(
            "Name of the new profile; default '<profile name> calibrated' (file <profile>-calibrated.yaml)."
        ),
    )
    profiles_dir: Path | None = Field(
        default=None, description="Folder the new profile is written to; default the Hydra profile group."
    )
    overwrite: bool = Field(default=True, description="Replace an earlier calibrated profile of that name.")
    seed: int = Field(default=0, description="Seed of the holdout_fraction split.")
    quality: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description=(
            "Calibrate for quality instead of shares: the cheapest thresholds whose quality (mean "
            "grade) stays within this fraction of always using the strongest tier, e.g. 0.95, read "
            "off the graded answers of 'tiers_run' (chosen on 1 - holdout_fraction of its prompts, "
            "reported on the rest). null: calibrate to 'shares'."
        ),
    )
    tiers_run: Path | None = Field(
        default=None,
        description="With 'quality': a task=tiers run folder (its tiers.jsonl), e.g. outputs/<date>/<time>.",
    )

    @field_validator("shares")
    @classmethod
    def _shares_valid(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("give the target share of at least one tier, e.g. {powerful: 0.3}")
        bad = [f"{tier}={share}" for tier, share in value.items() if not 0 <= share <= 1]
        if bad:
            raise ValueError(f"shares are fractions between 0 and 1 (got {', '.join(bad)})")
        return value


class TiersTaskConfig(TaskConfig):
    """``task=tiers``: answer every prompt on every tier once, then sweep thresholds offline."""

    name: Literal["tiers"] = "tiers"
    prompts: Path = Field(
        default=DEFAULT_BENCH_PROMPTS,
        description="Prompt set (same formats as task=bench); graded with its graders.",
    )
    limit: int | None = Field(default=None, gt=0, description="Use only the first N prompts.")
    cache_dir: Path | None = Field(
        default=None,
        description=(
            "Folder of the answer cache (tiers-cache.jsonl); default: beside the run folder's "
            "parent (outputs/), so a rerun with the same models and settings reuses the answers."
        ),
    )
    reuse: bool = Field(default=True, description="Reuse cached answers (false: ask every model again).")
    thresholds: list[float | list[float]] = Field(
        default_factory=list,
        description=(
            "Extra threshold settings to read off the records: the max_score of each tier but "
            "the last (a number for two tiers), e.g. [2, 5, 8] or [[2, 6], [4, 8]]."
        ),
    )
    progress: bool = Field(default=True, description="Show a progress bar (tqdm) while prompts run.")


class ServeTaskConfig(TaskConfig):
    """``task=serve``: answer the OpenAI API over HTTP with the profile (docs/SERVING.md)."""

    name: Literal["serve"] = "serve"
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address to bind; the default answers this machine only (0.0.0.0: every interface).",
    )
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port (0: any free port).")
    api_keys_file: Path | None = Field(
        default=None,
        description=(
            "File of API keys, one per line ('#' comments); with it (or MAGI_API_KEYS, comma-"
            "separated) every /v1 request needs 'Authorization: Bearer <key>'. null: no keys."
        ),
    )
    max_body_bytes: int = Field(
        default=1_000_000, gt=0, description="Largest request body; a larger one is refused (413)."
    )
    max_queue: int = Field(
        default=64,
        gt=0,
        description="Requests admitted at once (answering or waiting for a model); more get 429.",
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        ge=0,
        description="On SIGTERM, how long in-flight answers may finish before they are cancelled.",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="uvicorn's log level (its access log at 'info')."
    )


#: Schemas of the built-in tasks, by ``task.name``.
TASK_SCHEMAS: dict[str, type[TaskConfig]] = {
    "run": RunTaskConfig,
    "bench": BenchTaskConfig,
    "calibrate": CalibrateTaskConfig,
    "serve": ServeTaskConfig,
    "tiers": TiersTaskConfig,
}


def register_task_schema(name: str, schema: type[TaskConfig]) -> None:
    """Validate ``task=<name>`` settings with ``schema`` (for tasks added by plugins)."""
    TASK_SCHEMAS[name] = schema


def task_config(value: Any) -> TaskConfig:
    """Validate task settings against the schema their ``name`` selects.

    Problems are raised as one :class:`ConsistencyError` whose lines name each field
    (``limit: Input should be greater than 0``), so the app config reports them as
    ``task.limit: ...`` with every other problem.
    """
    if isinstance(value, TaskConfig):
        return value
    if not isinstance(value, dict):
        raise ConsistencyError([f"must be a mapping with a 'name' (got {type(value).__name__})"])
    name = value.get("name", "run")
    schema = TASK_SCHEMAS.get(str(name), GenericTaskConfig)
    try:
        return schema.model_validate({**value, "name": name})
    except ValidationError as exc:
        raise ConsistencyError(describe_validation_error(exc, model=schema)) from None
