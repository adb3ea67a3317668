"""The model pool: models load lazily, are shared, and are evicted least-recently-used.

* A model is loaded on its first lease, once, however many tiers, profiles or
  runners use it (the pool is keyed by model id; a runner switching profiles
  keeps what is loaded).
* One lock per model: a ``Llama`` is not thread-safe, so a lease is exclusive. A
  remote model admits ``max_concurrency`` leases at once (its server's slots).
* A memory budget (from the registry's estimates) and/or a maximum number of
  loaded models evict the least recently used idle, unpinned models *before* a new
  one loads; evicted and remaining models are ``close()``d, never left to the
  garbage collector. Remote models hold no memory here: they neither count against
  the limits nor get evicted.
* The limits hold under concurrency: a load that would exceed them while every
  other model is busy waits until one is idle, then evicts it (models being loaded
  count as loaded). It loads over the limit only when waiting cannot help: the other
  models are pinned, or this thread itself holds a lease on one (nested leases).
* Limits come from the pool's own arguments and from each open :class:`Runner` that
  uses the pool (:meth:`ModelPool.set_limits`): the strictest of them applies, and
  a runner's limits go away when it closes. So on the shared pool a runner with no
  limits does not inherit an earlier, closed runner's, and one with a limit is never
  loosened by another that sets none.

Example:
    >>> pool = ModelPool(max_loaded=1)
    >>> pool.register(spec)                      # doctest: +SKIP
    >>> with pool.lease(spec.model_id) as backend:  # doctest: +SKIP
    ...     text = "".join(backend.stream("Hi", GenerationSettings(max_tokens=8)))
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from magi.errors import ModelNotFoundError, did_you_mean, format_options
from magi.runtime.backend import Backend, ModelSpec

logger = logging.getLogger(__name__)

BackendFactory = Callable[[ModelSpec], Backend]


def default_backend_factory(spec: ModelSpec) -> Backend:
    """In-process llama.cpp for a model file; an HTTP client for a remote model."""
    if spec.is_remote:
        from magi.runtime.remote import RemoteBackend

        return RemoteBackend(spec)
    from magi.runtime.llama import LlamaBackend

    return LlamaBackend(spec)


#: ModelSpec fields that shape generations but not the loaded model.
GENERATION_FIELDS: tuple[str, ...] = ("sampling", "memory_mb", "gpu_memory_mb")


def same_load(old: ModelSpec, new: ModelSpec) -> bool:
    """Would ``new`` load the same model as ``old``? (They differ at most in
    :data:`GENERATION_FIELDS`.) Other fields, including ones a backend adds later,
    count as load settings, so an unknown change always reloads."""
    return replace(old, **{name: getattr(new, name) for name in GENERATION_FIELDS}) == new


@dataclass(frozen=True)
class PoolLimits:
    """How much may be loaded at once (None: no limit of that kind)."""

    memory_budget_mb: float | None = None
    """Host memory (RAM) of the loaded models' estimates (``ModelSpec.memory_mb``)."""
    max_loaded: int | None = None
    gpu_memory_budget_mb: float | None = None
    """GPU memory of their estimates (``ModelSpec.gpu_memory_mb``: offloaded layers)."""

    @classmethod
    def strictest(cls, limits: Iterable[PoolLimits]) -> PoolLimits:
        """Each limit at its smallest over ``limits``; unset where none sets it."""
        items = list(limits)
        budgets = [x.memory_budget_mb for x in items if x.memory_budget_mb is not None]
        counts = [x.max_loaded for x in items if x.max_loaded is not None]
        gpu = [x.gpu_memory_budget_mb for x in items if x.gpu_memory_budget_mb is not None]
        return cls(min(budgets, default=None), min(counts, default=None), min(gpu, default=None))


@dataclass
class PoolStats:
    """Counters since the pool was made."""

    loads: int = 0
    hits: int = 0
    evictions: int = 0
    closes: int = 0
    loads_by_model: dict[str, int] = field(default_factory=dict)


class _Gate:
    """Admits ``capacity`` leases at once; :meth:`exclusive` waits for all of them.

    With capacity 1 (every local model) this is a plain lock. Exclusive use (close,
    unload, replace) takes every permit, one at a time, under a lock of its own so
    two exclusive users never each hold half of them.
    """

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = max(1, capacity)
        self._permits = threading.BoundedSemaphore(self.capacity)
        self._exclusive = threading.Lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not blocking:
            return self._permits.acquire(blocking=False)
        return self._permits.acquire(timeout=None if timeout < 0 else timeout)

    def release(self) -> None:
        self._permits.release()

    def acquire_all(self, blocking: bool = True) -> bool:
        if not self._exclusive.acquire(blocking=blocking):
            return False
        taken = 0
        try:
            while taken < self.capacity:
                if not self._permits.acquire(blocking=blocking):
                    break
                taken += 1
        finally:
            if taken < self.capacity:
                for _ in range(taken):
                    self._permits.release()
                self._exclusive.release()
        return taken == self.capacity

    def release_all(self) -> None:
        for _ in range(self.capacity):
            self._permits.release()
        self._exclusive.release()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        self.acquire_all()
        try:
            yield
        finally:
            self.release_all()


