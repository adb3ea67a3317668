"""The ASGI app of ``magi serve``: the OpenAI API in front of a profile's Runner.

Routes (docs/SERVING.md):

* ``POST /v1/chat/completions`` and ``POST /v1/completions``, streamed (SSE, ending
  ``data: [DONE]``) or not. ``model`` is ``auto`` (the served profile), ``magi/<profile>``
  (any profile of the config folder, composed with the server's overrides on first use),
  or a model id of the registry or the endpoints (that model alone: no routing, no fallback).
  Sampling fields map onto the models' settings for that request (``Runner.stream``'s
  ``sampling``). Every answer carries its routing trace in a ``magi`` field and in
  ``x-magi-*`` headers.
* ``GET /v1/models``, ``GET /v1/models/{id}``: what ``model`` may name.
* ``GET /health`` (liveness, never needs a key), ``GET /health/models`` (per model:
  loaded, circuit, last error, requests, p50 latency), ``GET /metrics`` (Prometheus).

Errors have OpenAI's body (:mod:`magi.serve.errors`). Answers run on worker threads
(llama.cpp blocks), reused from one request to the next; a client that goes away
cancels its answer (:meth:`~magi.runtime.runner.AnswerStream.cancel`), which frees the
model at its next token. At most ``task.max_queue`` requests are admitted at once (answering or waiting
for a model); more get 429 at once rather than waiting unseen.

Example:
    >>> import magi                                                     # doctest: +SKIP
    >>> from magi.serve import MagiServer, create_app                   # doctest: +SKIP
    >>> app = create_app(MagiServer(magi.compose("demo", ["task=serve"])))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import queue
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from magi.config.app import MagiConfig
from magi.config.model_settings import SamplingSettings
from magi.config.task import ServeTaskConfig
from magi.conversation import Conversation, to_conversation
from magi.errors import MAGIException, did_you_mean, format_options
from magi.routing.router import conversation_score
from magi.runtime.backend import ModelSpec
from magi.runtime.figures import model_health
from magi.runtime.pool import ModelPool
from magi.runtime.runner import AnswerStream, Runner, StreamEvent
from magi.runtime.trace import RunResult
from magi.serve.errors import ServeError, error_body, exception_body, status_of
from magi.serve.keys import APIKeys
from magi.serve.metrics import CONTENT_TYPE, ServeMetrics

logger = logging.getLogger(__name__)

#: The routes that answer (their requests are counted in /metrics, refused ones too).
GENERATION_ROUTES = ("/v1/chat/completions", "/v1/completions")
#: ``model`` values that mean the served profile.
AUTO_NAMES = ("auto", "magi/auto", "magi")
PROFILE_PREFIX = "magi/"


# -- requests ------------------------------------------------------------------------------
#: Request fields MAGI refuses when set (to a value other than these), with why.
UNSUPPORTED: dict[str, tuple[tuple[object, ...], str]] = {
    "tools": ((None, []), "tool calls are not supported"),
    "functions": ((None, []), "function calls are not supported"),
    "logprobs": ((None, False, 0), "log probabilities are not returned"),
    "top_logprobs": ((None, 0), "log probabilities are not returned"),
    "echo": ((None, False), "echo is not supported"),
    "best_of": ((None, 1), "best_of is not supported"),
    "suffix": ((None, ""), "suffix (insertion) is not supported"),
}


class _GenerationRequest(BaseModel):
    """Fields both endpoints share. Unknown fields are accepted and ignored (clients send
    many), except the ones MAGI cannot honour, which are refused by name (422)."""

    model_config = ConfigDict(extra="allow")

    model: str = "auto"
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repeat_penalty: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    n: int | None = Field(default=None, ge=1)
    user: str | None = None

    def check_supported(self) -> None:
        """Refuse what MAGI would silently get wrong: several choices, tools, log probabilities."""
        if self.n not in (None, 1):
            raise ServeError("Only n=1 is supported (one answer per request).", status_code=422, param="n")
        extra = self.model_extra or {}
        for name, (allowed, why) in UNSUPPORTED.items():
            if name in extra and extra[name] not in allowed:
                raise ServeError(f"'{name}': {why} by MAGI.", status_code=422, param=name)

    def sampling(self) -> dict[str, object]:
        """The request's sampling fields as MAGI's settings (:class:`SamplingSettings`
        names), checked by its rules; only the fields the client set."""
        fields: dict[str, object] = {}
        for name in (
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "repeat_penalty",
            "seed",
            "presence_penalty",
            "frequency_penalty",
        ):
            value = getattr(self, name)
            if value is not None:
                fields[name] = value
        max_tokens = (self.model_extra or {}).get("max_completion_tokens", self.max_tokens)
        if max_tokens is not None:
            fields["max_tokens"] = max_tokens
        if self.stop is not None:
            fields["stop"] = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if self.logit_bias is not None:
            try:
                fields["logit_bias"] = {int(token): bias for token, bias in self.logit_bias.items()}
            except ValueError:
                raise ServeError(
                    "logit_bias keys are token ids (integers as strings).",
                    status_code=422,
                    param="logit_bias",
                ) from None
        try:
            checked = SamplingSettings.model_validate(fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"]) or None
            raise ServeError(f"{param}: {first['msg']}", status_code=422, param=param) from None
        return {name: getattr(checked, name) for name in fields}

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ChatCompletionRequest(_GenerationRequest):
    """``POST /v1/chat/completions``."""

    messages: list[dict[str, Any]]

    def conversation(self) -> Conversation:
        """The messages as a checked conversation: text parts of a content list joined,
        role ``developer`` read as ``system``; anything else is the conversation check's
        (:func:`~magi.conversation.to_conversation`: 422 naming the message index)."""
        messages = []
        for i, message in enumerate(self.messages):
            item = dict(message)
            if item.get("role") == "developer":
                item["role"] = "system"
            content = item.get("content")
            if isinstance(content, list):
                texts = []
                for j, part in enumerate(content):
                    if not isinstance(part, Mapping) or part.get("type") != "text":
                        kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                        raise ServeError(
                            f"messages[{i}].content[{j}]: only text parts are supported (got {kind!r}).",
                            status_code=422,
                            param=f"messages[{i}].content",
                        )
                    texts.append(part.get("text"))
                item["content"] = "\n".join(str(t) for t in texts)
            messages.append({"role": item.get("role"), "content": item.get("content")})
        return _checked(messages, "messages", "The messages")


class CompletionRequest(_GenerationRequest):
    """``POST /v1/completions``: ``prompt`` is answered as one user message."""

    prompt: str | list[str]

    def conversation(self) -> Conversation:
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ServeError(
                    f"prompt: one prompt per request (got a list of {len(prompt)}).",
                    status_code=422,
                    param="prompt",
                )
            prompt = prompt[0]
        return _checked(prompt, "prompt", "The prompt")


def _checked(request: Any, field: str, what: str) -> Conversation:
    """:func:`~magi.conversation.to_conversation`'s check; an error that names no message
    (an empty list, say) names the field."""
    try:
        return to_conversation(request, what=what)
    except MAGIException as exc:
        if exc.details.get("index") is not None:
            raise
        raise ServeError(str(exc), status_code=exc.status_code or 422, param=field) from None


_Request = TypeVar("_Request", bound=_GenerationRequest)
#: A profile that can be served: its config, model specs and tier members.
_Resolved = tuple[MagiConfig, dict[str, ModelSpec], dict[str, list[str]]]


# -- the server's state --------------------------------------------------------------------
@dataclass
class Target:
    """What a request's ``model`` names: the runner that answers it and the name echoed."""

    runner: Runner
    name: str


