"""From config to runnable models: the registry, each model's spec, each tier's members.

The registry is refreshed incrementally on every start (unchanged files are not
re-read; milliseconds), so a model dropped into ``models.dirs`` is found without a
separate ``magi discover``. Each enabled model becomes a :class:`ModelSpec` that
merges the runtime defaults with ``runtime.models.<id>`` and caps ``n_ctx`` at the
model's trained context.

Remote models come from ``endpoints`` (the Hydra ``endpoints`` group): they join the
registry's models as equals, with the tier their endpoint declares. An endpoint id
that is also a local model's id is refused unless the endpoint sets
``override_local: true``, in which case the endpoint wins.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from magi.config.app import MagiConfig, ModelSettings, RuntimeConfig
from magi.config.endpoints import EndpointConfig, redact_url
from magi.errors import ConfigError
from magi.machine import usable_cores
from magi.models.discovery import ModelDiscoveryService
from magi.models.registry import ModelEntry, ModelRegistry
from magi.models.tiers import profile_tier_models
from magi.runtime.backend import GenerationSettings, ModelSpec, RemoteSettings

logger = logging.getLogger(__name__)


def default_threads() -> int:
    """All usable cores (llama-cpp-python's own default is half of them)."""
    return usable_cores()


def load_registry(config: MagiConfig, *, progress: bool = False) -> ModelRegistry:
    """Refresh the registry for ``config.models`` (demo model included when enabled).

    A registry that cannot be written (read-only models folder, full disk) does not
    stop a start: it is kept in memory, with one warning naming the file.
    """
    service = ModelDiscoveryService(config=config.models, n_ctx=config.runtime.n_ctx, progress=progress)
    result = service.refresh(save=True, save_errors="warn")
    for warning in result.warnings:
        logger.warning("%s", warning)
    return result.registry


def model_spec(entry: ModelEntry, runtime: RuntimeConfig) -> ModelSpec:
    """The load and sampling settings of one model: per-model overrides, then defaults."""
    own = runtime.models.get(entry.id, ModelSettings())
    n_ctx = own.n_ctx or runtime.n_ctx
    if entry.context_length:
        n_ctx = min(n_ctx, entry.context_length)
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
        use_mmap=own.use_mmap if own.use_mmap is not None else runtime.use_mmap,
        generation=generation_settings(own, runtime),
    )


def generation_settings(own: ModelSettings, runtime: RuntimeConfig) -> GenerationSettings:
    """Sampling settings of one model: its ``runtime.models.<id>`` fields, else the defaults."""
    max_tokens = own.max_tokens if own.max_tokens is not None else runtime.max_tokens_or_none
    return GenerationSettings(
        max_tokens=max_tokens,
        temperature=own.temperature if own.temperature is not None else runtime.temperature,
        top_p=own.top_p if own.top_p is not None else runtime.top_p,
        repeat_penalty=own.repeat_penalty if own.repeat_penalty is not None else runtime.repeat_penalty,
        seed=own.seed if own.seed is not None else runtime.seed,
        stop=tuple(own.stop if own.stop is not None else runtime.stop),
        prompt_template=own.prompt_template or runtime.prompt_template,
    )


def remote_spec(model_id: str, endpoint: EndpointConfig, runtime: RuntimeConfig) -> ModelSpec:
    """The spec of a model served over HTTP: where to reach it, and how to sample.

    Sampling and ``prompt_template`` come from ``runtime.models.<id>`` and the runtime
    defaults, as for a local model; the llama.cpp load settings (n_ctx, threads,
    batch) are the server's own and are ignored. It holds no memory here.
    """
    own = runtime.models.get(model_id, ModelSettings())
    return ModelSpec(
        model_id=model_id,
        path=None,
        memory_mb=0.0,
        context_length=endpoint.n_ctx,
        n_ctx=endpoint.n_ctx or runtime.n_ctx,
        seed=own.seed if own.seed is not None else runtime.seed,
        generation=generation_settings(own, runtime),
        remote=RemoteSettings(
            url=endpoint.url,
            model=endpoint.served_model(model_id),
            api=endpoint.api,
            api_key_env=endpoint.api_key_env,
            connect_timeout=endpoint.connect_timeout,
            read_timeout=endpoint.read_timeout,
            probe_timeout=endpoint.probe_timeout,
            health_paths=tuple(endpoint.health_paths),
            max_concurrency=endpoint.max_concurrency,
            n_ctx=endpoint.n_ctx,
            llama_params=endpoint.llama_params,
            trust_env=endpoint.trust_env,
        ),
    )


def check_endpoint_collisions(endpoints: Mapping[str, EndpointConfig], registry: ModelRegistry) -> list[str]:
    """Endpoint ids that are also local models' ids without ``override_local: true``."""
    return [
        f"endpoints.{model_id}: '{model_id}' is also a local model in the registry "
        f"({registry.models[model_id].path}); rename the endpoint, or set "
        f"endpoints.{model_id}.override_local=true to serve that id from {redact_url(endpoint.url)} instead"
        for model_id, endpoint in endpoints.items()
        if model_id in registry.models and not endpoint.override_local
    ]


def available_model_ids(config: MagiConfig, registry: ModelRegistry | None = None) -> list[str]:
    """Every model id a profile may enable: the registry's and the endpoints'.

    Pass it to the seed's ``ProfileManager.validate_profile(profile, available_model_ids(cfg))``.
    """
    registry = registry if registry is not None else load_registry(config)
    return list(dict.fromkeys([*registry.ids, *config.endpoints]))


def resolve_models(
    config: MagiConfig, registry: ModelRegistry | None = None
) -> tuple[dict[str, ModelSpec], dict[str, list[str]]]:
    """Specs of the profile's enabled models and ``{tier: [model ids]}``.

    A model id of ``config.endpoints`` becomes a remote spec; any other must be in
    the registry.

    Raises:
        ModelNotFoundError: an enabled model is neither registered nor an endpoint
            (lists the known ids).
        ConfigError: a model's tier is not one of the profile's tiers, or an endpoint
            id collides with a local model's without ``override_local``.
    """
    registry = registry if registry is not None else load_registry(config)
    endpoints = config.endpoints
    collisions = check_endpoint_collisions(endpoints, registry)
    if collisions:
        raise ConfigError(collisions, headline="Endpoint ids collide with local model ids")
    members = profile_tier_models(config.profile, registry, endpoints=endpoints)
    specs = {
        m: remote_spec(m, endpoints[m], config.runtime)
        if m in endpoints
        else model_spec(registry.get(m), config.runtime)
        for m in config.profile.enabled_models
    }
    return specs, members
