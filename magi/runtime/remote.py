"""The remote backend: a model served over HTTP by an OpenAI-compatible server.

llama.cpp's ``llama-server`` and ``python -m llama_cpp.server`` (and vLLM, LM Studio,
Ollama's ``/v1``...) speak the same protocol, so one backend lets a tier hold models
on other processes or machines next to in-process ones. The runner treats both
alike: the same streaming, failover, circuit breakers and balancers.

* **Generation** streams server-sent events from ``POST {url}/v1/chat/completions``
  (``api: chat``: the conversation's ``messages``; the server applies the model's chat
  template) or ``POST {url}/v1/completions`` (``api: completions``: the conversation
  rendered here as MAGI's completion transcript,
  :func:`magi.runtime.templates.render_transcript`, as the local backend does for
  models without a chat template).
  Each content delta counts as one token, as each chunk does locally.
* **Token counts** come from the server's tokenizer (for ``api: chat``, of each
  message's text: the server's chat template is its own and not counted): llama_cpp.server's
  ``/extras/tokenize/count`` or llama-server's ``/tokenize``, tried in that order,
  the one that answers is remembered. Servers with neither get an estimate of
  one token per 4 characters (the usual figure for English text with BPE
  vocabularies); counting never fails a request.
* **Health** is the server's own endpoint: ``health_paths`` in order (``/health``
  for llama-server, then ``/v1/models`` for llama_cpp.server); a 404 tries the
  next, the one that answers is tried first next time.
* **Errors** are :class:`~magi.runtime.backend.BackendError` subclasses naming the
  model id, the URL and what to check, so the runner fails over on them:
  :class:`RemoteConnectionError` (refused, unknown host), :class:`RemoteHTTPError`
  (an HTTP error status; :class:`RemoteAuthError` for 401/403),
  :class:`RemoteTimeout` (silence beyond ``read_timeout`` or the tier's timeout),
  :class:`RemoteStreamError` (the connection dropped mid-answer, the answer was
  cut short: llama_cpp.server ends a running answer when another request arrives,
  unless started with ``--interrupt_requests False``; or the server sent a line, an
  event or an answer larger than :data:`MAX_SSE_LINE_BYTES`,
  :data:`MAX_SSE_EVENT_BYTES`, :data:`MAX_RESPONSE_BYTES`). A prompt longer
  than the server's context raises :class:`~magi.runtime.backend.PromptTooLongError`
  (not the model's fault: no circuit-breaker failure).
* **Deadlines over the whole request.** A generation's ``settings`` bound it as a
  local one is bounded: the first token by ``first_token_timeout_s`` (connecting and
  the first byte included), each later token by ``token_gap_timeout_s`` from the one
  before, everything by the budget ``timeout_s``; a missed one raises
  :class:`RemoteTimeout` naming it (``deadline``), and the runner keeps a usable
  partial answer. httpx's own read timeout is per read, so a server dripping a byte
  every half second would reset it for ever; here every socket operation of the
  request is given only what is left of the nearest deadline, which only a token
  moves (:class:`_DeadlineNetwork`), and the stream is split into
  lines here, from raw bytes, checking the deadline and the size caps on every
  chunk (a library line splitter buffers a line that never ends without bound).
  Probes and token counts get the same treatment with ``probe_timeout``.
* **Credentials** in the URL (``http://user:pass@host``) are sent as basic auth and
  never shown: messages, logs and traces show :func:`~magi.config.endpoints.redact_url`'s
  form, and httpx itself only ever sees the URL without them.
* **Memory**: none here. ``load()`` only opens the connection pool; reachability
  shows in the first request and in health probes.

One ``httpx.Client`` per backend keeps connections alive between requests and is
safe to share between threads (the pool admits up to ``max_concurrency`` requests
at once, and the health prober probes alongside).

Example:
    >>> from magi.runtime.backend import GenerationSettings, ModelSpec, RemoteSettings
    >>> spec = ModelSpec("lan_fast_a", remote=RemoteSettings(url="http://127.0.0.1:8081", model="tiny"))
    >>> backend = RemoteBackend(spec)
    >>> "".join(backend.stream("Hi", GenerationSettings(max_tokens=8)))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

from magi.config.endpoints import redact_url, split_credentials
from magi.conversation import Conversation, as_conversation
from magi.runtime.backend import (
    BackendError,
    GenerationSettings,
    GenerationTimeout,
    ModelSpec,
    PromptTooLongError,
    RemoteSettings,
)
from magi.runtime.templates import render_transcript

logger = logging.getLogger(__name__)

#: Token-count endpoints: (path, request field, how to read the answer).
TOKENIZE_ENDPOINTS: tuple[tuple[str, str, str], ...] = (
    ("/extras/tokenize/count", "input", "count"),  # llama_cpp.server
    ("/tokenize", "content", "tokens"),  # llama-server
)
CHARS_PER_TOKEN = 4.0
_COUNT_CACHE_SIZE = 256
_CONTEXT_ERROR = re.compile(r"context (length|size|window)|exceeds? the available context", re.I)

#: Longest line of an answer stream. A ``data:`` line carries one JSON chunk, well
#: under 1 KB per token even from verbose servers; a line past 1 MiB is a server
#: that never ends its line, and reading on would only grow memory.
MAX_SSE_LINE_BYTES = 1 << 20
#: Largest server-sent event (its ``data:`` lines together): 4 MiB.
MAX_SSE_EVENT_BYTES = 4 << 20
#: Largest response body: a whole answer stream, or a health, token-count or error
#: reply. 128 MiB is about 250,000 events of 500 bytes, more than any context window
#: lets a model answer; beyond it the server is streaming without end.
MAX_RESPONSE_BYTES = 128 << 20


class RemoteError(BackendError):
    """A remote model failed; the message names the model id and the server URL."""

    status_code = 502


class RemoteConnectionError(RemoteError):
    """The server could not be reached (refused, unknown host, connect timeout)."""

    status_code = 503


class RemoteHTTPError(RemoteError):
    """The server answered with an HTTP error status."""

    def __init__(self, message: str, *, http_status: int, url: str) -> None:
        super().__init__(message, details={"http_status": http_status, "url": url})
        self.http_status = http_status


class RemoteAuthError(RemoteHTTPError):
    """The server refused the API key (401/403), or the key's variable is unset."""


