"""From config to runnable models: the registry, each model's spec, each tier's members.

The registry is refreshed incrementally on every start (unchanged files are not
re-read; milliseconds), so a model dropped into ``models.dirs`` is found without a
separate ``magi discover``. Each enabled model becomes a :class:`ModelSpec` that
merges the runtime defaults with ``runtime.models.<id>`` and caps ``n_ctx`` at the
model's trained context.
"""

from __future__ import annotations

import logging
import os

from magi.config.app import MagiConfig, ModelSettings, RuntimeConfig
from magi.models.discovery import ModelDiscoveryService
from magi.models.registry import ModelEntry, ModelRegistry
from magi.models.tiers import profile_tier_models
from magi.runtime.backend import GenerationSettings, ModelSpec

logger = logging.getLogger(__name__)


def default_threads() -> int:
    """All cores (llama-cpp-python's own default is half of them)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def load_registry(config: MagiConfig, *, progress: bool = False) -> ModelRegistry:
    """Refresh the registry for ``config.models`` (demo model included when enabled)."""
    service = ModelDiscoveryService(config=config.models, n_ctx=config.runtime.n_ctx, progress=progress)
    result = service.refresh(save=True)
    for warning in result.warnings:
        logger.warning("%s", warning)
    return result.registry


def model_spec(entry: ModelEntry, runtime: RuntimeConfig) -> ModelSpec:
    """The load and sampling settings of one model: per-model overrides, then defaults."""
    own = runtime.models.get(entry.id, ModelSettings())
    n_ctx = own.n_ctx or runtime.n_ctx
    if entry.context_length:
        n_ctx = min(n_ctx, entry.context_length)
    max_tokens = own.max_tokens if own.max_tokens is not None else runtime.max_tokens_or_none
    return ModelSpec(
        model_id=entry.id,
        path=entry.path,
        memory_mb=entry.memory(n_ctx).total_mb,
        context_length=entry.context_length,
        n_ctx=n_ctx,
        n_threads=own.n_threads or runtime.n_threads or default_threads(),
        n_batch=own.n_batch or runtime.n_batch,
        seed=own.seed if own.seed is not None else runtime.seed,
        chat_format=own.chat_format,
        prompt_template=own.prompt_template or runtime.prompt_template,
        generation=GenerationSettings(
            max_tokens=max_tokens,
            temperature=own.temperature if own.temperature is not None else runtime.temperature,
            top_p=own.top_p if own.top_p is not None else runtime.top_p,
            repeat_penalty=own.repeat_penalty if own.repeat_penalty is not None else runtime.repeat_penalty,
            seed=own.seed if own.seed is not None else runtime.seed,
            stop=tuple(own.stop if own.stop is not None else runtime.stop),
        ),
    )


def resolve_models(
    config: MagiConfig, registry: ModelRegistry | None = None
) -> tuple[dict[str, ModelSpec], dict[str, list[str]]]:
    """Specs of the profile's enabled models and ``{tier: [model ids]}``.

    Raises:
        ModelNotFoundError: an enabled model is not in the registry (lists the known ids).
        ConfigError: a model's tier is not one of the profile's tiers.
    """
    registry = registry if registry is not None else load_registry(config)
    members = profile_tier_models(config.profile, registry)
    specs = {m: model_spec(registry.get(m), config.runtime) for m in config.profile.enabled_models}
    return specs, members