class _Workers:
    """Daemon threads that run answers (llama.cpp blocks), kept for the next one: a thread is
    started only when every one is busy, so a request does not wait for a new thread to be
    scheduled, and the event loop never waits for one to start."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1  # that idle thread takes this job
        self._jobs.put(job)
        if spawn:
            threading.Thread(target=self._work, name="magi-serve-answer", daemon=True).start()

    def _work(self) -> None:
        while True:
            self._jobs.get()()  # a job never raises (_Answer.run catches everything)
            with self._lock:
                self._idle += 1


class _Answer:
    """One answer running on a worker thread; its events are handed to the event loop.

    The thread iterates :meth:`Runner.stream` and appends what the request reads to a
    deque; the loop is woken once for what has piled up since it last read (one
    ``call_soon_threadsafe``, not one per token). A request that is not streamed reads
    only the end (``tokens=False``), so its loop is not woken per token while the model
    writes. ``on_end`` runs in the thread when it is over (result or error), so metrics
    and the queue slot never depend on the client still listening. :meth:`cancel` ends
    the answer at its next token; :meth:`gone` (the client went away) also wakes the
    reader, whose :meth:`next` then returns ``("gone", None)``.
    """

    def __init__(
        self,
        stream: AnswerStream,
        loop: asyncio.AbstractEventLoop,
        on_end: Callable[[RunResult | None, BaseException | None], None],
        *,
        tokens: bool = True,
    ) -> None:
        self.stream = stream
        self._loop = loop
        self._on_end = on_end
        self._tokens = tokens
        self._items: collections.deque[tuple[str, Any]] = collections.deque()
        self._lock = threading.Lock()
        self._woken = False  # a wake-up is scheduled on the loop already
        self._waiter: asyncio.Future[bool] | None = None
        self._gone = False
        self.finished = threading.Event()

    def _put(self, item: tuple[str, Any]) -> None:
        with self._lock:
            self._items.append(item)
            if self._woken:
                return
            self._woken = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        """(In the loop.) Wake the reader waiting in :meth:`next`."""
        with self._lock:
            self._woken = False
        if self._waiter is not None:
            _resolve(self._waiter, True)

    def run(self) -> None:
        result: RunResult | None = None
        error: BaseException | None = None
        try:
            for event in self.stream:
                if event.kind == "done":
                    result = event.result
                    self._put(("event", event))
                elif self._tokens:
                    self._put(("event", event))
        except BaseException as exc:  # noqa: BLE001 - handed to the request, which answers it
            error = exc
            self._put(("error", exc))
        else:
            self._put(("end", None))
        finally:
            try:
                self._on_end(result, error)
            except Exception:  # noqa: BLE001 - bookkeeping must not kill the thread silently
                logger.exception("bookkeeping after an answer failed")
            self.finished.set()

    async def next(self, timeout: float | None = None) -> tuple[str, Any]:
        """The next ``("event", StreamEvent)``, ``("error", exc)`` or ``("end", None)``;
        ``("gone", None)`` once :meth:`gone` was called; ``("idle", None)`` when nothing
        came for ``timeout`` seconds."""
        while True:
            if self._gone:
                return ("gone", None)
            with self._lock:
                if self._items:
                    return self._items.popleft()
            waiter = self._waiter = self._loop.create_future()
            timer = None
            if timeout is not None:
                timer = self._loop.call_later(timeout, _resolve, waiter, False)
            try:
                woken = await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if not woken and not self._items and not self._gone:
                return ("idle", None)

    def gone(self) -> None:
        """(In the loop.) The client went away: stop the answer, wake the reader."""
        self._gone = True
        self.cancel()
        if self._waiter is not None:
            _resolve(self._waiter, True)

    def cancel(self) -> None:
        self.stream.cancel()


def _resolve(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


class MagiServer:
    """The server's state: the served profile's Runner, others made on demand, one pool.

    Args:
        config: The served config (``task`` a :class:`ServeTaskConfig`, else its defaults).
        keys: API keys (default: :meth:`APIKeys.load` from ``MAGI_API_KEYS`` and
            ``task.api_keys_file``).
        profile_key: The served profile's name in the config folder (``demo``); default:
            its name normalised (``Fast Only`` -> ``fast-only``).
        overrides: Overrides applied to other profiles composed for ``magi/<profile>``
            (those of ``profile.*`` and ``task``, which belong to the served one, are left out).
        conf_dir: The config folder those are composed from.
        pool: The model pool every runner shares; default: the server's own, closed by
            :meth:`close`.
    """

    def __init__(
        self,
        config: MagiConfig,
        *,
        keys: APIKeys | None = None,
        profile_key: str | None = None,
        overrides: Sequence[str] = (),
        conf_dir: str | Path | None = None,
        pool: ModelPool | None = None,
    ) -> None:
        from magi.profiles.manager import normalize_profile_name

        self.config = config
        self.options = config.task if isinstance(config.task, ServeTaskConfig) else ServeTaskConfig()
        self.keys = keys if keys is not None else APIKeys.load(self.options.api_keys_file)
        self.profile_key = profile_key or normalize_profile_name(config.profile.name)
        self.overrides = [o for o in overrides if not _served_only(o)]
        self.conf_dir = conf_dir
        self._owns_pool = pool is None
        self.pool = pool if pool is not None else ModelPool()
        self.runner = Runner(config, pool=self.pool)
        self._profiles: dict[str, Runner] = {}
        #: Per profile: its config and resolved models, or why it cannot be served.
        self._profile_checks: dict[str, _Resolved | str] = {}
        self._models: dict[str, Runner] = {}
        self._registry_specs: dict[str, tuple[ModelSpec, str]] | None = None
        self._lock = threading.Lock()
        self._admitted = 0
        self._answers: set[_Answer] = set()
        self._workers = _Workers()
        self.closing = False
        self.draining = False  # SIGTERM came: no new answers, the running ones get the grace period
        self.metrics = ServeMetrics(
            self._circuits, lambda: self.pool.stats, queue_limit=self.options.max_queue
        )

    # -- what ``model`` names ---------------------------------------------------------
    def profile_names(self) -> list[str]:
        """The profiles a request may name (``magi/<name>``): the served one first, then
        each of the config folder that can be served (:meth:`unservable`)."""
        return [n for n in self._all_profiles() if self.unservable(n) is None]

    def _all_profiles(self) -> list[str]:
        from magi.config.compose import list_profiles

        try:
            names = list_profiles(self.conf_dir)
        except Exception:  # noqa: BLE001 - listing must not fail the models route
            names = []
        return [self.profile_key, *(n for n in names if n != self.profile_key)]

    def unservable(self, key: str) -> str | None:
        """Why profile ``key`` cannot be served, or None when it can: composed with the
        server's overrides, its models resolve (each is in the registry or the endpoints,
        as a :class:`Runner` needs them). Checked once per profile."""
        if key == self.profile_key:
            return None
        with self._lock:
            known = self._profile_checks.get(key)
        if known is None:
            from magi.config.compose import compose
            from magi.runtime.resolve import resolve_models

            try:
                config = compose(key, self.overrides, conf_dir=self.conf_dir)
                known = (config, *resolve_models(config))
            except Exception as exc:  # noqa: BLE001 - any reason is shown, never raised
                known = str(exc) or type(exc).__name__
            with self._lock:
                self._profile_checks.setdefault(key, known)
        return known if isinstance(known, str) else None

    async def target_async(self, model: str) -> Target:
        """:meth:`target` off the event loop when it may compose profiles (first use)."""
        served = (f"{PROFILE_PREFIX}{self.profile_key}", self.profile_key)
        if model in AUTO_NAMES or model in served or model in self.runner.specs or model in self._models:
            return self.target(model)
        return await asyncio.to_thread(self.target, model)

    def target(self, model: str) -> Target:
        """The runner for a request's ``model`` (see the module docstring).

        Raises:
            ServeError: ``model`` names no profile or model (404; lists what it may be).
        """
        served = f"{PROFILE_PREFIX}{self.profile_key}"
        if model in AUTO_NAMES or model in (served, self.profile_key):
            return Target(self.runner, served)
        if model in self.runner.specs or model in self.model_ids():
            return Target(self._model_runner(model), model)
        if model.startswith(PROFILE_PREFIX):
            key = model[len(PROFILE_PREFIX) :]
            if key in self._all_profiles():
                why = self.unservable(key)
                if why is None:
                    return Target(self._profile_runner(key), model)
                raise ServeError(
                    f"{model} cannot be served: {why}\nAvailable: {format_options(self._options())}",
                    status_code=404,
                    param="model",
                )
        options = self._options()
        raise ServeError(
            f"Model {model!r} not found.{did_you_mean(model, options)} Available: {format_options(options)}",
            status_code=404,
            param="model",
        )

    def _options(self) -> list[str]:
        """What ``model`` may be, for messages."""
        return ["auto", *(f"{PROFILE_PREFIX}{n}" for n in self.profile_names()), *self.model_ids()]

    def model_ids(self) -> list[str]:
        """Every model a request may name alone: the served profile's, then the others of
        the registry and the endpoints (read once, when first asked)."""
        with self._lock:
            if self._registry_specs is None:
                self._registry_specs = self._other_specs()
            return [*self.runner.specs, *self._registry_specs]

    def _other_specs(self) -> dict[str, tuple[ModelSpec, str]]:
        """Spec and registry tier of each model outside the served profile."""
        from magi.runtime.resolve import load_registry, model_spec, remote_spec

        config = self.runner.config
        others: dict[str, tuple[ModelSpec, str]] = {}
        try:
            registry = load_registry(config)
        except MAGIException as exc:  # the served profile's models still work
            logger.warning("The registry could not be read for model ids: %s", exc)
            return others
        for entry in registry.models.values():
            if entry.id not in self.runner.specs and entry.id not in config.endpoints:
                others[entry.id] = (model_spec(entry, config.runtime), entry.tier)
        for model_id, endpoint in config.endpoints.items():
            if model_id not in self.runner.specs:
                others[model_id] = (remote_spec(model_id, endpoint, config.runtime), endpoint.tier)
        return others

    def _profile_runner(self, key: str) -> Runner:
        with self._lock:
            runner = self._profiles.get(key)
            if runner is None:
                checked = self._profile_checks[key]  # unservable(key) was None
                assert not isinstance(checked, str)
                config, specs, members = checked
                runner = Runner(config, specs=specs, tier_members=members, pool=self.pool)
                self._profiles[key] = runner
            return runner

    def _model_runner(self, model_id: str) -> Runner:
        """A runner of ``model_id`` alone: a one-tier profile made in memory from the served
        one (the time budget of the model's tier there, else of its last tier; no two-stage,
        no balancing), on the shared pool."""
        from magi.config.profile import LoadBalancingConfig, TierConfig, TwoStageConfig

        with self._lock:
            runner = self._models.get(model_id)
            if runner is not None:
                return runner
            served = self.runner
            if model_id in served.specs:
                spec, tiers = served.specs[model_id], served.tiers_of(model_id)
                tier = tiers[0] if tiers else served.profile.tier_config[-1].name
            else:
                assert self._registry_specs is not None  # model_ids() read them
                spec, tier = self._registry_specs[model_id]
            known = {t.name: t for t in served.profile.tier_config}
            expected = (known.get(tier) or served.profile.tier_config[-1]).expected_time_seconds
            profile = served.profile.model_copy(
                update={
                    "name": model_id,
                    "description": f"{model_id} alone (magi serve)",
                    "enabled_models": [model_id],
                    "tier_config": [
                        TierConfig(name=tier, max_score=math.inf, expected_time_seconds=expected)
                    ],
                    "two_stage": TwoStageConfig(enabled=False),
                    "load_balancing": LoadBalancingConfig(enabled=False),
                    "model_tiers": {model_id: tier},
                }
            )
            config = served.config.model_copy(update={"profile": profile})
            runner = Runner(
                config,
                specs={model_id: spec},
                tier_members={tier: [model_id]},
                pool=self.pool,
                start_health_checks=False,
            )
            self._models[model_id] = runner
            return runner

    # -- admission ------------------------------------------------------------------------
    def admit(self) -> None:
        """Take a place in the bounded queue, or refuse the request (429)."""
        with self._lock:
            if self.closing or self.draining:
                raise ServeError("The server is shutting down.", status_code=503, code="shutting_down")
            if self._admitted >= self.options.max_queue:
                raise ServeError(
                    f"Too many requests: {self._admitted} are being answered or waiting for a model "
                    f"(task.max_queue={self.options.max_queue}). Retry shortly.",
                    status_code=429,
                )
            self._admitted += 1
            self.metrics.in_flight.set(self._admitted)

    def release(self) -> None:
        with self._lock:
            self._admitted -= 1
            self.metrics.in_flight.set(self._admitted)

    def start(
        self,
        target: Target,
        conversation: Conversation,
        sampling: Mapping[str, object],
        *,
        tokens: bool = True,
    ) -> _Answer:
        """Start answering on a worker thread (the caller holds a queue place; it is
        released when the answer ends). ``tokens=False``: only the end is handed over."""
        stream = target.runner.stream(conversation, sampling=sampling)
        profile = target.runner.profile.name

        def on_end(result: RunResult | None, error: BaseException | None) -> None:
            try:
                if result is not None:
                    self.metrics.observe(result)
                elif error is not None:
                    self.metrics.observe_error(profile, status_of(error))
            finally:
                with self._lock:
                    self._answers.discard(answer)
                self.release()

        answer = _Answer(stream, asyncio.get_running_loop(), on_end, tokens=tokens)
        with self._lock:
            self._answers.add(answer)
        self._workers.submit(answer.run)
        return answer

    # -- status ---------------------------------------------------------------------------
    def models_health(self) -> dict[str, Any]:
        """``/health/models``: each model of the served profile, then any other a request
        named (``model: <id>`` or ``magi/<profile>``), with whether it is loaded, its
        circuit and last error, and across every runner that has it: requests (circuit
        verdicts), failures and in flight; plus this server's answered stages on it with
        their p50 and p95 latency (seconds, waiting for the model included) and tokens per
        second; ``routing``: answered requests per profile and tier (the one that answered).

        Each runner keeps its own circuit per model: ``circuit`` and ``last_error`` are the
        served profile's for its models, else those of the first runner that has the model;
        ``circuits`` lists every runner's (by profile name) when there are several."""
        with self._lock:
            runners = [self.runner, *self._profiles.values(), *self._models.values()]
        models: dict[str, dict[str, Any]] = {}
        for runner in runners:
            for model_id, status in runner.status().items():
                health = model_health(status, self.metrics.model_figures(model_id))
                entry = models.get(model_id)
                if entry is None:
                    models[model_id] = {
                        **health,  # + answered, p50/p95_latency_s, tokens_per_s of this server
                        "endpoint": runner.specs[model_id].url,
                        "circuits": {runner.profile.name: status.get("state")},
                    }
                    continue
                for summed in ("requests", "failures", "in_flight"):
                    entry[summed] += health[summed]
                entry["circuits"][runner.profile.name] = status.get("state")
        for entry in models.values():
            if len(entry["circuits"]) < 2:
                del entry["circuits"]
        return {"profile": self.profile_key, "models": models, "routing": self.metrics.figures.routing()}

    def _circuits(self) -> dict[str, dict[str, Any]]:
        """Per model, for ``/metrics``: its circuit state (as ``/health/models`` gives it) and
        whether it is loaded."""
        health = self.models_health()["models"]
        return {m: {"state": h["circuit"], "loaded": h["loaded"]} for m, h in health.items()}

    def drain(self, grace_s: float) -> None:
        """The server is stopping (SIGTERM): refuse new answers (503) and cancel the ones
        still running after ``grace_s`` seconds; a cancelled answer ends at its next token
        and its response completes (a stream with its last chunk and ``[DONE]``), so the
        connections close before uvicorn's own deadline."""
        with self._lock:
            if self.draining:
                return
            self.draining = True

        timer = threading.Timer(grace_s, self._cancel_answers)
        timer.daemon = True
        timer.start()

    def _cancel_answers(self) -> list[_Answer]:
        """Cancel every running answer (each ends at its next token); the ones cancelled."""
        with self._lock:
            answers = list(self._answers)
        for answer in answers:
            answer.cancel()
        return answers

    def close(self, grace_s: float = 5.0) -> None:
        """Cancel running answers, wait up to ``grace_s`` for their threads, close the models."""
        with self._lock:
            self.closing = True
        answers = self._cancel_answers()
        deadline = time.monotonic() + grace_s
        for answer in answers:
            answer.finished.wait(max(0.0, deadline - time.monotonic()))
        for runner in [self.runner, *self._profiles.values(), *self._models.values()]:
            runner.close()
        if self._owns_pool:
            self.pool.close()


