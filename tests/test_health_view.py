"""HealthView: the live models table and routing mix of a local Runner or a ``magi serve``
process, read without a kernel (``refresh()`` instead of waiting for the timer).

The models are the tiny random-weight stand-ins of the seed's (every answer has exactly
``max_tokens`` tokens); failures are real: a FaultInjector backend that raises in process,
a damaged GGUF file in the server's folder.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from magi.runtime.figures import AnswerFigures
from magi.runtime.runner import Runner
from magi.runtime.trace import RunResult, StageTrace
from magi.testing.runtime import FAST, REASONER, FaultInjector, TinyRuntime
from magi.testing.serve import MagiServerProcess
from magi.testing.servers import free_port
from magi.widgets import HealthView
from magi.widgets.health import MODEL_COLUMNS, circuit_text, health_url

EASY = "What is the capital of France?"
HARD = "Prove that the square root of 2 is irrational; explain every step."

_ROW = re.compile(
    r'<tr class="magi-health-model" data-model="(?P<model>[^"]*)" data-circuit="(?P<circuit>[^"]*)">'
    r"(?P<cells>.*?)</tr>",
    re.S,
)
_TIER = re.compile(
    r'<tr class="magi-health-tier" data-profile="([^"]*)" data-tier="([^"]*)">(.*?)</tr>', re.S
)
_CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)


def _cells(text: str) -> list[str]:
    return [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in _CELL.findall(text)]


def model_rows(view: HealthView) -> dict[str, dict[str, str]]:
    """The models table as read on screen: per model, column -> cell text (and its circuit)."""
    rows = {}
    for match in _ROW.finditer(view.table.value):
        cells = dict(zip(MODEL_COLUMNS, _cells(match["cells"]), strict=True))
        rows[html.unescape(match["model"])] = {**cells, "data-circuit": match["circuit"]}
    return rows


def tier_rows(view: HealthView) -> dict[tuple[str, str], list[str]]:
    """The routing mix: (profile, tier) -> [profile, tier, requests, share]."""
    return {(p, t): _cells(cells) for p, t, cells in _TIER.findall(view.table.value)}


def status_state(view: HealthView) -> str:
    match = re.search(r'data-state="([^"]+)"', view.status.value)
    assert match, view.status.value
    return match[1]


@pytest.fixture
def views() -> Iterator[list[HealthView]]:
    made: list[HealthView] = []
    yield made
    for view in made:
        view.close()


@pytest.fixture
def runner(tiny_runtime: TinyRuntime) -> Iterator[Runner]:
    with tiny_runtime.runner("development") as own:
        yield own


# -- a local Runner ------------------------------------------------------------------------------
def test_a_runner_after_a_few_requests_shows_counts_latency_and_the_routing_mix(
    runner: Runner, views: list[HealthView]
) -> None:
    view = HealthView(runner, autostart=False)
    views.append(view)
    assert status_state(view) == "waiting" and model_rows(view) == {}
    for prompt in (EASY, EASY, HARD):
        runner.run(prompt)
    assert view.refresh() is not None
    rows = model_rows(view)
    assert list(rows) == [FAST, REASONER]
    fast, reasoner = rows[FAST], rows[REASONER]
    # two answers and one draft on the fast model, the refine on the reasoner
    assert (fast["requests"], fast["answered"], fast["failures"]) == ("3", "3", "0")
    assert (reasoner["requests"], reasoner["answered"]) == ("1", "1")
    assert fast["circuit"] == "closed" == fast["data-circuit"] and fast["loaded"] == "yes"
    assert fast["tiers"] == "fast" and reasoner["tiers"] == "powerful"
    for row in (fast, reasoner):
        assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", row["p50"]) and re.fullmatch(
            r"\d+ ms|\d+\.\d\d s", row["p95"]
        )
        assert float(row["tok/s"]) > 0
    entry = view.snapshot["models"][FAST]  # type: ignore[index]
    assert entry["p95_latency_s"] >= entry["p50_latency_s"] > 0
    mix = tier_rows(view)
    assert mix[("Development", "fast")][2:] == ["2", "67%"]
    assert mix[("Development", "powerful")][2:] == ["1", "33%"]
    assert status_state(view) == "ok" and "Development" in view.status.value


def test_a_failing_model_shows_its_open_circuit_and_its_error_escaped(
    tiny_runtime: TinyRuntime, views: list[HealthView]
) -> None:
    faults = FaultInjector()
    faults.fail(FAST, message="<script>alert('x')</script> broke")
    runner = tiny_runtime.runner("development", backend_factory=faults)
    try:
        for _ in range(3):  # the fast tier fails over to the powerful one; 3 failures open it
            assert runner.run(EASY).model_id == REASONER
        view = HealthView(runner, autostart=False)
        views.append(view)
        view.refresh()
    finally:
        runner.close()
    rows = model_rows(view)
    fast = rows[FAST]
    assert fast["data-circuit"] == "open" and fast["circuit"].startswith("open (3 failures, retry in ")
    assert (fast["requests"], fast["failures"], fast["answered"]) == ("3", "3", "0")
    assert fast["p50"] == fast["p95"] == fast["tok/s"] == "–"
    assert "<script>alert('x')</script> broke" in fast["last error"]  # as read on screen
    assert "<script>" not in view.table.value and "&lt;script&gt;" in view.table.value
    assert rows[REASONER]["answered"] == "3" and rows[REASONER]["data-circuit"] == "closed"
    assert tier_rows(view)[("Development", "powerful")][2:] == ["3", "100%"]


def test_it_refreshes_in_the_background_until_stopped_or_closed(
    runner: Runner, views: list[HealthView]
) -> None:
    view = HealthView(runner, interval=0.05)
    views.append(view)
    deadline = time.monotonic() + 10
    while view.snapshot is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert view.running and view.snapshot is not None and "every 0.05 s" in view.status.value
    runner.run(EASY)
    while model_rows(view).get(FAST, {}).get("answered") != "1" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert model_rows(view)[FAST]["answered"] == "1"  # drawn by the timer, no refresh() called
    view.stop()
    assert not view.running and "stopped" in view.status.value
    runner.run(EASY)
    time.sleep(0.2)
    assert model_rows(view)[FAST]["answered"] == "1"  # no longer redrawn
    closing = HealthView(runner, interval=0.05)
    assert closing.running
    closing.close()
    assert not closing.running


# -- a server --------------------------------------------------------------------------------------
def test_a_server_shows_the_same_counts_and_open_circuit(tmp_path: Path, views: list[HealthView]) -> None:
    tiny = TinyRuntime.create(tmp_path)
    server = MagiServerProcess(tiny, tmp_path / "server.log")
    try:
        tiny.path(FAST).write_bytes(b"GGUF" + b"\0" * 64)  # discovered, then damaged before its first load
        client = server.client()
        for prompt in (EASY, EASY, EASY, HARD):  # fast fails 3 times, then its circuit is open
            answer = client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": prompt}]
            )
            assert answer.model_extra["magi"]["model_id"] == REASONER
        view = HealthView(server.url + "/v1", autostart=False)  # the openai client's base URL works
        views.append(view)
        assert view.refresh() is not None, view.status.value
        health = server.health()
    finally:
        assert server.terminate() == 0, server.output()[-3000:]
    rows = model_rows(view)
    assert list(rows) == [FAST, REASONER]
    fast, reasoner = rows[FAST], rows[REASONER]
    assert fast["data-circuit"] == "open" and fast["circuit"].startswith("open (3 failures")
    assert (fast["requests"], fast["failures"], fast["loaded"]) == ("3", "3", "no")
    assert fast["last error"] and fast["last error"] == health["models"][FAST]["last_error"]
    assert (reasoner["data-circuit"], reasoner["loaded"], reasoner["answered"]) == ("closed", "yes", "4")
    assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", reasoner["p95"]) and float(reasoner["tok/s"]) > 0
    entry = health["models"][REASONER]
    assert entry["p95_latency_s"] >= entry["p50_latency_s"] > 0 and entry["tokens_per_s"] > 0
    assert health["routing"] == {"Development": {"powerful": 4}}
    assert tier_rows(view)[("Development", "powerful")][2:] == ["4", "100%"]
    assert status_state(view) == "ok" and f"{server.url}/health/models" in view.status.value
    # the server has gone: the next read is an error line, the last table stays
    assert view.refresh() is None
    assert status_state(view) == "error" and "Showing what was read at" in view.status.value
    assert model_rows(view)[REASONER]["answered"] == "4"


def test_a_server_with_keys_is_an_error_line_without_one_and_read_with_it(
    tmp_path: Path, views: list[HealthView]
) -> None:
    tiny = TinyRuntime.create(tmp_path, models=[FAST])
    server = MagiServerProcess(
        tiny, tmp_path / "keyed.log", profile="fast-only", env={"MAGI_API_KEYS": "s3cret"}
    )
    try:
        without = HealthView(server.url, autostart=False)
        keyed = HealthView(server.url, api_key="s3cret", autostart=False)
        views += [without, keyed]
        assert without.refresh() is None and status_state(without) == "error"
        assert "answered 401: Missing or invalid API key" in html.unescape(without.status.value)
        assert "(pass api_key=...)" in html.unescape(without.status.value)
        assert keyed.refresh() is not None and status_state(keyed) == "ok"
        assert model_rows(keyed)[FAST]["data-circuit"] == "closed"
    finally:
        assert server.terminate() == 0, server.output()[-3000:]
    for view in (without, keyed):
        assert "s3cret" not in view.status.value + view.table.value + repr(view.snapshot)


def test_an_unreachable_url_is_an_error_line_not_a_traceback(views: list[HealthView]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    view = HealthView(url, autostart=False, timeout=2)
    views.append(view)
    assert view.refresh() is None and view.snapshot is None
    assert status_state(view) == "error" and 'role="alert"' in view.status.value
    assert f"Could not reach {url}/health/models: ConnectError" in html.unescape(view.status.value)
    assert "Traceback" not in view.status.value and view.error is not None
    assert model_rows(view) == {}


# -- the pieces ------------------------------------------------------------------------------------
def _result(model_id: str, tier: str, total_s: float, *, wait_s: float = 0.0, tokens: int = 10) -> RunResult:
    stage = StageTrace("answer", tier, model_id, 5, tokens, total_s / 2, total_s, "length", wait_s=wait_s)
    return RunResult("text", "prompt", "P", 1.0, {}, {}, tier, tier, model_id, False, stages=[stage])


def test_answer_figures_give_p50_p95_tokens_per_s_and_the_mix() -> None:
    figures = AnswerFigures()
    for i in range(1, 21):  # 10 ms .. 200 ms
        figures.observe(_result("m", "fast" if i <= 15 else "powerful", 0.01 * i))
    m = figures.model("m")
    assert m["answered"] == 20
    assert m["p50_latency_s"] == pytest.approx(0.105)  # the median of 20
    assert m["p95_latency_s"] == pytest.approx(0.19)  # nearest rank: the 19th of 20
    assert m["tokens_per_s"] == pytest.approx(200 / 2.1)  # 200 tokens in 2.1 s of generation
    assert figures.routing() == {"P": {"fast": 15, "powerful": 5}}
    assert figures.model("other") == {
        "answered": 0,
        "p50_latency_s": None,
        "p95_latency_s": None,
        "tokens_per_s": None,
    }
    waited = AnswerFigures(window=2)
    for total in (1.0, 0.1, 0.2):
        waited.observe(_result("w", "fast", total, wait_s=0.5))
    w = waited.model("w")
    assert w["answered"] == 3 and w["p95_latency_s"] == pytest.approx(0.7)  # the last 2, wait included
    assert w["tokens_per_s"] == pytest.approx(20 / 0.3)  # waiting is not generating


@pytest.mark.parametrize(
    "given",
    [
        "http://127.0.0.1:8080",
        "http://127.0.0.1:8080/",
        "http://127.0.0.1:8080/v1/",
        "http://127.0.0.1:8080/health/models",
    ],
)
def test_health_url_accepts_the_root_the_v1_base_or_the_route(given: str) -> None:
    assert health_url(given) == "http://127.0.0.1:8080/health/models"


def test_circuit_text_says_the_state_in_words() -> None:
    assert circuit_text({"circuit": "closed"}) == "closed"
    assert circuit_text({"circuit": "half_open"}) == "half-open"
    assert circuit_text({"circuit": "open", "consecutive_failures": 1, "retry_in_s": 12.4}) == (
        "open (1 failure, retry in 12 s)"
    )


def test_a_source_that_is_neither_url_nor_runner_is_refused() -> None:
    with pytest.raises(TypeError, match="a server URL or a Runner"):
        HealthView(8080)  # type: ignore[arg-type]
