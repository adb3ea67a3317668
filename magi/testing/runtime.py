"""Runtime test helpers: configs over tiny models, fault injection, a score-by-tag scorer.

Everything here runs the real path (Hydra composition, registry discovery, the
pool, llama-cpp-python on tiny generated GGUF files); only what a test must
*control* is added on top:

* :class:`TinyRuntime` writes the seed's three models (random or echo weights)
  into a folder and composes configs that point at it, small enough to run in
  milliseconds (``runtime.max_tokens=8``, drafts of 4 tokens, ``n_ctx=256``, one
  thread).
* :class:`FaultInjector` is a ``ModelPool(backend_factory=...)`` whose backends
  wrap the real :class:`~magi.runtime.llama.LlamaBackend` and fail on demand (at
  load, or after some tokens), and record every prompt they were given. Circuit
  breaker, failover and two-stage tests use it; the model itself stays real.
* The ``tagged`` scorer scores a prompt by its ``[score=X]`` tag, so routing tests
  choose exact scores (a threshold's boundary included) instead of depending on
  the heuristic's weights.

Example:
    >>> from magi.testing.runtime import TinyRuntime, FaultInjector   # doctest: +SKIP
    >>> env = TinyRuntime.create(tmp_path)                          # doctest: +SKIP
    >>> faults = FaultInjector()                                     # doctest: +SKIP
    >>> faults.fail("qwen3_4p0b_q4km_fast")                          # doctest: +SKIP
    >>> with env.runner("development", backend_factory=faults) as runner:  # doctest: +SKIP
    ...     runner.run("Hello").tier                                  # fails over to powerful
    'powerful'
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from magi.config.app import MagiConfig
from magi.config.compose import compose, default_conf_dir
from magi.conversation import Conversation
from magi.errors import ModelError
from magi.routing.health import Clock
from magi.routing.scorer import MAX_SCORE, ComplexityScore, register_scorer
from magi.runtime.backend import Backend, BackendError, GenerationSettings, ModelSpec
from magi.runtime.pool import BackendFactory, ModelPool, default_backend_factory
from magi.runtime.runner import Runner
from magi.testing.tiny_gguf import SEED_MODELS, write_spec

#: The seed's model ids, by role in the shipped profiles.
FAST = "qwen3_4p0b_q4km_fast"
REASONER = "deepseek_r10528qwen3_8p0b_q4km_powerful"
CODER = "qwen2_coder_p5_14p0b_q4km_powerful"

_TAG = re.compile(r"\[score=(?P<score>\d+(?:\.\d+)?)\]")


def tagged(prompt: str, score: float) -> str:
    """``prompt`` with a ``[score=X]`` tag in front, for the ``tagged`` scorer."""
    return f"[score={score!r}] {prompt}"


@register_scorer("tagged")
class TaggedScorer:
    """Scores a prompt by its ``[score=X]`` tag (0 without one), clipped to 0-10.

    Routing tests need exact scores, e.g. a score *equal* to a tier's ``max_score``;
    the heuristic scorer's weights may change, a tag does not. Select it with the
    override ``scorer=tagged``.
    """

    name = "tagged"

    def score(self, prompt: str) -> ComplexityScore:
        match = _TAG.search(prompt)
        value = float(match.group("score")) if match else 0.0
        clipped = min(max(value, 0.0), MAX_SCORE)
        return ComplexityScore(clipped, {"tag_score": value}, {"tag": value}, scorer=self.name)


# -- fault injection -------------------------------------------------------------------
FaultKind = Literal["stream", "load"]


@dataclass(frozen=True)
class Fault:
    """How an injected failure strikes: when streaming (after ``after`` tokens) or at load."""

    kind: FaultKind = "stream"
    after: int = 0
    message: str = "injected failure"


@dataclass(frozen=True)
class Pace:
    """How a model is made slow on purpose (:meth:`FaultInjector.pace`): ``first`` seconds
    before its first token, ``gap`` seconds before each later one from token ``gap_from``
    (0-based) on; before token ``gate_at`` it waits until ``gate`` is set."""

    first: float = 0.0
    gap: float = 0.0
    gap_from: int = 1
    gate: threading.Event | None = None
    gate_at: int = 0


class FaultyBackend:
    """A real backend that fails when its :class:`FaultInjector` says so.

    Loading, token counting and generation are the wrapped backend's; a ``stream``
    fault lets ``after`` tokens through and then raises :class:`BackendError` (so
    mid-answer failover is testable), a ``load`` fault raises :class:`ModelError`
    as a missing or broken file would. Probes fail while any fault is set.
    """

    def __init__(self, inner: Backend, injector: FaultInjector) -> None:
        self.inner = inner
        self.injector = injector

    @property
    def spec(self) -> ModelSpec:
        return self.inner.spec

    @spec.setter
    def spec(self, value: ModelSpec) -> None:
        self.inner.spec = value

    @property
    def model_id(self) -> str:
        return self.inner.spec.model_id

    @property
    def loaded(self) -> bool:
        return self.inner.loaded

    def load(self) -> None:
        fault = self.injector.fault(self.model_id)
        if fault is not None and fault.kind == "load":
            raise ModelError(f"Model '{self.model_id}': {fault.message} at load")
        self.inner.load()

    def stream(self, request: str | Conversation, settings: GenerationSettings) -> Iterator[str]:
        self.injector._record(self.model_id, request, settings)
        pace = self.injector.paces.get(self.model_id)
        if pace is not None:
            yield from self._paced(self.inner.stream(request, settings), pace)
            return
        fault = self.injector.fault(self.model_id)
        if fault is None or fault.kind != "stream":
            yield from self.inner.stream(request, settings)
            return
        pieces = self.inner.stream(request, settings)
        try:
            for n, piece in enumerate(pieces):
                if n >= fault.after:
                    break
                yield piece
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
        raise BackendError(f"Model '{self.model_id}': {fault.message}")

    def _paced(self, pieces: Iterator[str], pace: Pace) -> Iterator[str]:
        """The real model's tokens, late as ``pace`` says; records when the stream closes."""
        try:
            for n, piece in enumerate(pieces):
                if pace.gate is not None and n == pace.gate_at:
                    pace.gate.wait(60)
                delay = pace.first if n == 0 else (pace.gap if n >= pace.gap_from else 0.0)
                if delay:
                    self.injector.sleep(delay)
                yield piece
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
            self.injector.closed[self.model_id] += 1

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def count_prompt_tokens(self, request: str | Conversation, settings: GenerationSettings) -> int:
        return self.inner.count_prompt_tokens(request, settings)

    def probe(self) -> None:
        fault = self.injector.fault(self.model_id)
        if fault is not None:
            raise BackendError(f"Model '{self.model_id}': {fault.message} (probe)")
        self.inner.probe()

    def close(self) -> None:
        self.inner.close()