class RemoteTimeout(GenerationTimeout, RemoteError):
    """The server went silent for longer than allowed, or the tier's timeout ran out."""


class RemoteStreamError(RemoteError):
    """The answer stream broke off or was not valid server-sent events."""


def estimate_tokens(text: str) -> int:
    """About one token per 4 characters: the fallback when a server cannot tokenize."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN)) if text else 0


# -- one deadline over a whole request ------------------------------------------------------------
_DEADLINE: ContextVar[float | None] = ContextVar("magi_remote_deadline", default=None)


@contextmanager
def _until(deadline: float | None) -> Iterator[None]:
    """Socket operations in this block (this thread) end by ``deadline`` (monotonic).

    Set around each blocking call into httpx only, never across a ``yield``: the
    thread that consumes a paused stream may make other requests meanwhile.
    """
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _left(timeout: float | None, expired: type[httpcore.TimeoutException]) -> float | None:
    """``timeout`` cut to what is left of the current deadline; past it, ``expired``."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0.001:  # a socket timeout of 0 would mean non-blocking, not "expired"
        raise expired("the request's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the deadline of the request using it."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineNetwork(httpcore.NetworkBackend):
    """httpcore's network backend, with :class:`_DeadlineStream` connections.

    httpx's timeouts are per operation (a read that waits ``read`` seconds); this
    turns them into one deadline per request, whichever connection of the pool
    (new or kept alive) the request gets.
    """

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self.inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        stream = self.inner.connect_tcp(
            host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        stream = self.inner.connect_unix_socket(path, _left(timeout, httpcore.ConnectTimeout), socket_options)
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def _enforce_deadlines(client: httpx.Client) -> bool:
    """Give every connection pool of ``client`` (direct and proxied) deadline-bound
    connections. False when the direct transport is not httpx's own (a test's mock).

    httpx has no public hook for httpcore's ``network_backend``; its pools keep it
    in ``_network_backend`` (httpcore 1.x), read when a connection is made.
    """
    transports = [client._transport, *client._mounts.values()]  # noqa: SLF001 - see above
    patched = []
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        inner = getattr(pool, "_network_backend", None)
        if isinstance(inner, httpcore.NetworkBackend):
            if not isinstance(inner, _DeadlineNetwork):
                pool._network_backend = _DeadlineNetwork(inner)  # type: ignore[union-attr]  # noqa: SLF001
            patched.append(transport)
    return client._transport in patched  # noqa: SLF001


class _TooLarge(Exception):
    """A line, event or response passed its cap (the name of the cap's constant)."""

    def __init__(self, what: str, cap: str, limit: int) -> None:
        super().__init__(what)
        self.what, self.cap, self.limit = what, cap, limit


class _SSEDecoder:
    """Server-sent events from raw bytes, with every line and event size-capped.

    Lines end in CR LF, LF or CR (the SSE standard); a blank line ends an event.
    Only ``data`` fields matter here (comments such as ``: ping`` and ``event:``,
    ``id:``, ``retry:`` fields are skipped). Lines are decoded once complete, so a
    UTF-8 character split across chunks is never cut.
    """

    _LINE_END = re.compile(rb"\r\n|\r|\n")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._data: list[bytes] = []
        self._event_size = 0

    def feed(self, chunk: bytes) -> list[str]:
        """The data of every event that ``chunk`` completes."""
        scan_from = max(0, len(self._buffer) - 1)  # the buffer so far holds no line end, bar a CR
        self._buffer += chunk
        events: list[str] = []
        start = 0
        while (end := self._LINE_END.search(self._buffer, max(start, scan_from))) is not None:
            if end.group() == b"\r" and end.end() == len(self._buffer):
                break  # a CR LF may be split across chunks: wait for the next one
            self._line(bytes(self._buffer[start : end.start()]), events)
            start = end.end()
        del self._buffer[:start]
        if len(self._buffer) > MAX_SSE_LINE_BYTES:
            raise _TooLarge("a line of the answer stream", "MAX_SSE_LINE_BYTES", MAX_SSE_LINE_BYTES)
        return events

    def close(self) -> list[str]:
        """The stream ended: a last line without its line end, a last event without its blank line."""
        events: list[str] = []
        if self._buffer:
            self._line(bytes(self._buffer).removesuffix(b"\r"), events)
            self._buffer.clear()
        if self._data:
            events.append(self._dispatch())
        return events

    def _line(self, line: bytes, events: list[str]) -> None:
        if len(line) > MAX_SSE_LINE_BYTES:
            raise _TooLarge("a line of the answer stream", "MAX_SSE_LINE_BYTES", MAX_SSE_LINE_BYTES)
        if not line:
            if self._data:
                events.append(self._dispatch())
            return
        name, _, value = line.partition(b":")
        if name != b"data":
            return  # a comment (empty name), or a field other than data
        value = value.removeprefix(b" ")
        self._event_size += len(value) + 1
        if self._event_size > MAX_SSE_EVENT_BYTES:
            raise _TooLarge("an event of the answer stream", "MAX_SSE_EVENT_BYTES", MAX_SSE_EVENT_BYTES)
        self._data.append(value)

    def _dispatch(self) -> str:
        text = b"\n".join(self._data).decode("utf-8", errors="replace")
        self._data, self._event_size = [], 0
        return text


#: Sampling fields sent by their own names to every OpenAI-compatible server.
OPENAI_SAMPLING: tuple[str, ...] = (
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
)
#: llama.cpp's sampling fields beyond OpenAI's (llama.cpp's server and llama_cpp.server take
#: them), sent unless the endpoint sets ``llama_params: false``; the grammar goes as GBNF text.
LLAMA_SAMPLING: tuple[str, ...] = ("top_k", "min_p", "repeat_penalty")


class RemoteBackend:
    """A model on an OpenAI-compatible server, behind the :class:`~magi.runtime.backend.Backend` protocol.

    Args:
        spec: A spec with ``remote`` settings (see :func:`magi.runtime.resolve.remote_spec`).
        transport: An httpx transport to use instead of the network (tests).
    """

    def __init__(self, spec: ModelSpec, *, transport: httpx.BaseTransport | None = None) -> None:
        if spec.remote is None:
            raise ValueError(f"Model '{spec.model_id}' is not remote (its spec has no remote settings)")
        self.spec = spec
        self.remote: RemoteSettings = spec.remote
        #: The server's URL as it may be shown (credentials redacted).
        self.url = redact_url(spec.remote.url)
        self._base_url, credentials = split_credentials(spec.remote.url)
        self._auth = httpx.BasicAuth(*credentials) if credentials else None
        self._transport = transport
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._loaded = False
        self._health_path: str | None = None
        self._count_endpoint: tuple[str, str, str] | None = None
        self._count_missing = False
        self._counts: OrderedDict[str, int] = OrderedDict()

    def __repr__(self) -> str:
        return f"RemoteBackend({self.spec.model_id!r} at {self.url}, api={self.remote.api})"

    # -- the Backend protocol -------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        """The connection pool is open (a remote model holds no memory here)."""
        return self._loaded

    def load(self) -> None:
        """Open the connection pool. Reachability is checked lazily, by the first
        request (whose errors are as clear as a probe's) and by the health prober:
        probing here would cost a round trip and could stall outside the tier's timeout.

        Raises:
            RemoteAuthError: ``api_key_env`` names an unset environment variable.
        """
        if self._loaded:
            return
        self._get_client()
        self._loaded = True
        logger.info(
            "Remote model %s at %s (api %s, served model %r)",
            self.spec.model_id,
            self.url,
            self.remote.api,
            self.remote.model,
        )

    def close(self) -> None:
        """Close the connections; the next use opens new ones."""
        with self._lock:
            client, self._client = self._client, None
            self._loaded = False
        if client is not None:
            client.close()
            logger.info("Closed connections to %s (%s)", self.url, self.spec.model_id)

    def format_prompt(self, request: str | Conversation, settings: GenerationSettings) -> str:
        """The text a completions endpoint gets: the conversation's transcript (chat
        endpoints get the messages)."""
        return render_transcript(as_conversation(request), settings)

    def _texts(self, request: str | Conversation, settings: GenerationSettings) -> list[str]:
        """What the server tokenises for ``request``: each message's text (``api: chat``),
        or the transcript (``api: completions``)."""
        if self.remote.api == "chat":
            return [m.content for m in as_conversation(request).messages]
        return [self.format_prompt(request, settings)]

    def probe(self) -> None:
        """Raise unless the server's health endpoint answers with success.

        ``health_paths`` are tried in order (the last one that answered first); a 404
        or 405 means "not this server's endpoint" and tries the next one.
        """
        client = self._get_client()
        paths = list(self.remote.health_paths)
        if self._health_path in paths:
            paths.remove(self._health_path)
            paths.insert(0, self._health_path)
        missing: list[str] = []
        for path in paths:
            response = self._send(client, "GET", path)
            if response.status_code in (404, 405):
                missing.append(path)
                continue
            if response.status_code >= 400:
                raise self._http_error(response, path)
            self._health_path = path
            return
        raise RemoteHTTPError(
            f"{self._where()}: none of the health endpoints exists "
            f"({', '.join(missing)} answered 404). Check endpoints.{self.spec.model_id}.url: it must be "
            "the base URL of an OpenAI-compatible server (e.g. http://127.0.0.1:8080); or set "
            "health_paths to a path the server has.",
            http_status=404,
            url=self.url,
        )

    def count_prompt_tokens(self, request: str | Conversation, settings: GenerationSettings) -> int:
        """The request as the server gets it: the transcript for ``api: completions``; the
        messages' texts for ``api: chat`` (the server's chat template adds a few tokens
        MAGI cannot see). Each text is counted once and remembered, so a conversation's
        next turn asks the server only about its new messages."""
        return sum(self.count_tokens(text) for text in self._texts(request, settings))

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` by the server's tokenizer, else an estimate; never raises."""
        with self._lock:
            if text in self._counts:
                self._counts.move_to_end(text)
                return self._counts[text]
        count = self._count_on_server(text)
        if count is None:
            return estimate_tokens(text)
        with self._lock:
            self._counts[text] = count
            while len(self._counts) > _COUNT_CACHE_SIZE:
                self._counts.popitem(last=False)
        return count

    @property
    def exact_token_counts(self) -> bool | None:
        """True: the server tokenizes; False: counts are estimates; None: not known yet."""
        if self._count_endpoint is not None:
            return True
        return False if self._count_missing else None

    def stream(self, request: str | Conversation, settings: GenerationSettings) -> Iterator[str]:
        """Yield the answer to ``request`` (a conversation; a ``str`` is one user message)
        one content delta (one token) at a time, as the server streams it.

        The deadlines of ``settings`` bound every wait of the request: until the first
        token ``first_token_timeout_s`` (connecting, token counting and the server's
        prompt processing included), then ``token_gap_timeout_s`` from each token, and
        ``timeout_s`` over the whole request. Connecting, sending and every read get only
        what is left of the nearest one (and no single wait more than ``read_timeout``);
        bytes that are not tokens (keep-alive comments, a drip) do not move it. A missed
        deadline raises :class:`RemoteTimeout` whose ``deadline`` says which, as a local
        stall would end. Lines, events and the whole answer are capped
        (:data:`MAX_SSE_LINE_BYTES`, :data:`MAX_SSE_EVENT_BYTES`, :data:`MAX_RESPONSE_BYTES`).
        """
        client = self._require()
        started = time.monotonic()
        budget = started + settings.timeout_s if settings.timeout_s else None
        last_token_at: float | None = None

        def nearest() -> float | None:
            found = settings.next_deadline(started, last_token_at)
            return None if found is None else found[0]

        def overdue() -> bool:
            deadline = nearest()
            return deadline is not None and time.monotonic() > deadline

        chat = self.remote.api == "chat"
        conversation = as_conversation(request)
        self._check_fits(self._texts(conversation, settings), nearest())
        path = "/v1/chat/completions" if chat else "/v1/completions"
        body = self._body(conversation, settings, chat=chat)
        timeout = self._stream_timeout(budget, settings)
        pieces = 0
        response: httpx.Response | None = None
        try:
            with _until(nearest()):
                response = client.send(
                    client.build_request("POST", path, json=body, timeout=timeout), stream=True
                )
                if response.status_code >= 400:
                    raise self._http_error(self._buffered(response, path, nearest()), path)
            decoder = _SSEDecoder()
            chunks = response.iter_bytes()
            received = 0
            done = False
            finished = False  # a chunk said why the answer ended
            while not done:
                with _until(nearest()):
                    chunk = next(chunks, None)
                if chunk is None:
                    events = decoder.close()  # the last event may lack its blank line
                else:
                    received += len(chunk)
                    if received > MAX_RESPONSE_BYTES:
                        raise _TooLarge("the answer stream", "MAX_RESPONSE_BYTES", MAX_RESPONSE_BYTES)
                    events = decoder.feed(chunk)
                for event in events:
                    if overdue():
                        raise self._deadline_error(settings, pieces, started, last_token_at)
                    if event.strip() == "[DONE]":
                        done = True
                        break
                    piece, reason = self._piece(event, chat=chat)
                    finished = finished or reason is not None
                    if piece is not None:
                        pieces += 1
                        yield piece
                        last_token_at = time.monotonic()  # the gap runs while MAGI waits for the server
                if chunk is None:
                    break
                if overdue():
                    raise self._deadline_error(settings, pieces, started, last_token_at)
            if not done:
                if pieces == 0:
                    raise self._diagnose_empty_stream(client, path, body, nearest())
                raise self._incomplete_stream(pieces)
            if not finished:
                raise self._interrupted(pieces)
        except _TooLarge as exc:
            raise self._too_large(exc, pieces) from None
        except httpx.TimeoutException as exc:
            deadline = nearest()
            if deadline is not None and time.monotonic() >= deadline - 0.01:
                raise self._deadline_error(settings, pieces, started, last_token_at) from None
            raise self._timeout_error(exc, path, pieces) from None
        except httpx.TransportError as exc:
            raise self._transport_error(exc, path, pieces) from None
        except httpx.HTTPError as exc:  # e.g. a body that does not decode (bad gzip)
            raise RemoteStreamError(f"{self._where()}: unreadable answer from {path} ({exc})") from None
        except RuntimeError as exc:  # httpx: "the client has been closed" (closed meanwhile)
            raise RemoteError(f"{self._where()}: {exc}") from None
        finally:
            if response is not None:
                response.close()  # also when the caller stops reading: the connection is dropped

    # -- requests --------------------------------------------------------------------------
    def _get_client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                limit = self.remote.max_concurrency + 2  # + a probe and a token count
                client = httpx.Client(
                    base_url=self._base_url,  # without credentials: httpx logs and errors show it
                    auth=self._auth,
                    headers=self._headers(),
                    timeout=httpx.Timeout(
                        connect=self.remote.connect_timeout,
                        read=self.remote.read_timeout,
                        write=self.remote.read_timeout,
                        pool=self.remote.connect_timeout,
                    ),
                    limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
                    trust_env=self.remote.trust_env,
                    transport=self._transport,
                )
                if not _enforce_deadlines(client) and self._transport is None:
                    logger.warning(
                        "httpx %s keeps its connection pool elsewhere: %s's timeouts apply per read, "
                        "not to whole requests",
                        httpx.__version__,
                        self.spec.model_id,
                    )
                self._client = client
            return self._client

    def _require(self) -> httpx.Client:
        if not self._loaded:
            self.load()
        return self._get_client()

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "magi"}
        env = self.remote.api_key_env
        if env:
            key = os.environ.get(env)
            if not key:
                raise RemoteAuthError(
                    f"{self._where()}: the environment variable {env} "
                    f"(endpoints.{self.spec.model_id}.api_key_env) is not set; export the server's API "
                    "key in it, or set api_key_env to null for a server without a key.",
                    http_status=401,
                    url=self.url,
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _short_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=min(self.remote.connect_timeout, self.remote.probe_timeout),
            read=self.remote.probe_timeout,
            write=self.remote.probe_timeout,
            pool=self.remote.probe_timeout,
        )

    def _stream_timeout(self, deadline: float | None, settings: GenerationSettings) -> httpx.Timeout:
        """httpx's timeouts for a generation: ``read_timeout``, at most what is left of the
        budget ``deadline`` (the nearer stall deadlines bound each read through :func:`_until`)."""
        read = self.remote.read_timeout
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._deadline_error(settings, 0)
            read = min(read, left)
        return httpx.Timeout(
            connect=min(self.remote.connect_timeout, read),
            read=read,
            write=read,
            pool=read,  # waiting for a free connection counts against the timeout too
        )

    def _send(
        self, client: httpx.Client, method: str, path: str, *, deadline: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One non-streaming request (a probe, a token count), over within ``probe_timeout``
        (or by ``deadline``, if sooner) as a whole; transport problems become RemoteError
        subclasses. The body is read here, capped at :data:`MAX_RESPONSE_BYTES`."""
        start = time.monotonic()
        deadline = min(start + self.remote.probe_timeout, deadline or math.inf)
        try:
            with _until(deadline):
                request = client.build_request(method, path, timeout=self._short_timeout(), **kwargs)
                response = client.send(request, stream=True)
                try:
                    return self._buffered(response, path, deadline)
                finally:
                    response.close()
        except _TooLarge as exc:
            raise self._too_large(exc, None) from None
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout) and time.monotonic() < deadline - 0.01:
                raise self._timeout_error(exc, path, None) from None
            raise RemoteTimeout(
                f"{self._where()}: no complete reply to {path} within {deadline - start:.1f}s "
                f"(endpoints.{self.spec.model_id}.probe_timeout, or what was left of the request's "
                "timeout); the server is stuck or overloaded."
            ) from None
        except httpx.TransportError as exc:
            raise self._transport_error(exc, path, None) from None
        except httpx.HTTPError as exc:
            raise RemoteError(f"{self._where()}: unreadable reply from {path} ({exc})") from None
        except RuntimeError as exc:  # the client was closed by another thread
            raise RemoteError(f"{self._where()}: {exc}") from None

    def _buffered(self, response: httpx.Response, path: str, deadline: float | None) -> httpx.Response:
        """A streamed response read whole, at most :data:`MAX_RESPONSE_BYTES`, by ``deadline``."""
        data = bytearray()
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > MAX_RESPONSE_BYTES:
                raise _TooLarge(f"the reply to {path}", "MAX_RESPONSE_BYTES", MAX_RESPONSE_BYTES)
            if deadline is not None and time.monotonic() > deadline:
                raise httpx.ReadTimeout("the request's deadline has passed", request=response.request)
        # the bytes are decoded already: a Content-Encoding header would decode them twice
        skip = {"content-encoding", "content-length", "transfer-encoding"}
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in skip]
        return httpx.Response(
            response.status_code, headers=headers, content=bytes(data), request=response.request
        )

    def _body(
        self, request: str | Conversation, settings: GenerationSettings, *, chat: bool
    ) -> dict[str, Any]:
        """The request body: the conversation (``messages``, or the transcript as
        ``prompt``), the sampling fields an OpenAI-compatible server accepts
        (:data:`OPENAI_SAMPLING`), plus llama.cpp's own (:data:`LLAMA_SAMPLING`, the grammar
        as GBNF text) unless the endpoint sets ``llama_params: false``."""
        fields = settings.model_dump(include=set(OPENAI_SAMPLING))
        body: dict[str, Any] = {
            "model": self.remote.model,
            "stream": True,
            **fields,
            # None (unlimited) is sent as null: llama_cpp.server's completions default is 16
            "max_tokens": settings.max_tokens_or_none,
        }
        if settings.stop:
            body["stop"] = list(settings.stop)
        if settings.logit_bias is not None:  # JSON object keys are strings
            body["logit_bias"] = {str(k): v for k, v in settings.logit_bias.items()}
        else:
            body.pop("logit_bias", None)
        if self.remote.llama_params:
            body.update(settings.model_dump(include=set(LLAMA_SAMPLING)))
            grammar = settings.grammar_text()
            if grammar is not None:
                body["grammar"] = grammar
        conversation = as_conversation(request)
        if chat:
            body["messages"] = conversation.to_dicts()
        else:
            body["prompt"] = render_transcript(conversation, settings)
        return body

    def _piece(self, event: str, *, chat: bool) -> tuple[str | None, str | None]:
        """The token text of one event (None for events that carry none) and the
        finish reason it reports, if any."""
        try:
            chunk = json.loads(event)
        except json.JSONDecodeError:
            raise RemoteStreamError(
                f"{self._where()} sent an event that is not JSON: {event[:200]!r}"
            ) from None
        if not isinstance(chunk, dict):
            return None, None
        if chunk.get("error"):
            raise self._error_from_payload(chunk["error"], http_status=500, url=self.url)
        choices = chunk.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            return None, None  # e.g. a final usage-only chunk
        choice = choices[0]
        reason = choice.get("finish_reason")
        if chat:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            # the first chunk carries only the role, the last one only the finish reason
            return (content if isinstance(content, str) else None), reason
        text = choice.get("text")
        if not isinstance(text, str) or (text == "" and reason is not None):
            return None, reason  # the closing chunk that only reports why the answer ended
        return text, reason

    def _check_fits(self, texts: list[str], deadline: float | None = None) -> None:
        """With ``n_ctx`` configured, refuse a too-long prompt (``texts``: what the server
        tokenises, :meth:`_texts`) before sending it. Without, the server's own refusal is
        recognised (see :meth:`_diagnose_empty_stream`)."""
        n_ctx = self.remote.n_ctx
        if n_ctx is None:
            return
        counted = 0
        for text in texts:
            with self._lock:
                known = self._counts.get(text)
            count = known if known is not None else self._count_on_server(text, deadline)
            if count is None:
                return  # no tokenizer endpoint: let the server decide
            with self._lock:
                self._counts[text] = count
            counted += count
        if counted >= n_ctx:
            raise PromptTooLongError(
                f"The prompt has {counted} tokens but model '{self.spec.model_id}' at {self.url} "
                f"runs with n_ctx={n_ctx}; shorten the prompt or start the server with a larger "
                "context (llama_cpp.server --n_ctx, llama-server -c)."
            )

    def _count_on_server(self, text: str, deadline: float | None = None) -> int | None:
        if self._count_missing:
            return None
        client = self._get_client()
        candidates = [self._count_endpoint] if self._count_endpoint else list(TOKENIZE_ENDPOINTS)
        for endpoint in candidates:
            path, field, answer = endpoint
            try:
                response = self._send(
                    client, "POST", path, deadline=deadline, json={field: text, "model": self.remote.model}
                )
            except RemoteError as exc:
                logger.debug("Token count on %s failed (%s); estimating", self.url, exc)
                return None
            if response.status_code in (404, 405) and self._count_endpoint is None:
                continue
            if response.status_code >= 400:
                logger.debug("Token count on %s: HTTP %s; estimating", path, response.status_code)
                return None
            try:
                value = response.json()[answer]
                count = value if answer == "count" else len(value)
            except (ValueError, KeyError, TypeError):
                return None
            self._count_endpoint = endpoint
            return int(count)
        self._count_missing = True
        logger.info(
            "%s at %s has no tokenize endpoint; token counts are estimates (1 per %g characters)",
            self.spec.model_id,
            self.url,
            CHARS_PER_TOKEN,
        )
        return None

    # -- errors ---------------------------------------------------------------------------
    def _where(self) -> str:
        return f"Model '{self.spec.model_id}' at {self.url}"

    def _http_error(self, response: httpx.Response, path: str) -> RemoteError | PromptTooLongError:
        try:
            payload: Any = response.json()
        except ValueError:
            payload = response.text
        if isinstance(payload, dict) and "error" in payload:
            payload = payload["error"]
        return self._error_from_payload(
            payload, http_status=response.status_code, url=str(response.request.url), path=path
        )

    def _error_from_payload(
        self, payload: Any, *, http_status: int, url: str, path: str | None = None
    ) -> RemoteError | PromptTooLongError:
        if isinstance(payload, dict):
            message = str(payload.get("message") or payload.get("detail") or payload)
            code = str(payload.get("code") or payload.get("type") or "")
        else:
            message, code = str(payload), ""
        message = " ".join(message.split())[:300] or "(no message)"
        where = self._where()
        mid = self.spec.model_id
        if "context" in code or _CONTEXT_ERROR.search(message):
            return PromptTooLongError(
                f"{where} cannot take the prompt: {message} Shorten it, or give the server a larger "
                "context (llama_cpp.server --n_ctx, llama-server -c)."
            )
        if http_status in (401, 403):
            hint = (
                f"check the key in ${self.remote.api_key_env}"
                if self.remote.api_key_env
                else f"the server wants an API key: set endpoints.{mid}.api_key_env to the name of an "
                "environment variable holding it"
            )
            return RemoteAuthError(
                f"{where} refused the request (HTTP {http_status}: {message}); {hint}.",
                http_status=http_status,
                url=url,
            )
        if http_status == 404:
            return RemoteHTTPError(
                f"{where}: {url} does not exist (HTTP 404: {message}). endpoints.{mid}.url must be the "
                f"base URL of an OpenAI-compatible server (e.g. http://127.0.0.1:8080), and the server must "
                f"serve api '{self.remote.api}' ({path or 'the path'}).",
                http_status=http_status,
                url=url,
            )
        if http_status == 503:
            return RemoteHTTPError(
                f"{where} is not ready (HTTP 503: {message}); llama-server answers 503 while it loads "
                "the model or when every slot is busy.",
                http_status=http_status,
                url=url,
            )
        return RemoteHTTPError(
            f"{where} answered HTTP {http_status} for {path or url}: {message}",
            http_status=http_status,
            url=url,
        )

    def _transport_error(self, exc: httpx.TransportError, path: str, pieces: int | None) -> RemoteError:
        where = self._where()
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError):
            return RemoteConnectionError(
                f"{where}: cannot connect ({reason}). Is the server running and listening there? "
                f"Check endpoints.{self.spec.model_id}.url.",
                details={"url": self.url},
            )
        if pieces is not None:
            return RemoteStreamError(
                f"{where}: the connection broke off after {pieces} token(s) of the answer ({reason}); "
                "the server may have crashed or been stopped.",
                details={"url": self.url},
            )
        return RemoteConnectionError(f"{where}: request to {path} failed ({reason}).")

    def _timeout_error(self, exc: httpx.TimeoutException, path: str, pieces: int | None) -> RemoteError:
        where = self._where()
        if isinstance(exc, httpx.ConnectTimeout):
            return RemoteConnectionError(
                f"{where}: no connection within {self.remote.connect_timeout:g}s "
                f"(endpoints.{self.spec.model_id}.connect_timeout). Is the host up and the port open?"
            )
        if isinstance(exc, httpx.PoolTimeout):
            return RemoteTimeout(f"{where}: no free connection in time for {path}.")
        what = "the answer" if pieces is None else f"the next token (after {pieces})"
        return RemoteTimeout(
            f"{where}: no reply to {path} within the read timeout while waiting for {what}; the server "
            f"is stuck or overloaded (endpoints.{self.spec.model_id}.read_timeout, "
            f"{self.remote.read_timeout:g}s, or less when the tier's timeout is nearer)."
        )

    def _deadline_error(
        self,
        settings: GenerationSettings,
        pieces: int,
        started: float | None = None,
        last_token_at: float | None = None,
    ) -> RemoteTimeout:
        """The deadline that passed (the nearest one of the generation), as an error."""
        found = None if started is None else settings.next_deadline(started, last_token_at)
        kind = found[1] if found is not None else "budget"
        if kind == "budget":
            what = (
                f"the generation ran past its timeout of {settings.timeout_s or 0:.1f}s "
                "(the tier's expected_time_seconds x runtime.timeout_factor)"
            )
        else:
            what = f"stalled: {settings.describe_deadline(kind)}"
        return RemoteTimeout(
            f"{self._where()}: {what}, after {pieces} token(s).", deadline=kind, tokens=pieces
        )

    def _diagnose_empty_stream(
        self, client: httpx.Client, path: str, body: dict[str, Any], deadline: float | None = None
    ) -> RemoteError | PromptTooLongError:
        """A stream that closed before its first event carries no error message
        (llama_cpp.server fails that way on a prompt longer than its context). The same
        request without streaming, for one token, gets the server's real answer."""
        for _ in range(2):  # the server may drop the connection the broken stream was on
            try:
                response = self._send(
                    client, "POST", path, deadline=deadline, json={**body, "stream": False, "max_tokens": 1}
                )
            except RemoteError:
                continue
            if response.status_code >= 400:
                return self._http_error(response, path)
            break
        return self._incomplete_stream(0)

    def _too_large(self, exc: _TooLarge, pieces: int | None) -> RemoteStreamError:
        after = "" if pieces is None else f" after {pieces} token(s)"
        return RemoteStreamError(
            f"{self._where()}: {exc.what} passed {exc.cap} ({exc.limit:,} bytes){after}, so MAGI stopped "
            "reading; the server is misbehaving (a line that never ends, or an answer that never stops).",
            details={"url": self.url, "limit": exc.cap},
        )

    def _interrupted(self, pieces: int) -> RemoteStreamError:
        return RemoteStreamError(
            f"{self._where()}: the answer ended after {pieces} token(s) with [DONE] but without a finish "
            "reason, so it was cut short. llama_cpp.server does this to a running answer when another "
            "request arrives (its --interrupt_requests defaults to True): start it with "
            f"--interrupt_requests False, and keep endpoints.{self.spec.model_id}.max_concurrency at 1."
        )

    def _incomplete_stream(self, pieces: int) -> RemoteStreamError:
        where = self._where()
        if pieces == 0:
            return RemoteStreamError(
                f"{where} closed the answer stream before the first token, without an error message "
                "(the server may have crashed or been stopped)."
            )
        return RemoteStreamError(
            f"{where}: the answer stream ended after {pieces} token(s) without its final [DONE] event; "
            "the server may have crashed or been stopped."
        )
