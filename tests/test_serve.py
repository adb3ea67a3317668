"""``magi serve``: a real server process on 127.0.0.1 over the tiny GGUF models, spoken to
with the official ``openai`` client (and httpx where the raw bytes matter).

The module's server runs the development profile (fast tier, powerful tier, two-stage)
with random-weight models, which never emit end-of-sequence: an answer has exactly its
``max_tokens`` tokens, so token counts are exact. Its context is large (n_ctx=2048) and
the repetition stop off, so a long answer runs for seconds and a disconnect can be seen
ending it early.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from magi.testing.runtime import CODER, FAST, REASONER, TinyRuntime
from magi.testing.serve import MagiServerProcess
from magi.testing.servers import LOOPBACK

EASY = "What is the capital of France?"
HARD = "Prove that the square root of 2 is irrational; explain every step."
LONG_SERVER = ["runtime.n_ctx=2048", "runtime.repetition_stop=false"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyRuntime:
    return TinyRuntime.create(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(tiny: TinyRuntime) -> Iterator[MagiServerProcess]:
    process = MagiServerProcess(tiny, tiny.root / "server.log", *LONG_SERVER, "task.max_body_bytes=20000")
    yield process
    assert process.terminate() == 0, process.output()[-3000:]


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


# -- answers ----------------------------------------------------------------------------------
def test_chat_completion_carries_usage_and_the_routing_trace(server: MagiServerProcess) -> None:
    raw = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": EASY}], max_tokens=5
    )
    completion = raw.parse()
    magi = completion.model_extra["magi"]
    assert completion.object == "chat.completion" and completion.model == "magi/development"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content and completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5  # random weights: exactly max_tokens
    [stage] = magi["stages"]
    assert completion.usage.prompt_tokens == stage["prompt_tokens"] > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 5
    assert (magi["tier"], magi["model_id"], magi["two_stage"]) == ("fast", FAST, False)
    assert stage["stage"] == "answer"
    assert raw.headers["x-magi-tier"] == "fast" and raw.headers["x-magi-models"] == FAST
    assert raw.headers["x-magi-stages"] == f"answer:fast:{FAST}"
    assert float(raw.headers["x-magi-score"]) == pytest.approx(magi["score"], abs=0.01)
    assert raw.headers["x-magi-fallbacks"] == "0" and raw.headers["x-magi-profile"] == "Development"


def test_streamed_chat_is_the_same_answer_and_ends_with_done(server: MagiServerProcess) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": EASY}]
    whole = server.client().chat.completions.create(model="auto", messages=messages, max_tokens=6)
    chunks = list(
        server.client().chat.completions.create(
            model="auto", messages=messages, max_tokens=6, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # greedy: the same answer either way
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finish] == ["length"]
    assert finish[0].model_extra["magi"]["stages"][0]["completion_tokens"] == 6
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    with httpx.stream(
        "POST",
        server.url + "/v1/chat/completions",
        json={"model": "auto", "messages": messages, "max_tokens": 2, "stream": True},
        timeout=30,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-magi-tier"] == "fast" and response.headers["x-magi-model"] == FAST
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_two_stage_streams_the_draft_as_reasoning_the_refine_as_content(server: MagiServerProcess) -> None:
    messages = [{"role": "user", "content": HARD}]
    whole = server.client().chat.completions.create(model="auto", messages=messages)
    magi = whole.model_extra["magi"]
    assert magi["two_stage"] and [s["stage"] for s in magi["stages"]] == ["draft", "refine"]
    assert magi["draft"] and whole.usage.completion_tokens == 4 + 8  # stage1_max_tokens + max_tokens
    raw = server.client().chat.completions.with_raw_response.create(
        model="auto", messages=messages, stream=True
    )
    assert raw.headers["x-magi-two-stage"] == "true" and raw.headers["x-magi-routed-tier"] == "powerful"
    chunks = list(raw.parse())
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    draft = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    assert draft == magi["draft"] and content == whole.choices[0].message.content
    marks = [(c.model_extra or {}).get("magi", {}) for c in chunks]
    stages = [m for m in marks if m.get("event") == "stage"]
    assert [(s["stage"], s["model"]) for s in stages] == [("draft", FAST), ("refine", REASONER)]


def test_completions_streamed_and_not(server: MagiServerProcess) -> None:
    client = server.client()
    whole = client.completions.create(model="auto", prompt=EASY, max_tokens=4)
    assert whole.object == "text_completion" and whole.choices[0].text and whole.usage.completion_tokens == 4
    assert whole.model_extra["magi"]["model_id"] == FAST
    streamed = list(client.completions.create(model="auto", prompt=EASY, max_tokens=4, stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == whole.choices[0].text
    assert streamed[-1].choices[0].finish_reason == "length"


def test_sampling_fields_reach_the_model(server: MagiServerProcess) -> None:
    client = server.client()
    asked = dict(model="auto", messages=[{"role": "user", "content": EASY}])
    assert client.chat.completions.create(**asked, max_tokens=2).usage.completion_tokens == 2
    assert client.chat.completions.create(**asked, max_completion_tokens=3).usage.completion_tokens == 3
    greedy = client.chat.completions.create(**asked, max_tokens=12).choices[0].message.content
    hot = {
        client.chat.completions.create(**asked, max_tokens=12, temperature=2.0, top_p=1.0, seed=seed)
        .choices[0]
        .message.content
        for seed in (1, 2, 3)
    }
    assert hot != {greedy} and len(hot) > 1  # the seed and temperature are the request's
    same = client.chat.completions.create(**asked, max_tokens=12, temperature=2.0, top_p=1.0, seed=1)
    assert same.choices[0].message.content in hot


def test_model_picks_a_profile_or_one_model(server: MagiServerProcess) -> None:
    client = server.client()
    ids = [m.id for m in client.models.list().data]
    assert ids[:2] == ["auto", "magi/development"] and "magi/fast-only" in ids
    assert FAST in ids and REASONER in ids
    assert client.models.retrieve(REASONER).model_extra["magi"] == {"kind": "model", "tiers": ["powerful"]}
    # one model alone: an easy prompt that auto routes to fast goes to the reasoner, one stage
    alone = client.chat.completions.create(model=REASONER, messages=[{"role": "user", "content": EASY}])
    magi = alone.model_extra["magi"]
    assert alone.model == REASONER and magi["profile"] == REASONER
    assert [(s["stage"], s["model_id"]) for s in magi["stages"]] == [("answer", REASONER)]
    hard = client.chat.completions.create(model=FAST, messages=[{"role": "user", "content": HARD}])
    assert [s["model_id"] for s in hard.model_extra["magi"]["stages"]] == [FAST]  # no two-stage
    # a registered model outside the served profile, alone too
    assert client.models.retrieve(CODER).model_extra["magi"] == {"kind": "model", "served_profile": False}
    coder = client.chat.completions.create(model=CODER, messages=_user(EASY), max_tokens=3)
    assert [s["model_id"] for s in coder.model_extra["magi"]["stages"]] == [CODER]
    assert coder.usage.completion_tokens == 3
    health = server.health()["models"]  # every runner's view of a model, summed
    assert health[REASONER]["circuits"] == {"Development": "closed", REASONER: "closed"}
    assert health[CODER]["requests"] == 1 and "circuits" not in health[CODER]
    other = client.chat.completions.create(model="magi/fast-only", messages=_user(HARD))
    assert other.model == "magi/fast-only" and other.model_extra["magi"]["profile"] == "Fast Only"


# -- errors -------------------------------------------------------------------------------------
def test_unknown_model_is_a_404_naming_the_options(server: MagiServerProcess) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        server.client().chat.completions.create(model="magi/fast-onyl", messages=_user("x"))
    error = caught.value.body
    assert (error["type"], error["param"], error["code"]) == ("not_found_error", "model", "model_not_found")
    assert "Did you mean 'magi/fast-only'?" in error["message"] and FAST in error["message"]
    with pytest.raises(openai.NotFoundError):
        server.client().models.retrieve("nope")


@pytest.mark.parametrize(
    ("messages", "param", "words"),
    [
        ([], "messages", "empty"),
        ([{"role": "bogus", "content": "x"}], "messages[0]", "role 'bogus'"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "messages[1]", "user"),
        ([{"role": "user", "content": 3}], "messages[0]", "content"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "messages[0].content", "text"),
    ],
)
def test_bad_messages_are_a_422_naming_the_message(
    server: MagiServerProcess, messages: list, param: str | None, words: str
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        server.client().chat.completions.create(model="auto", messages=messages)
    error = caught.value.body
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert words in error["message"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": -1}, "temperature"),
        ({"n": 2}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": [""]}, "stop"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ],
)
def test_bad_fields_are_a_422_naming_the_field(server: MagiServerProcess, fields: dict, param: str) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "x"}], **fields}
    response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"].startswith(param)


def test_malformed_json_is_a_400_saying_where(server: MagiServerProcess) -> None:
    for route in ("/v1/chat/completions", "/v1/completions"):
        response = httpx.post(
            server.url + route,
            content=b'{"model": "auto", "messages": [',
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", None)
        assert "not valid JSON" in error["message"] and "line 1 column 32" in error["message"]
    not_an_object = httpx.post(server.url + "/v1/chat/completions", json=["x"], timeout=30)
    assert not_an_object.status_code == 400
    assert "a JSON object" in not_an_object.json()["error"]["message"]


def test_unknown_routes_and_methods_get_the_openai_error_body(server: MagiServerProcess) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        server.client().embeddings.create(model="auto", input="x")
    error = caught.value.body
    assert (error["type"], error["code"]) == ("not_found_error", "unknown_route")
    assert "POST /v1/embeddings" in error["message"] and "/v1/chat/completions" in error["message"]
    response = httpx.get(server.url + "/v1/chat/completions", timeout=30)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    error = response.json()["error"]
    assert error["code"] == "method_not_allowed" and "GET /v1/chat/completions" in error["message"]


def test_a_body_over_the_limit_is_a_413(server: MagiServerProcess) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "x" * 30_000}]}
    response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield json.dumps(body).encode()

    response = httpx.post(server.url + "/v1/chat/completions", content=chunked(), timeout=30)
    assert response.status_code == 413


# -- the model is freed -----------------------------------------------------------------------
@pytest.mark.slow
def test_a_client_that_disconnects_mid_stream_cancels_its_answer(server: MagiServerProcess) -> None:
    def counted() -> tuple[float, float]:
        text = server.metrics()
        cancelled = _metric(text, "magi_requests_total", outcome="cancelled")
        return cancelled, _metric(text, "magi_tokens_total", model=FAST, kind="completion")

    full = server.client().chat.completions.create(model="auto", messages=_user(EASY), max_tokens=1500)
    full_s = full.model_extra["magi"]["total_s"]
    assert full.usage.completion_tokens == 1500 and full_s > 0.5
    cancelled, tokens = counted()
    stream = server.client().chat.completions.create(
        model="auto", messages=_user(EASY), max_tokens=1500, stream=True
    )
    for n, _chunk in enumerate(stream):
        if n == 5:
            break
    assert server.health()["models"][FAST]["in_flight"] == 1  # still answering
    stream.close()  # the client goes away
    gone = time.monotonic()
    while server.health()["models"][FAST]["in_flight"] and time.monotonic() - gone < full_s:
        time.sleep(0.02)
    freed_s = time.monotonic() - gone
    assert server.health()["models"][FAST]["in_flight"] == 0
    assert freed_s < full_s / 2, (freed_s, full_s)  # the answer ended, not ran out
    deadline = time.monotonic() + 10
    while counted()[0] == cancelled:
        assert time.monotonic() < deadline, "the cancelled answer was never counted"
        time.sleep(0.05)
    assert counted()[1] - tokens < 1500  # it stopped short of its 1500 tokens


# -- health and metrics -------------------------------------------------------------------------
def test_health_and_metrics(server: MagiServerProcess) -> None:
    server.client().chat.completions.create(model="auto", messages=[{"role": "user", "content": EASY}])
    assert httpx.get(server.url + "/health").json() == {"status": "ok", "profile": "development"}
    fast = server.health()["models"][FAST]
    assert fast["loaded"] is True and fast["circuit"] == "closed" and fast["last_error"] is None
    assert fast["requests"] >= 1 and fast["answered"] >= 1 and fast["p50_latency_s"] > 0
    text = server.metrics()
    ok = {"profile": "Development", "tier": "fast", "model": FAST, "outcome": "ok"}
    assert _metric(text, "magi_requests_total", **ok) >= 1
    assert _metric(text, "magi_request_seconds_count", tier="fast") >= 1
    assert _metric(text, "magi_time_to_first_token_seconds_count", tier="fast") >= 1
    assert _metric(text, "magi_completion_tokens_count", tier="fast") >= 1
    assert _metric(text, "magi_circuit_state", model=FAST, state="closed") == 1
    assert _metric(text, "magi_model_loaded", model=FAST) == 1
    assert _metric(text, "magi_model_loads_total", model=FAST) >= 1


def test_refused_requests_are_counted_by_outcome(server: MagiServerProcess) -> None:
    def counts() -> dict[str, float]:
        text = server.metrics()
        outcomes = ("not_found", "invalid", "too_large")
        return {o: _metric(text, "magi_requests_total", outcome=o) for o in outcomes} | {
            "invalid, Development": _metric(
                text, "magi_requests_total", outcome="invalid", profile="Development"
            )
        }

    before = counts()
    client = server.client()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=_user(EASY))
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt=EASY)
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="auto", messages=_user(EASY), temperature=5)
    malformed = httpx.post(
        server.url + "/v1/chat/completions", content=b"{", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    too_big = {"model": "auto", "messages": [{"role": "user", "content": "x" * 30_000}]}
    assert httpx.post(server.url + "/v1/chat/completions", json=too_big, timeout=30).status_code == 413
    assert httpx.get(server.url + "/v1/nothing-here").status_code == 404  # not a request for an answer
    after = counts()
    grown = {name: after[name] - before[name] for name in after}
    assert grown == {"not_found": 2, "invalid": 2, "too_large": 1, "invalid, Development": 1}


def test_models_lists_only_the_servable_profiles(server: MagiServerProcess) -> None:
    """The tiny runtime has the seed's three models, not the demo ones, and no endpoints:
    the demo profiles and scale-out cannot be served, so they are not listed, and asking
    for one is a 404 that says why."""
    ids = [m.id for m in server.client().models.list().data]
    assert {"magi/development", "magi/fast-only", "magi/production"} <= set(ids)
    assert not {"magi/demo", "magi/demo-single", "magi/scale-out"} & set(ids)
    with pytest.raises(openai.NotFoundError) as caught:
        server.client().chat.completions.create(model="magi/scale-out", messages=_user(EASY))
    message = caught.value.body["message"]
    assert "magi/scale-out cannot be served" in message and "lan_fast_a" in message
    assert "magi/fast-only" in message  # what can be


# -- servers of their own ------------------------------------------------------------------------
def test_api_keys_are_required_when_set_and_never_shown(tiny: TinyRuntime, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# team keys\nfile-key-123\n", encoding="utf-8")
    env = {"MAGI_API_KEYS": "env-key-abc, env-key-def"}
    keyed = MagiServerProcess(tiny, tmp_path / "keyed.log", f"task.api_keys_file='{keys_file}'", env=env)
    try:
        ask = dict(model="auto", messages=[{"role": "user", "content": EASY}], max_tokens=2)
        for key in ("env-key-def", "file-key-123"):
            assert keyed.client(key).chat.completions.create(**ask).usage.completion_tokens == 2
        for key in ("wrong", "env-key-ab", "file-key-1234"):
            with pytest.raises(openai.AuthenticationError) as caught:
                keyed.client(key).chat.completions.create(**ask)
            assert caught.value.body["type"] == "authentication_error"
        assert httpx.get(keyed.url + "/v1/models").status_code == 401
        assert httpx.get(keyed.url + "/metrics").status_code == 401
        assert httpx.get(keyed.url + "/health/models").status_code == 401
        assert httpx.get(keyed.url + "/health").status_code == 200  # liveness needs no key
        shown = keyed.metrics("env-key-abc") + json.dumps(keyed.health("env-key-abc"))
        # 3 wrong keys on an answer route counted; the GET routes' 401s are not answers asked for
        assert _metric(shown, "magi_requests_total", outcome="unauthorized") == 3
    finally:
        assert keyed.terminate() == 0
    log = keyed.output()
    assert "API keys: on" in log
    for key in ("env-key-abc", "env-key-def", "file-key-123"):
        assert key not in shown and key not in log


def test_no_keys_means_open(server: MagiServerProcess) -> None:
    assert "API keys: off" in server.output()
    assert httpx.get(server.url + "/v1/models").status_code == 200


@pytest.mark.slow
def test_a_full_queue_is_a_429(tiny: TinyRuntime, tmp_path: Path) -> None:
    small = MagiServerProcess(tiny, tmp_path / "queue.log", *LONG_SERVER, "task.max_queue=1")
    try:
        long = small.client().chat.completions.create(
            model="auto", messages=_user(EASY), max_tokens=1500, stream=True
        )
        next(iter(long))  # admitted and answering
        with pytest.raises(openai.RateLimitError) as caught:
            small.client().chat.completions.create(model="auto", messages=_user(EASY))
        assert caught.value.response.headers["retry-after"] == "1"
        assert "task.max_queue=1" in caught.value.message
        assert _metric(small.metrics(), "magi_requests_total", outcome="queue_full") == 1
        long.close()
        deadline = time.monotonic() + 10
        while True:  # the place is given back when the cancelled answer ends
            try:
                small.client().chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": EASY}], max_tokens=2
                )
                break
            except openai.RateLimitError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        assert small.terminate() == 0


def test_nothing_could_answer_is_a_503(tiny: TinyRuntime, tmp_path: Path) -> None:
    broken_tiny = TinyRuntime.create(tmp_path, models=[FAST])
    process = MagiServerProcess(broken_tiny, tmp_path / "broken.log", profile="fast-only")
    try:
        broken_tiny.path(FAST).write_bytes(b"GGUF" + b"\0" * 64)  # damaged before its first load
        with pytest.raises(openai.InternalServerError) as caught:
            process.client().chat.completions.create(model="auto", messages=_user(EASY))
        assert caught.value.status_code == 503 and caught.value.body["type"] == "server_error"
        assert FAST in caught.value.body["message"]
        with httpx.stream(
            "POST",
            process.url + "/v1/chat/completions",
            timeout=30,
            json={"model": "auto", "messages": [{"role": "user", "content": EASY}], "stream": True},
        ) as response:
            assert response.status_code == 503  # no model started: a plain error, not a 200 stream
        assert process.health()["models"][FAST]["last_error"]
    finally:
        assert process.terminate() == 0


@pytest.mark.slow
def test_run_py_task_serve_and_sigterm_mid_answer(tiny: TinyRuntime, tmp_path: Path) -> None:
    options = [*LONG_SERVER, "task.shutdown_grace_s=1"]
    process = MagiServerProcess(tiny, tmp_path / "run_py.log", *options, profile="fast-only", via="run.py")
    answered: list[str] = []

    def long_answer() -> None:
        try:
            for chunk in process.client().chat.completions.create(
                model="auto", messages=[{"role": "user", "content": EASY}], max_tokens=100_000, stream=True
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    answered.append(chunk.choices[0].delta.content)
        except (openai.APIError, httpx.HTTPError):
            pass

    ask = process.client().chat.completions.create(model="auto", messages=[{"role": "user", "content": EASY}])
    assert ask.model == "magi/fast-only" and ask.model_extra["magi"]["profile"] == "Fast Only"
    reader = threading.Thread(target=long_answer)
    reader.start()
    deadline = time.monotonic() + 30
    while not answered:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    assert process.terminate(timeout=30) == 0  # SIGTERM: graceful, exit 0
    stopped_s = time.monotonic() - started
    reader.join(10)
    assert not reader.is_alive() and answered
    assert stopped_s < 10, stopped_s  # the 1 s grace, then the answer is cancelled
    log = process.output()
    assert "Application shutdown complete" in log and "Traceback" not in log


@pytest.mark.slow
def test_16_clients_10_requests_each_with_one_model_failing(tmp_path: Path) -> None:
    """Production balances two models; one is broken: every request is answered (by the
    other, after failover and then an open circuit) or gets a clear error; none is lost."""
    tiny = TinyRuntime.create(tmp_path)
    process = MagiServerProcess(tiny, tmp_path / "load.log", profile="production")
    outcomes: list[tuple[int, str]] = []
    lock = threading.Lock()

    def client_run(n: int) -> None:
        client = process.client()
        for i in range(10):
            prompt = EASY if (n + i) % 2 else HARD
            stream = (n + i) % 3 == 0
            try:
                if stream:
                    chunks = list(
                        client.chat.completions.create(model="auto", messages=_user(prompt), stream=True)
                    )
                    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
                    model = final.model_extra["magi"]["model_id"]
                else:
                    answer = client.chat.completions.create(model="auto", messages=_user(prompt))
                    model = answer.model_extra["magi"]["model_id"]
                outcome = (200, model)
            except openai.APIStatusError as exc:
                outcome = (exc.status_code, str(exc.body.get("message", "")) if exc.body else "")
            with lock:
                outcomes.append(outcome)

    try:
        tiny.path(CODER).write_bytes(b"GGUF" + b"\0" * 64)  # broken before its first load
        threads = [threading.Thread(target=client_run, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert not any(t.is_alive() for t in threads)
        health = process.health()["models"]
        text = process.metrics()
    finally:
        assert process.terminate() == 0
    assert len(outcomes) == 160
    assert {status for status, _ in outcomes} == {200}, [o for o in outcomes if o[0] != 200][:3]
    assert {model for _, model in outcomes} == {REASONER}
    assert health[CODER]["circuit"] == "open" and health[CODER]["last_error"]
    assert health[REASONER]["answered"] == 160
    assert _metric(text, "magi_circuit_state", model=CODER, state="open") == 1
    assert _metric(text, "magi_fallbacks_total", model=CODER) >= 1
    assert _metric(text, "magi_requests_total", model=REASONER, outcome="ok") == 160


# -- the pieces, in process --------------------------------------------------------------------
def test_runner_sampling_overrides_one_request(tiny_runtime: TinyRuntime) -> None:
    """``Runner.run(sampling=...)``: the server's per-request fields over each model's own
    settings, stop sequences added to the model's; an unknown name asks no model (422)."""
    from magi.errors import MAGIException
    from magi.testing.runtime import FaultInjector

    faults = FaultInjector()
    with tiny_runtime.runner("fast-only", backend_factory=faults) as runner:
        result = runner.run(EASY, sampling={"max_tokens": 3, "temperature": 0.5, "stop": ["\n\n"]})
        assert result.completion_tokens == 3
        [settings] = faults.settings[FAST]
        assert (settings.max_tokens, settings.temperature, settings.stop) == (3, 0.5, ["\nQ:", "\n\n"])
        assert runner.run(EASY).completion_tokens == 8  # the next request has the profile's own
        with pytest.raises(MAGIException, match="Unknown sampling setting.*bogus") as caught:
            runner.run(EASY, sampling={"bogus": 1})
        assert caught.value.status_code == 422 and faults.calls[FAST] == 2
        # values are validated as in a config file (the one merge), before any model is asked
        for bad, field in (({"temperature": -1}, "temperature"), ({"stop": [""]}, "stop")):
            with pytest.raises(MAGIException, match=f"sampling.{field}") as caught:
                runner.run(EASY, sampling=bad)
            assert caught.value.status_code == 422 and faults.calls[FAST] == 2