def _served_only(override: str) -> bool:
    """Overrides that belong to the served profile or task only."""
    key = override.lstrip("+~").split("=", 1)[0]
    return key in ("profile", "task") or key.startswith(("profile.", "task.", "hydra"))


# -- responses -----------------------------------------------------------------------------
FinishReason = Literal["stop", "length"]


def openai_finish_reason(result: RunResult) -> FinishReason:
    """OpenAI's ``finish_reason``: ``stop``, or ``length`` for any answer cut short (the
    budget, a stall, the repetition stop); MAGI's own is in the trace."""
    return "stop" if result.finish_reason == "stop" else "length"


def usage(result: RunResult) -> dict[str, int]:
    """Tokens of every stage: a two-stage answer counts the draft's and the refine's."""
    prompt = sum(s.prompt_tokens for s in result.stages)
    completion = result.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def trace(result: RunResult) -> dict[str, Any]:
    """The ``magi`` field: the routing trace (:meth:`RunResult.to_dict` without the texts)."""
    data = result.to_dict()
    for key in ("text", "prompt", "messages"):
        data.pop(key, None)
    return _finite(data)


def _finite(value: Any) -> Any:
    """JSON has no infinity: ``inf`` becomes the string "Infinity" (as ``magi route --json``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "Infinity" if value > 0 else "-Infinity" if value < 0 else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _header(value: object) -> str:
    """A header value: ASCII, anything else percent-encoded."""
    return quote(str(value), safe=" /:,.-_=+()[]@")


def trace_headers(result: RunResult) -> dict[str, str]:
    """``x-magi-*`` headers of a finished answer."""
    return {
        "x-magi-profile": _header(result.profile),
        "x-magi-score": f"{result.score:.2f}",
        "x-magi-routed-tier": _header(result.routed_tier),
        "x-magi-tier": _header(result.tier),
        "x-magi-model": _header(result.model_id),
        "x-magi-models": _header(",".join(s.model_id for s in result.stages)),
        "x-magi-stages": _header(",".join(f"{s.stage}:{s.tier}:{s.model_id}" for s in result.stages)),
        "x-magi-two-stage": "true" if result.two_stage else "false",
        "x-magi-fallbacks": str(len(result.fallbacks)),
        "x-magi-finish-reason": result.finish_reason,
    }


def _route_headers(runner: Runner, conversation: Conversation, first: StreamEvent | None) -> dict[str, str]:
    """``x-magi-*`` headers of a stream, sent before the answer: the score and routed tier
    (scored again, without a balancer turn) and the first stage's tier and model."""
    score = conversation_score(runner.router.scorer, conversation).score
    tier = runner.router.tier_for(score)
    two_stage = runner.profile.two_stage
    headers = {
        "x-magi-profile": _header(runner.profile.name),
        "x-magi-score": f"{score:.2f}",
        "x-magi-routed-tier": _header(tier),
        "x-magi-two-stage": "true" if two_stage.enabled and tier == two_stage.stage2_tier else "false",
    }
    if first is not None and first.model_id:
        headers["x-magi-tier"] = _header(first.tier)
        headers["x-magi-model"] = _header(first.model_id)
    return headers


