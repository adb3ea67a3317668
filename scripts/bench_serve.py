"""Server benchmarks: ``magi serve``'s per-request overhead, and its throughput against
``python -m llama_cpp.server`` on the same demo model, each measured in one run.

    python scripts/bench_serve.py                          # both parts (about four minutes)
    python scripts/bench_serve.py --only 1 --blocks 4 --requests 10
    python scripts/bench_serve.py --only 2 --clients 4 --per-client 3 --rounds 5
    python scripts/bench_serve.py --only 1 --tiny        # a generated model, not the demo one

Both parts use the demo model (Gemma 3 270M Q4_K_M, assembled into ``--models-dir``, a
temporary folder by default) through the ``demo-single`` profile, greedy (temperature 0),
every server on 127.0.0.1 only.

1. **Overhead** of the server over calling the Runner in process. ``magi serve`` runs in
   a subprocess; this process holds a :class:`Runner` of the same config. In blocks of
   ``--requests`` requests, sides alternating block by block (never two at once), each
   with a ``--tokens``-token answer (4: the fixed cost dominates): chat completions
   posted with bare ``httpx``, not streamed and streamed, through the official ``openai``
   client, not streamed and streamed, and ``Runner.run`` in process. A request's
   overhead is the client's wall time less the ``total_s`` the server's Runner reports
   for it in the ``magi`` trace (the whole answer, routing included): HTTP, JSON,
   validation, the hand-offs to the answer's thread and back, the SSE events, without the
   model time and its noise. The same difference in process (``Runner.run``'s wall time
   less its own ``total_s``) is the baseline. **Budget**: p50 overhead at most
   ``--budget-ms`` (5 ms) for the plain and the streamed request **sent with bare
   httpx**: the server's own cost. The ``openai`` client's sides are reported beside them
   with what that client adds by itself, measured against a trivial server (a subprocess
   that answers every request with the same bytes, a plain and a streamed answer of
   ``magi serve`` recorded at the start, after waiting as long as that answer took, and
   does no other work): its ``openai`` side less its bare ``httpx`` side, each less the
   wait. That cost is the client's, paid against any
   OpenAI-compatible server, so it is not judged. Also reported: ``GET /health`` (an HTTP
   round trip through uvicorn and the app, no answer) and, on the prompts the bare
   ``httpx`` side and the Runner in process both answer, the median per-prompt ratio of
   the Runner's ``total_s`` in the server to in process (whether serving slows the model
   itself, which the overhead leaves out).
2. **Throughput** against ``python -m llama_cpp.server`` serving the same GGUF file with
   the threads, batch threads, ``n_batch`` and ``n_ctx`` MAGI resolves for the model
   (``magi.runtime.resolve``: the usable cores less one by default), ``--logits_all False``
   (its default computes every prompt token's logits, which MAGI never does), and
   ``--interrupt_requests False`` (queue, as MAGI does, instead of cutting answers short).
   ``--clients`` concurrent clients send ``--per-client`` ``/v1/completions`` requests
   each, not streamed, ``--throughput-tokens`` tokens, one server at a time, in alternating
   order round by round. llama_cpp.server gets the prompt as MAGI renders it for the model
   (its completion template, ``Q: ...\\nA:``), MAGI's stop sequence and its sampling settings,
   so both write the same greedy answers (checked on 40 prompts: 38 the same text). Their
   usage counts differ: llama_cpp.server's includes the tokens of the stop sequence (2 for
   an answer that ends at ``\\nQ:``), MAGI's only the answer's, so requests/s is the
   like-for-like figure. Reported: requests/s and tokens/s (each by its own count) of
   each, and MAGI ÷ llama_cpp.server (the median of the per-round ratios).

Every request anywhere in a run gets a prompt no earlier request in that process used
(the prompts of three files of ``data/prompts``, then numbered variants), so neither llama.cpp's prefix
reuse nor MAGI's state cache answers a prompt from memory. The load average is printed
with the figures: the machine's other work moves them. Exits 1 when a budget is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import openai  # noqa: E402

import magi  # noqa: E402
from magi.models.demo import DEMO_MODEL_ID, ensure_demo_model  # noqa: E402
from magi.runtime.backend import ModelSpec  # noqa: E402
from magi.runtime.resolve import resolve_models  # noqa: E402
from magi.runtime.runner import Runner  # noqa: E402
from magi.testing.runtime import FAST, TinyRuntime  # noqa: E402
from magi.testing.servers import LOOPBACK, LlamaServerProcess, free_port  # noqa: E402
from magi.testing.tiny_gguf import SEED_MODELS, write_spec  # noqa: E402

PROFILE = "demo-single"
#: ``--tiny``: the profile of one tiny generated model (random weights: every answer has
#: exactly its ``max_tokens`` tokens).
TINY_PROFILE = "fast-only"
#: Its shape (20 MB of F32 weights): a 4-token answer takes about as long as the demo
#: model's (0.05-0.3 s on one thread here), so the server waits as long for it.
TINY_SHAPE: dict[str, Any] = {"n_layer": 6, "n_embd": 256, "n_head": 8, "n_head_kv": 4, "n_ff": 768}
BUDGET_MS = 5.0


def overrides(models_dir: Path) -> list[str]:
    """The config both the server and the in-process Runner use: the demo model assembled
    into ``models_dir`` already."""
    return [
        f"models.dirs=[{models_dir}]",
        f"models.registry={models_dir / 'registry.json'}",
        "models.demo=false",
    ]


#: The prompt files of ``data/prompts`` this benchmark reads (named, so a file added there
#: later does not change its prompts): easy and hard, code, maths, prose.
PROMPT_FILES = ("bench.jsonl", "holdout.jsonl", "labelled.jsonl")


def real_prompts() -> list[str]:
    """The prompts of :data:`PROMPT_FILES`, each once."""
    texts: dict[str, None] = {}
    for name in PROMPT_FILES:
        for line in (ROOT / "data" / "prompts" / name).read_text(encoding="utf-8").splitlines():
            prompt = json.loads(line).get("prompt") if line.strip() else None
            if isinstance(prompt, str) and prompt.strip():
                texts[prompt] = None
    return list(texts)


def fresh_prompts() -> Iterator[str]:
    """Prompts never repeated: the real ones, then numbered variants (the number first, so
    no two share more than a few tokens of prefix)."""
    texts = real_prompts()
    yield from texts
    n = 0
    while True:
        n += 1
        for text in texts:
            yield f"({n}) {text}"


def take(prompts: Iterator[str], count: int) -> list[str]:
    return [next(prompts) for _ in range(count)]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (5 min {five:.2f})"


def p50(values: list[float]) -> float:
    return statistics.median(values)


def quartiles(values: list[float]) -> str:
    """The first and third quartiles: how much the requests scatter."""
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{q1:.2f}-{q3:.2f}"


def client(url: str) -> openai.OpenAI:
    """The official client on loopback: no retries, no proxy from the environment."""
    return openai.OpenAI(
        base_url=url + "/v1",
        api_key="none",
        max_retries=0,
        http_client=httpx.Client(trust_env=False, timeout=120),
    )


class MagiServe:
    """``magi serve --profile demo-single`` in a subprocess on 127.0.0.1, a free port."""

    def __init__(self, options: list[str], log: Path, profile: str = PROFILE) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.command = [sys.executable, "-m", "magi.cli", "serve", "--profile", profile]
        self.command += ["--host", LOOPBACK, "--port", str(self.port)]
        self.command += [arg for option in options for arg in ("-o", option)]
        self.log = log
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("MAGI_API_KEYS", None)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.command,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 120
        with httpx.Client(trust_env=False, timeout=1) as http:
            while True:
                if self.proc.poll() is not None:
                    raise SystemExit(f"magi serve exited {self.proc.returncode}:\n{log.read_text()[-3000:]}")
                try:
                    if http.get(self.url + "/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"magi serve did not answer /health:\n{log.read_text()[-3000:]}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: graceful shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class LlamaServer(LlamaServerProcess):
    """``python -m llama_cpp.server`` with the load settings MAGI resolved for the model."""

    def __init__(self, spec: ModelSpec, log_dir: Path) -> None:
        assert spec.path is not None
        load = spec.load
        super().__init__(spec.path, n_ctx=load.n_ctx, n_threads=int(load.n_threads or 1), log_dir=log_dir)
        self.n_threads_batch = int(load.n_threads_batch or self.n_threads)
        self.n_batch = load.n_batch

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--n_threads_batch") + 1] = str(self.n_threads_batch)
        return [*cmd, "--n_batch", str(self.n_batch)]


# -- 1. overhead ----------------------------------------------------------------------------
@dataclass
class Timed:
    """One request: the caller's wall time and the Runner's own ``total_s`` (seconds)."""

    wall: float
    runner_total: float
    tokens: int

    @property
    def overhead_ms(self) -> float:
        return (self.wall - self.runner_total) * 1000


def _user(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def served_plain(api: openai.OpenAI, prompt: str, tokens: int) -> Timed:
    start = time.perf_counter()
    answer = api.chat.completions.create(
        model="auto",
        messages=_user(prompt),
        max_tokens=tokens,
        temperature=0,  # type: ignore[arg-type]
    )
    wall = time.perf_counter() - start
    trace = (answer.model_extra or {})["magi"]
    assert answer.usage is not None
    return Timed(wall, float(trace["total_s"]), answer.usage.completion_tokens)


def served_stream(api: openai.OpenAI, prompt: str, tokens: int) -> Timed:
    start = time.perf_counter()
    chunks = api.chat.completions.create(
        model="auto",
        messages=_user(prompt),  # type: ignore[arg-type]
        max_tokens=tokens,
        temperature=0,
        stream=True,
    )
    trace: dict[str, Any] | None = None
    for chunk in chunks:  # ends after data: [DONE]
        magi_field = (chunk.model_extra or {}).get("magi")
        if magi_field and "total_s" in magi_field:
            trace = magi_field
    wall = time.perf_counter() - start
    assert trace is not None, "the stream's last chunk carries no trace"
    completion = sum(s["completion_tokens"] for s in trace["stages"])
    return Timed(wall, float(trace["total_s"]), completion)


def in_process(runner: Runner, prompt: str, tokens: int) -> Timed:
    start = time.perf_counter()
    result = runner.run(prompt, sampling={"max_tokens": tokens, "temperature": 0.0})
    wall = time.perf_counter() - start
    return Timed(wall, result.total_s, result.completion_tokens)


def served_raw(http: httpx.Client, url: str, prompt: str, tokens: int) -> Timed:
    """The plain request without the ``openai`` client: what the client itself adds."""
    body = {"model": "auto", "messages": _user(prompt), "max_tokens": tokens, "temperature": 0}
    start = time.perf_counter()
    response = http.post(url + "/v1/chat/completions", json=body)
    answer = response.json()
    wall = time.perf_counter() - start
    return Timed(wall, float(answer["magi"]["total_s"]), int(answer["usage"]["completion_tokens"]))


def served_raw_stream(http: httpx.Client, url: str, prompt: str, tokens: int) -> Timed:
    """The streamed request without the ``openai`` client: the lines read as they come."""
    body = {"model": "auto", "messages": _user(prompt), "max_tokens": tokens, "temperature": 0}
    start = time.perf_counter()
    trace: dict[str, Any] | None = None
    with http.stream("POST", url + "/v1/chat/completions", json={**body, "stream": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and '"total_s"' in line:
                trace = json.loads(line[6:]).get("magi")
    wall = time.perf_counter() - start
    assert trace is not None, "the stream's last chunk carries no trace"
    completion = sum(s["completion_tokens"] for s in trace["stages"])
    return Timed(wall, float(trace["total_s"]), completion)


def health(http: httpx.Client, url: str) -> Timed:
    """``GET /health``: an HTTP round trip through uvicorn and the app, no answer."""
    start = time.perf_counter()
    http.get(url + "/health").raise_for_status()
    return Timed(time.perf_counter() - start, 0.0, 0)


TRIVIAL_SERVER = """
import http.server, sys, time
plain, stream, delay = sys.argv[1].encode(), sys.argv[2].encode(), float(sys.argv[4])
class Canned(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        asked_stream = b'"stream":true' in body.replace(b" ", b"")
        data, kind = (stream, "text/event-stream") if asked_stream else (plain, "application/json")
        time.sleep(delay)
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[3])), Canned)
server.serve_forever()
"""


class TrivialServer:
    """A subprocess answering every POST with the same bytes, ``plain`` (or ``stream``
    when the body asks for a stream), after waiting as long as the answer in ``plain``
    took (its ``magi.total_s``): the clients' own cost, without a server's work, after
    the same wait (a client that has slept for a model's time pays more to wake up and
    parse than one asking in a tight loop)."""

    def __init__(self, plain: str, stream: str) -> None:
        port = free_port()
        self.url = f"http://{LOOPBACK}:{port}"
        self.delay = float(json.loads(plain)["magi"]["total_s"])
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TRIVIAL_SERVER, plain, stream, str(port), str(self.delay)],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        with httpx.Client(trust_env=False, timeout=self.delay + 1) as http:
            while True:
                try:
                    http.post(self.url + "/v1/chat/completions", json={})
                    return
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise SystemExit("the trivial server did not start") from None
                    time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


#: Part 1's sides; the first two are judged against the budget.
JUDGED = ("server, httpx", "server, httpx, streamed")
OVERHEAD_SIDES = (
    *JUDGED,
    "server, openai",
    "server, openai, streamed",
    "in process",
    "GET /health",
    "trivial, httpx",
    "trivial, httpx, streamed",
    "trivial, openai",
    "trivial, openai, streamed",
)


def bench_overhead(
    server: MagiServe,
    runner: Runner,
    prompts: Iterator[str],
    blocks: int,
    requests: int,
    tokens: int,
    long_tokens: int = 0,
) -> tuple[dict[str, list[Timed]], float]:
    """Blocks of ``requests`` on each side, one side at a time, the order rotating block by
    block. The bare ``httpx`` side and the in-process side answer the same prompts (two
    processes: each sees them first); every other side that answers gets its own, unseen
    by the server. With ``long_tokens``, the bare request again with answers that long
    (does the overhead grow per token, or is it per request?)."""
    http = httpx.Client(trust_env=False, timeout=120)
    served_raw(http, server.url, next(prompts), tokens)  # warm-up: the server loads the model
    canned = []  # magi serve's own answers, plain and streamed, for the trivial server
    for stream in (False, True):
        body = {"model": "auto", "messages": _user(next(prompts)), "max_tokens": tokens, "stream": stream}
        canned.append(http.post(server.url + "/v1/chat/completions", json=body).text)
    trivial = TrivialServer(*canned)
    api, trivial_api = client(server.url), client(trivial.url)

    def waited(timed: Timed) -> Timed:  # the trivial server's wait is its "answer"
        return Timed(timed.wall, trivial.delay, timed.tokens)

    try:
        for warm in (served_raw, served_raw_stream):
            warm(http, server.url, next(prompts), tokens)
            warm(http, trivial.url, "", tokens)
        for warm_api in (served_plain, served_stream):
            warm_api(api, next(prompts), tokens)
            warm_api(trivial_api, "", tokens)
        in_process(runner, next(prompts), tokens)
        names = [*OVERHEAD_SIDES, *([f"httpx, {long_tokens} tok"] if long_tokens else [])]
        timed: dict[str, list[Timed]] = {name: [] for name in names}
        for block in range(blocks):
            shared = take(prompts, requests)
            sides: list[tuple[Callable[[str], Timed], list[str]]] = [
                (lambda p: served_raw(http, server.url, p, tokens), shared),
                (lambda p: served_raw_stream(http, server.url, p, tokens), take(prompts, requests)),
                (lambda p: served_plain(api, p, tokens), take(prompts, requests)),
                (lambda p: served_stream(api, p, tokens), take(prompts, requests)),
                (lambda p: in_process(runner, p, tokens), shared),
                (lambda _: health(http, server.url), shared),
                (lambda p: waited(served_raw(http, trivial.url, p, tokens)), shared),
                (lambda p: waited(served_raw_stream(http, trivial.url, p, tokens)), shared),
                (lambda p: waited(served_plain(trivial_api, p, tokens)), shared),
                (lambda p: waited(served_stream(trivial_api, p, tokens)), shared),
            ]
            if long_tokens:
                sides.append(
                    (lambda p: served_raw(http, server.url, p, long_tokens), take(prompts, requests))
                )
            order = [(block + i) % len(sides) for i in range(len(sides))]
            if block % 2:
                order.reverse()
            for i in order:
                ask, block_prompts = sides[i]
                timed[names[i]] += [ask(p) for p in block_prompts]
    finally:
        trivial.stop()
    return timed, trivial.delay * 1000


# -- 2. throughput --------------------------------------------------------------------------
@dataclass
class Round:
    seconds: float
    requests: int
    tokens: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds


def concurrent(ask: Callable[[str], int], prompts: list[str], clients: int) -> Round:
    """``clients`` threads, each asking its share of ``prompts`` one after another."""
    shares = [prompts[i::clients] for i in range(clients)]
    tokens = [0] * clients
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for prompt in shares[i]:
                tokens[i] += ask(prompt)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    return Round(seconds, len(prompts), sum(tokens))


def bench_throughput(
    magi_url: str,
    llama_url: str,
    spec: ModelSpec,
    prompts: Iterator[str],
    rounds: int,
    clients: int,
    per_client: int,
    tokens: int,
) -> dict[str, list[Round]]:
    sampling = spec.sampling
    magi_api, llama_api = client(magi_url), client(llama_url)
    llama_extra = {
        "top_k": sampling.top_k,
        "min_p": sampling.min_p,
        "repeat_penalty": sampling.repeat_penalty,
    }

    def ask_magi(prompt: str) -> int:
        answer = magi_api.completions.create(model="auto", prompt=prompt, max_tokens=tokens, temperature=0)
        assert answer.usage is not None
        return answer.usage.completion_tokens

    def ask_llama(prompt: str) -> int:
        answer = llama_api.completions.create(
            model="m",
            prompt=sampling.prompt_template.format(prompt=prompt),
            max_tokens=tokens,
            temperature=0,
            top_p=sampling.top_p,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            stop=list(sampling.stop) or None,
            extra_body=llama_extra,
        )
        assert answer.usage is not None
        return answer.usage.completion_tokens

    for ask in (ask_magi, ask_llama):  # warm-up: connections, first-request costs
        concurrent(ask, take(prompts, clients), clients)
    out: dict[str, list[Round]] = {"magi serve": [], "llama_cpp.server": []}
    for r in range(rounds):
        batch = take(prompts, clients * per_client)  # the same prompts on both servers
        sides = [("magi serve", ask_magi), ("llama_cpp.server", ask_llama)]
        for name, ask in sides if r % 2 == 0 else reversed(sides):
            out[name].append(concurrent(ask, batch, clients))
    return out


# -- main -----------------------------------------------------------------------------------
def verdict(value: float, budget: float) -> str:
    return f"(budget <= {budget:g} ms)" if value <= budget else f"MISSED (budget <= {budget:g} ms)"


def report_overhead(timed: dict[str, list[Timed]], delay_ms: float, args: argparse.Namespace) -> bool:
    """Print part 1 (``delay_ms``: the trivial server's wait); True when a judged side
    misses the budget."""
    base = p50([t.overhead_ms for t in timed["in process"]])
    print(
        f"1. overhead over the Runner in process, {args.blocks} blocks x {args.requests} requests "
        f"a side, {args.tokens}-token answers; {load()}"
    )
    head = f"{'wall p50':>10}{'Runner total_s p50':>20}{'wall - total_s p50 (quartiles)':>32}"
    print(f"   {'':26}{head}")
    for name, rows in timed.items():
        overhead = p50([t.overhead_ms for t in rows])
        print(
            f"   {name:<26}{p50([t.wall for t in rows]) * 1000:>8.1f}ms"
            f"{p50([t.runner_total for t in rows]) * 1000:>18.1f}ms{overhead:>18.2f}ms"
            f" ({quartiles([t.overhead_ms for t in rows])}), {p50([t.tokens for t in rows]):.0f} tok"
        )
    missed = False
    print("   budget, judged on the bare httpx client (the server's own cost):")
    for name in JUDGED:
        overhead = p50([t.overhead_ms for t in timed[name]])
        missed |= overhead > args.budget_ms
        print(
            f"     {name:<24} {overhead:6.2f} ms {verdict(overhead, args.budget_ms)}; "
            f"over in process {overhead - base:+.2f} ms"
        )
    print(
        "   the openai client (not judged): its sides, and what it adds by itself against the trivial server:"
    )
    for kind in ("", ", streamed"):
        served = p50([t.overhead_ms for t in timed[f"server, openai{kind}"]])
        trivial_openai = p50([t.overhead_ms for t in timed[f"trivial, openai{kind}"]])
        trivial_httpx = p50([t.overhead_ms for t in timed[f"trivial, httpx{kind}"]])
        print(
            f"     server, openai{kind:<10} {served:6.2f} ms, of which the client's own about "
            f"{trivial_openai - trivial_httpx:.2f} ms (the trivial server, wall less its "
            f"{delay_ms:.0f} ms wait: openai {trivial_openai:.2f} ms, httpx {trivial_httpx:.2f} ms)"
        )
    ratios = [
        a.runner_total / b.runner_total
        for a, b in zip(timed["server, httpx"], timed["in process"], strict=True)
        if b.runner_total > 0
    ]
    print(
        f"   the answer itself (Runner total_s), server / in process on the same prompts: median of "
        f"per-prompt ratios {p50(ratios):.3f} (quartiles {quartiles(ratios)})"
    )
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", type=int, choices=(1, 2), action="append", help="run only this part")
    parser.add_argument(
        "--models-dir", type=Path, default=None, help="where to assemble the demo model (kept)"
    )
    parser.add_argument("--blocks", type=int, default=4, help="(1) blocks per side")
    parser.add_argument("--requests", type=int, default=10, help="(1) requests per block")
    parser.add_argument("--tokens", type=int, default=4, help="(1) answer length")
    parser.add_argument(
        "--long-tokens", type=int, default=0, help="(1) also time bare-httpx requests of this length"
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a tiny generated model (fast-only profile, random weights) instead of the demo model",
    )
    parser.add_argument("--budget-ms", type=float, default=BUDGET_MS, help="(1) budget of the p50 overhead")
    parser.add_argument("--rounds", type=int, default=5, help="(2) rounds per server")
    parser.add_argument("--clients", type=int, default=4, help="(2) concurrent clients")
    parser.add_argument("--per-client", type=int, default=3, help="(2) requests per client per round")
    parser.add_argument("--throughput-tokens", type=int, default=16, help="(2) answer length")
    args = parser.parse_args()
    only = set(args.only or (1, 2))

    work = Path(tempfile.mkdtemp(prefix="magi-bench-serve-"))
    models_dir = args.models_dir or work / "models"
    if args.tiny:  # the server's own cost is the same; the model's time is tiny
        tiny = TinyRuntime.create(work / "tiny", models=[])
        write_spec(tiny.models_dir, SEED_MODELS[FAST], **TINY_SHAPE)
        profile, model_id, options = TINY_PROFILE, FAST, [*tiny.overrides, "runtime.n_ctx=2048"]
        model = tiny.path(FAST)
    else:
        model = ensure_demo_model(models_dir, progress=False)
        profile, model_id, options = PROFILE, DEMO_MODEL_ID, overrides(models_dir)
    config = magi.compose(profile=profile, overrides=options)
    spec = resolve_models(config)[0][model_id]
    if spec.path is None or spec.path.resolve() != model.resolve():
        raise SystemExit(f"the profile's {model_id} is {spec.path}, not the model file {model}")
    load_settings = spec.load
    print(
        f"{'tiny' if args.tiny else 'demo'} model {model.name} ({profile}); n_ctx {load_settings.n_ctx}, "
        f"threads {load_settings.n_threads}, "
        f"batch threads {load_settings.n_threads_batch}, n_batch {load_settings.n_batch}; {load()}"
    )
    prompts = fresh_prompts()
    missed = False
    server = MagiServe(options, work / "magi-serve.log", profile)
    print("magi serve:", " ".join(server.command))
    try:
        if 1 in only:
            with Runner(config, start_health_checks=False) as runner:
                timed, delay_ms = bench_overhead(
                    server, runner, prompts, args.blocks, args.requests, args.tokens, args.long_tokens
                )
            missed = report_overhead(timed, delay_ms, args)
        if 2 in only:
            with LlamaServer(spec, work) as llama:
                print("llama_cpp.server:", " ".join(llama.command()))
                rounds = bench_throughput(
                    server.url,
                    llama.url,
                    spec,
                    prompts,
                    args.rounds,
                    args.clients,
                    args.per_client,
                    args.throughput_tokens,
                )
            ours, theirs = rounds["magi serve"], rounds["llama_cpp.server"]
            rps_ratios = [a.rps / b.rps for a, b in zip(ours, theirs, strict=True)]
            rps_ratio = p50(rps_ratios)
            tps_ratio = p50([a.tps / b.tps for a, b in zip(ours, theirs, strict=True)])
            print(
                f"2. throughput, {args.clients} clients x {args.per_client} requests, {args.rounds} rounds, "
                f"{args.throughput_tokens}-token answers, /v1/completions; {load()}"
            )
            for name, rows in rounds.items():
                print(
                    f"   {name:<18} {p50([r.rps for r in rows]):6.2f} requests/s  "
                    f"{p50([r.tps for r in rows]):6.1f} tokens/s (medians; per round: "
                    + ", ".join(f"{r.rps:.2f} req/s {r.tokens} tokens" for r in rows)
                    + ")"
                )
            print(
                f"   MAGI / llama_cpp.server: requests/s {rps_ratio:.3f} "
                f"(per round {', '.join(f'{r:.2f}' for r in rps_ratios)}), "
                f"tokens/s {tps_ratio:.3f} (reported)"
            )
    finally:
        server.stop()
        if args.models_dir is None:  # the model copy is big; the servers' logs stay
            shutil.rmtree(models_dir, ignore_errors=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
