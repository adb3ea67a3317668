"""The remote backend against real ``python -m llama_cpp.server`` processes on 127.0.0.1.

Every server serves a tiny echo model (greedy decoding repeats the last prompt
character), so a remote answer can be compared with the same model run in-process.
Servers start in about half a second; the shared one lives for the module, and the
fault tests (kill, restart, SIGSTOP) get servers of their own. Every server is
stopped in fixture teardown, whatever the test did to it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

import magi
from magi.cli import main
from magi.config.model_settings import LoadSettings
from magi.runtime.backend import GenerationSettings, ModelSpec, PromptTooLongError, RemoteSettings, generate
from magi.runtime.llama import LlamaBackend
from magi.runtime.remote import RemoteAuthError, RemoteBackend, RemoteHTTPError, RemoteStreamError
from magi.runtime.runner import Runner
from magi.runtime.trace import RunResult
from magi.testing.fixtures import ECHO_LLAMA_FILE, build_registry, write_echo_llama
from magi.testing.servers import LlamaServerProcess, free_port

pytestmark = pytest.mark.slow

EASY = "What is the capital of France?"
HARD = (
    "Explain step by step why the sum of two odd numbers is always even, prove it formally, "
    "and compare the proof with an inductive argument."
)
SETTINGS = GenerationSettings(
    max_tokens=8, temperature=0.0, repeat_penalty=1.0, stop=(), prompt_template="{prompt}"
)

ServerFactory = Callable[..., LlamaServerProcess]


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("remote_models")
    write_echo_llama(folder)
    return folder


@pytest.fixture(scope="module")
def echo_path(models_dir: Path) -> Path:
    return models_dir / ECHO_LLAMA_FILE


@pytest.fixture(scope="module")
def local_id(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    registry = build_registry(models_dir, tmp_path_factory.mktemp("registry") / "registry.json")
    [model_id] = registry.ids
    return model_id


@pytest.fixture(scope="module")
def server(echo_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServerProcess]:
    """One server for the tests that leave it as they found it."""
    process = LlamaServerProcess(echo_path, alias="echo", log_dir=tmp_path_factory.mktemp("logs"))
    try:
        yield process.start()
    finally:
        process.stop()


@pytest.fixture
def make_server(echo_path: Path, tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers of this test's own (to kill, pause, restart); all stopped at teardown."""
    started: list[LlamaServerProcess] = []

    def start(**kwargs: object) -> LlamaServerProcess:
        process = LlamaServerProcess(echo_path, log_dir=tmp_path / "logs", **kwargs)  # type: ignore[arg-type]
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in started:
            process.stop(timeout=1.0)


def remote_spec(url: str, model_id: str = "remote_echo", **settings: object) -> ModelSpec:
    fields: dict[str, object] = {"model": "echo", "api": "completions", **settings}
    return ModelSpec(model_id, remote=RemoteSettings(url=url, **fields))  # type: ignore[arg-type]


def compose(
    conf_dir: Path,
    tmp_path: Path,
    models_dir: Path,
    *,
    endpoints: dict[str, dict[str, object]] | str,
    profile: dict[str, object] | str,
    overrides: tuple[str, ...] = (),
) -> magi.MagiConfig:
    """The real pipeline: YAML files in a copy of conf/ -> Hydra -> Pydantic.

    A dict is written as the option ``test`` of its group; a string names a shipped option.
    """
    if isinstance(endpoints, dict):
        (conf_dir / "endpoints" / "test.yaml").write_text(yaml.safe_dump(endpoints))
        endpoints = "test"
    if isinstance(profile, dict):
        (conf_dir / "profile" / "test.yaml").write_text(yaml.safe_dump(profile))
        profile = "test"
    return magi.compose(
        profile=profile,
        endpoints=endpoints,
        conf_dir=conf_dir,
        overrides=[
            f"models.dirs=[{models_dir}]",
            f"models.registry={tmp_path / 'registry.json'}",
            "models.demo=false",
            "runtime.n_ctx=256",
            "runtime.n_threads=1",
            "runtime.max_tokens=12",
            "runtime.repeat_penalty=1.0",
            "runtime.stop=[]",
            "runtime.failure_threshold=1",
            *overrides,
        ],
    )


