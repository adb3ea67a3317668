"""The routing decision's cost (issue 4): the conversation rule scores one new message per turn.

``conversation_score`` reads up to ``CONVERSATION_LOOKBACK`` earlier user turns on every
request; their scores are remembered per scorer (``TurnScores``), so a 10-turn
conversation costs about one scoring per request, not nine. The budgets are ratios
measured in one run. The heuristic scorer's own speed is judged by
``scripts/bench_router.py`` (exit 1 over budget).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from magi.config.profile import ModelProfile
from magi.conversation import Conversation, to_conversation
from magi.routing import HealthMonitor, Router, get_scorer
from magi.routing.router import CONVERSATION_LOOKBACK, TurnScores, conversation_score, turn_scores
from magi.routing.scorer import ComplexityScore

PROMPTS = Path(__file__).resolve().parents[1] / "data" / "prompts" / "labelled.jsonl"


def _prompts() -> list[str]:
    return [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines() if line.strip()]


class Uncached:
    """The heuristic scorer, counting its calls. It cannot be weakly referenced (slots, no
    ``__weakref__``), so nothing is remembered for it."""

    __slots__ = ("inner", "calls")
    name = "heuristic"

    def __init__(self) -> None:
        self.inner = get_scorer("heuristic")
        self.calls = 0

    def score(self, prompt: str) -> ComplexityScore:
        self.calls += 1
        return self.inner.score(prompt)


class Counting(Uncached):
    """The same, weakly referable (a subclass without ``__slots__`` has ``__weakref__``),
    so its turn scores are remembered."""


def _conversation(users: list[str]) -> Conversation:
    messages: list[dict[str, str]] = []
    for i, text in enumerate(users):
        messages.append({"role": "user", "content": text})
        if i < len(users) - 1:
            messages.append({"role": "assistant", "content": f"Answer {i}: it depends on the details."})
    return to_conversation(messages)


def _fields(score: ComplexityScore) -> tuple[object, ...]:
    return (score.score, list(score.features.items()), list(score.contributions.items()), score.on_scale)


def test_turn_scores_keep_at_most_max_chars_least_recently_used_first_out() -> None:
    cache = TurnScores(max_chars=10)
    cache.put("aaaa", 1.0)
    cache.put("bbbb", 2.0)
    cache.put("cc", 3.0)
    assert cache.get("aaaa") == 1.0  # now the most recently used
    cache.put("d", 4.0)  # 11 characters: the least recently used ("bbbb") goes
    assert (cache.get("bbbb"), cache.get("aaaa"), cache.get("cc"), cache.get("d")) == (None, 1.0, 3.0, 4.0)
    cache.put("x" * 11, 5.0)  # longer than the whole cache: not kept, nothing evicted
    assert cache.get("x" * 11) is None and len(cache) == 3
    assert cache.get("zero") is None
    cache.put("zero", 0.0)
    assert cache.get("zero") == 0.0  # a score of 0 is remembered too


def test_a_conversation_scores_one_new_message_per_turn_and_the_same_as_without_the_cache() -> None:
    users = _prompts()[::6][:10]
    cached, uncached = Counting(), Uncached()
    assert turn_scores(uncached) is None and turn_scores(cached) is not None
    for turn in range(1, len(users) + 1):
        conversation = _conversation(users[:turn])
        before = cached.calls
        got = conversation_score(cached, conversation)
        want = conversation_score(uncached, conversation)
        assert _fields(got) == _fields(want), f"turn {turn}"
        assert cached.calls - before == 1, f"turn {turn}: only the new message is scored"
    # without the cache every request re-scored its earlier turns too
    assert uncached.calls == sum(1 + min(turn - 1, CONVERSATION_LOOKBACK) for turn in range(1, 11))
    assert cached.calls == 10


def _router(scorer: object) -> Router:
    profile = ModelProfile.model_validate(
        {
            "name": "Speed",
            "enabled_models": ["small", "big"],
            "tier_config": [{"name": "fast", "max_score": 5.0}, {"name": "powerful"}],
            "two_stage": {"enabled": True, "stage1_tier": "fast", "stage2_tier": "powerful"},
        }
    )
    return Router(profile, {"fast": ["small"], "powerful": ["big"]}, scorer, HealthMonitor(["small", "big"]))  # type: ignore[arg-type]


def _p50_us(func: object, arg: object, repeat: int = 60) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        func(arg)  # type: ignore[operator]
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def test_routing_a_10_turn_conversation_costs_about_one_scoring() -> None:
    prompts = _prompts()
    # ten 2,000-character user turns, each the labelled prompts in another order
    users = [("\n\n".join(prompts[i:] + prompts[:i]) * 2)[:2000] for i in range(0, 60, 6)]
    conversation = _conversation(users)
    cached_router, uncached_router = _router(Counting()), _router(Uncached())
    last = conversation.last_user
    cached_router.decide(conversation)  # the earlier turns, as the earlier requests left them
    ratios = []
    for _ in range(3):  # interleaved rounds, so load from elsewhere falls on all three alike
        one = _p50_us(cached_router.decide, last)
        ratios.append(
            (
                _p50_us(cached_router.decide, conversation) / one,
                _p50_us(uncached_router.decide, conversation) / one,
            )
        )
    cached, uncached = min(r[0] for r in ratios), min(r[1] for r in ratios)
    assert cached < 1.6, f"a 10-turn conversation costs {cached:.2f}x one 2,000-character prompt"
    assert uncached > 4 * cached, f"uncached {uncached:.2f}x, cached {cached:.2f}x"
