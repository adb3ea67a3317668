"""Tiers: which tier a model belongs to, and which models serve a profile's tiers.

A model's *registry tier* comes from its parameter count and
``models.tier_thresholds`` (billions; defaults ``fast: 6.0, powerful: .inf`` put
4B models in ``fast`` and 8B/14B in ``powerful``), unless ``models.pins`` fixes it.
A profile may override it per model with ``model_tiers`` (a tier or a list of
tiers). :func:`profile_tier_models` gives the runtime ``{tier: [model ids]}`` for a
profile; :func:`check_tier_matching` is the seed's "tier matching test": every
enabled model must land in a tier the profile defines, and every tier needs a model.

Remote models (``endpoints``, keyed by model id) count as available beside the
registry's; their tier is the one their endpoint declares. Every function here
takes them as an optional ``endpoints`` mapping.

Example:
    >>> assign_tier(4.0e9, {"fast": 6.0, "powerful": float("inf")})
    'fast'
    >>> assign_tier(14.8e9, {"fast": 6.0, "powerful": float("inf")})
    'powerful'
"""

from __future__ import annotations

from collections.abc import Mapping

from magi.config.endpoints import EndpointConfig
from magi.config.profile import ModelProfile
from magi.errors import ConfigError, ModelNotFoundError, format_options
from magi.models.registry import ModelRegistry

DEFAULT_TIER_THRESHOLDS: dict[str, float] = {"fast": 6.0, "powerful": float("inf")}

Endpoints = Mapping[str, EndpointConfig]


def assign_tier(params: float, thresholds: Mapping[str, float] = DEFAULT_TIER_THRESHOLDS) -> str:
    """The first tier (by increasing threshold) whose threshold ``params`` does not exceed.

    ``params`` is a parameter count; thresholds are in billions. A model larger than
    every threshold goes to the tier with the largest one.
    """
    if not thresholds:
        raise ValueError("tier_thresholds is empty; give at least one tier")
    ordered = sorted(thresholds.items(), key=lambda item: item[1])
    billions = params / 1e9
    for name, bound in ordered:
        if billions <= bound:
            return name
    return ordered[-1][0]


def model_tiers(
    profile: ModelProfile, registry: ModelRegistry, model_id: str, *, endpoints: Endpoints | None = None
) -> list[str]:
    """The tiers ``model_id`` serves in ``profile``: the profile's override, else its
    endpoint's tier (remote models), else its registry tier."""
    override = profile.tier_override(model_id)
    if override is not None:
        return override
    if endpoints and model_id in endpoints:
        return [endpoints[model_id].tier]
    return [registry.get(model_id).tier]


def missing_models(
    profile: ModelProfile, registry: ModelRegistry, *, endpoints: Endpoints | None = None
) -> list[str]:
    """Enabled models of ``profile`` that neither the registry nor ``endpoints`` has."""
    remote = endpoints or {}
    return [m for m in profile.enabled_models if m not in registry.models and m not in remote]


def _known(registry: ModelRegistry, endpoints: Endpoints | None) -> list[str]:
    return [*registry.models, *(m for m in endpoints or {} if m not in registry.models)]


def check_tier_matching(
    profile: ModelProfile, registry: ModelRegistry, *, endpoints: Endpoints | None = None
) -> list[str]:
    """The seed's tier matching test; returns the problems (empty: the profile routes).

    Reported: enabled models absent from the registry; models whose tier is not one
    of the profile's tiers (with the fix: a ``model_tiers`` entry); tiers no model
    serves (a prompt routed there would have no model).
    """
    problems: list[str] = []
    missing = missing_models(profile, registry, endpoints=endpoints)
    if missing:
        problems.append(
            f"enabled_models: not in the registry{' or the endpoints' if endpoints else ''}: "
            f"{', '.join(missing)} (known: {format_options(_known(registry, endpoints))})"
        )
    served: set[str] = set()
    for model_id in profile.enabled_models:
        if model_id in missing:
            continue
        tiers = model_tiers(profile, registry, model_id, endpoints=endpoints)
        for tier in tiers:
            if tier in profile.tier_names:
                served.add(tier)
            else:
                problems.append(
                    f"enabled_models: '{model_id}' is in tier '{tier}', which profile '{profile.name}' does "
                    f"not define (tiers: {', '.join(profile.tier_names)}); add the tier to tier_config or "
                    f"set model_tiers.{model_id} to one of them"
                )
    for tier in profile.tier_names:
        if tier not in served:
            problems.append(
                f"tier_config: tier '{tier}' has no enabled model; enable a model of that tier or map one "
                f"to it with model_tiers"
            )
    return problems


def profile_tier_models(
    profile: ModelProfile,
    registry: ModelRegistry,
    *,
    strict: bool = True,
    endpoints: Endpoints | None = None,
) -> dict[str, list[str]]:
    """``{tier name: [model ids]}`` for the profile's tiers, in ``tier_config`` and ``enabled_models`` order.

    With ``strict`` (the default) a profile that fails :func:`check_tier_matching`
    raises instead; without it, absent models and unknown tiers are left out and a
    tier may map to an empty list.

    Raises:
        ModelNotFoundError: an enabled model is not registered (404, strict only).
        ConfigError: a model's tier is not in the profile, or a tier has no model (422, strict only).

    Example:
        >>> profile_tier_models(manager.load_profile("development"), registry)  # doctest: +SKIP
        {'fast': ['qwen3_4p0b_q4km_fast'], 'powerful': ['deepseek_r10528qwen3_8p0b_q4km_powerful']}
    """
    if strict:
        missing = missing_models(profile, registry, endpoints=endpoints)
        if missing:
            known = _known(registry, endpoints)
            raise ModelNotFoundError(
                f"Profile '{profile.name}' enables models that are not in the registry"
                f"{' or the endpoints' if endpoints else ''}: {', '.join(missing)}. "
                f"Known: {format_options(known)}. Put their .gguf files in a models folder "
                "and run `magi discover`, declare them as remote endpoints (endpoints=<set>, "
                "docs/SCALING.md), or remove them from enabled_models.",
                details={"missing": missing, "available": sorted(known)},
            )
        problems = check_tier_matching(profile, registry, endpoints=endpoints)
        if problems:
            raise ConfigError(
                problems, headline=f"Profile '{profile.name}' does not match the registry's tiers"
            )
    result: dict[str, list[str]] = {name: [] for name in profile.tier_names}
    for model_id in profile.enabled_models:
        if model_id not in registry.models and model_id not in (endpoints or {}):
            continue
        for tier in model_tiers(profile, registry, model_id, endpoints=endpoints):
            if tier in result:
                result[tier].append(model_id)
    return result
