"""The routing decision: score the prompt, pick the tier, plan the stages, order the models.

The router makes no model calls. For each prompt it answers three questions, in
microseconds, so a runner can act on them:

1. **Which tier?** The prompt's complexity score (from the configured scorer) goes to
   the first tier whose ``max_score`` is at least the score; a score above every
   threshold goes to the last tier. A score *equal* to a tier's ``max_score`` stays
   in that tier.
2. **One stage or two?** Two stages (draft, then refine) when
   ``profile.two_stage.enabled`` and the prompt routes to ``two_stage.stage2_tier``:
   the ``stage1_tier`` drafts with at most ``stage1_max_tokens`` tokens and the
   routed tier refines. A prompt routed to any other tier (e.g. the fast tier) is
   answered by that tier alone: drafting an easy answer only to refine it with the
   same or a weaker model would double the latency for nothing.
3. **Which model, and who fails over?** Within a tier, the tier's balancer picks among
   the healthy models (circuit not open); the others follow as failover, so each
   stage carries the ordered list of models to try. When a whole tier fails,
   :meth:`Router.fallback_tiers` names the tiers to try next: the more powerful tiers
   first (nearest first: a stronger model can answer what a weaker one could), then
   the less powerful ones (nearest first: a weaker answer beats none).

Example:
    >>> from magi.config.profile import ModelProfile
    >>> from magi.routing import HealthMonitor, Router, get_scorer
    >>> profile = ModelProfile.model_validate({
    ...     "name": "Dev", "enabled_models": ["small", "big"],
    ...     "tier_config": [{"name": "fast", "max_score": 5.0}, {"name": "powerful"}],
    ...     "two_stage": {"enabled": True, "stage1_tier": "fast", "stage2_tier": "powerful"},
    ... })
    >>> router = Router(profile, {"fast": ["small"], "powerful": ["big"]}, get_scorer("heuristic"),
    ...                 HealthMonitor(["small", "big"]))
    >>> router.decide("Hi!").tier
    'fast'
    >>> d = router.decide("Prove that the square root of 2 is irrational; explain every step.")
    >>> d.tier, d.two_stage, [(s.role, s.tier, s.candidates) for s in d.stages]
    ('powerful', True, [('draft', 'fast', ('small',)), ('refine', 'powerful', ('big',))])
    >>> router.fallback_tiers("fast")
    ['powerful']

For runners, one stage with failover (the health monitor records every outcome)::

    tried = []
    for tier, model_id in router.attempts(stage):
        tried.append(tier)
        try:
            with health.attempt(model_id):   # counts in flight, records success or failure
                text = generate(model_id, prompt, max_tokens=stage.max_tokens)
        except Exception:                    # failed (recorded), or ModelUnavailableError when
            continue                         # its circuit opened since decide(): next model
        break
    else:
        raise router.no_healthy_error(list(dict.fromkeys(tried)) or None)
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from magi.conversation import Conversation
from magi.errors import ConfigError, did_you_mean, format_options
from magi.routing.balancer import Balancer, make_balancer
from magi.routing.health import HealthMonitor, NoHealthyModelError
from magi.routing.scorer import ComplexityScore, Scorer, config_scorer

if TYPE_CHECKING:
    from magi.config.app import MagiConfig
    from magi.config.profile import ModelProfile

ANSWER, DRAFT, REFINE = "answer", "draft", "refine"
"""Stage roles: a single-stage answer, or the draft and refine of two-stage processing."""


#: The conversation rule (:func:`conversation_score`): the share of the gap up to the
#: hardest earlier user turn that a follow-up inherits ...
CONVERSATION_SHARE = 0.8
#: ... times this for each user turn between that turn and the follow-up ...
CONVERSATION_DECAY = 0.5
#: ... over at most this many earlier user turns (the cost bound: that many more scorer calls).
CONVERSATION_LOOKBACK = 8
#: A long history adds up to this much (half of it at ``CONVERSATION_LENGTH_SCALE`` characters).
CONVERSATION_LENGTH = 0.5
CONVERSATION_LENGTH_SCALE = 4000.0
#: The most the conversation adds to the last user message's score.
CONVERSATION_CAP = 4.0
#: The earlier turns' scores are remembered per scorer, for texts of this many characters
#: in all (the least recently used forgotten first), so each request of a conversation
#: scores one new message instead of re-scoring up to ``CONVERSATION_LOOKBACK`` turns.
TURN_CACHE_CHARS = 2_000_000


class TurnScores:
    """Scores of texts a scorer has already rated, bounded by their total length
    (least recently used first out); thread-safe. Scorers are deterministic, so a
    remembered score is the score the scorer would give again."""

    def __init__(self, max_chars: int = TURN_CACHE_CHARS) -> None:
        self.max_chars = max_chars
        self._scores: OrderedDict[str, float] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._scores)

    def get(self, text: str) -> float | None:
        """The remembered score of ``text``, or None."""
        with self._lock:
            value = self._scores.get(text)
            if value is not None:
                self._scores.move_to_end(text)
            return value

    def put(self, text: str, value: float) -> None:
        """Remember ``text``'s score (a text longer than ``max_chars`` is not kept)."""
        if len(text) > self.max_chars:
            return
        with self._lock:
            if text in self._scores:
                self._scores.move_to_end(text)
                return
            self._scores[text] = value
            self._chars += len(text)
            while self._chars > self.max_chars:
                old, _ = self._scores.popitem(last=False)
                self._chars -= len(old)


