"""Load balancing: which of a tier's healthy models takes the next request.

The router keeps one balancer per tier. It hands the balancer the tier's *healthy*
model ids, in the tier's order, plus the live count of requests in flight per
model, and gets back either one model id (:meth:`Balancer.pick`) or the whole
order to try them in (:meth:`Balancer.order`: the pick first, then the others for
failover).

Strategies (``profile.load_balancing.strategy``; ``first`` when balancing is off):

* ``round_robin``: each model in turn; exactly even over any run of picks.
* ``least_loaded``: the model with the fewest requests in flight; ties go round-robin
  among the tied models, so an idle tier still spreads its load.
* ``random``: uniformly at random from a ``random.Random(seed)``, so a run is
  reproducible.
* ``first``: always the first healthy model in tier order (balancing disabled: the
  others are only failover).

All balancers are thread-safe: their counters and random generators sit behind a
lock.

Example:
    >>> from magi.routing.balancer import make_balancer
    >>> rr = make_balancer("round_robin")
    >>> [rr.pick(["a", "b", "c"], {}) for _ in range(4)]
    ['a', 'b', 'c', 'a']
    >>> make_balancer("least_loaded").pick(["a", "b"], {"a": 2, "b": 0})
    'b'
    >>> make_balancer("first").order(["a", "b", "c"], {})
    ['a', 'b', 'c']
"""

from __future__ import annotations

import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

from magi.errors import ConfigError, did_you_mean, format_options


class Balancer(ABC):
    """Chooses among a tier's healthy models. Subclasses implement :meth:`_choose`.

    Args:
        seed: Seed of strategies that draw random numbers (ignored by the others).
    """

    strategy: ClassVar[str] = ""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(strategy={self.strategy!r}, seed={self.seed})"

    def pick(self, candidates: Sequence[str], in_flight: Mapping[str, int]) -> str:
        """The model id that should take the next request.

        Args:
            candidates: Healthy model ids of the tier, in tier order (not empty).
            in_flight: Requests currently running per model id (missing ids count 0).

        Raises:
            ValueError: ``candidates`` is empty (the router checks health first and
                fails over to another tier instead of asking).
        """
        if not candidates:
            raise ValueError(f"{self.strategy} balancer: no candidate models to pick from")
        return candidates[self._choose(candidates, in_flight)]

    def order(self, candidates: Sequence[str], in_flight: Mapping[str, int]) -> list[str]:
        """All candidates in the order to try them: the pick, then the rest for failover.

        The rest follow the pick cyclically in tier order (``[b, c, a]`` after picking
        ``b``), so when one model fails its requests spread over the others instead of
        all landing on the tier's first model. An empty ``candidates`` gives ``[]``.
        """
        if not candidates:
            return []
        index = self._choose(candidates, in_flight)
        return [*candidates[index:], *candidates[:index]]

    @abstractmethod
    def _choose(self, candidates: Sequence[str], in_flight: Mapping[str, int]) -> int:
        """Index into the non-empty ``candidates`` of the chosen model."""


_BALANCERS: dict[str, type[Balancer]] = {}


def register_balancer(name: str) -> Callable[[type[Balancer]], type[Balancer]]:
    """Class decorator: make a :class:`Balancer` selectable as ``strategy: <name>``.

    A different class under a taken name is refused; the same class defined again (a
    notebook cell re-run) replaces the old one.
    """

    def add(cls: type[Balancer]) -> type[Balancer]:
        existing = _BALANCERS.get(name)
        redefined = existing is not None and (existing.__module__, existing.__qualname__) == (
            cls.__module__,
            cls.__qualname__,
        )
        if existing is not None and existing is not cls and not redefined:
            raise ValueError(f"a balancer named '{name}' is already registered ({existing!r})")
        cls.strategy = name
        _BALANCERS[name] = cls
        return cls

    return add


def available_strategies() -> list[str]:
    """Names accepted by :func:`make_balancer`."""
    return sorted(_BALANCERS)


def make_balancer(strategy: str, seed: int = 0) -> Balancer:
    """A new balancer for ``strategy`` (one per tier: each keeps its own rotation).

    Raises:
        ConfigError: unknown strategy; the message suggests the closest one and lists
            the valid ones.
    """
    cls = _BALANCERS.get(strategy)
    if cls is None:
        names = available_strategies()
        raise ConfigError(
            [
                f"load_balancing.strategy: unknown strategy '{strategy}'.{did_you_mean(strategy, names)} "
                f"Available: {format_options(names)}"
            ]
        )
    return cls(seed=seed)


@register_balancer("first")
class FirstBalancer(Balancer):
    """Always the first healthy model in tier order: balancing disabled, failover kept."""

    def _choose(self, candidates: Sequence[str], in_flight: Mapping[str, int]) -> int:
        return 0


@register_balancer("round_robin")
class RoundRobinBalancer(Balancer):
    """Each healthy model in turn.

    One counter per balancer (so per tier) advances on every pick; the pick is
    ``candidates[counter % len(candidates)]``. Over any ``k * len(candidates)``
    consecutive picks from a fixed candidate list each model is chosen exactly ``k``
    times, whichever threads made the picks.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self._counter = 0

    def _choose(self, candidates: Sequence[str], in_flight: Mapping[str, int]) -> int:
        with self._lock:
            turn = self._counter
            self._counter += 1
        return turn % len(candidates)


@register_balancer("least_loaded")
class LeastLoadedBalancer(Balancer):
    """The model with the fewest requests in flight; ties are broken round-robin.

    ``in_flight`` is read when the pick is made; two threads picking at the same
    instant may both see the same counts (the caller increments the count when the
    request starts), which the round-robin tie-break spreads over the tied models.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self._counter = 0

    def order(self, candidates: Sequence[str], in_flight: Mapping[str, int]) -> list[str]:
        """The pick, then the others from least to most loaded (ties: cyclically after
        the pick, in tier order): failover also goes to the emptiest model."""
        rotated = super().order(candidates, in_flight)
        return rotated[:1] + sorted(rotated[1:], key=lambda model_id: in_flight.get(model_id, 0))

    def _choose(self, candidates: Sequence[str], in_flight: Mapping[str, int]) -> int:
        loads = [in_flight.get(model_id, 0) for model_id in candidates]
        lowest = min(loads)
        tied = [i for i, load in enumerate(loads) if load == lowest]
        if len(tied) == 1:
            return tied[0]
        with self._lock:
            turn = self._counter
            self._counter += 1
        return tied[turn % len(tied)]


@register_balancer("random")
class RandomBalancer(Balancer):
    """Uniformly at random, from ``random.Random(seed)``: the same seed and the same
    sequence of calls give the same picks (sweeps stay comparable)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self._rng = random.Random(seed)

    def _choose(self, candidates: Sequence[str], in_flight: Mapping[str, int]) -> int:
        with self._lock:
            return self._rng.randrange(len(candidates))