def one_tier(models: list[str], *, strategy: str | None, expected_time: float = 10.0) -> dict[str, object]:
    return {
        "name": "Test",
        "enabled_models": models,
        "tier_config": [{"name": "fast", "max_score": float("inf"), "expected_time_seconds": expected_time}],
        "load_balancing": {
            "enabled": strategy is not None,
            "strategy": strategy or "round_robin",
            "health_check_interval": 60,
        },
    }


def endpoint(url: str, **extra: object) -> dict[str, object]:
    return {"url": url, "model": "echo", "tier": "fast", "api": "completions", **extra}


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


# -- the backend on its own ------------------------------------------------------------------
def test_completion_and_stream_match_the_local_model(server: LlamaServerProcess, echo_path: Path) -> None:
    remote = RemoteBackend(remote_spec(server.url))
    local = LlamaBackend(ModelSpec("local", path=echo_path, load=LoadSettings(n_ctx=256, n_threads=1)))
    try:
        pieces = list(remote.stream("Hello", SETTINGS))
        assert pieces == ["o"] * 8  # one piece per token, as they are generated
        answer = generate(remote, "Hello world", SETTINGS)
        expected = generate(local, "Hello world", SETTINGS)
        assert answer.text == expected.text == "d" * 8
        assert answer.completion_tokens == 8
        # the server's tokenizer, not an estimate: the same count as in-process
        assert answer.prompt_tokens == local.count_tokens("Hello world") == 13  # BOS, "▁", 11 characters
        assert remote.exact_token_counts is True
    finally:
        remote.close()
        local.close()


def test_sampling_settings_and_a_grammar_reach_the_server(
    server: LlamaServerProcess, echo_path: Path
) -> None:
    """The sampling fields go by their own names (llama.cpp's beyond OpenAI's unless
    llama_params is false); the grammar, sent as GBNF, constrains the server's answer
    exactly as it does in-process."""
    settings = GenerationSettings(
        max_tokens=8,
        stop=(),
        prompt_template="{prompt}",
        top_k=5,
        min_p=0.1,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        logit_bias={15: -1.0},
        grammar='root ::= ("yes" | "no") "."',
    )
    remote = RemoteBackend(remote_spec(server.url))
    plain = RemoteBackend(remote_spec(server.url, llama_params=False))
    local = LlamaBackend(ModelSpec("local", path=echo_path, load=LoadSettings(n_ctx=256, n_threads=1)))
    try:
        body = remote._body("Hello", settings, chat=False)
        assert (body["top_k"], body["min_p"], body["presence_penalty"], body["frequency_penalty"]) == (
            5,
            0.1,
            0.5,
            0.25,
        )
        assert body["logit_bias"] == {"15": -1.0} and body["grammar"] == settings.grammar
        assert not {"top_k", "min_p", "repeat_penalty", "grammar"} & set(
            plain._body("x", settings, chat=False)
        )
        answer = generate(remote, "Hello", settings).text
        assert answer in ("yes.", "no.") and answer == generate(local, "Hello", settings).text
    finally:
        remote.close()
        plain.close()
        local.close()


def test_chat_api_streams_deltas(server: LlamaServerProcess) -> None:
    backend = RemoteBackend(remote_spec(server.url, api="chat"))
    try:
        answer = generate(backend, "Hello", SETTINGS)
        assert answer.completion_tokens == 8 and len(answer.text) == 8  # the role-only chunk is no token
    finally:
        backend.close()


def test_probe_uses_the_servers_health_endpoint(server: LlamaServerProcess) -> None:
    backend = RemoteBackend(remote_spec(server.url))
    backend.probe()  # /health is 404 on llama_cpp.server, /v1/models answers
    assert backend._health_path == "/v1/models"
    backend.probe()
    backend.close()


