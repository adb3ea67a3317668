"""The application config around a profile: where models live, how they run.

``MagiConfig`` is what Hydra composes from ``conf/config.yaml`` plus the chosen
``conf/profile/<name>.yaml``; ``magi.compose`` and ``run.py`` validate it once and
pass plain objects on. Sections:

* ``profile``  - the :class:`~magi.config.profile.ModelProfile` (tiers, two-stage, balancing)
* ``models``   - folders to scan for GGUF files and the registry file
* ``runtime``  - llama.cpp settings shared by every model, and per-model overrides
* ``endpoints`` - models served over HTTP (``conf/endpoints/<name>.yaml``), by model id
* ``prompt``   - the prompt of ``python run.py prompt="..."`` (optional)
* ``task``     - what run.py does (``conf/task/<name>.yaml``), validated by :mod:`magi.config.task`
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from pydantic import Field, SerializeAsAny, ValidationInfo, field_validator

from magi.config.base import MagiModel, refuse_string_number
from magi.config.endpoints import EndpointConfig, EndpointId
from magi.config.profile import ModelProfile
from magi.config.task import RunTaskConfig, TaskConfig, task_config


class ModelPin(MagiModel):
    """Fix the id and/or tier of one model file instead of deriving them."""

    id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Model id to register the file under (letters, digits, '_', '.', '-').",
    )
    tier: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Tier to assign instead of the one its parameter count gives.",
    )


class ModelsConfig(MagiModel):
    """Where GGUF models are found, how they get ids and tiers, and where the registry is kept."""

    dirs: list[Path] = Field(
        default_factory=lambda: [Path("models")],
        description="Folders scanned (recursively) for .gguf files.",
    )
    registry: Path = Field(
        default=Path("models/registry.json"),
        description="JSON file the model registry is saved to and loaded from.",
    )
    tier_thresholds: dict[str, float] = Field(
        default_factory=lambda: {"fast": 6.0, "powerful": float("inf")},
        description=(
            "Tier assignment by parameter count in billions: a model goes to the first "
            "tier (in increasing threshold order) whose threshold it does not exceed; "
            "above every threshold, to the largest."
        ),
    )
    pins: dict[str, ModelPin] = Field(
        default_factory=dict,
        description=(
            "Per-file pins: a list of {file, id, tier} (the form the command line takes: "
            "models.pins=[{file:X.gguf,id:my_id,tier:fast}]), or a mapping keyed by file name "
            "({'X.gguf': {id: ..., tier: ...}}); the first shard's name for split models."
        ),
    )
    demo: bool = Field(
        default=True,
        description="Assemble and register the bundled Gemma 3 270M demo model when installed.",
    )
    demo_dir: Path | None = Field(
        default=None,
        description=(
            "Folder the demo model is assembled into; default: models (MAGI's own folder, "
            "relative to the working directory), never one of 'dirs' unless it is that one."
        ),
    )

    @field_validator("pins", mode="before")
    @classmethod
    def _pin_list(cls, value: Any) -> Any:
        """A list of ``{file, id, tier}`` becomes the mapping by file name: file names hold
        dots, which Hydra override keys cannot, so the command line needs the list."""
        if not isinstance(value, list | tuple):
            return value
        pins: dict[str, Any] = {}
        for i, item in enumerate(value):
            where = f"item {i}"
            if not isinstance(item, dict):
                raise ValueError(f"{where}: must be {{file: NAME.gguf, id: ..., tier: ...}}, not {item!r}")
            item = dict(item)
            name = item.pop("file", None)
            if not isinstance(name, str) or not name:
                raise ValueError(
                    f"{where}: needs 'file' (the model's file name), e.g. {{file: X.gguf, id: my_id}}"
                )
            if name in pins:
                raise ValueError(f"{where}: file {name!r} is pinned twice; keep one entry")
            pins[name] = item
        return pins

    @field_validator("tier_thresholds")
    @classmethod
    def _thresholds_valid(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("needs at least one tier, e.g. {fast: 6.0, powerful: .inf}")
        problems = []
        for name, bound in value.items():
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                problems.append(f"tier name {name!r} may only contain letters, digits, '_' and '-'")
            if not bound > 0:
                problems.append(f"{name}: threshold {bound} must be a positive number of billions")
        if problems:
            raise ValueError("; ".join(problems))
        return value


def check_stop_strings(value: list[str] | None) -> list[str] | None:
    """Refuse an empty stop string: llama.cpp stops at once, and the empty answer would
    pass for a success."""
    if value and any(stop == "" for stop in value):
        raise ValueError("an empty stop string ends every answer before it starts; remove it")
    return value


class ModelSettings(MagiModel):
    """llama.cpp settings; any left unset fall back to the runtime defaults."""

    n_ctx: int | None = Field(default=None, gt=0, description="Context length (capped at the model's).")
    n_threads: int | None = Field(default=None, gt=0, description="Threads; default: all cores.")
    n_batch: int | None = Field(default=None, gt=0, description="Prompt batch size.")
    chat_format: str | None = Field(default=None, description="llama.cpp chat format name.")
    use_mmap: bool | None = Field(
        default=None, description="Memory-map the model file; default: runtime.use_mmap."
    )
    temperature: float | None = Field(default=None, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float | None = Field(default=None, gt=0, le=1, description="Nucleus sampling.")
    repeat_penalty: float | None = Field(default=None, gt=0, description="Penalty on repeated tokens.")
    max_tokens: int | None = Field(default=None, gt=0, description="Default answer length.")
    seed: int | None = Field(default=None, description="Sampling seed.")
    prompt_template: str | None = Field(
        default=None,
        description="Completion prompt for models without a chat template; '{prompt}' is filled in.",
    )
    stop: list[str] | None = Field(default=None, description="Stop sequences (none may be empty).")

    @field_validator("stop")
    @classmethod
    def _stops_not_empty(cls, value: list[str] | None) -> list[str] | None:
        return check_stop_strings(value)


class RuntimeConfig(MagiModel):
    """Settings for loading and running models in-process."""

    n_ctx: int = Field(default=2048, gt=0, description="Context length (capped at each model's).")
    n_threads: int | None = Field(default=None, gt=0, description="Threads; default: all cores.")
    n_batch: int = Field(default=512, gt=0, description="Prompt batch size.")
    use_mmap: bool = Field(
        default=True,
        description=(
            "Memory-map model files (fast loads). Replace a loaded model's file by rename; "
            "set false to read the weights into memory if files must be modified in place."
        ),
    )
    seed: int = Field(default=0, description="Sampling seed, for reproducible answers.")
    temperature: float = Field(default=0.0, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(default=0.95, gt=0, le=1, description="Nucleus sampling.")
    repeat_penalty: float = Field(
        default=1.1, gt=0, description="Penalty on repeated tokens (1.0: none); curbs loops in small models."
    )
    max_tokens: float = Field(
        default=256,
        gt=0,
        description="Answer length when a stage sets none; .inf: until the context is full.",
    )
    prompt_template: str = Field(
        default="Q: {prompt}\nA:",
        description=(
            "Prompt for completion-style models (those without a chat template in their GGUF "
            "metadata); '{prompt}' is filled in. Chat models get the prompt as a user message."
        ),
    )
    stop: list[str] = Field(
        default_factory=lambda: ["\nQ:"],
        description="Stop sequences for every generation; none may be empty (it would stop at once).",
    )
    memory_budget_mb: float | None = Field(
        default=None, gt=0, description="Evict least-recently-used models above this estimate."
    )
    max_loaded_models: int | None = Field(
        default=None, gt=0, description="Evict least-recently-used models above this count."
    )
    failure_threshold: int = Field(
        default=3, gt=0, description="Consecutive failures that open a model's circuit."
    )
    cooldown_seconds: float = Field(
        default=30.0, ge=0, description="Seconds an open circuit waits before a trial request."
    )
    first_token_timeout_factor: float = Field(
        default=5.0,
        gt=0,
        description=(
            "Stall deadline for the first token (prompt processing included) = the tier's "
            "expected_time_seconds x this. A model with no token by then is stalled: the runner "
            "fails over. .inf: none."
        ),
    )
    token_gap_timeout_factor: float = Field(
        default=5.0,
        gt=0,
        description=(
            "Stall deadline between two tokens = the tier's expected_time_seconds x this. A model "
            "silent that long is stalled: its answer so far is kept (finish_reason 'stalled') if "
            "it is usable, else the runner fails over. .inf: none."
        ),
    )
    timeout_factor: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Time budget of an answer = the tier's expected_time_seconds x this; also the longest "
            "wait for a busy model. An answer still being written when it runs out ends there and "
            "is kept (finish_reason 'timeout'). .inf: none (max_tokens still bounds the length)."
        ),
    )
    repetition_stop: bool = Field(
        default=True,
        description=(
            "End an answer that loops: its last repetition_window tokens repeat one cycle of at "
            "most repetition_max_cycle tokens (finish_reason 'repetition', text kept)."
        ),
    )
    repetition_window: int = Field(
        default=32, ge=2, description="Tokens the repetition stop looks back over."
    )
    repetition_max_cycle: int = Field(
        default=8, ge=1, description="Longest cycle, in tokens, the repetition stop looks for."
    )
    models: dict[str, ModelSettings] = Field(
        default_factory=dict,
        description=(
            "Per-model overrides, keyed by model id. Remote endpoints use the sampling fields "
            "and prompt_template; the llama.cpp load settings are the server's business."
        ),
    )

    @field_validator("max_tokens", mode="before")
    @classmethod
    def _no_string_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_string_number(value, info.mode)

    @field_validator("max_tokens")
    @classmethod
    def _whole_or_inf(cls, value: float) -> float:
        if not math.isinf(value) and value != int(value):
            raise ValueError("must be a whole number of tokens, or .inf for unlimited")
        return value

    @field_validator("repetition_max_cycle")
    @classmethod
    def _cycle_fits_window(cls, value: int, info: ValidationInfo) -> int:
        window = info.data.get("repetition_window")
        if window is not None and 2 * value > window:
            raise ValueError(
                f"must be at most half of repetition_window ({window}): a cycle must repeat at "
                "least twice in the window"
            )
        return value

    @field_validator("prompt_template")
    @classmethod
    def _has_prompt(cls, value: str) -> str:
        if "{prompt}" not in value:
            raise ValueError("must contain {prompt}")
        return value

    @field_validator("stop")
    @classmethod
    def _stops_not_empty(cls, value: list[str]) -> list[str]:
        return check_stop_strings(value) or []

    @property
    def max_tokens_or_none(self) -> int | None:
        """``max_tokens`` at the llama.cpp boundary: ``.inf`` becomes ``None`` (unlimited)."""
        return None if math.isinf(self.max_tokens) else int(self.max_tokens)


class MagiConfig(MagiModel):
    """Everything one MAGI run needs, validated after Hydra composition."""

    profile: ModelProfile
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    endpoints: dict[EndpointId, EndpointConfig] = Field(
        default_factory=dict,
        description=(
            "Models served by OpenAI-compatible servers, keyed by model id (the Hydra group "
            "conf/endpoints, selected with endpoints=<name>; docs/SCALING.md)."
        ),
    )
    scorer: str = Field(default="heuristic", description="Complexity scorer, by registered name.")
    prompt: str | None = Field(
        default=None,
        description=(
            "Prompt to answer (python run.py prompt=...), taken literally: '${...}' is not "
            "interpolated. null: the built-in prompts; an empty or blank prompt is an error."
        ),
    )
    task: SerializeAsAny[TaskConfig] = Field(
        default_factory=RunTaskConfig,
        description="The task group's settings; 'name' selects what run.py does and the schema.",
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(
                "is empty; write the question (prompt='...'), or leave prompt unset (null) "
                "to run the built-in prompts"
            )
        return value

    @field_validator("endpoints", mode="before")
    @classmethod
    def _empty_set(cls, value: Any) -> Any:
        # conf/endpoints/none.yaml holds only comments, which Hydra composes as None
        return {} if value is None else value

    @field_validator("task", mode="before")
    @classmethod
    def _task_schema(cls, value: Any) -> TaskConfig:
        return task_config(value)
