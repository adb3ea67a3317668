"""``magi serve`` in a subprocess on 127.0.0.1, for tests that talk to a real server.

:class:`MagiServerProcess` starts ``magi serve`` (or ``python run.py task=serve``) over a
:class:`~magi.testing.runtime.TinyRuntime`'s models on a free loopback port, waits until
``GET /health`` answers, and stops it with SIGTERM (the exit status is returned, so a test
can check the shutdown was clean). ``tests/test_serve.py`` and
``tests/test_health_view.py`` share it.

Example:
    >>> server = MagiServerProcess(tiny, tmp_path / "server.log")   # doctest: +SKIP
    >>> server.client().chat.completions.create(model="auto", messages=[...])  # doctest: +SKIP
    >>> server.terminate()                                          # doctest: +SKIP
    0
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from magi.testing.runtime import TinyRuntime
from magi.testing.servers import LOOPBACK, free_port

if TYPE_CHECKING:
    import openai

#: The checkout ``run.py`` and ``conf/`` are in (the server's working directory).
ROOT = Path(__file__).resolve().parents[2]


class MagiServerProcess:
    """``magi serve`` (or ``python run.py task=serve``) in a subprocess on 127.0.0.1.

    Args:
        tiny: The models and overrides the server composes its profile with.
        log: The server's stdout and stderr go here.
        overrides: More overrides, after ``tiny``'s.
        profile: The served profile.
        via: ``cli`` (``python -m magi.cli serve``) or ``run.py`` (Hydra's ``task=serve``).
        env: Extra environment; ``MAGI_API_KEYS`` is removed unless given here.
    """

    def __init__(
        self,
        tiny: TinyRuntime,
        log: Path,
        *overrides: str,
        profile: str = "development",
        via: str = "cli",
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.log = log
        options = [*tiny.overrides, *overrides]
        if via == "cli":
            cmd = [sys.executable, "-m", "magi.cli", "serve", "--profile", profile, "--port", str(self.port)]
            cmd += [arg for option in options for arg in ("-o", option)]
        else:
            run_dir = log.parent / f"hydra-{self.port}"
            cmd = [
                sys.executable,
                "run.py",
                "task=serve",
                f"profile={profile}",
                f"task.port={self.port}",
                f"hydra.run.dir={run_dir}",
                *options,
            ]
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        if env is None or "MAGI_API_KEYS" not in env:
            full_env.pop("MAGI_API_KEYS", None)
        self._out = log.open("wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT, env=full_env)
        self.url = f"http://{LOOPBACK}:{self.port}"
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer /health:\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def client(self, key: str = "none") -> openai.OpenAI:
        """The official ``openai`` client on this server (no retries)."""
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=60)

    def output(self) -> str:
        """What the server wrote so far."""
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(encoding="utf-8", errors="replace")

    def health(self, key: str | None = None) -> dict[str, Any]:
        """``GET /health/models``."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.get(self.url + "/health/models", headers=headers, timeout=10).json()

    def metrics(self, key: str | None = None) -> str:
        """``GET /metrics`` (Prometheus text)."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.get(self.url + "/metrics", headers=headers, timeout=10).text

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit status (0 for a clean shutdown)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._out.close()
        return code