def test_wrong_url_gives_a_clear_error(server: LlamaServerProcess) -> None:
    backend = RemoteBackend(remote_spec(server.url + "/wrong", model_id="lan_x"))
    with pytest.raises(RemoteHTTPError) as info:
        list(backend.stream("Hello", SETTINGS))
    message = str(info.value)
    assert f"{server.url}/wrong/v1/completions does not exist (HTTP 404" in message
    assert "endpoints.lan_x.url must be the base URL" in message
    with pytest.raises(RemoteHTTPError, match="none of the health endpoints exists"):
        backend.probe()
    backend.close()


def test_too_long_prompt_is_recognised(server: LlamaServerProcess) -> None:
    long_prompt = "a b " * 200  # 800+ tokens, n_ctx is 256
    for settings in ({}, {"n_ctx": 256}):  # the server's refusal, or counted first
        backend = RemoteBackend(remote_spec(server.url, **settings))
        with pytest.raises(PromptTooLongError, match="256"):
            list(backend.stream(long_prompt, SETTINGS))
        backend.close()


def test_api_key_from_the_environment(make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    keyed = make_server(api_key="s3cret", alias="echo")
    backend = RemoteBackend(remote_spec(keyed.url, api_key_env="MAGI_TEST_KEY"))
    monkeypatch.setenv("MAGI_TEST_KEY", "wrong")
    with pytest.raises(RemoteAuthError, match="HTTP 401.*MAGI_TEST_KEY"):
        list(backend.stream("Hello", SETTINGS))
    backend.close()  # the key is read when the connection pool opens
    monkeypatch.setenv("MAGI_TEST_KEY", "s3cret")
    assert "".join(backend.stream("Hello", SETTINGS)) == "o" * 8
    backend.close()
    unkeyed = RemoteBackend(remote_spec(keyed.url))
    with pytest.raises(RemoteAuthError, match="set endpoints.remote_echo.api_key_env"):
        unkeyed.probe()
    unkeyed.close()


def test_one_backend_is_shared_by_threads(server: LlamaServerProcess) -> None:
    """One httpx client, several threads: answers, counts and probes do not mix up."""
    backend = RemoteBackend(remote_spec(server.url, max_concurrency=4))
    prompts = ["Hello", "Hello world", "Why?", "abc"]
    answers: dict[str, str] = {}
    counts: dict[str, int] = {}
    errors: list[BaseException] = []

    def ask(prompt: str) -> None:
        try:
            backend.probe()
            answers[prompt] = "".join(backend.stream(prompt, SETTINGS))
            counts[prompt] = backend.count_tokens(prompt)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert answers == {p: p[-1] * 8 for p in prompts}  # the echo model repeats the last character
    # Counts came from the server's tokenizer (not the 4-characters estimate), and
    # each thread got its own prompt's count: one at a time gives the same figures.
    assert backend.exact_token_counts is True
    assert counts == {p: backend.count_tokens(p) for p in prompts}
    assert counts["Hello world"] > counts["Hello"]
    backend.close()


def test_answer_cut_short_by_another_request_is_an_error(make_server: ServerFactory) -> None:
    """llama_cpp.server's default --interrupt_requests True ends a running answer with
    [DONE] when another request arrives: without a finish reason, that is a failure
    (the runner fails over), never a silently truncated answer."""
    interrupting = make_server(n_ctx=1024, alias="echo", interrupt_requests=True)
    backend = RemoteBackend(remote_spec(interrupting.url, max_concurrency=2))
    long = GenerationSettings(max_tokens=400, temperature=0.0, repeat_penalty=1.0, prompt_template="{prompt}")
    other: list[str] = []
    intruder = threading.Thread(target=lambda: other.append("".join(backend.stream("Hi", SETTINGS))))
    pieces: list[str] = []
    with pytest.raises(RemoteStreamError, match="interrupt_requests False") as info:
        for piece in backend.stream("Hello", long):
            pieces.append(piece)
            if len(pieces) == 1:
                intruder.start()
    intruder.join(timeout=30)
    backend.close()
    assert 0 < len(pieces) < 400 and "without a finish reason" in str(info.value)
    assert other == ["i" * 8]


# -- through the Runner ------------------------------------------------------------------------
def test_mixed_tier_balances_local_and_remote(
    server: LlamaServerProcess, conf_dir: Path, tmp_path: Path, models_dir: Path, local_id: str
) -> None:
    cfg = compose(
        conf_dir,
        tmp_path,
        models_dir,
        endpoints={"remote_echo": endpoint(server.url)},
        profile=one_tier([local_id, "remote_echo"], strategy="round_robin"),
    )
    with Runner(cfg) as runner:
        assert runner.specs["remote_echo"].is_remote and not runner.specs[local_id].is_remote
        results = [runner.run(f"Say {c}") for c in "abcdef"]
        assert [r.model_id for r in results] == [local_id, "remote_echo"] * 3
        assert [r.text for r in results] == [":" * 12] * 6  # same model, same answer, either way
        for r in results:
            [stage] = r.stages
            assert stage.completion_tokens == 12 and stage.prompt_tokens > 0 and not r.fallbacks
            assert stage.endpoint == (server.url if r.model_id == "remote_echo" else None)
        assert f"remote_echo @ {server.url}" in results[1].explain()
        assert {m: s["state"] for m, s in runner.status().items()} == {
            local_id: "closed",
            "remote_echo": "closed",
        }


def test_killed_server_fails_over_without_losing_a_request_and_recovers(
    make_server: ServerFactory, conf_dir: Path, tmp_path: Path, models_dir: Path, local_id: str
) -> None:
    victim = make_server(n_ctx=1024, alias="echo")
    cfg = compose(
        conf_dir,
        tmp_path,
        models_dir,
        endpoints={"remote_echo": endpoint(victim.url)},
        profile=one_tier(["remote_echo", local_id], strategy="round_robin"),
        overrides=("runtime.max_tokens=400", "runtime.cooldown_seconds=1.0"),
    )
    results: list[RunResult] = []
    restarts = 0
    with Runner(cfg) as runner:
        for i in range(6):
            for event in runner.stream(f"Question {i}?"):
                if event.kind == "token" and event.model_id == "remote_echo" and victim.running:
                    victim.kill()  # mid-answer: the first token is out, 399 are not
                elif event.kind == "restart":
                    restarts += 1
                elif event.kind == "done":
                    assert event.result is not None
                    results.append(event.result)
            if i == 0:
                assert runner.status()["remote_echo"]["state"] == "open"
        assert len(results) == 6 and all(r.text for r in results)  # no request lost
        assert all(r.model_id == local_id for r in results)
        first = results[0].fallbacks[0]
        assert restarts == 1 and first.model_id == "remote_echo"
        assert "RemoteStreamError" in first.error and victim.url in first.error

        victim.start()  # same port
        wait_for(lambda: runner.status()["remote_echo"]["state"] != "open", 5, "the cooldown to end")
        served = [runner.run(f"Again {i}?").model_id for i in range(4)]
        assert "remote_echo" in served
        assert runner.status()["remote_echo"]["state"] == "closed"


def test_stopped_server_hits_the_tier_timeout_and_fails_over(
    make_server: ServerFactory, conf_dir: Path, tmp_path: Path, models_dir: Path, local_id: str
) -> None:
    stuck = make_server(alias="echo")
    cfg = compose(
        conf_dir,
        tmp_path,
        models_dir,
        endpoints={"remote_echo": endpoint(stuck.url, read_timeout=30.0)},
        profile=one_tier(["remote_echo", local_id], strategy=None, expected_time=0.5),
        overrides=("runtime.timeout_factor=2.0",),  # tier timeout: 1 s, far below read_timeout
    )
    with Runner(cfg) as runner:
        assert runner.run("Warm up").model_id == "remote_echo"
        stuck.pause()  # SIGSTOP: connections are accepted by the kernel, nothing answers
        try:
            start = time.monotonic()
            result = runner.run("Are you there?")
            elapsed = time.monotonic() - start
        finally:
            stuck.resume()
        assert result.model_id == local_id and result.text
        [fallback] = result.fallbacks
        assert fallback.model_id == "remote_echo" and "RemoteTimeout" in fallback.error
        # no first token within the budget (the first-token deadline never outlasts it)
        assert "no first token within 1.0s" in fallback.error
        # at least the 1 s timeout; the upper bound only says it did not hang (busy cores)
        assert 0.9 < elapsed < 20


def test_profile_with_two_servers_in_its_fast_tier(
    make_server: ServerFactory, conf_dir: Path, tmp_path: Path, models_dir: Path, local_id: str
) -> None:
    """The shipped scale-out profile and example endpoint set, pointed at two local servers."""
    a, b = make_server(alias="echo"), make_server(alias="echo")
    cfg = compose(
        conf_dir,
        tmp_path,
        models_dir,
        endpoints="example",
        profile="scale-out",
        overrides=(
            f"endpoints.lan_fast_a.url={a.url}",
            f"endpoints.lan_fast_b.url={b.url}",
            "endpoints.lan_fast_a.api=completions",
            "endpoints.lan_fast_b.api=completions",
            f"profile.enabled_models=[lan_fast_a,lan_fast_b,{local_id}]",
            "~profile.model_tiers.gemma3_270m_q4km_fast",
            f"+profile.model_tiers.{local_id}=powerful",
            "profile.load_balancing.health_check_interval=0.5",
            # A long cooldown: the dead server gets no half-open trial request while the
            # test runs, however slow the machine; the prober's success closes it again.
            "runtime.cooldown_seconds=600",
        ),
    )
    assert cfg.profile.load_balancing.strategy == "least_loaded"
    with Runner(cfg) as runner:
        assert runner.tier_members == {"fast": ["lan_fast_a", "lan_fast_b"], "powerful": [local_id]}
        easy = [runner.run(f"{EASY} ({i})") for i in range(6)]
        assert {r.tier for r in easy} == {"fast"}
        assert sorted(r.model_id for r in easy) == ["lan_fast_a"] * 3 + ["lan_fast_b"] * 3
        hard = runner.run(HARD)
        assert hard.tier == "powerful" and hard.model_id == local_id

        b.kill()  # the prober notices without any traffic
        wait_for(lambda: runner.status()["lan_fast_b"]["state"] == "open", 5, "the prober to open b")
        after = [runner.run(f"{EASY} [{i}]") for i in range(4)]
        assert [r.model_id for r in after] == ["lan_fast_a"] * 4
        assert not any(r.fallbacks for r in after)  # nothing was sent to the dead server

        b.start()  # and notices it is back
        wait_for(lambda: runner.status()["lan_fast_b"]["state"] == "closed", 5, "the prober to close b")
        back = {runner.run(f"{EASY} <{i}>").model_id for i in range(4)}
        assert back == {"lan_fast_a", "lan_fast_b"}


# -- CLI --------------------------------------------------------------------------------------------
def test_models_list_probes_each_endpoint(
    server: LlamaServerProcess,
    conf_dir: Path,
    tmp_path: Path,
    models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    (conf_dir / "endpoints" / "pair.yaml").write_text(
        yaml.safe_dump({"up": endpoint(server.url), "down": endpoint(dead)})
    )
    monkeypatch.setenv("MAGI_CONF_DIR", str(conf_dir))
    registry = tmp_path / "registry.json"
    build_registry(models_dir, registry)
    assert main(["models", "list", "--endpoints", "pair", "--registry", str(registry)]) == 0
    out = capsys.readouterr().out
    assert "echo_llama" in out and "Remote endpoints (2):" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("up ", "down "))}
    assert rows["up"].rstrip().endswith("ok")
    assert "error: cannot connect" in rows["down"]
    assert main(["models", "list", "--endpoints", "pair", "--registry", str(registry), "--json"]) == 0
    entries = {e["id"]: e for e in json.loads(capsys.readouterr().out)}
    assert entries["up"]["healthy"] is True and entries["down"]["healthy"] is False
    assert entries["up"]["url"] == server.url and entries["up"]["tier"] == "fast"
