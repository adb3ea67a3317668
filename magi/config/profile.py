"""The profile schema: the seed's ``TierConfig``, ``TwoStageConfig``,
``LoadBalancingConfig`` and ``ModelProfile``.

A profile names the models that are enabled, the tiers they form by query
complexity, whether two-stage draft→refine processing is on, and how requests are
load-balanced. Both YAML forms of the seed are accepted: the nested one
(``profile: {name, description}`` beside the other keys) and the flat one
(``name:``/``description:`` at the top).

Example:
    >>> from magi.config.profile import ModelProfile, TierConfig
    >>> p = ModelProfile(
    ...     name="Custom Setup",
    ...     enabled_models=["qwen3_4p0b_q4km_fast"],
    ...     tier_config=[TierConfig(name="fast", max_score=float("inf"), expected_time_seconds=3)],
    ... )
    >>> p.tier_for_score(7.5).name
    'fast'
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from magi.config.base import ConsistencyError, MagiModel, refuse_string_number

Strategy = Literal["round_robin", "least_loaded", "random"]
STRATEGIES: tuple[str, ...] = ("round_robin", "least_loaded", "random")

#: Upper bound of ``two_stage.stage1_max_tokens``: a draft is short, and no context a
#: model runs with here holds more (the runner also caps it at the context left).
MAX_DRAFT_TOKENS = 131_072

#: Shortest and longest finite ``load_balancing.health_check_interval``, in seconds
#: (``.inf``: no periodic probes).
MIN_HEALTH_CHECK_INTERVAL = 0.5
MAX_HEALTH_CHECK_INTERVAL = 86_400.0

DEFAULT_REFINE_TEMPLATE = (
    "{prompt}\n\nHere is a draft answer:\n{draft}\n\n"
    "Improve the draft: correct mistakes, fill gaps and give the final answer.\n"
)


class TierConfig(MagiModel):
    """A routing tier: prompts scoring at most ``max_score`` go to this tier.

    Tiers are checked in order; the last one usually has ``max_score: .inf`` as a
    catch-all (a score above every threshold goes to the last tier anyway).
    """

    name: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Tier name, e.g. 'fast' or 'powerful'; letters, digits, '_' and '-'.",
    )
    max_score: float = Field(
        default=math.inf,
        ge=0,
        description="Highest complexity score (0-10) routed to this tier; '.inf' in YAML for a catch-all.",
    )
    expected_time_seconds: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Expected response time in seconds; the deadlines are multiples of it: first token "
            "x runtime.first_token_timeout_factor, gap between tokens x "
            "runtime.token_gap_timeout_factor, whole answer x runtime.timeout_factor (README 'Timeouts')."
        ),
    )

    @field_validator("max_score", mode="before")
    @classmethod
    def _no_string_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_string_number(value, info.mode)


class TwoStageConfig(MagiModel):
    """Draft→refine processing: a fast tier drafts, a powerful tier refines."""

    enabled: bool = Field(default=False, description="Turn two-stage processing on.")
    stage1_tier: str = Field(default="fast", description="Tier whose model writes the draft.")
    stage2_tier: str = Field(default="powerful", description="Tier whose model refines the draft.")
    stage1_max_tokens: int = Field(
        default=500,
        gt=0,
        le=MAX_DRAFT_TOKENS,
        description=(
            "Token budget of the draft (prevents stage-1 runaway); at run time also capped at "
            "what the draft model's context leaves after the prompt."
        ),
    )
    refine_template: str = Field(
        default=DEFAULT_REFINE_TEMPLATE,
        description="Stage-2 prompt; '{prompt}' and '{draft}' are filled in.",
    )

    @field_validator("refine_template")
    @classmethod
    def _template_has_fields(cls, value: str) -> str:
        missing = [f for f in ("{prompt}", "{draft}") if f not in value]
        if missing:
            raise ValueError(f"must contain {' and '.join(missing)}")
        return value


class LoadBalancingConfig(MagiModel):
    """How requests spread over the models of one tier, and how often health is probed."""

    enabled: bool = Field(default=False, description="Balance across a tier's models.")
    strategy: Strategy = Field(default="round_robin", description="One of round_robin, least_loaded, random.")
    health_check_interval: float = Field(
        default=30,
        ge=MIN_HEALTH_CHECK_INTERVAL,
        description=(
            f"Seconds between health probes of each model; at least {MIN_HEALTH_CHECK_INTERVAL:g} "
            f"(a shorter one keeps an idle runner busy probing), at most {MAX_HEALTH_CHECK_INTERVAL:g} "
            "(a day); .inf: no periodic probes (requests still open and close circuits)."
        ),
    )

    @field_validator("health_check_interval")
    @classmethod
    def _a_day_or_never(cls, value: float) -> float:
        if math.isfinite(value) and value > MAX_HEALTH_CHECK_INTERVAL:
            raise ValueError(
                f"must be at most {MAX_HEALTH_CHECK_INTERVAL:g} seconds (a day), or .inf for no "
                "periodic probes"
            )
        return value


class ModelProfile(MagiModel):
    """A named model setup: enabled models, tiers, two-stage and load balancing."""

    name: str = Field(min_length=1, description="Human-readable profile name.")
    description: str = Field(default="", description="What the profile is for.")
    enabled_models: list[str] = Field(
        min_length=1, description="Model ids (from the registry) this profile may use."
    )
    tier_config: list[TierConfig] = Field(min_length=1, description="Tiers in increasing order of max_score.")
    two_stage: TwoStageConfig = Field(default_factory=TwoStageConfig)
    load_balancing: LoadBalancingConfig = Field(default_factory=LoadBalancingConfig)
    model_tiers: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description=(
            "Per-profile tier override for a model id (else the registry's tier). A list puts "
            "one model in several tiers, e.g. a single demo model that drafts and refines."
        ),
    )
    system_prompt: str | None = Field(
        default=None,
        description=(
            "System prompt of every conversation on this profile that has none of its own; a "
            "model's runtime.models.<id>.system_prompt and a call's system= come first."
        ),
    )

    @field_validator("system_prompt")
    @classmethod
    def _system_prompt_is_text(cls, value: str | None) -> str | None:
        if value is not None:
            from magi.prompt import InvalidPromptError, check_prompt

            try:
                check_prompt(value, what="the system prompt")
            except InvalidPromptError as exc:
                raise ValueError(exc.message) from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _accept_nested_form(cls, data: Any) -> Any:
        """Fold the seed's ``profile: {name, description}`` block into the top level."""
        if not isinstance(data, dict) or "profile" not in data:
            return data
        header = data["profile"]
        if not isinstance(header, dict):
            raise ConsistencyError(["profile: must be a mapping with 'name' and 'description'"])
        problems = [
            f"profile.{key}: unknown key in the 'profile' block. Valid keys here: description, name"
            for key in sorted(set(header) - {"name", "description"})
        ]
        problems += [
            f"{key}: given both at the top level and in the 'profile' block; keep one"
            for key in sorted(k for k in header if k in data)
        ]
        if problems:
            raise ConsistencyError(problems)
        merged = {k: v for k, v in data.items() if k != "profile"}
        merged.update(header)
        return merged

    @model_validator(mode="after")
    def check_consistency(self) -> ModelProfile:
        """Cross-field rules, all reported together."""
        problems: list[str] = []
        names = [t.name for t in self.tier_config]
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                problems.append(f"tier_config[{i}].name: duplicate tier name '{name}'")
            seen.add(name)
        for i in range(1, len(self.tier_config)):
            prev, cur = self.tier_config[i - 1].max_score, self.tier_config[i].max_score
            if not cur > prev:
                problems.append(
                    f"tier_config[{i}].max_score: {cur} must be greater than the previous "
                    f"tier's {prev} (thresholds increase strictly)"
                )
        dupes = sorted({m for m in self.enabled_models if self.enabled_models.count(m) > 1})
        if dupes:
            problems.append(f"enabled_models: listed more than once: {', '.join(dupes)}")
        if self.two_stage.enabled:
            for field in ("stage1_tier", "stage2_tier"):
                tier = getattr(self.two_stage, field)
                if tier not in seen:
                    problems.append(
                        f"two_stage.{field}: tier '{tier}' is not in tier_config (tiers: {', '.join(names)})"
                    )
        for model_id, value in self.model_tiers.items():
            if model_id not in self.enabled_models:
                problems.append(
                    f"model_tiers.{model_id}: model is not in enabled_models "
                    f"({', '.join(self.enabled_models)})"
                )
            tiers = [value] if isinstance(value, str) else value
            if not tiers:
                problems.append(f"model_tiers.{model_id}: the list of tiers is empty")
            if len(set(tiers)) != len(tiers):
                problems.append(
                    f"model_tiers.{model_id}: a tier is listed more than once ({', '.join(tiers)})"
                )
            for tier in tiers:
                if tier not in seen:
                    problems.append(
                        f"model_tiers.{model_id}: tier '{tier}' is not in tier_config "
                        f"(tiers: {', '.join(names)})"
                    )
        if problems:
            raise ConsistencyError(problems)
        return self

    # -- helpers -----------------------------------------------------------------
    @property
    def tier_names(self) -> list[str]:
        return [t.name for t in self.tier_config]

    def tier_override(self, model_id: str) -> list[str] | None:
        """The tiers ``model_tiers`` puts a model in (always a list), or ``None`` if not overridden."""
        value = self.model_tiers.get(model_id)
        if value is None:
            return None
        return [value] if isinstance(value, str) else list(value)

    def tier(self, name: str) -> TierConfig:
        """The tier called ``name`` (``KeyError`` listing the tiers if absent)."""
        for tier in self.tier_config:
            if tier.name == name:
                return tier
        raise KeyError(f"no tier '{name}' in profile '{self.name}' (tiers: {', '.join(self.tier_names)})")

    def tier_for_score(self, score: float) -> TierConfig:
        """The first tier whose ``max_score`` is at least ``score``; else the last tier."""
        for tier in self.tier_config:
            if score <= tier.max_score:
                return tier
        return self.tier_config[-1]

    def to_yaml_dict(self) -> dict[str, Any]:
        """The seed's nested YAML form, in the seed's key order."""
        data = self.model_dump(mode="python")
        out: dict[str, Any] = {
            "profile": {"name": data.pop("name"), "description": data.pop("description")},
            "enabled_models": data.pop("enabled_models"),
            "tier_config": data.pop("tier_config"),
            "two_stage": data.pop("two_stage"),
            "load_balancing": data.pop("load_balancing"),
        }
        if data.get("model_tiers"):
            out["model_tiers"] = data["model_tiers"]
        if data.get("system_prompt") is not None:
            out["system_prompt"] = data["system_prompt"]
        if out["two_stage"]["refine_template"] == DEFAULT_REFINE_TEMPLATE:
            del out["two_stage"]["refine_template"]
        return out