def test_a_requests_stop_sequences_are_added_once_on_every_model_it_fails_over_to(
    tiny_runtime: TinyRuntime,
) -> None:
    """The request's stop sequences join each model's own: the model answering after a
    failover gets its stops and the request's once, not the failed model's on top."""
    from magi.testing.runtime import FaultInjector

    faults = FaultInjector()
    with tiny_runtime.runner("development", backend_factory=faults) as runner:
        faults.fail(FAST)
        result = runner.run(EASY, sampling={"stop": ["\n\n"]})
    assert result.model_id == REASONER
    [failed] = faults.settings[FAST]
    [answered] = faults.settings[REASONER]
    assert failed.stop == answered.stop == ["\nQ:", "\n\n"]


def test_magi_serve_user_errors_exit_2(tiny_runtime: TinyRuntime, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from magi.cli import main

    options = [arg for override in tiny_runtime.overrides for arg in ("-o", override)]
    assert main(["serve", "--profile", "fast-onyl", *options]) == 2
    assert "Did you mean 'fast-only'?" in capsys.readouterr().err
    assert main(["serve", "--profile", "fast-only", "--api-keys-file", "/nonexistent/keys", *options]) == 2
    assert "task.api_keys_file: cannot read /nonexistent/keys" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert main(["serve", "--profile", "fast-only", "--port", port, *options]) == 2
    err = capsys.readouterr().err
    assert f"Could not serve on 127.0.0.1:{port}" in err and "Traceback" not in err


@pytest.mark.slow
def test_sigterm_lets_an_answer_within_the_grace_period_finish(tiny: TinyRuntime, tmp_path: Path) -> None:
    process = MagiServerProcess(tiny, tmp_path / "grace.log", *LONG_SERVER, "task.shutdown_grace_s=30")
    results: list[object] = []

    def ask() -> None:
        try:
            results.append(
                process.client().chat.completions.create(model="auto", messages=_user(EASY), max_tokens=1500)
            )
        except openai.APIError as exc:
            results.append(exc)

    asker = threading.Thread(target=ask)
    asker.start()
    deadline = time.monotonic() + 30
    while not process.health()["models"][FAST]["in_flight"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert process.terminate(timeout=60) == 0
    asker.join(10)
    [answer] = results
    assert not isinstance(answer, Exception), answer
    assert answer.usage.completion_tokens == 1500 and answer.choices[0].finish_reason == "length"
