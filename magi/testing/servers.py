"""Real model servers for tests and benchmarks, on loopback only.

The remote backend is tested against ``python -m llama_cpp.server`` itself, not a
mock: :class:`LlamaServerProcess` starts one on ``127.0.0.1`` with a tiny GGUF model
(about half a second), waits until ``/v1/models`` answers, and can kill, pause
(SIGSTOP), resume and restart it on the same port, which is what fault tests need.
:class:`HangingServer` is a socket that accepts connections and never answers: a
server that is up but stuck. :class:`ScriptedServer` answers the generation
endpoints by a script, byte by byte: the ``sse_*`` scripts are servers that
misbehave (a line that never ends, a drip of one byte every half second, an
endless answer, an event that is not JSON, a stall mid-answer, 503 while loading).

Every address is loopback: the helpers refuse any other host.

Example:
    >>> with LlamaServerProcess(model_path, log_dir=tmp_path) as server:   # doctest: +SKIP
    ...     httpx.get(server.url + "/v1/models").json()["data"][0]["id"]
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class ServerStartError(RuntimeError):
    """The server process exited or did not answer in time; the message has its log's tail."""


class LlamaServerProcess:
    """``python -m llama_cpp.server`` serving one model on 127.0.0.1.

    Args:
        model: The GGUF file to serve.
        port: Port to listen on (default: a free one; kept across restarts).
        n_ctx: Context size (``--n_ctx``).
        n_threads: Threads (``--n_threads``; 1 leaves cores for other servers and tests).
        alias: ``--model_alias``, the served model name (default: the file path).
        api_key: ``--api_key``: the server then requires ``Authorization: Bearer <key>``.
        interrupt_requests: ``--interrupt_requests``. llama_cpp.server's default (True)
            cuts a running answer short when another request arrives; off here, so
            concurrent requests queue in the server instead.
        log_dir: Where the server's output goes (default: a file beside the model).
        start_timeout: Seconds to wait for ``/v1/models`` to answer.
    """

    def __init__(
        self,
        model: Path | str,
        *,
        port: int | None = None,
        n_ctx: int = 256,
        n_threads: int = 1,
        alias: str | None = None,
        api_key: str | None = None,
        interrupt_requests: bool = False,
        log_dir: Path | str | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.model = Path(model)
        self.port = port or free_port()
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.alias = alias
        self.api_key = api_key
        self.interrupt_requests = interrupt_requests
        self.log_path = Path(log_dir or self.model.parent) / f"llama_server_{self.port}.log"
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        """The command line: README "Scaling out" shows the same flags."""
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model),
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads),
            # llama_cpp.server computes every prompt token's logits by default (for logprobs,
            # which MAGI never asks for): twice the prompt time with a 262k-token vocabulary
            "--logits_all",
            "False",
            "--interrupt_requests",
            str(self.interrupt_requests),
            "--verbose",
            "False",
        ]
        if self.alias:
            cmd += ["--model_alias", self.alias]
        if self.api_key:
            cmd += ["--api_key", self.api_key]
        return cmd

    def start(self) -> LlamaServerProcess:
        """Start the server (on the same port as before, if restarting) and wait until it answers."""
        if self.running:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            # a log file, not a pipe: an unread pipe would fill up and block the server
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()
        self.starts += 1
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise ServerStartError(
                        f"llama_cpp.server on port {self.port} exited with {self.process.returncode}:\n"
                        + self.log_tail()
                    )
                try:
                    if client.get(f"{self.url}/v1/models", headers=headers).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.kill()
        raise ServerStartError(
            f"llama_cpp.server on port {self.port} did not answer within {self.start_timeout:g}s:\n"
            + self.log_tail()
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL: the server dies at once, mid-answer if it was answering."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        self.resume()  # a stopped process still dies on SIGKILL; resuming keeps `wait` simple
        process.kill()
        process.wait(timeout=10)

    def stop(self, timeout: float = 2.0) -> None:
        """Terminate (SIGTERM), then kill if it has not exited within ``timeout`` seconds."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        self.resume()
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a hung server)."""
        if self.running:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause` (harmless otherwise)."""
        if self.running:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGCONT)

    def restart(self) -> LlamaServerProcess:
        """Kill if running, then start again on the same port."""
        self.kill()
        return self.start()

    def __enter__(self) -> LlamaServerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _LoopbackServer:
    """A TCP listener on 127.0.0.1 whose accept loop runs in a daemon thread.

    Subclasses say what to do with each accepted connection (:meth:`_accepted`).
    :meth:`close` stops the loop, sets :attr:`stopping` (which scripted answers
    poll, so an endless one ends) and closes every connection.
    """

    thread_name = "magi-loopback-server"

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOOPBACK, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=self.thread_name, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)
            self._accepted(conn)

    def _accepted(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stopping.set()
        self._thread.join(timeout=2)
        for conn in self.accepted:
            with contextlib.suppress(OSError):
                conn.close()
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HangingServer(_LoopbackServer):
    """A TCP server on 127.0.0.1 that accepts connections and never answers.

    Models a server that is up (connections succeed) but stuck, so tests can check
    that read timeouts and tier timeouts fire. Accepted sockets are held open until
    :meth:`close`.
    """

    thread_name = "magi-hanging-server"

    def _accepted(self, conn: socket.socket) -> None:
        pass  # read nothing, answer nothing


@dataclass
class Exchange:
    """One HTTP request received by a :class:`ScriptedServer`, and the means to answer it.

    A script writes raw bytes (:meth:`send`), or the helpers' pieces: a status line
    with headers (:meth:`start`), chunks of a chunked body (:meth:`chunk`). Writes
    to a client that has gone raise :class:`ClientGone`, which ends the script.
    """

    conn: socket.socket
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    stopping: threading.Event

    def send(self, data: bytes) -> None:
        if self.stopping.is_set():
            raise ClientGone("the server is closing")
        try:
            self.conn.sendall(data)
        except OSError as exc:  # BrokenPipe, ConnectionReset: the client hung up
            raise ClientGone(str(exc)) from None

    def start(self, status: int = 200, content_type: str = "text/event-stream", reason: str = "OK") -> None:
        """The status line and headers of a chunked answer (as llama-server and uvicorn send)."""
        self.send(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
        )

    def chunk(self, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        if raw:
            self.send(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")

    def end(self) -> None:
        """The last (empty) chunk: the answer is complete."""
        self.send(b"0\r\n\r\n")

    def json(self, status: int, payload: object, reason: str = "") -> None:
        """A complete JSON answer with a Content-Length."""
        data = json.dumps(payload).encode()
        self.send(
            f"HTTP/1.1 {status} {reason or 'Status'}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + data
        )

    def sleep(self, seconds: float) -> None:
        """Wait, but end the script at once when the server closes."""
        if self.stopping.wait(seconds):
            raise ClientGone("the server is closing")


class ClientGone(Exception):
    """The client closed the connection (or the server is closing): the script stops."""


Script = Callable[[Exchange], None]


class ScriptedServer(_LoopbackServer):
    """An HTTP/1.1 server on 127.0.0.1 whose generation endpoints answer by a script.

    ``POST /v1/completions`` and ``POST /v1/chat/completions`` run ``script`` (in a
    thread per connection); ``GET /health`` runs ``health``, by default an answer
    200 ``{"status": "ok"}``; every other path is a 404 (so token counts fall back
    to estimates). Every request is kept
    in :attr:`requests`. The ``sse_*`` functions below are ready-made scripts of
    servers that misbehave.

    Example:
        >>> with ScriptedServer(sse_drip(interval=0.5)) as server:   # doctest: +SKIP
        ...     RemoteBackend(remote_spec(server.url)).stream("Hi", settings)
    """

    thread_name = "magi-scripted-server"

    def __init__(self, script: Script, *, health: Script | None = None, max_seconds: float = 30.0) -> None:
        self.script = script
        self.health = health
        self.max_seconds = max_seconds
        self.requests: list[Exchange] = []
        self.errors: list[BaseException] = []
        self._workers: list[threading.Thread] = []
        super().__init__()

    def _accepted(self, conn: socket.socket) -> None:
        worker = threading.Thread(target=self._handle, args=(conn,), name="magi-scripted-answer", daemon=True)
        self._workers.append(worker)
        worker.start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(self.max_seconds)  # no script outlives max_seconds by much
        try:
            exchange = self._read_request(conn)
            if exchange is None:
                return
            self.requests.append(exchange)
            if exchange.method == "POST" and exchange.path in ("/v1/completions", "/v1/chat/completions"):
                self.script(exchange)
            elif exchange.method == "GET" and exchange.path == "/health" and self.health is not None:
                self.health(exchange)
            elif exchange.method == "GET" and exchange.path == "/health":
                exchange.json(200, {"status": "ok"}, "OK")
            else:
                exchange.json(404, {"error": {"message": f"{exchange.path} not found"}}, "Not Found")
        except (ClientGone, TimeoutError):
            pass
        except BaseException as exc:  # kept for the test to look at; never kills the server
            self.errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _read_request(self, conn: socket.socket) -> Exchange | None:
        data = b""
        while b"\r\n\r\n" not in data:
            piece = conn.recv(65536)
            if not piece:
                return None
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            piece = conn.recv(65536)
            if not piece:
                return None
            body += piece
        return Exchange(conn, method, path, headers, body, self.stopping)

    def close(self) -> None:
        super().close()
        for worker in self._workers:
            worker.join(timeout=2)


# -- scripts of servers that misbehave ------------------------------------------------------------
def sse_token(text: str = "a", finish: str | None = None) -> str:
    """One ``/v1/completions`` stream event, blank line included."""
    return "data: " + json.dumps({"choices": [{"index": 0, "text": text, "finish_reason": finish}]}) + "\n\n"


def sse_answer(tokens: int = 3, text: str = "a") -> Script:
    """A well-behaved answer: ``tokens`` events, a finish reason, ``[DONE]``."""

    def script(ex: Exchange) -> None:
        ex.start()
        for _ in range(tokens):
            ex.chunk(sse_token(text))
        ex.chunk(sse_token("", "length") + "data: [DONE]\n\n")
        ex.end()

    return script


def sse_unfinished_line(interval: float = 0.05, piece: str = "a" * 64) -> Script:
    """``data: {"choices": [{"text": "`` and then more of the same line, forever: never a newline."""

    def script(ex: Exchange) -> None:
        ex.start()
        ex.chunk('data: {"choices": [{"text": "')
        while True:
            ex.sleep(interval)
            ex.chunk(piece)

    return script


def sse_drip(interval: float = 0.5) -> Script:
    """A valid answer, one byte every ``interval`` seconds (each byte its own chunk)."""

    def script(ex: Exchange) -> None:
        ex.start()
        while True:
            for byte in sse_token("a").encode():
                ex.sleep(interval)
                ex.chunk(bytes([byte]))

    return script


def sse_long_line(size: int) -> Script:
    """One event whose ``data:`` line is ``size`` bytes long (sent at full speed)."""

    def script(ex: Exchange) -> None:
        ex.start()
        ex.chunk("data: ")
        block = b"x" * 65536
        sent = 0
        while sent < size:
            ex.chunk(block[: size - sent])
            sent += len(block)
        ex.chunk("\n\n")
        ex.end()

    return script


def sse_endless_tokens(text: str = "a") -> Script:
    """Valid token events at full speed, never a finish reason or ``[DONE]``."""

    def script(ex: Exchange) -> None:
        ex.start()
        batch = sse_token(text) * 64
        while True:
            ex.chunk(batch)

    return script


def sse_non_json(tokens: int = 2) -> Script:
    """A few tokens, then an event that is not JSON (then a proper ending, unread)."""

    def script(ex: Exchange) -> None:
        ex.start()
        for _ in range(tokens):
            ex.chunk(sse_token())
        ex.chunk("data: <html>502 Bad Gateway</html>\n\n")
        ex.chunk(sse_token("", "length") + "data: [DONE]\n\n")
        ex.end()

    return script


def sse_stall(tokens: int = 2, text: str = "a") -> Script:
    """A few tokens, then silence with the connection held open (a stall mid-answer)."""

    def script(ex: Exchange) -> None:
        ex.start()
        for _ in range(tokens):
            ex.chunk(sse_token(text))
        ex.sleep(3600)

    return script


def loading_model() -> Script:
    """llama-server while it loads the model: HTTP 503 ``{"error": {"message": "Loading model"}}``."""

    def script(ex: Exchange) -> None:
        ex.json(
            503,
            {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}},
            "Service Unavailable",
        )

    return script
