"""HealthView: a live table of a server's or a Runner's models and its routing mix.

``HealthView("http://127.0.0.1:8080")`` watches a ``magi serve`` process: it reads
``GET /health/models`` (docs/SERVING.md), which has every figure shown. ``HealthView(runner)``
watches a :class:`~magi.runtime.runner.Runner` in this kernel: its :meth:`~Runner.status`
(the circuit breakers of its :class:`~magi.routing.health.HealthMonitor`, what is loaded)
and its :attr:`~Runner.figures` (:class:`~magi.runtime.figures.AnswerFigures`, the same
figures the server keeps). Both become one snapshot of the ``/health/models`` shape
(:func:`runner_health`), drawn by :func:`health_html`.

Per model: circuit (closed / open / half-open, in words and colour, with the time to the
next trial of an open one), loaded, requests (circuit verdicts), failures, in flight,
stages answered, p50 and p95 latency (waiting for the model included), tokens per second,
the last error. The routing mix: answered requests per profile and the tier that
answered, with each tier's share.

The view refreshes every ``interval`` seconds in a background thread (ipywidgets may be
updated from any thread); :meth:`HealthView.stop` or closing the widget ends it, and
:meth:`HealthView.refresh` reads once, now (what tests and scripts call). A server that
cannot be reached, refuses the key or answers something else is one line in the view's
status line; the last table read stays, marked as of when it was read.

Example:
    >>> from magi.widgets import HealthView
    >>> view = HealthView("http://127.0.0.1:8080")     # doctest: +SKIP
    >>> view                                            # doctest: +SKIP
    >>> view.stop()                                     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx
import ipywidgets as widgets

from magi.runtime.figures import model_health
from magi.runtime.runner import Runner
from magi.widgets.tables import CELL_STYLE, HEAD_STYLE, NUM_STYLE, TABLE_STYLE, esc

#: Seconds between two reads.
DEFAULT_INTERVAL = 3.0

#: Colour of each circuit state; the state is always written out too.
CIRCUIT_COLORS: dict[str, str] = {"closed": "#1a7f37", "half_open": "#9a6700", "open": "#cf222e"}

MODEL_COLUMNS = (
    "model",
    "tiers",
    "circuit",
    "loaded",
    "requests",
    "failures",
    "in flight",
    "answered",
    "p50",
    "p95",
    "tok/s",
    "last error",
)
_NUMERIC = {"requests", "failures", "in flight", "answered", "p50", "p95", "tok/s"}


def runner_health(runner: Runner) -> dict[str, Any]:
    """A Runner's snapshot in ``/health/models``' shape: ``profile``, ``models`` (each
    :func:`~magi.runtime.figures.model_health`), ``routing`` (answered requests per
    profile and tier)."""
    figures = runner.figures
    status = runner.status()
    models = {model_id: model_health(entry, figures.model(model_id)) for model_id, entry in status.items()}
    return {"profile": runner.profile.name, "models": models, "routing": figures.routing()}


def health_url(url: str) -> str:
    """The ``/health/models`` address of a server given as its root, its ``/v1`` base
    (what the ``openai`` client is given) or that address itself."""
    base = url.strip().rstrip("/")
    for suffix in ("/health/models", "/v1"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base + "/health/models"


class HealthReadError(Exception):
    """``/health/models`` could not be read (the message is the status line's)."""


def read_health(
    url: str, *, api_key: str | None = None, timeout: float = 5.0, client: httpx.Client | None = None
) -> dict[str, Any]:
    """``GET /health/models`` of the server at ``url`` (see :func:`health_url`), through
    ``client`` when given (a view keeps one: its connection is reused, ~3 ms a read on
    loopback against ~50 ms for a new one each time).

    Raises:
        HealthReadError: the server cannot be reached, answers an error (its message
            is given: a missing API key, ...) or something that is not the health JSON.
    """
    address = health_url(url)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        get = client.get if client is not None else httpx.get
        response = get(address, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise HealthReadError(f"Could not reach {address}: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        message = response.text[:200]
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            message = response.json()["error"]["message"]
        hint = " (pass api_key=...)" if response.status_code == 401 else ""
        raise HealthReadError(f"{address} answered {response.status_code}: {message}{hint}")
    try:
        data = response.json()
    except ValueError:
        raise HealthReadError(f"{address} did not answer JSON: is it a magi serve server?") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise HealthReadError(f"{address} answered JSON without 'models': is it a magi serve server?")
    return data


# -- HTML ------------------------------------------------------------------------------------
def _seconds(value: object) -> str:
    if not isinstance(value, int | float):
        return "–"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _rate(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else "–"


def circuit_text(entry: Mapping[str, Any]) -> str:
    """The circuit state in words: ``closed``, ``half-open``, ``open (3 failures, retry in 12 s)``."""
    state = str(entry.get("circuit") or "unknown")
    if state == "open":
        parts = []
        failures = entry.get("consecutive_failures")
        if failures:
            parts.append(f"{failures} failure{'s' if failures != 1 else ''}")
        retry = entry.get("retry_in_s")
        if isinstance(retry, int | float) and retry > 0:
            parts.append(f"retry in {retry:.0f} s")
        return "open" + (f" ({', '.join(parts)})" if parts else "")
    return state.replace("_", "-")


def _cell(column: str, text: str, extra: str = "") -> str:
    style = NUM_STYLE + ";white-space:nowrap" if column in _NUMERIC else CELL_STYLE
    if column == "last error":
        style += ";max-width:420px;overflow-wrap:anywhere"
    return f'<td style="{style}{extra}">{esc(text)}</td>'


def models_html(models: Mapping[str, Mapping[str, Any]]) -> str:
    """The models table: one row per model (``data-model``, ``data-circuit`` on each)."""
    head = "".join(f'<th scope="col" style="{HEAD_STYLE}">{esc(c)}</th>' for c in MODEL_COLUMNS)
    rows = []
    for model_id, entry in models.items():
        state = str(entry.get("circuit") or "unknown")
        color = CIRCUIT_COLORS.get(state, "#57606a")
        cells = [
            _cell("model", model_id),
            _cell("tiers", ", ".join(str(t) for t in entry.get("tiers") or []) or "–"),
            _cell("circuit", circuit_text(entry), f";color:{color};font-weight:600;white-space:nowrap"),
            _cell("loaded", "yes" if entry.get("loaded") else "no"),
            _cell("requests", str(entry.get("requests", 0))),
            _cell("failures", str(entry.get("failures", 0))),
            _cell("in flight", str(entry.get("in_flight", 0))),
            _cell("answered", str(entry.get("answered", 0))),
            _cell("p50", _seconds(entry.get("p50_latency_s"))),
            _cell("p95", _seconds(entry.get("p95_latency_s"))),
            _cell("tok/s", _rate(entry.get("tokens_per_s"))),
            _cell("last error", str(entry.get("last_error") or "")),
        ]
        rows.append(
            f'<tr class="magi-health-model" data-model="{esc(model_id)}" data-circuit="{esc(state)}">'
            + "".join(cells)
            + "</tr>"
        )
    if not rows:
        rows.append(f'<tr><td colspan="{len(MODEL_COLUMNS)}" style="{CELL_STYLE}">No models.</td></tr>')
    return (
        f'<table class="magi-table magi-health-table" style="{TABLE_STYLE}">'
        '<caption style="text-align:left;font-weight:600;padding:2px 0">Models</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def routing_html(routing: Mapping[str, Mapping[str, int]]) -> str:
    """The routing mix: per profile, each tier's answered requests and share (with a bar)."""
    if not any(routing.values()):
        return '<div class="magi-health-routing" style="color:#57606a">Routing mix: no answers yet.</div>'
    columns = ("profile", "tier", "requests", "share")
    head = "".join(f'<th scope="col" style="{HEAD_STYLE}">{esc(c)}</th>' for c in columns)
    rows = []
    for profile, tiers in routing.items():
        total = sum(tiers.values())
        for tier, count in sorted(tiers.items(), key=lambda kv: -kv[1]):
            share = count / total if total else 0.0
            bar = (
                f'<span style="display:inline-block;width:{share * 80:.0f}px;height:8px;'
                f'background:#0969da;margin-right:6px" aria-hidden="true"></span>'
            )
            rows.append(
                f'<tr class="magi-health-tier" data-profile="{esc(profile)}" data-tier="{esc(tier)}">'
                f'<td style="{CELL_STYLE}">{esc(profile)}</td><td style="{CELL_STYLE}">{esc(tier)}</td>'
                f'<td style="{NUM_STYLE}">{count}</td><td style="{CELL_STYLE}">{bar}{share:.0%}</td></tr>'
            )
    return (
        f'<table class="magi-table magi-health-routing" style="{TABLE_STYLE}">'
        '<caption style="text-align:left;font-weight:600;padding:2px 0;white-space:nowrap">'
        "Routing mix (answered requests by the tier that answered)</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def health_html(snapshot: Mapping[str, Any]) -> str:
    """A snapshot (``/health/models``' shape) as the models table and the routing mix."""
    return models_html(snapshot.get("models") or {}) + routing_html(snapshot.get("routing") or {})


# -- the widget ------------------------------------------------------------------------------
class HealthView(widgets.VBox):
    """Models and routing mix of a ``magi serve`` URL or a local Runner, refreshed live.

    Args:
        source: The server's address (``http://127.0.0.1:8080``, or its ``/v1`` base),
            or a :class:`~magi.runtime.runner.Runner`.
        interval: Seconds between two reads in the background.
        api_key: The server's API key, when it has keys (sent as a bearer token, never shown).
        timeout: Seconds one read of the server may take.
        autostart: Start refreshing in the background at once (``False``: call
            :meth:`refresh` or :meth:`start`).

    Children worth reading: ``status`` (the status line, an HTML widget: when it was
    read, or the error), ``table`` (models and routing mix); :attr:`snapshot` is the last
    data read (None before the first), :attr:`error` the last read's error (None when
    it worked).
    """

    def __init__(
        self,
        source: str | Runner,
        *,
        interval: float = DEFAULT_INTERVAL,
        api_key: str | None = None,
        timeout: float = 5.0,
        autostart: bool = True,
    ) -> None:
        if not isinstance(source, str | Runner):
            raise TypeError(f"HealthView watches a server URL or a Runner, not {type(source).__name__}.")
        if interval <= 0:
            raise ValueError(f"interval must be positive seconds (got {interval!r}).")
        self.source = source
        self.interval = float(interval)
        self.timeout = float(timeout)
        self._api_key = api_key
        self.snapshot: dict[str, Any] | None = None
        self.error: str | None = None
        self.read_at: float | None = None  # time.time() of the last good read
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = httpx.Client() if isinstance(source, str) else None
        self.status = widgets.HTML()
        self.status.add_class("magi-health-status")
        self.table = widgets.HTML()
        self.table.add_class("magi-health-tables")
        super().__init__(children=[self.status, self.table])
        self.add_class("magi-health")
        with contextlib.suppress(AttributeError):  # the frontend closed the widget: stop too
            self.comm.on_close(lambda _msg: self._stop.set())
        if autostart:
            self.start()
        with self._lock:  # the first read may have drawn already: drawing is idempotent
            self._draw()

    @property
    def where(self) -> str:
        """What is watched, for the status line."""
        if isinstance(self.source, Runner):
            return "a Runner in this kernel"
        return health_url(self.source)

    def read(self) -> dict[str, Any]:
        """One snapshot from the source (raises :class:`HealthReadError` for a server)."""
        if isinstance(self.source, Runner):
            return runner_health(self.source)
        return read_health(self.source, api_key=self._api_key, timeout=self.timeout, client=self._client)

    def refresh(self) -> dict[str, Any] | None:
        """Read now and redraw; returns the snapshot, or None when the read failed (the
        error is in the status line and :attr:`error`, the last table stays)."""
        with self._lock:
            try:
                snapshot = self.read()
            except HealthReadError as exc:
                self.error = str(exc)
            except Exception as exc:  # noqa: BLE001 - the view must keep running; the line says why
                self.error = f"Could not read {self.where}: {type(exc).__name__}: {exc}"
            else:
                self.snapshot, self.error, self.read_at = snapshot, None, time.time()
            self._draw()
            return None if self.error else self.snapshot

    # -- the background refresh ------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether the background refresh is on."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Refresh every :attr:`interval` seconds in a background thread (until :meth:`stop`)."""
        if self.running:
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, args=(self._stop,), name="magi-health-view", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """End the background refresh (waits for a read under way, up to ``timeout``)."""
        if not hasattr(self, "_stop"):  # __init__ refused its arguments: nothing started
            return
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.timeout + 1 if timeout is None else timeout)
        with self._lock:
            self._draw()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set() and self.comm is not None:
            self.refresh()
            stop.wait(self.interval)

    def close(self) -> None:
        """Stop refreshing and close the widget (and its connection to the server)."""
        self.stop()
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()
        for child in list(self.children):
            child.close()
        super().close()

    # -- drawing ----------------------------------------------------------------------------------
    def _draw(self) -> None:
        if self.comm is None:  # closed
            return
        where = esc(self.where)
        refresh = f"every {self.interval:g} s" if self.running and not self._stop.is_set() else "stopped"
        if self.error is not None:
            since = (
                f" Showing what was read at {time.strftime('%H:%M:%S', time.localtime(self.read_at))}."
                if self.read_at is not None
                else ""
            )
            line = (
                f'<div class="magi-health-line" data-state="error" role="alert" style="color:#cf222e">'
                f"✗ {esc(self.error.rstrip('.'))}.{esc(since)} "
                f'<span style="color:#57606a">(refresh: {refresh})</span></div>'
            )
        elif self.snapshot is None:
            line = (
                f'<div class="magi-health-line" data-state="waiting" style="color:#57606a">'
                f"Watching {where}: not read yet (refresh: {refresh}).</div>"
            )
        else:
            stamp = time.strftime("%H:%M:%S", time.localtime(self.read_at))
            profile = esc(self.snapshot.get("profile", ""))
            line = (
                f'<div class="magi-health-line" data-state="ok"><b>Health</b> of {where}, profile '
                f'<code>{profile}</code>: read at {stamp} <span style="color:#57606a">'
                f"(refresh: {refresh})</span></div>"
            )
        self.status.value = line
        if self.snapshot is not None:
            self.table.value = health_html(self.snapshot)