class FaultInjector:
    """A pool backend factory whose models fail on demand and record their prompts.

    Pass it as ``ModelPool(backend_factory=injector)`` (or to
    :meth:`TinyRuntime.runner`). Faults are kept by model id, so they survive the
    pool replacing a backend when a spec changes.

    Attributes:
        calls: Generations started per model id (failed ones included).
        prompts: Requests each model was given, in order: the prompt string of a
            one-message conversation, else the :class:`~magi.conversation.Conversation`.
        settings: The :class:`GenerationSettings` of each of those generations.
        backends: The newest backend made for each model id.
        paces: How slow each model is made (:meth:`pace`).
        closed: Paced generations closed per model id (ended, stopped early or cancelled).
        sleep: How a paced model waits: ``time.sleep``, or a :class:`ManualClock`'s
            ``advance`` so that a runner on that clock sees the delay at once.
    """

    def __init__(
        self,
        inner_factory: BackendFactory = default_backend_factory,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner_factory = inner_factory
        self.sleep = sleep
        self.paces: dict[str, Pace] = {}
        self.closed: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.prompts: dict[str, list[str | Conversation]] = {}
        self.settings: dict[str, list[GenerationSettings]] = {}
        self.backends: dict[str, FaultyBackend] = {}
        self._faults: dict[str, Fault] = {}
        self._lock = threading.Lock()

    def __call__(self, spec: ModelSpec) -> FaultyBackend:
        backend = FaultyBackend(self.inner_factory(spec), self)
        self.backends[spec.model_id] = backend
        return backend

    def fail(self, model_id: str, *, kind: FaultKind = "stream", after: int = 0, message: str = "") -> None:
        """Make ``model_id`` fail from now on (until :meth:`heal`)."""
        with self._lock:
            self._faults[model_id] = Fault(kind, after, message or Fault.message)

    def pace(self, model_id: str, **pace: Any) -> None:
        """Make ``model_id`` slow (the fields of :class:`Pace`); ``pace(model_id)``: normal again."""
        with self._lock:
            if pace:
                self.paces[model_id] = Pace(**pace)
            else:
                self.paces.pop(model_id, None)

    def heal(self, model_id: str) -> None:
        """Let ``model_id`` work again."""
        with self._lock:
            self._faults.pop(model_id, None)

    def fault(self, model_id: str) -> Fault | None:
        with self._lock:
            return self._faults.get(model_id)

    def _record(self, model_id: str, prompt: str | Conversation, settings: GenerationSettings) -> None:
        with self._lock:
            self.calls[model_id] += 1
            self.prompts.setdefault(model_id, []).append(prompt)
            self.settings.setdefault(model_id, []).append(settings)


class ManualClock:
    """A monotonic clock that moves only when told: circuit-breaker cooldowns in tests
    pass in an instant and never race a busy machine.

    Example:
        >>> clock = ManualClock()
        >>> clock.advance(30.0)
        >>> clock()
        1030.0
    """

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self.now += seconds


# -- configs over tiny models -------------------------------------------------------------
#: The refine template of :meth:`TinyRuntime.two_stage`: the prompt, then the draft, short
#: enough that a test can write out what the refine model was sent.
REFINE_TEMPLATE = "{prompt} | draft: {draft}"


@dataclass
class TinyRuntime:
    """A folder of tiny stand-ins for the seed's models and configs that use them.

    Every config composes the real ``conf/`` (or a private copy holding profiles
    written by :meth:`write_profile`) with overrides that point ``models.dirs`` and
    ``models.registry`` into ``root`` and keep generations tiny.

    Attributes:
        root: The test's own folder (``tmp_path``).
        models_dir: Where the ``.gguf`` files are.
        overrides: Applied to every config before the caller's own.
    """

    root: Path
    models_dir: Path
    overrides: list[str] = field(default_factory=list)
    conf_dir: Path | None = None
    _pools: list[ModelPool] = field(default_factory=list, repr=False)

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        echo: bool | Collection[str] = False,
        models: Sequence[str] = tuple(SEED_MODELS),
    ) -> TinyRuntime:
        """Write ``models`` (seed ids) into ``root/models``.

        Args:
            echo: True for echo weights everywhere, or the ids that get them (the
                others have random weights: they never emit end-of-sequence, so a
                generation has exactly ``max_tokens`` tokens).
        """
        models_dir = root / "models"
        for i, model_id in enumerate(models):
            is_echo = echo if isinstance(echo, bool) else model_id in echo
            write_spec(models_dir, SEED_MODELS[model_id], echo=is_echo, seed=i)
        overrides = [
            f"models.dirs=['{models_dir}']",
            f"models.registry='{root / 'registry.json'}'",
            "models.demo=false",
            "runtime.max_tokens=8",
            "runtime.n_ctx=256",
            "runtime.n_threads=1",
            "profile.two_stage.stage1_max_tokens=4",  # the seed's 500 would overflow n_ctx=256
        ]
        return cls(root=root, models_dir=models_dir, overrides=overrides)

    def path(self, model_id: str) -> Path:
        """The ``.gguf`` file of a seed model id."""
        return self.models_dir / SEED_MODELS[model_id].filename

    def write_profile(self, name: str, profile: dict[str, Any]) -> Path:
        """Add ``conf/profile/<name>.yaml`` to a private copy of ``conf/`` (made on first use)."""
        if self.conf_dir is None:
            self.conf_dir = self.root / "conf"
            shutil.copytree(default_conf_dir(), self.conf_dir)
        path = self.conf_dir / "profile" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(profile, sort_keys=False), encoding="utf-8")
        return path

    def compose(self, profile: str | None = "development", *overrides: str) -> MagiConfig:
        """The validated config of ``profile`` over the tiny models."""
        return compose(profile, [*self.overrides, *overrides], conf_dir=self.conf_dir)

    def runner(
        self,
        profile: str | None = "development",
        *overrides: str,
        pool: ModelPool | None = None,
        backend_factory: BackendFactory | None = None,
        start_health_checks: bool = False,
        clock: Clock = time.monotonic,
    ) -> Runner:
        """A :class:`Runner` for ``profile``; its own pool unless ``pool`` is given.

        With ``backend_factory`` (e.g. a :class:`FaultInjector`) the runner gets a new
        pool that uses it; :meth:`close` closes such pools (the fixtures call it at
        teardown). Health checks are off by default: tests drive health through
        requests, not a timer; ``clock`` (e.g. a :class:`ManualClock`) drives the
        circuit breakers' cooldowns.
        """
        if pool is None and backend_factory is not None:
            pool = ModelPool(backend_factory=backend_factory)
            self._pools.append(pool)
        config = self.compose(profile, *overrides)
        return Runner(config, pool=pool, start_health_checks=start_health_checks, clock=clock)

    def two_stage(self, recorder: FaultInjector, *overrides: str) -> Runner:
        """The development profile as the two-stage tests read it: the tagged scorer, the
        prompt as written (no template), :data:`REFINE_TEMPLATE`, a 5-token draft and a
        12-token answer; ``recorder`` records what each model was sent."""
        return self.runner(
            "development",
            "scorer=tagged",
            "runtime.prompt_template='{prompt}'",
            f"profile.two_stage.refine_template='{REFINE_TEMPLATE}'",
            "profile.two_stage.stage1_max_tokens=5",
            "runtime.max_tokens=12",
            *overrides,
            backend_factory=recorder,
        )

    def close(self) -> None:
        """Close the pools :meth:`runner` made for a ``backend_factory``."""
        for pool in self._pools:
            pool.close()
        self._pools.clear()