_turn_scores: weakref.WeakKeyDictionary[Scorer, TurnScores] = weakref.WeakKeyDictionary()
_turn_scores_lock = threading.Lock()


def turn_scores(scorer: Scorer) -> TurnScores | None:
    """The remembered turn scores of ``scorer`` (one cache per scorer object, gone with
    it); None for a scorer that cannot be weakly referenced or hashed (never cached)."""
    try:
        with _turn_scores_lock:
            cache = _turn_scores.get(scorer)
            if cache is None:
                cache = _turn_scores[scorer] = TurnScores()
    except TypeError:
        return None
    return cache


def conversation_score(scorer: Scorer, conversation: Conversation) -> ComplexityScore:
    """Score a conversation: its last user message, plus a bounded ``conversation`` term.

    The message being answered is scored as a prompt would be. A follow-up ("why?",
    "and in Rust?") is short and looks easy on its own, but its answer needs the
    context of the turns before it: it is as hard as what it follows up on. So the
    earlier turns add, on the 0-10 scale (:meth:`ComplexityScore.plus`):

    * **inherited**: for each of the last ``CONVERSATION_LOOKBACK`` earlier user turns,
      ``CONVERSATION_SHARE`` (0.8) of how much harder it scored than the last message,
      halved (``CONVERSATION_DECAY``) for each user turn between them; the largest of
      these. A follow-up right after a 7.5 question that scores 2.3 itself gets
      +4.0 (capped), 6.3: the hard tier. A new topic two turns later inherits less.
    * **length**: ``CONVERSATION_LENGTH * (1 - 2 ** (-chars / CONVERSATION_LENGTH_SCALE))``
      for the characters of the history (every role): at most +0.5, so a long chat
      drifts up a little (a longer context is more to keep track of) but length alone
      never moves small talk past a tier boundary far below it.

    The sum is capped at ``CONVERSATION_CAP`` (4.0), so a message that scores under
    1.0 on its own ("thanks!", "ok", a greeting) never leaves a fast tier whose
    ``max_score`` is 5.0, however hard the conversation was. Assistant turns are not scored
    (they are the models' own text; a long answer does not make the question hard).
    Deterministic, and cheap: the earlier turns' scores are remembered per scorer
    (:func:`turn_scores`), so a request scores its last user message and looks up the
    others (at most ``1 + CONVERSATION_LOOKBACK`` scorer calls when none is remembered),
    plus a sum of lengths. A conversation of one user turn (a system prompt or not) scores
    exactly as its message does, with no ``conversation`` term: a plain prompt routes
    as it always did.

    Measured with the heuristic scorer and the fast tier's ``max_score`` of 5.0, a
    30-word assistant answer between the turns (``tests/test_runner_conversation.py``
    checks the first two on ``data/prompts/labelled.jsonl``):

    ================================================ ============= ============
    follow-up                                        labelled      holdout
    ================================================ ============= ============
    "why?" after a hard prompt: hard tier             32/32         16/20 [#]_
    an easy prompt after an easy one: fast tier       1024/1024     400/400
    "thanks!" after a hard prompt: fast tier          32/32         20/20
    an easy prompt after a hard one: hard tier        64/1024       112/400
    "why?" two user turns after a hard prompt: hard   5/32          0/20
    ================================================ ============= ============

    .. [#] 2 of the 20 holdout hard prompts score 5.0 or less themselves.

    The fourth row is the rule's cost: an easy question right after a hard one is
    sometimes answered by the hard tier.
    """
    last = scorer.score(conversation.last_user)
    cache = turn_scores(scorer)
    if cache is not None:
        # the next request of this conversation finds this message among the earlier ones
        cache.put(conversation.last_user, last.score)
    history = conversation.history
    if not history:
        return last
    earlier = [m.content for m in history if m.role == "user"][-CONVERSATION_LOOKBACK:]
    inherited, hardest, source = 0.0, 0.0, 0
    for distance, text in enumerate(reversed(earlier)):
        value = cache.get(text) if cache is not None else None
        if value is None:
            value = scorer.score(text).score
            if cache is not None:
                cache.put(text, value)
        gain = CONVERSATION_SHARE * CONVERSATION_DECAY**distance * max(0.0, value - last.score)
        if gain > inherited:
            inherited, hardest, source = gain, value, distance + 1
    chars = sum(len(m.content) for m in history)
    length = CONVERSATION_LENGTH * (1.0 - math.pow(2.0, -chars / CONVERSATION_LENGTH_SCALE))
    points = min(CONVERSATION_CAP, inherited + length)
    features = {
        "conversation_turns": len(history) + 1,
        "conversation_hardest": round(hardest, 2),
        "conversation_turns_back": source,
        "conversation_chars": chars,
    }
    return last.plus("conversation", round(points, 4), features)


