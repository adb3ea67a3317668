"""The Runner: route a prompt or a conversation to a tier, run it on a model, answer with a trace.

A request is a prompt (one user message) or a conversation (a list of
``{"role", "content"}`` messages, :mod:`magi.conversation`). Per request: the scorer gives
a 0-10 complexity score (a conversation: its last user message's, plus a bounded
``conversation`` term from the earlier turns, :func:`magi.routing.router.conversation_score`);
the profile's thresholds pick a tier; the tier's balancer picks a healthy model; the
model runs through the pool (loaded once, one lock per model; a remote model's requests
go to its server through the same path, so balancing, circuit breakers and failover
treat local and remote models alike). With two-stage on, prompts routed to
``stage2_tier`` are drafted by ``stage1_tier`` (at most ``stage1_max_tokens``) and
refined by ``stage2_tier`` through ``refine_template``; prompts routed elsewhere get
one stage. Both stages fit each model's context: the draft budget stops at what the
context leaves after the prompt, and a refine prompt that would overflow gets a
shortened draft, or the prompt alone (the trace's ``note`` says which). A failing
model is retried on the tier's next healthy model, then on the fallback tiers; each
failure counts against the model's circuit breaker.

Time judges a *stalled* model, not a long answer (README "Timeouts"): a model with no
first token within the tier's first-token deadline, or silent before writing anything
usable, fails over; one that stalls after usable text, or is still writing when the
tier's time budget runs out, has its answer ended there and kept (``finish_reason``
"stalled" / "timeout"). A loop ends with "repetition" (:mod:`magi.runtime.stops`), and
:meth:`AnswerStream.cancel` ends a running answer with "cancelled", its text kept.

Example:
    >>> import magi
    >>> with magi.Runner(magi.compose(profile="demo")) as runner:   # doctest: +SKIP
    ...     result = runner.run("Why is the sky blue?")
    ...     print(result.text)
    ...     print(result.explain())
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from magi.config.app import MagiConfig
from magi.config.base import MagiModel
from magi.config.model_settings import merge
from magi.conversation import Conversation, Request, to_conversation
from magi.errors import ConfigError, MAGIException
from magi.prompt import check_prompt
from magi.routing.health import Clock, HealthMonitor
from magi.routing.router import RouteDecision, Router, Stage
from magi.routing.scorer import config_scorer
from magi.runtime.backend import (
    Backend,
    DeadlineKind,
    GenerationSettings,
    GenerationTimeout,
    ModelSpec,
    PromptTooLongError,
    stage_settings,
)
from magi.runtime.figures import AnswerFigures
from magi.runtime.pool import ModelPool, PoolLimits
from magi.runtime.stops import RepetitionStop
from magi.runtime.templates import ChatTemplateError
from magi.runtime.trace import Fallback, RunResult, StageName, StageTrace

logger = logging.getLogger(__name__)

EventKind = Literal["stage", "token", "restart", "done"]


@dataclass
class StreamEvent:
    """One event of :meth:`Runner.stream`.

    * ``stage``: a stage starts on ``model_id`` of ``tier``.
    * ``token``: ``text`` is the next piece of that stage's output.
    * ``restart``: the model failed mid-answer; discard this stage's text so far
      (the stage continues on another model).
    * ``done``: ``result`` holds the finished :class:`RunResult`.
    """

    kind: EventKind
    stage: StageName
    tier: str = ""
    model_id: str = ""
    text: str = ""
    result: RunResult | None = None


class AnswerStream(Iterator[StreamEvent]):
    """The events of one answer (:meth:`Runner.stream`), with :meth:`cancel`.

    Iterate it as a generator of :class:`StreamEvent`; :meth:`cancel` may be called from
    any thread (a notebook's Stop button, a web request's disconnect). The running stage
    stops at its next token: the model's generation is closed and its lease released
    at once, the partial text is kept, and the last event is ``done`` as usual, with a
    result whose ``finish_reason`` is "cancelled" (a cancelled draft is not refined).

    Example:
        >>> stream = runner.stream("Write a long story.")          # doctest: +SKIP
        >>> for event in stream:                                    # doctest: +SKIP
        ...     if event.kind == "token" and len(event.text) > 100:
        ...         stream.cancel()
        >>> stream.result.finish_reason                             # doctest: +SKIP
        'cancelled'
    """

    def __init__(self, events: Iterator[StreamEvent], cancel_event: threading.Event) -> None:
        self._events = events
        self._cancel = cancel_event
        self.result: RunResult | None = None
        """The finished answer, once the ``done`` event has been read."""

    def __iter__(self) -> AnswerStream:
        return self

    def __next__(self) -> StreamEvent:
        event = next(self._events)
        if event.kind == "done":
            self.result = event.result
        return event

    def cancel(self) -> None:
        """End the answer at its next token, keeping what was written (thread-safe)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called (or the ``cancel`` event passed in was set)."""
        return self._cancel.is_set()

    def close(self) -> None:
        """Stop without a result (as closing a generator does); the model is released."""
        self._events.close()  # type: ignore[attr-defined]


@dataclass
class _Trace:
    stages: list[StageTrace] = field(default_factory=list)
    fallbacks: list[Fallback] = field(default_factory=list)
    first_token_at: float | None = None
    answered: Conversation | None = None  # the conversation the last stage answered (its system prompt)


class NoModelAnsweredError(MAGIException):
    """Every model that could serve a stage failed or was unavailable (503).

    The message names each model's circuit state and the error this request got
    from it.
    """

    status_code = 503

    def __init__(self, cause: MAGIException, errors: Mapping[str, str]) -> None:
        lines = [str(cause)]
        if errors:
            lines.append("Errors in this request:")
            lines += [f"  - {model_id}: {error}" for model_id, error in errors.items()]
        super().__init__("\n".join(lines), details={**cause.details, "errors": dict(errors)})


#: The runtime setting behind each stall deadline, for messages.
_FACTOR: dict[DeadlineKind, str] = {
    "first_token": "first_token_timeout_factor",
    "token_gap": "token_gap_timeout_factor",
    "budget": "timeout_factor",
}


def _missed(
    settings: GenerationSettings, started: float, last_token_at: float | None, now: float
) -> DeadlineKind | None:
    """The deadline a token arriving at ``now`` came after, if any (the stall deadlines
    first: a token later than those means the model was stalled, whatever the budget)."""
    for kind, deadline in (
        ("first_token", None if last_token_at is not None else settings.first_token_timeout_s),
        ("token_gap", None if last_token_at is None else settings.token_gap_timeout_s),
        ("budget", settings.timeout_s),
    ):
        base = started if kind != "token_gap" else last_token_at
        if deadline is not None and base is not None and now - base > deadline:
            return kind  # type: ignore[return-value]
    return None


_TEMPLATE_FIELD = re.compile(r"\{(prompt|draft)\}")


def fill_refine_template(template: str, prompt: str, draft: str) -> str:
    """Fill ``{prompt}`` and ``{draft}`` in one pass (braces in either stay as they are)."""
    values = {"prompt": prompt, "draft": draft}
    return _TEMPLATE_FIELD.sub(lambda m: values[m.group(1)], template)


def answer_room(max_tokens: int | None, n_ctx: int) -> int:
    """Tokens of the context a refine prompt leaves free for the answer: the answer's
    budget, but at most a quarter of the context (at least one token)."""
    wanted = n_ctx if max_tokens is None else max_tokens
    return max(1, min(wanted, n_ctx // 4))


def fit_refine_prompt(
    template: str,
    prompt: str,
    draft: str,
    count: Callable[[str], int],
    *,
    n_ctx: int,
    max_tokens: int | None,
) -> tuple[str, str | None]:
    """The refine prompt for a model with context ``n_ctx``, and a note if it was changed.

    The prompt plus template plus draft must leave :func:`answer_room` free. If the
    whole draft does not fit, it is cut to its longest beginning that does (a binary
    search over ``count``, the model's token counter); if not even the template with
    no draft fits, the refine answers ``prompt`` alone, one stage.

    Example:
        >>> sent, note = fit_refine_prompt("{prompt} / {draft}", "Q", "x" * 50, len, n_ctx=40, max_tokens=8)
        >>> len(sent), note
        (32, 'draft cut from 50 to 28 tokens to fit n_ctx=40 with room for the answer')
    """
    limit = n_ctx - answer_room(max_tokens, n_ctx)
    full = count(fill_refine_template(template, prompt, draft))
    if full <= limit:
        return fill_refine_template(template, prompt, draft), None
    bare = count(fill_refine_template(template, prompt, ""))
    lo, hi = 0, len(draft)  # the longest draft[:lo] that fits
    while lo < hi and bare <= limit:
        mid = (lo + hi + 1) // 2
        if count(fill_refine_template(template, prompt, draft[:mid])) <= limit:
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        return prompt, (
            f"answered the prompt alone: the refine prompt has {full} tokens with the draft and "
            f"{bare} without, over the {limit} that n_ctx={n_ctx} leaves beside the answer"
        )
    fitted = fill_refine_template(template, prompt, draft[:lo])
    return fitted, (
        f"draft cut from {full - bare} to {count(fitted) - bare} tokens to fit n_ctx={n_ctx} "
        "with room for the answer"
    )


class Runner:
    """Routes prompts across a profile's models and runs them (in-process or on their servers).

    Args:
        config: The validated config (``magi.compose(...)``).
        specs: Model specs by id; default: resolved from the registry and
            ``models.dirs`` (:func:`magi.runtime.resolve.resolve_models`).
        tier_members: Tier name → model ids; default: from the registry's tiers
            and the profile's ``model_tiers``.
        pool: A model pool to share (e.g. :func:`magi.runtime.pool.shared_pool`);
            default: a pool of this runner's own, closed by :meth:`close`. The
            runner's ``runtime.memory_budget_mb``/``max_loaded_models`` hold on it
            until :meth:`close` (the strictest of the open runners' apply).
        start_health_checks: Probe models every ``health_check_interval`` seconds
            in a background thread when the profile enables load balancing.
        clock: Monotonic time source of the circuit breakers (their cooldowns);
            tests pass a manual clock instead of sleeping through a cooldown.

    A request (``run``, ``stream``, ``run_many``, ``route``) is a prompt ``str`` (one user
    message; it runs exactly as a prompt always has) or a list of messages
    (``{"role": "system" | "user" | "assistant", "content": str}`` dicts or
    :class:`~magi.conversation.Message`), checked by
    :func:`~magi.conversation.to_conversation` before any model is asked: bad input is an
    :class:`~magi.conversation.InvalidConversationError` (422) naming the message index,
    and never counts against a model's circuit.

    The system prompt a model is given is, first to last:

    1. the conversation's own (a first message with role "system");
    2. the call's ``system=`` argument;
    3. the model's ``system_prompt`` setting (``runtime.models.<id>.system_prompt``, or
       ``runtime.system_prompt`` for every model);
    4. the profile's ``system_prompt``;

    or none. It is chosen per model (two models of one request may have different
    defaults), and :attr:`RunResult.messages` shows the conversation as the final model
    answered it, its system prompt included.

    Thread-safe: ``run``/``stream`` may be called from several threads.
    """

    def __init__(
        self,
        config: MagiConfig,
        *,
        specs: Mapping[str, ModelSpec] | None = None,
        tier_members: Mapping[str, Sequence[str]] | None = None,
        pool: ModelPool | None = None,
        start_health_checks: bool = True,
        clock: Clock = time.monotonic,
    ) -> None:
        self.config = config
        self.profile = config.profile
        if specs is None or tier_members is None:
            from magi.runtime.resolve import resolve_models

            resolved_specs, resolved_members = resolve_models(config)
            specs = resolved_specs if specs is None else specs
            tier_members = resolved_members if tier_members is None else tier_members
        self.specs = dict(specs)
        self.tier_members = {t: list(m) for t, m in tier_members.items()}
        self._owns_pool = pool is None
        self.pool = pool if pool is not None else ModelPool()
        runtime = config.runtime
        # This runner's limits hold on the pool while it is open; on a shared pool the
        # strictest open runner's apply, and none outlives its runner (ModelPool docs).
        limits = PoolLimits(runtime.memory_budget_mb, runtime.max_loaded_models, runtime.gpu_memory_budget_mb)
        self.pool.set_limits(self, limits)
        for spec in self.specs.values():
            self.pool.register(spec)
        self.scorer = config_scorer(config)
        self.health = HealthMonitor.from_config(config, list(self.specs), probe=self._probe, clock=clock)
        self._clock = clock  # also times the stall deadlines: tests pass a manual clock
        self.router = Router(self.profile, self.tier_members, self.scorer, self.health, seed=runtime.seed)
        self.figures = AnswerFigures()  # latency, speed and tier counts of finished answers
        self._closed = False
        self._lock = threading.Lock()
        #: Answers handed out and not yet garbage: an abandoned one (a ``break`` out of its
        #: loop, a closed pipe) still holds its model's lease, which would keep ``close``
        #: waiting for the pool forever.
        self._streams: weakref.WeakSet[AnswerStream] = weakref.WeakSet()
        if start_health_checks and self.profile.load_balancing.enabled:
            self.health.start()

    # -- public API --------------------------------------------------------------------
    def route(self, request: Request | Conversation) -> RouteDecision:
        """Score and route a prompt or a conversation without running any model.

        Raises:
            InvalidPromptError: the prompt is not valid text (422).
            InvalidConversationError: the messages are not a conversation a model could
                answer (422; names the message index).
        """
        return self.router.decide(to_conversation(request))

    def run(
        self,
        request: Request | Conversation,
        *,
        system: str | None = None,
        cancel: threading.Event | None = None,
        sampling: Mapping[str, object] | None = None,
    ) -> RunResult:
        """Answer one prompt or conversation; the result carries the routing trace.

        ``system`` is the system prompt of a conversation that has none of its own (it
        overrides the model's and the profile's, see the class docstring). Setting
        ``cancel`` (from another thread) ends the answer at its next token, text kept,
        ``finish_reason`` "cancelled" (see :class:`AnswerStream`). ``sampling`` overrides
        sampling settings of this request on every model it runs on (see :meth:`stream`).

        Raises:
            NoModelAnsweredError: every model that could answer failed or has an open
                circuit (503; the message names each model's state and error).
            PromptTooLongError: the prompt fits the context of none of those models
                (422; shorten it or raise ``runtime.n_ctx``).
            InvalidPromptError: the prompt (or ``system``) is not valid text (422; no model is
                asked).
            InvalidConversationError: a message list that is empty, has an unknown role or
                content that is not text, or does not end with a user message (422; no
                model is asked).

        No 422 counts against a model's circuit breaker.
        """
        stream = self.stream(request, system=system, cancel=cancel, sampling=sampling)
        for _event in stream:
            pass
        assert stream.result is not None
        return stream.result

    def run_many(
        self, requests: Iterable[Request | Conversation], *, system: str | None = None, progress: bool = True
    ) -> list[RunResult]:
        """Answer prompts or conversations in order, with a progress bar (tqdm; notebook-aware).

        Every item is checked before the first one runs, so a malformed fifth item fails
        the call at once rather than after four answers; the error names the item
        ("Prompt 5 of 9", "Request 5 of 9: message 2 ...") and the message index.
        ``system`` applies to each item as in :meth:`run`.
        """
        items = list(requests)
        if system is not None:
            check_prompt(system, what="The system prompt")
        conversations = [
            to_conversation(check_prompt(item, what=f"Prompt {n} of {len(items)}"))
            if isinstance(item, str)
            else to_conversation(item, what=f"Request {n} of {len(items)}")
            for n, item in enumerate(items, 1)
        ]
        if not progress:
            return [self.run(c, system=system) for c in conversations]
        from tqdm.auto import tqdm

        results = []
        with tqdm(total=len(items), desc=f"MAGI {self.profile.name}", unit="prompt") as bar:
            for conversation in conversations:
                result = self.run(conversation, system=system)
                results.append(result)
                bar.set_postfix_str(f"{result.tier}/{result.model_id[:24]}")
                bar.update()
        return results

    def stream(
        self,
        request: Request | Conversation,
        *,
        system: str | None = None,
        cancel: threading.Event | None = None,
        sampling: Mapping[str, object] | None = None,
    ) -> AnswerStream:
        """The answer as it is generated: stage-1 tokens first, then stage 2.

        Returns an :class:`AnswerStream`: iterate it for the :class:`StreamEvent` items, call
        its :meth:`~AnswerStream.cancel` (or set ``cancel``) to end the answer early.
        Iterating raises the errors of :meth:`run` (``request`` and ``system`` as there). A
        draft that no model can write is skipped (the refine tier answers the request
        alone; the trace records the failures).

        Two-stage on a conversation: the draft answers the conversation; the refine gets
        the same conversation with its last user message replaced by ``refine_template``
        filled with that message (``{prompt}``) and the draft (``{draft}``).

        ``sampling`` (a server's per-request fields, e.g. ``{"temperature": 0.7,
        "max_tokens": 64}``) replaces those sampling settings
        (:class:`~magi.config.model_settings.SamplingSettings` names, values already
        valid) of each model the request runs on; ``stop`` sequences are added to the
        model's own. A draft keeps its ``stage1_max_tokens`` budget. An unknown name is a
        422 before any model is asked.
        """
        event = cancel if cancel is not None else threading.Event()
        stream = AnswerStream(self._events(request, system, event, sampling), event)
        self._streams.add(stream)  # weakly: closing the runner ends the ones still open
        return stream

    def _events(
        self,
        request: Request | Conversation,
        system: str | None,
        cancel: threading.Event,
        sampling: Mapping[str, object] | None = None,
    ) -> Iterator[StreamEvent]:
        """The generator behind :meth:`stream` (checks run when iteration starts)."""
        self._check_open()
        conversation = to_conversation(request)
        own: MagiModel | None = None
        if sampling:
            from magi.config.model_settings import SamplingSettings

            unknown = sorted(set(sampling) - set(SamplingSettings.model_fields))
            if unknown:
                raise MAGIException(
                    f"Unknown sampling setting(s) {', '.join(unknown)}. "
                    f"Valid: {', '.join(SamplingSettings.model_fields)}",
                    status_code=422,
                )
            from pydantic import ValidationError

            from magi.config.base import describe_validation_error
            from magi.config.model_settings import ModelOverrides

            try:  # the values checked as in a config file, before any model is asked
                own = ModelOverrides.model_validate(dict(sampling))
            except ValidationError as exc:
                raise ConfigError(describe_validation_error(exc, prefix="sampling")) from None
        if system is not None:
            check_prompt(system, what="The system prompt")
        prompt = conversation.last_user
        start = time.perf_counter()
        decision = self.router.decide(conversation)
        trace = _Trace()
        draft: str | None = None
        run = (conversation, system, trace, cancel, own)
        if decision.two_stage:
            draft_stage, refine_stage = decision.stages
            try:
                draft = yield from self._run_stage(draft_stage, *run, fallback=False)
            except (NoModelAnsweredError, PromptTooLongError, ChatTemplateError) as exc:
                # The draft only speeds things up: without one, the final tier answers alone.
                logger.warning("No draft (%s); the %s tier answers alone", exc, refine_stage.tier)
            if draft is not None and cancel.is_set():
                text = draft  # cancelled while drafting: the partial draft is the answer
            else:
                # with a draft, each refine model gets the refine prompt fitted to its context
                text = yield from self._run_stage(refine_stage, *run, draft=draft)
        else:
            text = yield from self._run_stage(decision.stages[0], *run)
        total = time.perf_counter() - start
        final = trace.stages[-1]
        answered = trace.answered if trace.answered is not None else conversation
        result = RunResult(
            text=text,
            prompt=prompt,
            profile=self.profile.name,
            score=decision.score.score,
            features=dict(decision.score.features),
            contributions=dict(decision.score.contributions),
            routed_tier=decision.tier,
            tier=final.tier,
            model_id=final.model_id,
            two_stage=decision.two_stage,
            stages=trace.stages,
            fallbacks=trace.fallbacks,
            ttft_s=(trace.first_token_at - start) if trace.first_token_at else total,
            total_s=total,
            route_s=decision.decided_in,
            draft=draft,
            messages=answered.to_dicts(),
            scored=decision.scored,
        )
        self.figures.observe(result)
        yield StreamEvent("done", final.stage, final.tier, final.model_id, result=result)

    def status(self) -> dict[str, dict[str, object]]:
        """Per model: circuit state, in-flight requests, whether it is loaded."""
        health = self.health.status()
        loaded = set(self.pool.loaded_ids)
        return {
            m: {**health.get(m, {}), "loaded": m in loaded, "tiers": self.tiers_of(m)} for m in self.specs
        }

    def tiers_of(self, model_id: str) -> list[str]:
        return [t for t, members in self.tier_members.items() if model_id in members]

    def close(self) -> None:
        """End the answers still open (cancelled), stop health checks, and close the models
        if the pool is this runner's own."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for stream in list(self._streams):
            stream.cancel()  # one running in another thread ends at its next token
            # one suspended between events ends now, its lease released; "generator already
            # executing" (another thread is in it): the cancel above ends it
            with contextlib.suppress(ValueError):
                stream.close()
        self.health.stop()
        self.pool.release_limits(self)
        if self._owns_pool:
            self.pool.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise MAGIException("This Runner is closed; make a new one.", status_code=409)

    def _timed(self, settings: GenerationSettings, tier: str) -> GenerationSettings:
        """``settings`` with the tier's deadlines: its ``expected_time_seconds`` times the
        runtime's first-token, token-gap and budget factors (``.inf``: no deadline). The
        first-token deadline never exceeds the budget."""
        runtime = self.config.runtime
        expected = self.profile.tier(tier).expected_time_seconds

        def seconds(factor: float) -> float | None:
            value = expected * factor
            return None if value == float("inf") else value

        budget = seconds(runtime.timeout_factor)
        first = seconds(runtime.first_token_timeout_factor)
        if budget is not None and (first is None or first > budget):
            first = budget
        return settings.model_copy(
            update={
                "timeout_s": budget,
                "first_token_timeout_s": first,
                "token_gap_timeout_s": seconds(runtime.token_gap_timeout_factor),
            }
        )

    def _repetition_stop(self) -> RepetitionStop | None:
        runtime = self.config.runtime
        if not runtime.repetition_stop:
            return None
        return RepetitionStop(runtime.repetition_window, runtime.repetition_max_cycle)

    def _probe(self, model_id: str) -> None:
        self.pool.backend(model_id).probe()

    def _with_system(self, conversation: Conversation, system: str | None, model_id: str) -> Conversation:
        """``conversation`` with the system prompt ``model_id`` is given: its own, else the
        call's ``system``, else the model's ``system_prompt``, else the profile's (class
        docstring)."""
        if conversation.system is not None:
            return conversation
        if system is None:
            system = getattr(self.specs[model_id].sampling, "system_prompt", None)
        if system is None:
            system = self.profile.system_prompt
        return conversation.with_system(system)

    @staticmethod
    def _request(conversation: Conversation) -> str | Conversation:
        """What a backend is given: a single user message as the prompt string (exactly
        the path a prompt has always taken), any other conversation as it is."""
        return conversation.last_user if conversation.is_single_prompt else conversation

    def _fit_to_context(
        self,
        backend: Backend,
        conversation: Conversation,
        settings: GenerationSettings,
        *,
        draft: str | None,
        budget: int | None,
    ) -> tuple[str | Conversation, GenerationSettings, str | None]:
        """What ``backend`` is sent for one stage: ``(request, settings, note)``.

        * A refine (``draft`` given) gets the conversation with its last user message
          replaced by :func:`fit_refine_prompt`'s prompt, which counts the whole refine
          conversation: the draft cut to what the model's context holds, or the
          conversation alone.
        * A stage with its own token ``budget`` (the draft) gets at most what the
          context leaves after the conversation (its template's tokens included).

        ``note`` says what was changed, for the trace. Models whose context is unknown
        (a remote endpoint without ``n_ctx``) get the plan unchanged.
        """
        n_ctx = backend.spec.known_n_ctx
        if draft is not None:
            template = self.profile.two_stage.refine_template
            prompt = conversation.last_user

            def refine(text: str) -> str | Conversation:
                return self._request(conversation.with_last_user(text))

            if n_ctx is None:
                return refine(fill_refine_template(template, prompt, draft)), settings, None
            sent, note = fit_refine_prompt(
                template,
                prompt,
                draft,
                lambda text: backend.count_prompt_tokens(refine(text), settings),
                n_ctx=n_ctx,
                max_tokens=settings.max_tokens,
            )
            return refine(sent), settings, note
        request = self._request(conversation)
        if budget is not None and n_ctx is not None:
            prompt_tokens = backend.count_prompt_tokens(request, settings)
            left = n_ctx - prompt_tokens
            if 0 < left < budget:  # left <= 0: the backend refuses the prompt as too long
                note = (
                    f"token budget cut from {budget} to {left}: what n_ctx={n_ctx} leaves "
                    f"after the {prompt_tokens}-token prompt"
                )
                return request, settings.model_copy(update={"max_tokens": left}), note
        return request, settings, None

    def _run_stage(
        self,
        stage: Stage,
        conversation: Conversation,
        system: str | None,
        trace: _Trace,
        cancel: threading.Event,
        overrides: MagiModel | None,
        *,
        fallback: bool = True,
        draft: str | None = None,
    ) -> Iterator[StreamEvent]:
        """Run one stage with failover; yields events and returns the stage's text.

        Models are tried in the router's order (the balancer's pick, the tier's other
        healthy models, then the fallback tiers'). Each failure counts against the
        model's circuit breaker; a prompt too long for a model's context does not.
        Each model gets ``conversation`` with its system prompt (:meth:`_with_system`).
        With ``draft`` this is a refine: each model gets the conversation with its last
        user message replaced by the refine template filled with that message and as
        much of the draft as its context holds.

        A model that misses a stall deadline (:meth:`_timed`) before writing anything
        usable (text other than whitespace) fails over like a failing one; after usable
        text its answer is kept, ending "stalled" (and the stall still counts against its
        circuit). The budget, the repetition stop and ``cancel`` end an answer, kept.
        """
        role: StageName = stage.role  # type: ignore[assignment]
        tried: set[str] = set()
        too_long: dict[str, str] = {}
        refused: dict[str, str] = {}  # models whose chat template refused the conversation
        repetition = self._repetition_stop()
        for tier, model_id in self.router.attempts(stage, fallback=fallback):
            if model_id in tried or not self.health.acquire(model_id):
                continue
            tried.add(model_id)
            answered = self._with_system(conversation, system, model_id)
            sampling = self.specs[model_id].sampling
            if overrides is not None:  # the request's own sampling fields (stream's docstring)
                own = overrides
                if own.stop is not None:  # added to this model's stop sequences
                    own = own.model_copy(update={"stop": [*sampling.stop, *own.stop]})
                sampling = merge(sampling, own, where="sampling")
            settings = self._timed(stage_settings(sampling, stage.max_tokens, refine=draft is not None), tier)
            pieces: list[str] = []
            emitted = False
            stall: GenerationTimeout | None = None  # a stall after usable text: answer kept
            finish: str | None = None
            try:
                yield StreamEvent("stage", role, tier, model_id)
                asked = time.perf_counter()
                # waiting for a busy model is bounded by the budget too (then: fail over)
                with (
                    self.health.track(model_id),
                    self.pool.lease(model_id, timeout=settings.timeout_s) as backend,
                ):
                    started = time.perf_counter()  # after the wait for the model's lock and load
                    sent, settings, note = self._fit_to_context(
                        backend, answered, settings, draft=draft, budget=stage.max_tokens
                    )
                    first: float | None = None
                    clock_started = self._clock()
                    last_token_at: float | None = None
                    generation = backend.stream(sent, settings)
                    try:
                        while finish is None:
                            if cancel.is_set():
                                finish = "cancelled"
                                break
                            try:
                                piece = next(generation)
                            except StopIteration:
                                break
                            except GenerationTimeout as exc:  # a backend's own deadline (remote)
                                if not emitted:
                                    raise
                                stall, finish = exc, "timeout" if exc.deadline == "budget" else "stalled"
                                break
                            now = self._clock()
                            late = _missed(settings, clock_started, last_token_at, now)
                            if late is not None and late != "budget":
                                # the token came, but after the stall deadline: judged stalled
                                exc = GenerationTimeout(
                                    f"Model '{model_id}' stalled: {settings.describe_deadline(late)}, "
                                    f"after {len(pieces)} token(s). On busy cores set runtime.n_threads=1, "
                                    f"or raise runtime.{_FACTOR[late]}.",
                                    deadline=late,
                                    tokens=len(pieces),
                                )
                                if not emitted:
                                    raise exc
                                stall, finish = exc, "stalled"
                                break
                            if first is None:
                                first = time.perf_counter()
                            last_token_at = now
                            pieces.append(piece)
                            if piece:
                                if trace.first_token_at is None:
                                    trace.first_token_at = time.perf_counter()
                                emitted = emitted or bool(piece.strip())
                                yield StreamEvent("token", role, tier, model_id, text=piece)
                            if repetition is not None and repetition.repeating(pieces):
                                finish = "repetition"
                            elif late == "budget":
                                if not emitted:  # the budget is over and nothing usable came
                                    raise GenerationTimeout(
                                        f"Model '{model_id}': {settings.describe_deadline('budget')} "
                                        "with nothing usable written (only whitespace).",
                                        deadline="budget",
                                        tokens=len(pieces),
                                    )
                                finish = "timeout"
                    finally:
                        generation.close()  # an answer ended early frees the model now
                    ended = time.perf_counter()
                    prompt_tokens = backend.count_prompt_tokens(sent, settings)
            except (PromptTooLongError, ChatTemplateError) as exc:
                # the request, not the model: too long for its context, or refused by its chat
                # template (one without system messages, say); the next model may take it
                self.health.cancel(model_id)
                (too_long if isinstance(exc, PromptTooLongError) else refused)[model_id] = str(exc)
                trace.fallbacks.append(Fallback(role, tier, model_id, str(exc)))
                if any(pieces):  # tokens were shown: the caller discards them
                    yield StreamEvent("restart", role, tier, model_id)
                continue
            except (GeneratorExit, KeyboardInterrupt, SystemExit):
                # The caller stopped reading or the process is stopping: no verdict on the
                # model, but a half-open circuit's trial slot must be given back.
                self.health.cancel(model_id)
                raise
            except TimeoutError as exc:  # pool.lease: no free slot (or room to load) in time
                # Busy is not broken: no verdict on the circuit. Counting it would take a model
                # that is merely loaded out of rotation, cutting capacity when it is most needed;
                # a slot holder that is stuck fails, and counts, by its own deadline.
                self.health.cancel(model_id)
                trace.fallbacks.append(Fallback(role, tier, model_id, f"busy: {exc}"))
                logger.info("%s stage: %s is busy (%s); failing over", role, model_id, exc)
                if any(pieces):  # tokens were shown: the caller discards them
                    yield StreamEvent("restart", role, tier, model_id)
                continue
            except Exception as exc:  # any model failure: count it and fail over
                error = f"{type(exc).__name__}: {exc}"
                self.health.record_failure(model_id, error)
                trace.fallbacks.append(Fallback(role, tier, model_id, error))
                logger.warning("%s stage on %s failed (%s); failing over", role, model_id, error)
                if any(pieces):
                    yield StreamEvent("restart", role, tier, model_id)
                continue
            if finish == "cancelled":
                self.health.cancel(model_id)  # no verdict on the model
            elif finish == "stalled":
                assert stall is not None
                self.health.record_failure(model_id, f"{type(stall).__name__}: {stall}")
                logger.warning("%s stage on %s stalled; keeping its answer (%s)", role, model_id, stall)
            else:
                self.health.record_success(model_id)
            if finish is None:
                full = settings.max_tokens is not None and len(pieces) >= settings.max_tokens
                finish = "length" if full else "stop"
            notes = [note] if note else []
            if finish == "stalled" and stall is not None:
                notes.append(f"stalled, answer kept: {stall}")
            elif finish == "timeout":
                notes.append(f"ended early, answer kept: {settings.describe_deadline('budget')}")
            elif finish == "repetition" and repetition is not None:
                notes.append(
                    f"ended early, answer kept: the last {repetition.window} tokens repeat a cycle of at "
                    f"most {repetition.max_cycle} (runtime.repetition_stop)"
                )
            first = first if first is not None else ended
            trace.answered = answered
            trace.stages.append(
                StageTrace(
                    stage=role,
                    tier=tier,
                    model_id=model_id,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=len(pieces),
                    ttft_s=first - started,
                    total_s=ended - started,
                    finish_reason=finish,
                    endpoint=self.specs[model_id].url,
                    placement=self.specs[model_id].placement,
                    wait_s=started - asked,
                    note="; ".join(notes) or None,
                )
            )
            return "".join(pieces)
        if tried and refused and (too_long.keys() | refused.keys()) == tried:
            # Every model refused the request itself (its template, or its context): 422
            raise ChatTemplateError(
                f"No model that could answer the {role} stage accepts this conversation:\n"
                + "\n".join(f"  - {model_id}: {error}" for model_id, error in {**too_long, **refused}.items())
            )
        if tried and too_long.keys() == tried:
            # Every model that was tried refused the prompt's length: the prompt must
            # change (or n_ctx), so say that (422) rather than "models unavailable" (503).
            raise PromptTooLongError(
                f"The prompt does not fit the context of any model that could answer the {role} stage:\n"
                + "\n".join(f"  - {model_id}: {error}" for model_id, error in too_long.items()),
                details={"errors": dict(too_long)},
            )
        errors = {f.model_id: f.error for f in trace.fallbacks if f.stage == role}
        # Name every tier this stage could use (fallbacks too, even when all their
        # circuits were open and nothing was tried), so the message shows each model's state.
        tiers = [stage.tier, *(self.router.fallback_tiers(stage.tier) if fallback else [])]
        raise NoModelAnsweredError(
            self.router.no_healthy_error(
                tiers,
                headline=f"No model could answer the {role} stage"
                + (f" ({len(errors)} failed)" if errors else ""),
            ),
            errors,
        )
