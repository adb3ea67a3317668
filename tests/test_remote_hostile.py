"""Remote servers that misbehave, on 127.0.0.1: every request ends by its deadline.

A :class:`~magi.testing.servers.ScriptedServer` answers byte by byte as a script
says: a ``data:`` line that never ends, one byte every half second, an over-long
line or event, an endless stream of valid tokens, an event that is not JSON, HTTP
503 while a model loads, a stall mid-answer. Each must end within the request's
deadline (plus a margin that holds on a busy 2-core machine), count against the
model's circuit breaker and let the runner fail over to the local model. Credentials
in an endpoint URL never appear in an error, a log or a trace.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from magi.cli import main
from magi.config.endpoints import EndpointConfig, redact_url
from magi.runtime import remote
from magi.runtime.backend import GenerationSettings, ModelSpec, RemoteSettings
from magi.runtime.remote import RemoteBackend, RemoteHTTPError, RemoteStreamError, RemoteTimeout
from magi.runtime.runner import NoModelAnsweredError, Runner
from magi.testing.fixtures import build_registry, write_echo_llama
from magi.testing.servers import (
    Exchange,
    Script,
    ScriptedServer,
    free_port,
    loading_model,
    sse_answer,
    sse_drip,
    sse_endless_tokens,
    sse_long_line,
    sse_non_json,
    sse_stall,
    sse_unfinished_line,
)

from .test_remote import compose, endpoint, one_tier

TIMEOUT = 1.0  # the request's deadline in these tests (seconds)
MARGIN = 4.0  # generous: a loaded 2-core machine may be 3x slower, never 4 s late
SETTINGS = GenerationSettings(max_tokens=8, timeout_s=TIMEOUT)
PASSWORD = "hunter2-s3cret"

pytestmark = pytest.mark.timeout(60)  # before the fix these hung for good


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile_models")
    write_echo_llama(folder)
    return folder


@pytest.fixture(scope="module")
def local_id(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    [model_id] = build_registry(models_dir, tmp_path_factory.mktemp("registry") / "registry.json").ids
    return model_id


Serve = Callable[..., ScriptedServer]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start scripted servers; every one is closed at teardown, whatever the test did."""
    started: list[ScriptedServer] = []

    def start(script: Script, **kwargs: object) -> ScriptedServer:
        server = ScriptedServer(script, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.close()


def backend_for(url: str, model_id: str = "hostile", **settings: object) -> RemoteBackend:
    fields: dict[str, object] = {"model": "m", "api": "completions", "read_timeout": 30.0, **settings}
    return RemoteBackend(ModelSpec(model_id, remote=RemoteSettings(url=url, **fields)))  # type: ignore[arg-type]


def timed_stream(
    backend: RemoteBackend, settings: GenerationSettings = SETTINGS
) -> tuple[BaseException, float]:
    """The error the stream ends with, and how long it took."""
    start = time.monotonic()
    with pytest.raises(remote.RemoteError) as info:
        list(backend.stream("Hi", settings))
    return info.value, time.monotonic() - start


def sse_many_data_lines(line: int, total: int) -> Script:
    """One event of many short ``data:`` lines, ``total`` bytes in all, never its blank line."""

    def script(ex: Exchange) -> None:
        ex.start()
        block = ("data: " + "y" * line + "\n").encode() * 64
        sent = 0
        while sent < total:
            ex.chunk(block)
            sent += len(block)
        ex.sleep(3600)

    return script


def drip_headers(interval: float = 0.5) -> Script:
    """Even the status line comes one byte every ``interval`` seconds."""

    def script(ex: Exchange) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" * 100:
            ex.sleep(interval)
            ex.send(bytes([byte]))

    return script


# -- the backend: one deadline over the whole request ----------------------------------------------
@pytest.mark.parametrize(
    "script",
    [sse_unfinished_line(), sse_drip(interval=0.5), drip_headers(), sse_stall()],
    ids=["line-never-ends", "drip", "drip-headers", "stall"],
)
def test_slow_servers_end_at_the_deadline(serve: Serve, script: Script) -> None:
    server = serve(script)
    backend = backend_for(server.url)
    error, elapsed = timed_stream(backend)
    backend.close()
    assert isinstance(error, RemoteTimeout), error
    assert TIMEOUT * 0.9 < elapsed < TIMEOUT + MARGIN
    assert f"Model 'hostile' at {server.url}" in str(error) and "timeout of 1.0s" in str(error)


def test_the_deadline_covers_connect_first_byte_and_every_chunk_of_a_probe(serve: Serve) -> None:
    """Probes and token counts are bounded by probe_timeout as a whole, not per read."""
    server = serve(sse_answer(), health=drip_headers(interval=0.2))
    backend = backend_for(server.url, probe_timeout=1.0, health_paths=("/health",))
    start = time.monotonic()
    with pytest.raises(RemoteTimeout, match=f"Model 'hostile' at {server.url}"):
        backend.probe()
    assert time.monotonic() - start < 1.0 + MARGIN
    backend.close()


def test_over_long_line_is_refused(serve: Serve) -> None:
    server = serve(sse_long_line(remote.MAX_SSE_LINE_BYTES + 1))
    backend = backend_for(server.url)
    error, elapsed = timed_stream(backend, GenerationSettings(max_tokens=8, timeout_s=30.0))
    backend.close()
    assert isinstance(error, RemoteStreamError), error
    assert "MAX_SSE_LINE_BYTES" in str(error) and f"Model 'hostile' at {server.url}" in str(error)
    assert elapsed < 30.0


def test_over_long_event_is_refused(serve: Serve) -> None:
    server = serve(sse_many_data_lines(line=1000, total=remote.MAX_SSE_EVENT_BYTES + 100_000))
    backend = backend_for(server.url)
    error, _ = timed_stream(backend, GenerationSettings(max_tokens=8, timeout_s=30.0))
    backend.close()
    assert isinstance(error, RemoteStreamError), error
    assert "MAX_SSE_EVENT_BYTES" in str(error) and server.url in str(error)


def test_endless_valid_tokens_hit_the_response_cap(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "MAX_RESPONSE_BYTES", 256 * 1024)  # the real cap is 128 MiB
    server = serve(sse_endless_tokens())
    backend = backend_for(server.url)
    error, elapsed = timed_stream(backend, GenerationSettings(max_tokens=None, timeout_s=30.0))
    backend.close()
    assert isinstance(error, RemoteStreamError), error
    assert "MAX_RESPONSE_BYTES" in str(error) and f"Model 'hostile' at {server.url}" in str(error)
    assert elapsed < 30.0


def test_endless_valid_tokens_end_at_the_deadline(serve: Serve) -> None:
    server = serve(sse_endless_tokens())
    backend = backend_for(server.url)
    start = time.monotonic()
    pieces = 0
    with pytest.raises(RemoteTimeout, match="timeout of 1.0s"):
        for _ in backend.stream("Hi", GenerationSettings(max_tokens=None, timeout_s=TIMEOUT)):
            pieces += 1
    assert pieces > 0 and time.monotonic() - start < TIMEOUT + MARGIN
    backend.close()


def test_sse_edge_cases_name_the_model_and_url(serve: Serve) -> None:
    """Against a real socket: an event that is not JSON, 503 while loading, a stall."""
    cases: list[tuple[Script, type[BaseException], str, dict[str, object]]] = [
        (sse_non_json(), RemoteStreamError, "sent an event that is not JSON: '<html>502", {}),
        (loading_model(), RemoteHTTPError, "is not ready (HTTP 503: Loading model)", {}),
        (sse_stall(tokens=2), RemoteTimeout, "waiting for the next token (after 2)", {"read_timeout": 0.3}),
    ]
    for script, kind, text, settings in cases:
        server = serve(script)
        backend = backend_for(server.url, **settings)
        error, elapsed = timed_stream(backend, GenerationSettings(max_tokens=8, timeout_s=30.0))
        backend.close()
        assert isinstance(error, kind), error
        assert f"Model 'hostile' at {server.url}" in str(error) and text in str(error)
        assert elapsed < MARGIN


def test_a_well_behaved_scripted_answer_streams(serve: Serve) -> None:
    """The scripted server itself speaks proper SSE (so the failures above are the scripts')."""
    server = serve(sse_answer(tokens=3, text="z"))
    backend = backend_for(server.url)
    assert list(backend.stream("Hi", SETTINGS)) == ["z", "z", "z"]
    backend.close()


def test_lines_split_anywhere_across_chunks(serve: Serve) -> None:
    """MAGI splits the stream itself: a CR LF, a lone CR and a UTF-8 character may each
    arrive split across two chunks (one byte per chunk here) and still parse."""

    def event(text: str, finish: str | None = None) -> str:  # raw UTF-8, not \u escapes
        return "data: " + json.dumps(
            {"choices": [{"text": text, "finish_reason": finish}]}, ensure_ascii=False
        )

    answer = (
        ": ping\r\n\r\n"
        + event("é")
        + "\r\n\r\n"
        + event("日本")
        + "\r\r"
        + event("", "stop")
        + "\n\ndata: [DONE]"  # the last event without its blank line
    ).encode()

    def script(ex: Exchange) -> None:
        ex.start()
        for byte in answer:
            ex.chunk(bytes([byte]))
        ex.end()

    server = serve(script)
    backend = backend_for(server.url)
    assert list(backend.stream("Hi", GenerationSettings(max_tokens=8, timeout_s=30.0))) == ["é", "日本"]
    backend.close()


# -- through the Runner: failures count, the runner fails over --------------------------------------
HOSTILE = {
    "line-never-ends": (sse_unfinished_line(), "RemoteTimeout"),
    "drip": (sse_drip(interval=0.5), "RemoteTimeout"),
    "long-line": (sse_long_line(remote.MAX_SSE_LINE_BYTES + 1), "MAX_SSE_LINE_BYTES"),
    "endless": (sse_endless_tokens(), "MAX_RESPONSE_BYTES"),
    "non-json": (sse_non_json(), "not JSON"),
    "loading": (loading_model(), "HTTP 503: Loading model"),
    # nothing usable before the stall: whitespace tokens (a stall after usable tokens keeps
    # the answer: tests/test_runtime_timeouts.py)
    "stall": (sse_stall(text=" "), "RemoteTimeout"),
}


def hostile_runner(
    url: str, conf_dir: Path, tmp_path: Path, models_dir: Path, local_id: str, **extra: object
) -> Runner:
    cfg = compose(
        conf_dir,
        tmp_path,
        models_dir,
        endpoints={"hostile": endpoint(url, read_timeout=30.0, **extra)},
        profile=one_tier(["hostile", local_id], strategy=None, expected_time=TIMEOUT / 2),
        # tier timeout: 1 s; the endless "a a a ..." must reach the size cap, not the repetition stop
        overrides=(
            "runtime.timeout_factor=2.0",
            "runtime.cooldown_seconds=600",
            "runtime.repetition_stop=false",
        ),
    )
    return Runner(cfg)


@pytest.mark.parametrize("case", list(HOSTILE))
def test_runner_fails_over_and_counts_the_failure(
    case: str,
    serve: Serve,
    conf_dir: Path,
    tmp_path: Path,
    models_dir: Path,
    local_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if case == "endless":  # hit the cap before the deadline (the real cap is 128 MiB)
        monkeypatch.setattr(remote, "MAX_RESPONSE_BYTES", 256 * 1024)
    script, expected = HOSTILE[case]
    server = serve(script)
    with hostile_runner(server.url, conf_dir, tmp_path, models_dir, local_id) as runner:
        start = time.monotonic()
        result = runner.run("Are you there?")
        elapsed = time.monotonic() - start
        assert result.model_id == local_id and result.text
        [fallback] = result.fallbacks
        assert fallback.model_id == "hostile" and expected in fallback.error and server.url in fallback.error
        assert elapsed < TIMEOUT + MARGIN
        assert runner.status()["hostile"]["state"] == "open"  # failure_threshold=1: it counted
        assert runner.run("Again?").fallbacks == []  # the open circuit is skipped, not tried


def test_queued_requests_fail_over_instead_of_waiting(
    serve: Serve, conf_dir: Path, tmp_path: Path, models_dir: Path, local_id: str
) -> None:
    """The issue's drip run: 4 requests at once on a server that admits one (max_concurrency 1)."""
    server = serve(sse_drip(interval=0.5))
    results: dict[int, tuple[str, float]] = {}
    errors: list[BaseException] = []
    with hostile_runner(server.url, conf_dir, tmp_path, models_dir, local_id) as runner:

        def ask(n: int) -> None:
            start = time.monotonic()
            try:
                model_id = runner.run(f"Question {n}?").model_id
            except BaseException as exc:  # reported below
                errors.append(exc)
                return
            results[n] = (model_id, time.monotonic() - start)

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert errors == [] and sorted(results) == [0, 1, 2, 3]
        assert {model_id for model_id, _ in results.values()} == {local_id}
        # holder: one deadline; a waiter: at most one lease wait, then maybe one more deadline
        assert max(elapsed for _, elapsed in results.values()) < 2 * TIMEOUT + MARGIN
        assert runner.status()["hostile"]["state"] == "open"


def test_a_busy_model_fails_over_without_opening_its_circuit(
    serve: Serve, conf_dir: Path, tmp_path: Path, models_dir: Path, local_id: str
) -> None:
    """A lease that waits past the request's deadline fails over; busy is not broken."""
    server = serve(sse_answer())
    with hostile_runner(server.url, conf_dir, tmp_path, models_dir, local_id) as runner:
        with runner.pool.lease("hostile"):  # every slot taken, for longer than the deadline
            start = time.monotonic()
            result = runner.run("Anyone free?")
            elapsed = time.monotonic() - start
        assert result.model_id == local_id
        [fallback] = result.fallbacks
        assert fallback.model_id == "hostile" and "busy" in fallback.error
        assert TIMEOUT * 0.9 < elapsed < TIMEOUT + MARGIN
        assert runner.status()["hostile"]["state"] == "closed"
        assert runner.run("And now?").model_id == "hostile"  # the slot is free again


# -- credentials in an endpoint URL ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:p@h:8080/x", "http://***@h:8080/x"),
        ("https://token@h", "https://***@h"),
        ("http://h:8080", "http://h:8080"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_credentials_never_shown(
    conf_dir: Path,
    tmp_path: Path,
    models_dir: Path,
    local_id: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://magi:{PASSWORD}@127.0.0.1:{free_port()}"  # nothing listens: connection refused
    caplog.set_level(logging.DEBUG)
    with hostile_runner(url, conf_dir, tmp_path, models_dir, local_id) as runner:
        shown = [repr(runner.pool.backend("hostile")), runner.specs["hostile"].location]
        result = runner.run("Hello?")
        assert result.model_id == local_id
        [fallback] = result.fallbacks
        assert "cannot connect" in fallback.error and "http://***@127.0.0.1" in fallback.error
        shown += [fallback.error, result.explain(), json.dumps(result.to_dict()), str(runner.status())]
    only_remote = compose(
        conf_dir,
        tmp_path,
        models_dir,
        endpoints={"hostile": endpoint(url)},
        profile=one_tier(["hostile"], strategy=None),
    )
    with Runner(only_remote) as runner, pytest.raises(NoModelAnsweredError) as info:
        runner.run("Hello?")
    shown += [str(info.value), json.dumps(info.value.details)]

    # magi models list (text and JSON), and a URL refused by validation
    (conf_dir / "endpoints" / "secret.yaml").write_text(yaml.safe_dump({"hostile": endpoint(url)}))
    monkeypatch.setenv("MAGI_CONF_DIR", str(conf_dir))
    registry = tmp_path / "models-list.json"
    build_registry(models_dir, registry)
    for extra in ([], ["--json"]):
        assert main(["models", "list", "--endpoints", "secret", "--registry", str(registry), *extra]) == 0
    out = capsys.readouterr()
    shown += [out.out, out.err]
    assert "***@127.0.0.1" in out.out
    with pytest.raises(ValueError) as bad:
        EndpointConfig(url=f"http://magi:{PASSWORD}@127.0.0.1:port", tier="fast")
    shown.append(str(bad.value))

    shown.append(caplog.text)
    assert caplog.text  # the failures were logged (without the password)
    leaks = [text for text in shown if PASSWORD in text]
    assert leaks == []


def test_credentials_in_the_url_are_still_sent_as_basic_auth(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(sse_answer(tokens=2, text="k"))
    caplog.set_level(logging.DEBUG)
    url = server.url.replace("http://", f"http://magi:{PASSWORD}@")
    backend = backend_for(url)
    assert list(backend.stream("Hi", SETTINGS)) == ["k", "k"]
    backend.close()
    [request] = server.requests
    basic = base64.b64encode(f"magi:{PASSWORD}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {basic}"
    assert "HTTP Request: POST" in caplog.text and PASSWORD not in caplog.text  # httpx's own log too