@dataclass(frozen=True)
class Stage:
    """One generation step of a routed request.

    Attributes:
        role: ``answer`` (single stage), ``draft`` (stage 1) or ``refine`` (stage 2;
            its prompt is ``two_stage.refine_template`` filled with the draft).
        tier: The tier that serves this stage.
        candidates: Model ids to try in order: the balancer's pick, then the tier's
            other healthy models. Empty when none is healthy: go to
            :meth:`Router.fallback_tiers` (or, for a draft, skip drafting).
        max_tokens: Token budget of this stage (``stage1_max_tokens`` for a draft);
            None means the runtime default.
    """

    role: str
    tier: str
    candidates: tuple[str, ...]
    max_tokens: int | None = None

    @property
    def model(self) -> str | None:
        """The balancer's pick (first candidate), or None when no model is healthy."""
        return self.candidates[0] if self.candidates else None


@dataclass(frozen=True)
class RouteDecision:
    """Where a prompt goes and why; the start of every answer's trace.

    Attributes:
        score: The complexity score, with its explanation.
        tier: The tier the score routes to (the tier that gives the final answer).
        two_stage: Whether a draft stage precedes the final one.
        stages: The stages in execution order: ``(answer,)`` or ``(draft, refine)``.
        decided_in: Seconds the decision took (scoring + tier + picks).
        turns: Turns of the conversation routed (system prompt excluded): 1 for a
            prompt; more when the last user message was scored with its history
            (:func:`conversation_score`).
    """

    score: ComplexityScore
    tier: str
    two_stage: bool
    stages: tuple[Stage, ...]
    decided_in: float = field(default=0.0, compare=False)
    turns: int = 1

    @property
    def scored(self) -> str:
        """What was scored, for traces: "the prompt", or "last user message of 3 turns,
        conversation +2.10"."""
        if self.turns <= 1:
            return "the prompt"
        added = self.score.contributions.get("conversation", 0.0)
        return f"last user message of {self.turns} turns, conversation {added:+.2f}"

    @property
    def final(self) -> Stage:
        """The stage that produces the answer (``answer`` or ``refine``)."""
        return self.stages[-1]

    @property
    def draft(self) -> Stage | None:
        """The draft stage, or None for single-stage routing."""
        return self.stages[0] if self.two_stage else None

    def explain(self) -> str:
        """One line for the trace, e.g. ``score 6.54 -> powerful (two-stage: draft on fast
        [small], refine on powerful [big]); reasoning +4.10 (...), ...``."""
        plan = ", ".join(
            f"{s.role} on {s.tier} [{', '.join(s.candidates) or 'no healthy model'}]" for s in self.stages
        )
        kind = "two-stage" if self.two_stage else "single stage"
        why = self.score.explain().split(" = ", 1)[-1]
        scored = f"; scored: {self.scored}" if self.turns > 1 else ""
        return f"score {self.score.score:.2f} -> {self.tier} ({kind}: {plan}); {why}{scored}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for traces and JSON."""
        return {
            "score": self.score.to_dict(),
            "tier": self.tier,
            "two_stage": self.two_stage,
            "stages": [
                {"role": s.role, "tier": s.tier, "candidates": list(s.candidates), "max_tokens": s.max_tokens}
                for s in self.stages
            ],
            "decided_in": self.decided_in,
            "turns": self.turns,
            "scored": self.scored,
        }


