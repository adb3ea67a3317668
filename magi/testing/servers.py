"""Real model servers for tests and benchmarks, on loopback only.

The remote backend is tested against ``python -m llama_cpp.server`` itself, not a
mock: :class:`LlamaServerProcess` starts one on ``127.0.0.1`` with a tiny GGUF model
(about half a second), waits until ``/v1/models`` answers, and can kill, pause
(SIGSTOP), resume and restart it on the same port, which is what fault tests need.
:class:`HangingServer` is a socket that accepts connections and never answers: a
server that is up but stuck.

Every address is loopback: the helpers refuse any other host.

Example:
    >>> with LlamaServerProcess(model_path, log_dir=tmp_path) as server:   # doctest: +SKIP
    ...     httpx.get(server.url + "/v1/models").json()["data"][0]["id"]
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

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


class HangingServer:
    """A TCP server on 127.0.0.1 that accepts connections and never answers.

    Models a server that is up (connections succeed) but stuck, so tests can check
    that read timeouts and tier timeouts fire. Accepted sockets are held open until
    :meth:`close`.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOOPBACK, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="magi-hanging-server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)  # read nothing, answer nothing

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self.accepted:
            with contextlib.suppress(OSError):
                conn.close()
        self._sock.close()

    def __enter__(self) -> HangingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