def _error_response(exc: BaseException) -> JSONResponse:
    status = status_of(exc)
    if status >= 500 and not isinstance(exc, MAGIException):
        logger.error("request failed", exc_info=exc)
    headers = (
        {"WWW-Authenticate": "Bearer"} if status == 401 else {"Retry-After": "1"} if status == 429 else None
    )
    return JSONResponse(exception_body(exc), status_code=status, headers=headers)


async def _until_disconnect(request: Request) -> None:
    """Return when the client has gone away (the body is read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _watch(answer: _Answer, request: Request) -> asyncio.Future[None]:
    """A task that tells ``answer`` when its client goes away (:meth:`_Answer.gone`: the
    answer stops, which frees its model, and its reader gets ``("gone", None)``). Cancel
    it when the response is done."""

    def went(task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is None:
            answer.gone()

    watcher = asyncio.ensure_future(_until_disconnect(request))
    watcher.add_done_callback(went)
    return watcher


# -- the app -------------------------------------------------------------------------------
Kind = Literal["chat", "completion"]


def create_app(server: MagiServer) -> FastAPI:
    """The FastAPI app serving ``server`` (its lifespan closes the server on shutdown)."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(server.close, server.options.shutdown_grace_s)

    app = FastAPI(title="MAGI", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.magi = server

    @app.exception_handler(MAGIException)
    async def magi_error(_request: Request, exc: MAGIException) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def no_route(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's 404 (no such route) and 405 (not that method) in OpenAI's body."""
        asked = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            routes = [
                f"{method} {route.path}"
                for route in app.routes
                if isinstance(route, Route) and route.include_in_schema
                for method in sorted(route.methods or ())
                if method != "HEAD"
            ]
            message, code = f"Unknown route {asked}. Routes: {', '.join(routes)}.", "unknown_route"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message, code = f"{asked} is not allowed; use {allowed}.", "method_not_allowed"
        else:
            message, code = str(exc.detail), None
        body = error_body(exc.status_code, message, code=code)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSONResponse:
        return _error_response(exc)

    app.add_middleware(
        _Guard,
        keys=server.keys,
        limit=server.options.max_body_bytes,
        on_refused=lambda status: server.metrics.observe_error("none", status),
    )

    @app.get("/health")
    async def health() -> JSONResponse:
        stopping = server.closing or server.draining
        return JSONResponse(
            {"status": "shutting_down" if stopping else "ok", "profile": server.profile_key},
            status_code=503 if stopping else 200,
        )

    @app.get("/health/models")
    async def health_models() -> JSONResponse:
        return JSONResponse(_finite(server.models_health()))

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=CONTENT_TYPE)

    def model_cards() -> list[dict[str, Any]]:
        cards = [_card("auto", f"the served profile, {server.profile_key}")]
        cards += [_card(f"{PROFILE_PREFIX}{n}", "profile") for n in server.profile_names()]
        for model_id in server.model_ids():
            if model_id in server.runner.specs:
                cards.append(_card(model_id, "model", tiers=server.runner.tiers_of(model_id)))
            else:
                cards.append(_card(model_id, "model", served_profile=False))
        return cards

    # Listing composes each profile of the config folder on first use: off the loop.
    @app.get("/v1/models")
    async def list_models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": await asyncio.to_thread(model_cards)})

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str) -> JSONResponse:
        for card in await asyncio.to_thread(model_cards):
            if card["id"] == model:
                return JSONResponse(card)
        await server.target_async(model)  # raises the 404 naming the options
        raise AssertionError("unreachable")

    # Plain Starlette routes: _generate reads and checks the body itself (a malformed body
    # is a 400, a bad field a 422 naming it, each counted in /metrics), so FastAPI's
    # per-request dependency solving and validation are skipped.
    async def chat_completions(request: Request) -> Response:
        return await _generate(server, request, "chat")

    async def completions(request: Request) -> Response:
        return await _generate(server, request, "completion")

    app.add_route(GENERATION_ROUTES[0], chat_completions, methods=["POST"])
    app.add_route(GENERATION_ROUTES[1], completions, methods=["POST"])

    return app


class _Guard:
    """ASGI middleware: the API key first (nothing is read for a caller without one), then
    the body's size (its declared length, and the bytes as they arrive: a chunked body
    over the limit is refused too, 413)."""

    def __init__(
        self, app: Any, *, keys: APIKeys, limit: int, on_refused: Callable[[int], None] = lambda _: None
    ) -> None:
        self.app = app
        self.keys = keys
        self.limit = limit
        self._on_refused = on_refused  # a request for an answer refused here (401, 413)

    async def _refuse(self, exc: ServeError, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("method") == "POST" and scope.get("path") in GENERATION_ROUTES:
            self._on_refused(exc.status_code)
        await _error_response(exc)(scope, receive, send)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if scope.get("path") != "/health" and not self.keys.allows(headers.get("authorization")):
            exc = ServeError(
                "Missing or invalid API key: send 'Authorization: Bearer <key>'.", status_code=401
            )
            await self._refuse(exc, scope, receive, send)
            return
        if scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        too_big = ServeError(
            f"The request body is over the server's limit of {self.limit} bytes (task.max_body_bytes).",
            status_code=413,
        )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(too_big, scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(too_big, scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _card(model_id: str, kind: str, **magi: Any) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": 0,
        "owned_by": "magi",
        "magi": {"kind": kind, **magi},
    }


def _version() -> str:
    from magi.cli import installed_version

    return installed_version()


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON body: 400 for one that is not a JSON object."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ServeError(f"The request body is not valid JSON: {exc}.", status_code=400) from None
    if not isinstance(data, dict):
        raise ServeError(
            f"The request body must be a JSON object (got {type(data).__name__}).", status_code=400
        )
    return data


def _validated(model: type[_Request], data: dict[str, Any]) -> _Request:
    """``data`` as ``model``: a 422 naming the first field at fault."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid_field(exc.errors()) from None


def _invalid_field(errors: Sequence[Any]) -> ServeError:
    """The 422 of a body's validation errors: the first one, its field as ``param``."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    return ServeError(message, status_code=422, param=param)


async def _generate(server: MagiServer, request: Request, kind: Kind) -> Response:
    """Answer one request: checks (400/404/422) before it takes a queue place (429). A
    request refused before its answer starts is counted here (its outcome by status);
    one refused later, by the answer's end."""
    profile = "none"
    try:
        data = await _json_body(request)
        model = data.get("model", "auto")
        if isinstance(model, str):  # else the validation names the field
            target = await server.target_async(model)
            profile = target.runner.profile.name
        body = _validated(ChatCompletionRequest if kind == "chat" else CompletionRequest, data)
        body.check_supported()
        conversation = body.conversation()
        sampling = body.sampling()
        server.admit()
    except MAGIException as exc:
        server.metrics.observe_error(profile, status_of(exc))
        raise
    try:
        answer = server.start(target, conversation, sampling, tokens=body.stream)
    except BaseException:
        server.release()
        raise
    shape = _Shape(kind, target.name)
    watcher = _watch(answer, request)
    if body.stream:
        return await _stream(answer, watcher, shape, target, conversation, body.include_usage)
    try:
        while True:  # tokens=False: the done event, or an error
            what, item = await answer.next()
            if what == "gone":
                return Response(status_code=499)
            if what == "error":
                raise item
            if what == "event" and item.kind == "done":
                result: RunResult = item.result
                return JSONResponse(shape.whole(result), headers=trace_headers(result))
    except asyncio.CancelledError:  # the server is stopping
        answer.cancel()
        raise
    finally:
        watcher.cancel()


class _Shape:
    """OpenAI's response and chunk shapes for one endpoint."""

    def __init__(self, kind: Kind, model: str) -> None:
        self.kind = kind
        self.model = model
        self.id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _frame(self, obj: str, choices: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "system_fingerprint": None,
            **more,
        }

    def whole(self, result: RunResult) -> dict[str, Any]:
        reason = openai_finish_reason(result)
        if self.kind == "chat":
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "logprobs": None,
                "finish_reason": reason,
            }
            return self._frame("chat.completion", [choice], usage=usage(result), magi=trace(result))
        choice = {"index": 0, "text": result.text, "logprobs": None, "finish_reason": reason}
        return self._frame("text_completion", [choice], usage=usage(result), magi=trace(result))

    def chunk(
        self, delta: Mapping[str, Any] | None, finish: str | None = None, **more: Any
    ) -> dict[str, Any]:
        """A stream chunk: ``delta`` is the chat delta (``{"content": ...}``); for completions
        its ``content`` becomes the choice's ``text``. ``None``: a chunk without a choice."""
        if delta is None:
            return self._frame(self._chunk_object, [], **more)
        if self.kind == "chat":
            choice = {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta.get("content", ""), "logprobs": None, "finish_reason": finish}
        return self._frame(self._chunk_object, [choice], **more)

    @property
    def _chunk_object(self) -> str:
        return "chat.completion.chunk" if self.kind == "chat" else "text_completion"

    def event_chunk(self, event: StreamEvent) -> dict[str, Any] | None:
        """The chunk of a runner event (None: nothing to send)."""
        if event.kind == "token":
            if event.stage == "draft":  # the draft streams as reasoning, so content is the answer
                if self.kind == "chat":
                    return self.chunk({"reasoning_content": event.text})
                return self.chunk({"content": ""}, magi={"event": "draft", "text": event.text})
            return self.chunk({"content": event.text})
        if event.kind in ("stage", "restart"):
            info = {"event": event.kind, "stage": event.stage, "tier": event.tier, "model": event.model_id}
            return self.chunk({}, magi=info)
        return None