class Router:
    """Routes prompts for one profile. Thread-safe; one instance serves all requests.

    Args:
        profile: The validated profile (tiers, two-stage, load balancing).
        tier_members: Tier name -> model ids in that tier, in the order they are
            preferred (computed from the registry and ``profile.model_tiers``).
            Tiers may be missing or empty (they are skipped to their fallbacks);
            unknown tier names and models outside ``enabled_models`` are errors.
        scorer: The complexity scorer (see :func:`magi.routing.scorer.get_scorer`).
        health: The health monitor shared with the runner; every member model is
            registered with it.
        seed: Seed of the ``random`` balancing strategy (``runtime.seed``).

    Raises:
        ConfigError: ``tier_members`` names a tier the profile does not have, or a
            model the profile does not enable (all problems listed together).
    """

    def __init__(
        self,
        profile: ModelProfile,
        tier_members: Mapping[str, Sequence[str]],
        scorer: Scorer,
        health: HealthMonitor,
        seed: int = 0,
    ) -> None:
        tier_names = [t.name for t in profile.tier_config]
        problems: list[str] = []
        enabled = set(profile.enabled_models)
        for tier, members in tier_members.items():
            if tier not in tier_names:
                problems.append(
                    f"tier_members: tier '{tier}' is not in profile '{profile.name}'."
                    f"{did_you_mean(tier, tier_names)} Tiers: {', '.join(tier_names)}"
                )
            for model_id in members:
                if model_id not in enabled:
                    problems.append(
                        f"tier_members.{tier}: model '{model_id}' is not in the profile's enabled_models "
                        f"({format_options(enabled)})"
                    )
        if problems:
            raise ConfigError(problems, headline=f"Cannot route profile '{profile.name}'")

        self.profile = profile
        self.scorer = scorer
        self.health = health
        self.seed = seed
        self.tier_names: list[str] = tier_names
        self.members: dict[str, tuple[str, ...]] = {
            name: tuple(dict.fromkeys(tier_members.get(name, ()))) for name in tier_names
        }
        # (max_score, tier) in order: the hot path of decide() avoids Pydantic attribute access.
        self._thresholds: list[tuple[float, str]] = [(t.max_score, t.name) for t in profile.tier_config]
        balancing = profile.load_balancing
        self.strategy = balancing.strategy if balancing.enabled else "first"
        self.balancers: dict[str, Balancer] = {
            name: make_balancer(self.strategy, seed=seed) for name in tier_names
        }
        two_stage = profile.two_stage
        self._two_stage_tier = two_stage.stage2_tier if two_stage.enabled else None
        self._draft_tier = two_stage.stage1_tier
        self._draft_tokens = two_stage.stage1_max_tokens
        health.add(m for members in self.members.values() for m in members)

    @classmethod
    def from_config(
        cls,
        config: MagiConfig,
        tier_members: Mapping[str, Sequence[str]],
        health: HealthMonitor | None = None,
    ) -> Router:
        """A router for a validated :class:`MagiConfig`: the scorer named by
        ``config.scorer`` (with ``scorer_options``), a health monitor from
        ``config.runtime`` (unless given) and ``runtime.seed`` for random balancing."""
        return cls(
            config.profile,
            tier_members,
            config_scorer(config),
            health if health is not None else HealthMonitor.from_config(config),
            seed=config.runtime.seed,
        )

    def __repr__(self) -> str:
        tiers = ", ".join(f"{t}={list(m)}" for t, m in self.members.items())
        return (
            f"Router(profile={self.profile.name!r}, scorer={self.scorer.name!r}, {tiers}, "
            f"strategy={self.strategy})"
        )

    # -- decisions ---------------------------------------------------------------------
    def tier_for(self, score: float) -> str:
        """The first tier whose ``max_score`` is at least ``score``; else the last tier."""
        for max_score, name in self._thresholds:
            if score <= max_score:
                return name
        return self._thresholds[-1][1]

    def decide(self, prompt: str | Conversation) -> RouteDecision:
        """Score ``prompt`` and plan its stages (see the module docstring for the policy).

        A :class:`~magi.conversation.Conversation` (checked, e.g. by
        :func:`magi.conversation.to_conversation`) is scored by :func:`conversation_score`:
        its last user message plus a bounded ``conversation`` term from the earlier turns.

        Picking advances the balancers (a round-robin turn is used up), so call it
        once per request and use the returned candidates.
        """
        start = time.perf_counter()
        if isinstance(prompt, Conversation):
            score = conversation_score(self.scorer, prompt)
            turns = len(prompt.turns)
        else:
            score = self.scorer.score(prompt)
            turns = 1
        tier = self.tier_for(score.score)
        if tier == self._two_stage_tier:
            stages: tuple[Stage, ...] = (
                Stage(DRAFT, self._draft_tier, tuple(self.candidates(self._draft_tier)), self._draft_tokens),
                Stage(REFINE, tier, tuple(self.candidates(tier))),
            )
        else:
            stages = (Stage(ANSWER, tier, tuple(self.candidates(tier))),)
        return RouteDecision(
            score=score,
            tier=tier,
            two_stage=len(stages) == 2,
            stages=stages,
            decided_in=time.perf_counter() - start,
            turns=turns,
        )

    def candidates(self, tier: str) -> list[str]:
        """The order to try ``tier``'s models in: the balancer's pick, then the other
        healthy models (failover). Models whose circuit is open are left out; an empty
        list means the tier cannot serve now.

        Raises:
            KeyError: ``tier`` is not a tier of the profile (the message lists them).
        """
        members = self.members.get(tier)
        if members is None:
            raise KeyError(
                f"no tier '{tier}' in profile '{self.profile.name}' (tiers: {', '.join(self.tier_names)})"
            )
        healthy = self.health.healthy(members)
        return self.balancers[tier].order(healthy, self.health.in_flight)

    def fallback_tiers(self, tier: str) -> list[str]:
        """Tiers to try, in order, when every model of ``tier`` has failed: the more
        powerful tiers (nearest first), then the less powerful ones (nearest first).

        Example: with tiers ``fast, medium, powerful``, ``medium`` falls back to
        ``powerful`` then ``fast``.
        """
        if tier not in self.members:
            raise KeyError(
                f"no tier '{tier}' in profile '{self.profile.name}' (tiers: {', '.join(self.tier_names)})"
            )
        i = self.tier_names.index(tier)
        return self.tier_names[i + 1 :] + self.tier_names[:i][::-1]

    def attempts(self, stage: Stage, *, fallback: bool = True) -> Iterator[tuple[str, str]]:
        """``(tier, model_id)`` pairs to try for ``stage``, in order, lazily.

        First the stage's own candidates, then (with ``fallback``) each fallback
        tier's candidates, computed when reached so they reflect health at that
        moment. A runner stops at the first success; if the iterator runs out, raise
        :meth:`no_healthy_error` with the tiers tried.
        """
        yield from ((stage.tier, model_id) for model_id in stage.candidates)
        if fallback:
            for tier in self.fallback_tiers(stage.tier):
                for model_id in self.candidates(tier):
                    yield tier, model_id

    def no_healthy_error(
        self, tiers: Sequence[str] | None = None, *, headline: str | None = None
    ) -> NoHealthyModelError:
        """The 503 error naming every model of ``tiers`` (default: all) and its state;
        ``headline`` replaces "No healthy model available" (e.g. "Every model failed")."""
        tiers = list(self.tier_names if tiers is None else tiers)
        model_ids = [m for t in tiers for m in self.members.get(t, ())]
        return self.health.no_healthy_error(model_ids, tiers, headline=headline)
