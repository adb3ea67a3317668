"""Remote endpoints without a model server: config, resolution, pool, refused and hung connections.

The tests against a real ``llama_cpp.server`` are in test_remote.py.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import yaml

import magi
from magi.cli import main
from magi.config.endpoints import EndpointConfig, normalize_base_url
from magi.config.model_settings import LoadSettings
from magi.errors import ConfigError, ModelNotFoundError
from magi.models.registry import ModelRegistry
from magi.models.tiers import check_tier_matching, profile_tier_models
from magi.profiles import ProfileManager
from magi.runtime.backend import GenerationSettings, ModelSpec, RemoteSettings
from magi.runtime.pool import ModelPool, default_backend_factory
from magi.runtime.remote import RemoteBackend, RemoteConnectionError, RemoteTimeout, estimate_tokens
from magi.runtime.resolve import available_model_ids, remote_spec, resolve_models
from magi.testing.servers import HangingServer, free_port

from .conftest import CONF

ENDPOINT_SETS = sorted(p.stem for p in (CONF / "endpoints").glob("*.yaml"))


# -- configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ENDPOINT_SETS)
def test_every_shipped_endpoint_set_composes(name: str) -> None:
    cfg = magi.compose(endpoints=name)
    assert isinstance(cfg.endpoints, dict)
    text = (CONF / "endpoints" / f"{name}.yaml").read_text()
    assert text.startswith("# ") and "endpoints=" in text.split("\n\n")[0]


def test_default_set_is_empty_and_example_declares_two_servers() -> None:
    assert magi.compose().endpoints == {}
    example = magi.compose(endpoints="example").endpoints
    assert set(example) == {"lan_fast_a", "lan_fast_b"}
    assert all(e.tier == "fast" for e in example.values())


def test_scale_out_profile_uses_the_example_endpoints() -> None:
    cfg = magi.compose(profile="scale-out", endpoints="example")
    remote = [m for m in cfg.profile.enabled_models if m in cfg.endpoints]
    assert remote == ["lan_fast_a", "lan_fast_b"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080"),
        ("https://models.lan/llm/v1/", "https://models.lan/llm"),
    ],
)
def test_base_url_is_normalised(given: str, expected: str) -> None:
    assert normalize_base_url(given) == expected


def test_every_endpoint_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        magi.compose(
            endpoints="example",
            overrides=[
                "endpoints.lan_fast_a.url=ftp://127.0.0.1:8081",
                "endpoints.lan_fast_a.connect_timeout=0",
                "endpoints.lan_fast_b.read_timeout=-1",
                "endpoints.lan_fast_b.api=grpc",
                "+endpoints._bad.url=http://127.0.0.1:1",
                "+endpoints._bad.tier=fast",
            ],
        )
    message = str(info.value)
    assert "endpoints/example.yaml" in message
    assert "endpoints.lan_fast_a.url: 'ftp://127.0.0.1:8081' must start with http:// or https://" in message
    assert "reachable" in message
    assert "endpoints.lan_fast_a.connect_timeout: Input should be greater than 0" in message
    assert "endpoints.lan_fast_b.read_timeout: Input should be greater than 0" in message
    assert "endpoints.lan_fast_b.api: Input should be 'chat' or 'completions'" in message
    assert "invalid model id '_bad'" in message
    assert len(info.value.problems) == 5


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "http://", "http://h:port", "http://h:1/?x=1"])
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        EndpointConfig(url=url, tier="fast")


# -- registry + endpoints -------------------------------------------------------------------------
def _config_with(endpoints: dict[str, dict[str, object]], profile: str = "development") -> magi.MagiConfig:
    base = magi.compose(profile=profile)
    return base.model_copy(
        update={"endpoints": {k: EndpointConfig.model_validate(v) for k, v in endpoints.items()}}
    )


def test_profiles_name_endpoint_ids_like_local_models(seed_registry: ModelRegistry) -> None:
    cfg = _config_with(
        {
            "remote_fast": {"url": "http://127.0.0.1:8081", "tier": "fast"},
            "remote_big": {"url": "http://127.0.0.1:8082", "tier": "powerful", "api": "completions"},
        }
    )
    profile = cfg.profile.model_copy(
        update={"enabled_models": [*cfg.profile.enabled_models, "remote_fast", "remote_big"]}
    )
    cfg = cfg.model_copy(update={"profile": profile})

    # the seed's validate_profile sees them as available
    assert ProfileManager().validate_profile(profile, available_model_ids(cfg, seed_registry)) == []
    assert ProfileManager().validate_profile(profile, seed_registry.ids) == ["remote_fast", "remote_big"]
    assert check_tier_matching(profile, seed_registry, endpoints=cfg.endpoints) == []
    with pytest.raises(ModelNotFoundError):
        profile_tier_models(profile, seed_registry)  # without the endpoints they are unknown

    specs, members = resolve_models(cfg, seed_registry)
    assert members == {
        "fast": ["qwen3_4p0b_q4km_fast", "remote_fast"],
        "powerful": ["deepseek_r10528qwen3_8p0b_q4km_powerful", "remote_big"],
    }
    assert specs["remote_big"].is_remote and specs["remote_big"].memory_mb == 0
    assert specs["remote_big"].url == "http://127.0.0.1:8082"
    assert specs["remote_big"].remote is not None and specs["remote_big"].remote.api == "completions"
    assert not specs["qwen3_4p0b_q4km_fast"].is_remote


def test_unknown_model_error_mentions_endpoints(seed_registry: ModelRegistry) -> None:
    cfg = _config_with({"remote_fast": {"url": "http://127.0.0.1:8081", "tier": "fast"}})
    profile = cfg.profile.model_copy(update={"enabled_models": ["remote_fsat", "qwen3_4p0b_q4km_fast"]})
    with pytest.raises(ModelNotFoundError) as info:
        resolve_models(cfg.model_copy(update={"profile": profile}), seed_registry)
    assert "remote_fsat" in str(info.value) and "remote_fast" in str(info.value)
    assert "endpoints=" in str(info.value)


def test_endpoint_colliding_with_a_local_id_must_say_it_overrides(seed_registry: ModelRegistry) -> None:
    local = "qwen3_4p0b_q4km_fast"
    cfg = _config_with({local: {"url": "http://127.0.0.1:8081", "tier": "fast"}})
    with pytest.raises(ConfigError) as info:
        resolve_models(cfg, seed_registry)
    assert f"endpoints.{local}.override_local=true" in str(info.value)

    cfg = _config_with({local: {"url": "http://127.0.0.1:8081", "tier": "fast", "override_local": True}})
    specs, members = resolve_models(cfg, seed_registry)
    assert specs[local].is_remote and specs[local].url == "http://127.0.0.1:8081"
    assert members["fast"] == [local]


def test_remote_spec_takes_sampling_from_runtime_models() -> None:
    cfg = magi.compose(
        overrides=[
            "runtime.temperature=0.3",
            "+runtime.models.r={max_tokens: 7, prompt_template: 'U: {prompt}'}",
        ]
    )
    endpoint = EndpointConfig(url="http://127.0.0.1:9/v1", tier="fast", model="served", max_concurrency=3)
    spec = remote_spec("r", endpoint, cfg.runtime)
    assert spec.sampling.max_tokens == 7 and spec.sampling.temperature == 0.3
    assert spec.sampling.prompt_template == "U: {prompt}"
    assert spec.remote == RemoteSettings(
        url="http://127.0.0.1:9", model="served", max_concurrency=3, read_timeout=60.0
    )
    assert spec.max_concurrency == 3


# -- pool -----------------------------------------------------------------------------------------
def _remote(model_id: str, url: str = "http://127.0.0.1:9", **settings: object) -> ModelSpec:
    return ModelSpec(model_id, remote=RemoteSettings(url=url, model=model_id, **settings))  # type: ignore[arg-type]


def test_pool_makes_remote_backends_and_never_evicts_them(tiny_model: Path) -> None:
    assert isinstance(default_backend_factory(_remote("r")), RemoteBackend)
    pool = ModelPool(max_loaded=1)
    pool.register(_remote("r1"))
    pool.register(_remote("r2"))
    pool.register(ModelSpec("local", path=tiny_model, load=LoadSettings(n_ctx=64), memory_mb=1.0))
    with pool:
        for model_id in ("r1", "local", "r2", "local"):
            with pool.lease(model_id):
                pass
        assert set(pool.loaded_ids) == {"r1", "r2", "local"}  # remote ones do not count
        assert pool.stats.evictions == 0 and pool.stats.loads == 3
    assert pool.loaded_ids == []


def test_pool_admits_max_concurrency_leases_of_a_remote_model() -> None:
    """Two of four threads hold a lease until released; the others (and a third lease
    from the test) must wait. Events, not sleeps: no thread scheduling can fake it."""
    pool = ModelPool()
    pool.register(_remote("r", max_concurrency=2))
    inside, peak, lock = [0], [0], threading.Lock()
    two_inside, release = threading.Event(), threading.Event()

    def use() -> None:
        with pool.lease("r"):
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
                if inside[0] == 2:
                    two_inside.set()
            release.wait(30)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        assert two_inside.wait(30)
        with pytest.raises(TimeoutError), pool.lease("r", timeout=0.2):  # both slots are taken
            pass
        with lock:
            assert inside[0] == 2
    finally:
        release.set()
        for t in threads:
            t.join(timeout=30)
    assert peak[0] == 2 and inside[0] == 0
    with pytest.raises(TimeoutError), pool.lease("r"), pool.lease("r"), pool.lease("r", timeout=0.05):
        pass
    pool.close()


# -- refused and hung connections ----------------------------------------------------------
def test_refused_connection_names_endpoint_and_model() -> None:
    port = free_port()  # nothing listens there
    backend = RemoteBackend(_remote("lan_fast_a", url=f"http://127.0.0.1:{port}"))
    with pytest.raises(RemoteConnectionError) as info:
        list(backend.stream("Hi", GenerationSettings(max_tokens=4)))
    message = str(info.value)
    assert f"Model 'lan_fast_a' at http://127.0.0.1:{port}: cannot connect" in message
    assert "refused" in message.lower() and "endpoints.lan_fast_a.url" in message
    with pytest.raises(RemoteConnectionError):
        backend.probe()
    # counting falls back to the estimate (1 per 4 characters) and never fails
    assert backend.count_tokens("x" * 41) == estimate_tokens("x" * 41) == 11
    assert backend.count_tokens("") == 0
    backend.close()


def test_hung_server_hits_the_timeouts() -> None:
    with HangingServer() as hanging:
        backend = RemoteBackend(_remote("stuck", url=hanging.url, read_timeout=5.0, probe_timeout=0.3))
        start = time.monotonic()
        with pytest.raises(RemoteTimeout) as info:
            backend.probe()
        assert time.monotonic() - start < 4  # probe_timeout (0.3 s), not read_timeout (5 s)
        assert "Model 'stuck' at http://127.0.0.1:" in str(info.value)

        start = time.monotonic()  # the generation's own timeout beats the longer read_timeout
        with pytest.raises(RemoteTimeout) as info:
            list(backend.stream("Hi", GenerationSettings(max_tokens=4, timeout_s=0.4)))
        assert 0.3 < time.monotonic() - start < 4  # the 0.4 s generation timeout, not read_timeout
        assert info.value.status_code == 504
        backend.close()


def test_missing_api_key_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAGI_TEST_KEY", raising=False)
    backend = RemoteBackend(_remote("keyed", api_key_env="MAGI_TEST_KEY"))
    with pytest.raises(magi.MAGIException) as info:
        backend.load()
    assert "MAGI_TEST_KEY" in str(info.value) and "endpoints.keyed.api_key_env" in str(info.value)


# -- CLI ----------------------------------------------------------------------------------------------
def test_models_list_shows_endpoints_with_health(
    conf_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    (conf_dir / "endpoints" / "down.yaml").write_text(
        "# test set: python run.py endpoints=down\n"
        + yaml.safe_dump({"down_a": {"url": f"http://127.0.0.1:{port}", "tier": "fast"}})
    )
    monkeypatch.setenv("MAGI_CONF_DIR", str(conf_dir))
    registry = tmp_path / "none.json"
    assert main(["models", "list", "--endpoints", "down", "--registry", str(registry)]) == 0
    out = capsys.readouterr().out
    assert "No local models" in out
    assert "down_a" in out and f"http://127.0.0.1:{port}" in out and "error: cannot connect" in out
    assert main(["models", "list", "--endpoints", "down", "--registry", str(registry), "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["id"] == "down_a" and entry["remote"] is True and entry["healthy"] is False
    assert "Connection refused" in entry["health"]


# -- server-sent events: edge cases of the wire format (a real server is in test_remote.py) ----------
def _sse_backend(body: str, api: str = "completions") -> RemoteBackend:
    import httpx

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    spec = ModelSpec("sse", remote=RemoteSettings(url="http://127.0.0.1:9", model="m", api=api))
    return RemoteBackend(spec, transport=httpx.MockTransport(handler))


def _chunk(text: str, finish: str | None = None) -> str:
    return "data:" + json.dumps({"choices": [{"text": text, "finish_reason": finish}]})


def test_sse_comments_spacing_and_a_last_event_without_blank_line() -> None:
    body = (
        ": ping\r\n\r\n"
        + _chunk("a")
        + "\n\n"
        + "data: "
        + json.dumps({"choices": [{"text": "b", "finish_reason": None}]})
        + "\n\n"
        + _chunk("", "length")
        + "\n\ndata: [DONE]"
    )
    assert list(_sse_backend(body).stream("x", GenerationSettings(max_tokens=2))) == ["a", "b"]


def test_sse_error_event_and_cut_short_answer() -> None:
    from magi.runtime.backend import PromptTooLongError
    from magi.runtime.remote import RemoteHTTPError, RemoteStreamError

    error = 'data: {"error": {"message": "the request exceeds the available context size", "code": 400}}\n\n'
    with pytest.raises(PromptTooLongError, match="exceeds the available context"):
        list(_sse_backend(error).stream("x", GenerationSettings()))
    boom = 'data: {"error": {"message": "out of memory"}}\n\n'
    with pytest.raises(RemoteHTTPError, match="out of memory"):
        list(_sse_backend(boom).stream("x", GenerationSettings()))
    cut = _chunk("a") + "\n\ndata: [DONE]\n\n"
    with pytest.raises(RemoteStreamError, match="without a finish reason"):
        list(_sse_backend(cut).stream("x", GenerationSettings()))
    broken = _chunk("a") + "\n\n"
    with pytest.raises(RemoteStreamError, match=r"without its final \[DONE\]"):
        list(_sse_backend(broken).stream("x", GenerationSettings()))
