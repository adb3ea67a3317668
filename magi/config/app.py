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

import re
from pathlib import Path
from typing import Any

from pydantic import Field, SerializeAsAny, ValidationInfo, field_validator

from magi.config.base import MagiModel
from magi.config.endpoints import EndpointConfig, EndpointId
from magi.config.model_settings import (
    LoadSettings,
    ModelOverrides,
    ModelSettings,  # noqa: F401  (re-exported: the name older code imports)
    SamplingSettings,
    check_stop_strings,  # noqa: F401  (re-exported)
    pick,
)
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
        description=(
            "Put in place and register the bundled demo models (SmolLM2-135M-Instruct, Gemma 3 270M) "
            "whose packages are installed."
        ),
    )
    demo_dir: Path | None = Field(
        default=None,
        description=(
            "Folder the demo models are put into; default: models (MAGI's own folder, "
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


class RuntimeConfig(LoadSettings, SamplingSettings):
    """Settings for loading and running models in-process.

    The load and sampling fields (``n_ctx``, ``n_threads``, ``n_gpu_layers``, ...,
    ``temperature``, ``max_tokens``, ...) are declared once, in
    :mod:`magi.config.model_settings`, and inherited here as the flat ``runtime.*``
    defaults; ``models.<id>`` overrides any of them for one model. The fields below
    are the pool's and the runner's.
    """

    memory_budget_mb: float | None = Field(
        default=None,
        gt=0,
        description="Evict least-recently-used models while their host memory (RAM) estimate exceeds this.",
    )
    gpu_memory_budget_mb: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Evict least-recently-used models while their GPU memory estimate (offloaded layers, "
            "magi.models.memory) is above this (MB)."
        ),
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
    models: dict[str, ModelOverrides] = Field(  # type: ignore[valid-type]
        default_factory=dict,
        description=(
            "Per-model overrides, keyed by model id: any load or sampling field above. Remote "
            "endpoints use the sampling fields and prompt_template; the load settings are the "
            "server's business."
        ),
    )

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

    @property
    def load(self) -> LoadSettings:
        """The default load settings (``runtime.*``), before any model's overrides."""
        return pick(LoadSettings, self)

    @property
    def sampling(self) -> SamplingSettings:
        """The default sampling settings (``runtime.*``), before any model's overrides."""
        return pick(SamplingSettings, self)


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
    scorer_options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "The scorer's options (its constructor's keyword arguments), e.g. {path: my-router.json} "
            "for scorer: learned (a model file from `magi scorer train`)."
        ),
    )
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
        if value is None:
            return value
        from magi.prompt import InvalidPromptError, check_prompt

        try:
            return check_prompt(value, what="it")
        except InvalidPromptError as exc:
            hint = "; write it as prompt='...', or leave prompt unset (null) to run the built-in prompts"
            raise ValueError(exc.message.removeprefix("it ").rstrip(".") + hint) from None

    @field_validator("endpoints", mode="before")
    @classmethod
    def _empty_set(cls, value: Any) -> Any:
        # conf/endpoints/none.yaml holds only comments, which Hydra composes as None
        return {} if value is None else value

    @field_validator("task", mode="before")
    @classmethod
    def _task_schema(cls, value: Any) -> TaskConfig:
        return task_config(value)