#: Seconds without an event after which a stream gets a comment line (``: ping``), so
#: proxies and clients see the connection alive while a model is awaited.
PING_S = 15.0


class _EventStream(StreamingResponse):
    """``text/event-stream``: the chunks as they come, nothing per chunk but the send (no
    task group, no timeout scope: the client going away is :func:`_watch`'s, the server
    stopping cancels the request's task)."""

    media_type = "text/event-stream"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.stream_response(send)


def _sse(data: Mapping[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


async def _stream(
    answer: _Answer,
    watcher: asyncio.Future[None],
    shape: _Shape,
    target: Target,
    conversation: Conversation,
    include_usage: bool,
) -> Response:
    """The SSE response. Its status and headers wait for the first token (or the end): an
    answer no model could start is a plain JSON error with its status, not a 200 stream."""
    head: list[tuple[str, Any]] = []
    first_stage: StreamEvent | None = None
    try:
        while True:
            what, item = await answer.next()
            if what == "gone":
                watcher.cancel()
                return Response(status_code=499)
            if what == "error":
                raise item
            head.append((what, item))
            if what == "event" and item.kind == "stage" and first_stage is None:
                first_stage = item
            if what == "end" or (what == "event" and item.kind in ("token", "done")):
                break
    except BaseException:
        watcher.cancel()
        answer.cancel()
        raise

    async def chunks() -> AsyncIterator[bytes]:
        finished = False
        try:
            role = {"role": "assistant", "content": ""} if shape.kind == "chat" else {"content": ""}
            yield _sse(shape.chunk(role))
            pending = collections.deque(head)
            while True:
                what, item = pending.popleft() if pending else await answer.next(timeout=PING_S)
                if what == "idle":
                    yield b": ping\n\n"
                    continue
                if what == "gone":
                    return
                if what == "end":
                    break
                if what == "error":
                    yield _sse(exception_body(item))
                    break
                event: StreamEvent = item
                if event.kind == "done":
                    result: RunResult = event.result  # type: ignore[assignment]
                    more = {"usage": usage(result)} if not include_usage else {}
                    yield _sse(shape.chunk({}, openai_finish_reason(result), magi=trace(result), **more))
                    if include_usage:
                        yield _sse(shape.chunk(None, usage=usage(result)))
                    continue
                chunk = shape.event_chunk(event)
                if chunk is not None:
                    yield _sse(chunk)
            yield _sse("[DONE]")
            finished = True
        finally:
            watcher.cancel()
            if not finished:  # the client went away or the server is stopping
                answer.cancel()

    headers = {
        **_route_headers(target.runner, conversation, first_stage),
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # nginx: pass each event on as it comes
    }
    return _EventStream(chunks(), headers=headers)


# -- running it -----------------------------------------------------------------------------
def serve(
    config: MagiConfig,
    *,
    profile_key: str | None = None,
    overrides: Sequence[str] = (),
    conf_dir: str | Path | None = None,
) -> int:
    """Serve ``config``'s profile with uvicorn until SIGTERM or Ctrl-C; returns 0.

    Binds ``task.host`` (127.0.0.1 by default). On SIGTERM uvicorn stops accepting,
    in-flight answers get ``task.shutdown_grace_s`` to finish, the rest are cancelled,
    and the models are closed.
    """
    import uvicorn

    server = MagiServer(config, profile_key=profile_key, overrides=overrides, conf_dir=conf_dir)
    options = server.options
    if options.host not in ("127.0.0.1", "localhost", "::1") and not server.keys.enabled:
        logger.warning(
            "Serving on %s without API keys: anyone who can reach it may use it (set MAGI_API_KEYS).",
            options.host,
        )
    print(
        f"MAGI serving profile {server.profile_key!r} ({len(server.runner.specs)} models) on "
        f"http://{options.host}:{options.port}/v1 (API keys: {'on' if server.keys.enabled else 'off'})",
        flush=True,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            server.drain(options.shutdown_grace_s)
            super().handle_exit(sig, frame)

    app = create_app(server)
    uv = Server(
        uvicorn.Config(
            app,
            host=options.host,
            port=options.port,
            log_level=options.log_level,
            timeout_graceful_shutdown=int(math.ceil(options.shutdown_grace_s)) + 1,
            lifespan="on",
        )
    )
    # uvicorn handles SIGTERM (graceful shutdown) and then raises it again once the
    # server has stopped; this handler makes that a clean exit (status 0).
    previous = signal.signal(signal.SIGTERM, lambda *_: None) if _main_thread() else None
    try:
        uv.run()
    except SystemExit as exc:  # uvicorn's startup failure (the port is taken, ...)
        if exc.code:
            raise MAGIException(
                f"Could not serve on {options.host}:{options.port} (see the error above).", status_code=503
            ) from None
    finally:
        if not server.closing:  # startup failed: close what was made
            server.close(0)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