@dataclass
class _Slot:
    spec: ModelSpec
    backend: Backend
    in_use: int = 0
    pinned: bool = False
    gate: _Gate = field(init=False)

    def __post_init__(self) -> None:
        self.gate = _Gate(self.spec.max_concurrency)


class ModelPool:
    """Lazily loaded, shared, LRU-evicted models with one lock each.

    Args:
        memory_budget_mb: Evict idle models while the loaded models' estimated
            memory exceeds this. ``None``: no budget.
        max_loaded: Evict idle models while more than this many are loaded.
        backend_factory: Makes a backend for a spec (tests inject failing ones).
        gpu_memory_budget_mb: As ``memory_budget_mb``, for the GPU memory of the
            loaded models' offloaded layers. ``None``: no budget.

    ``memory_budget_mb`` and ``max_loaded`` read the limits in force (the strictest
    of the pool's own and its runners'); assigning them sets the pool's own.
    """

    def __init__(
        self,
        *,
        memory_budget_mb: float | None = None,
        max_loaded: int | None = None,
        backend_factory: BackendFactory = default_backend_factory,
        gpu_memory_budget_mb: float | None = None,
    ) -> None:
        self._own_limits = PoolLimits(memory_budget_mb, max_loaded, gpu_memory_budget_mb)
        self._holder_limits: weakref.WeakKeyDictionary[object, PoolLimits] = weakref.WeakKeyDictionary()
        self._factory = backend_factory
        self._slots: dict[str, _Slot] = {}
        self._lru: OrderedDict[str, None] = OrderedDict()  # loaded ids, least recent first
        self._loading: set[str] = set()  # local models being loaded: they count as loaded
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # a lease ended, a model closed, ...
        self._leases_held = threading.local()  # per thread: leases it holds (nesting)
        self._nested_waiters: dict[str, int] = {}  # model id -> threads holding a lease waiting for it
        self.stats = PoolStats()

    # -- limits ---------------------------------------------------------------------------
    @property
    def limits(self) -> PoolLimits:
        """The limits in force: the strictest of the pool's own and every open holder's."""
        with self._lock:
            return PoolLimits.strictest([self._own_limits, *self._holder_limits.values()])

    @property
    def memory_budget_mb(self) -> float | None:
        return self.limits.memory_budget_mb

    @memory_budget_mb.setter
    def memory_budget_mb(self, value: float | None) -> None:
        with self._changed:
            self._own_limits = replace(self._own_limits, memory_budget_mb=value)
            self._changed.notify_all()

    @property
    def max_loaded(self) -> int | None:
        return self.limits.max_loaded

    @max_loaded.setter
    def max_loaded(self, value: int | None) -> None:
        with self._changed:
            self._own_limits = replace(self._own_limits, max_loaded=value)
            self._changed.notify_all()

    def set_limits(self, holder: object, limits: PoolLimits) -> None:
        """Let ``holder`` (a :class:`Runner`) add its limits until :meth:`release_limits`
        or until it is garbage-collected. The strictest limits of all holders apply."""
        with self._changed:
            self._holder_limits[holder] = limits
            self._changed.notify_all()
        self._evict(keep=None)

    def release_limits(self, holder: object) -> None:
        """Drop ``holder``'s limits (a closing runner): loads waiting for room may proceed."""
        with self._changed:
            self._holder_limits.pop(holder, None)
            self._changed.notify_all()

    # -- registration -------------------------------------------------------------------
    def register(self, spec: ModelSpec) -> None:
        """Add a model, or replace its spec.

        A spec that differs only in how the model generates (sampling settings,
        prompt template, memory estimate) is swapped in place and a loaded model
        stays loaded: runners and sweep jobs that vary ``max_tokens`` or
        ``temperature`` share one load. Any other change (file, ``n_ctx``, threads,
        ...) closes the loaded model; it loads again with the new spec on demand.
        """
        with self._lock:
            old = self._slots.get(spec.model_id)
            if old is not None and same_load(old.spec, spec):
                old.spec = spec
                old.backend.spec = spec
                return
            self._slots[spec.model_id] = _Slot(spec=spec, backend=self._factory(spec))
            self._lru.pop(spec.model_id, None)
        if old is not None:
            with old.gate.exclusive(), self._lock:  # wait for its current leases to end
                if old.backend.loaded:
                    old.backend.close()
                    self.stats.closes += 1

    def spec(self, model_id: str) -> ModelSpec:
        return self._slot(model_id).spec

    def backend(self, model_id: str) -> Backend:
        """The backend object of a model (not leased; for probes and inspection)."""
        return self._slot(model_id).backend

    def _slot(self, model_id: str) -> _Slot:
        try:
            return self._slots[model_id]
        except KeyError:
            known = list(self._slots)
            raise ModelNotFoundError(
                f"Model '{model_id}' is not registered with the pool.{did_you_mean(model_id, known)} "
                f"Known: {format_options(known)}"
            ) from None

    @property
    def model_ids(self) -> list[str]:
        return list(self._slots)

    # -- leasing --------------------------------------------------------------------------
    @contextmanager
    def lease(self, model_id: str, *, timeout: float | None = None) -> Iterator[Backend]:
        """Use of a loaded model (exclusive, but for a remote model's ``max_concurrency``);
        loads it first if needed.

        ``timeout`` covers both waits: for the model's lock, and (when loading it would
        exceed the limits while the other models are busy) for one of them to be idle.

        Raises:
            ModelNotFoundError: the id is not registered.
            TimeoutError: the model stayed busy, or no room was freed to load it, for
                ``timeout`` seconds.
            ModelError: the model could not be loaded.
        """
        slot = self._slot(model_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        nested = getattr(self._leases_held, "count", 0) > 0
        with self._changed:
            slot.in_use += 1
            if nested:  # a holder waiting for room for this model would wait for us: tell it
                self._nested_waiters[model_id] = self._nested_waiters.get(model_id, 0) + 1
                self._changed.notify_all()
        try:
            try:
                acquired = slot.gate.acquire(timeout=-1 if timeout is None else timeout)
            finally:
                if nested:
                    with self._lock:
                        self._nested_waiters[model_id] -= 1
            if not acquired:
                raise TimeoutError(f"Model '{model_id}' stayed busy for {timeout:.1f}s")
            self._leases_held.count = getattr(self._leases_held, "count", 0) + 1
            try:
                if slot.backend.loaded:
                    with self._lock:
                        self.stats.hits += 1
                else:
                    self._make_room(model_id, slot, deadline, timeout)
                    try:
                        slot.backend.load()
                    finally:
                        with self._changed:
                            self._loading.discard(model_id)
                            self._changed.notify_all()
                    with self._lock:
                        self.stats.loads += 1
                        self.stats.loads_by_model[model_id] = self.stats.loads_by_model.get(model_id, 0) + 1
                with self._lock:
                    self._lru[model_id] = None
                    self._lru.move_to_end(model_id)
                self._evict(keep=model_id)  # limits may have tightened meanwhile
                yield slot.backend
            finally:
                self._leases_held.count -= 1
                slot.gate.release()
        finally:
            with self._changed:
                slot.in_use -= 1
                self._changed.notify_all()

    def preload(self, model_id: str) -> None:
        """Load a model now instead of on its first request."""
        with self.lease(model_id):
            pass

    # -- eviction -------------------------------------------------------------------------
    def pin(self, model_id: str, pinned: bool = True) -> None:
        """A pinned model is never evicted (it is still closed by :meth:`close`)."""
        slot = self._slot(model_id)
        with self._changed:
            slot.pinned = pinned
            self._changed.notify_all()

    @property
    def loaded_ids(self) -> list[str]:
        """Loaded models (remote ones: verified reachable), least recently used first."""
        with self._lock:
            return [m for m in self._lru if self._slots[m].backend.loaded]

    def _resident_ids(self) -> list[str]:
        """Loaded in-process models: what the memory budget and max_loaded limit."""
        return [m for m in self.loaded_ids if not self._slots[m].spec.is_remote]

    @property
    def loaded_memory_mb(self) -> float:
        """Host memory estimate of the loaded models."""
        with self._lock:
            return sum(self._slots[m].spec.memory_mb for m in self.loaded_ids)

    @property
    def loaded_gpu_memory_mb(self) -> float:
        """GPU memory estimate of the loaded models."""
        with self._lock:
            return sum(self._slots[m].spec.gpu_memory_mb for m in self.loaded_ids)

    def _over_budget(self, adding: ModelSpec | None = None) -> bool:
        """Would the resident models (those loading included), plus ``adding``, exceed
        the limits? A model alone never does: it is loaded even if over the budget."""
        limits = self.limits
        ids = [
            m
            for m in dict.fromkeys([*self._resident_ids(), *self._loading])
            if adding is None or m != adding.model_id
        ]
        count = len(ids) + (adding is not None)
        if limits.max_loaded is not None and count > limits.max_loaded:
            return True
        if count <= 1:
            return False
        specs = [self._slots[m].spec for m in ids] + ([adding] if adding else [])
        if limits.memory_budget_mb is not None and sum(s.memory_mb for s in specs) > limits.memory_budget_mb:
            return True
        budget = limits.gpu_memory_budget_mb
        return budget is not None and sum(s.gpu_memory_mb for s in specs) > budget

    def _evictable(self, model_id: str, keep: str | None) -> bool:
        slot = self._slots[model_id]
        return not (
            model_id == keep or slot.pinned or slot.in_use or slot.spec.is_remote or model_id in self._loading
        )

    def _evict(self, keep: str | None, adding: ModelSpec | None = None) -> bool:
        """Close idle, unpinned models, least recently used first, until the limits hold
        (with ``adding`` counted as loaded). Returns whether they hold."""
        with self._lock:
            for model_id in list(self._lru):
                if not self._over_budget(adding):
                    return True
                if not self._evictable(model_id, keep):
                    continue
                slot = self._slots[model_id]
                if not slot.gate.acquire_all(blocking=False):
                    continue
                try:
                    self._close_slot(model_id, slot)
                    self.stats.evictions += 1
                    logger.info("Evicted %s (least recently used)", model_id)
                finally:
                    slot.gate.release_all()
            return not self._over_budget(adding)

    def _make_room(self, model_id: str, slot: _Slot, deadline: float | None, timeout: float | None) -> None:
        """Before loading ``model_id``: evict until it fits the limits, waiting for a busy
        model to become idle when that is the only way; then count it as loading.

        It loads over the limits (with a warning) when waiting cannot free room: every
        other resident model is pinned, or a lease holder waits for this model (this
        thread itself, or another one with a nested lease: it could wait forever).
        """
        if slot.spec.is_remote:
            return
        with self._changed:
            while not self._evict(keep=model_id, adding=slot.spec):
                nested = self._leases_held.count > 1 or self._nested_waiters.get(model_id, 0) > 0
                others = [m for m in dict.fromkeys([*self._lru, *self._loading]) if m != model_id]
                will_free = [
                    m
                    for m in others
                    if not self._slots[m].pinned
                    and not self._slots[m].spec.is_remote
                    and (self._slots[m].in_use or m in self._loading)
                ]
                if nested or not will_free:
                    logger.warning(
                        "Loading %s exceeds the limits (%s) but the other loaded models are %s",
                        model_id,
                        self._describe_limits(),
                        "in use by a thread that waits for it" if nested else "pinned",
                    )
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"No room to load model '{model_id}' within {timeout:.1f}s: "
                        f"{self._describe_limits()} and {', '.join(will_free)} stayed busy"
                    )
                self._changed.wait(timeout=remaining)
            self._loading.add(model_id)

    def _describe_limits(self) -> str:
        limits = self.limits
        parts = [f"{len(self._resident_ids()) + len(self._loading)} loaded or loading"]
        if limits.max_loaded is not None:
            parts.append(f"max_loaded_models={limits.max_loaded}")
        if limits.memory_budget_mb is not None:
            parts.append(f"{self.loaded_memory_mb:.0f} of memory_budget_mb={limits.memory_budget_mb:.0f} MB")
        if limits.gpu_memory_budget_mb is not None:
            gpu = f"{self.loaded_gpu_memory_mb:.0f} of gpu_memory_budget_mb={limits.gpu_memory_budget_mb:.0f}"
            parts.append(gpu + " MB")
        return ", ".join(parts)

    def _close_slot(self, model_id: str, slot: _Slot) -> None:
        if slot.backend.loaded:
            slot.backend.close()
            self.stats.closes += 1
        self._lru.pop(model_id, None)
        self._changed.notify_all()  # room for a load that waits (callers hold the lock)

    def unload(self, model_id: str) -> None:
        """Close one model now (it loads again on its next lease)."""
        slot = self._slot(model_id)
        with slot.gate.exclusive(), self._lock:
            self._close_slot(model_id, slot)

    def close(self) -> None:
        """Close every loaded model. The pool stays usable; models reload on demand."""
        with self._lock:
            slots = list(self._slots.items())
        for model_id, slot in slots:
            with slot.gate.exclusive(), self._lock:
                self._close_slot(model_id, slot)

    def __enter__(self) -> ModelPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_shared: ModelPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> ModelPool:
    """The process-wide pool that run.py tasks, sweeps and widgets share, so a
    model stays loaded across runs, profile switches and multirun jobs."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ModelPool()
        return _shared
