"""From config to runnable models: the registry, each model's spec, each tier's members.

The registry is refreshed incrementally on every start (unchanged files are not
re-read; milliseconds), so a model dropped into ``models.dirs`` is found without a
separate ``magi discover``. Each enabled model becomes a :class:`ModelSpec` whose
load and sampling settings (:mod:`magi.config.model_settings`) are the runtime
defaults with ``runtime.models.<id>`` merged in, threads and GPU layers resolved and
``n_ctx`` capped at the model's trained context. A ``runtime.models`` id that no
enabled model has is refused, with a did-you-mean.

Remote models come from ``endpoints`` (the Hydra ``endpoints`` group): they join the
registry's models as equals, with the tier their endpoint declares. An endpoint id
that is also a local model's id is refused unless the endpoint sets
``override_local: true``, in which case the endpoint wins.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from magi.config.app import MagiConfig, RuntimeConfig
from magi.config.endpoints import EndpointConfig, redact_url
from magi.config.model_settings import (
    LoadSettings,
    SamplingSettings,
    default_extra_bufts,
    default_gpu_layers,
    gpu_offload_supported,
    merge,
)
from magi.errors import ConfigError, ModelError, did_you_mean, format_options
from magi.machine import usable_cores
from magi.models.discovery import ModelDiscoveryService
from magi.models.registry import ModelEntry, ModelRegistry
from magi.models.tiers import profile_tier_models
from magi.runtime.backend import ModelSpec, RemoteSettings, stage_settings

logger = logging.getLogger(__name__)


def default_threads() -> int:
    """Decode threads when ``runtime.n_threads`` is unset: the usable cores less one, at
    least 1. Decode is memory-bound and waits for its slowest thread: measured on a
    2-core machine with one core busy, 2 threads decoded 5-8x slower than 1 (2.5-10.6
    against 17-26 tokens/s), while with both cores idle 2 threads were only ~11 %
    faster. Leaving one core free costs little when idle and avoids the collapse when
    anything else runs (llama-cpp-python's own default is half of the cores)."""
    return max(1, usable_cores() - 1)


def default_batch_threads() -> int:
    """Prompt-processing threads when ``runtime.n_threads_batch`` is unset: the same rule
    as decode, the usable cores less one. Prompt processing scales when the cores are
    idle (~1.95x from 1 to 2 threads on 2 cores), but it collapses the same way when they
    are not: measured on the demo model (120-token prompts, 2 cores, a test suite
    running beside it, load average 2.5), 1 thread processed 420-455 tokens/s and 2
    threads 79-124, 3.5-5.7x slower; a refine prompt then misses the first-token
    deadline. Set ``runtime.n_threads_batch`` to all cores on a machine kept idle."""
    return default_threads()


def resolve_load(load: LoadSettings, context_length: int | None) -> LoadSettings:
    """``load`` with MAGI's choices filled in: threads (:func:`default_threads`,
    :func:`default_batch_threads`), GPU layers (all when llama.cpp can offload, else 0),
    extra buffers (:func:`default_extra_bufts`) and ``n_ctx`` capped at the model's
    trained context."""
    n_ctx = min(load.n_ctx, context_length) if context_length else load.n_ctx
    return load.model_copy(
        update={
            "n_ctx": n_ctx,
            "n_threads": load.n_threads or default_threads(),
            "n_threads_batch": load.n_threads_batch or default_batch_threads(),
            "n_gpu_layers": default_gpu_layers() if load.n_gpu_layers is None else load.n_gpu_layers,
            "use_extra_bufts": (
                default_extra_bufts() if load.use_extra_bufts is None else load.use_extra_bufts
            ),
        }
    )


def load_registry(config: MagiConfig, *, progress: bool = False) -> ModelRegistry:
    """Refresh the registry for ``config.models`` (demo model included when enabled).

    A registry that cannot be written (read-only models folder, full disk) does not
    stop a start: it is kept in memory, with one warning naming the file.
    """
    service = ModelDiscoveryService(config=config.models, n_ctx=config.runtime.n_ctx, progress=progress)
    # discovery logs its own warnings (result.warnings), once each
    return service.refresh(save=True, save_errors="warn").registry


def model_sampling(runtime: RuntimeConfig, model_id: str) -> SamplingSettings:
    """How one model generates: its ``runtime.models.<id>`` fields merged over the runtime
    defaults (the one merge of sampling settings, local and remote models alike)."""
    return merge(runtime.sampling, runtime.models.get(model_id), f"runtime.models.{model_id}")


def registered_tier_members(config: MagiConfig) -> dict[str, list[str]]:
    """Tier -> model ids as the registry file has them now, without discovering or
    reading any model file (``magi route``); ``{}`` when there is no usable registry."""
    try:
        registry = ModelRegistry.load(config.models.registry)
    except ModelError as exc:
        logger.debug("no tier members for the stage plan: %s", exc)
        return {}
    return profile_tier_models(config.profile, registry, strict=False, endpoints=config.endpoints)


def stage_budgets(
    config: MagiConfig, tier: str, stage_max_tokens: int | None, members: Mapping[str, list[str]]
) -> dict[str, int | None]:
    """The token budget of a stage on ``tier`` for each of the tier's models, by the
    runner's rule (:func:`~magi.runtime.backend.stage_settings`) on each model's own
    settings (None: unlimited)."""
    return {
        model_id: stage_settings(model_sampling(config.runtime, model_id), stage_max_tokens).max_tokens
        for model_id in members.get(tier, [])
    }


def model_spec(entry: ModelEntry, runtime: RuntimeConfig) -> ModelSpec:
    """The load and sampling settings of one model: its ``runtime.models.<id>`` fields
    merged over the ``runtime`` defaults (:func:`~magi.config.model_settings.merge`), MAGI's
    choices resolved, and its memory estimate split between host and GPU."""
    own = runtime.models.get(entry.id)
    where = f"runtime.models.{entry.id}"
    load = resolve_load(merge(runtime.load, own, where), entry.context_length)
    gpu_layers = load.n_gpu_layers if gpu_offload_supported() else 0
    memory = entry.memory(
        load.n_ctx,
        type_k=load.type_k,
        type_v=load.type_v,
        n_gpu_layers=gpu_layers or 0,
        offload_kqv=load.offload_kqv,
    )
    return ModelSpec(
        model_id=entry.id,
        path=entry.path,
        memory_mb=memory.host_mb,
        gpu_memory_mb=memory.gpu_mb,
        context_length=entry.context_length,
        n_layers=entry.n_layer,
        load=load,
        sampling=model_sampling(runtime, entry.id),
    )


def remote_spec(model_id: str, endpoint: EndpointConfig, runtime: RuntimeConfig) -> ModelSpec:
    """The spec of a model served over HTTP: where to reach it, and how to sample.

    Sampling and ``prompt_template`` come from ``runtime.models.<id>`` and the runtime
    defaults, as for a local model; the llama.cpp load settings (threads, batch, GPU
    layers) are the server's own and are ignored, except ``n_ctx``, which is the
    endpoint's when it declares one. It holds no memory here.
    """
    return ModelSpec(
        model_id=model_id,
        path=None,
        memory_mb=0.0,
        context_length=endpoint.n_ctx,
        load=LoadSettings(n_ctx=endpoint.n_ctx or runtime.n_ctx),
        sampling=model_sampling(runtime, model_id),
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


def check_model_overrides(config: MagiConfig, model_ids: list[str], registry: ModelRegistry) -> list[str]:
    """``runtime.models.<id>`` entries for ids that are neither an enabled model
    (``model_ids``) nor a registered one or an endpoint (:func:`available_model_ids`;
    a model outside the profile, such as a prompt set's judge, may have its own
    settings): a typo, each with a did-you-mean. Unknown keys inside an entry are
    refused when the config is validated."""
    unknown = [model_id for model_id in config.runtime.models if model_id not in model_ids]
    if not unknown:
        return []
    known = available_model_ids(config, registry)
    options = list(dict.fromkeys([*model_ids, *known]))
    return [
        f"runtime.models.{model_id}: no enabled or registered model has this id."
        f"{did_you_mean(model_id, options)} Enabled models: {format_options(model_ids)}"
        for model_id in unknown
        if model_id not in known
    ]


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
    unknown = check_model_overrides(config, list(config.profile.enabled_models), registry)
    if unknown:
        raise ConfigError(unknown, headline="Per-model settings for models neither enabled nor registered")
    specs = {
        m: remote_spec(m, endpoints[m], config.runtime)
        if m in endpoints
        else model_spec(registry.get(m), config.runtime)
        for m in config.profile.enabled_models
    }
    return specs, members
