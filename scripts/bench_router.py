"""How long does a routing decision take? (Budget: p50 under 100 us at 2,000 characters.)

Times, with ``time.perf_counter_ns`` over many iterations after a warm-up:

* the heuristic scorer alone,
* ``Router.decide`` (score + tier + balancer picks + health filter) for a two-tier,
  two-stage profile with load balancing (round-robin by default) and two models per tier,
* the learned scorer alone (``scorer: learned``, the shipped model; budget p50 under
  200 us at 2,000 characters, printed, not part of the exit status),

on varied, realistic prompts: 64 different prompts of exactly ``--chars`` characters,
each the real prompts of ``data/prompts/*.jsonl`` (code, maths, prose, one-liners) in
its own shuffled order, concatenated and cut to length; and on the real prompts under
80 characters as they are. Each iteration takes the next prompt, so a scorer that
works on distinct words sees new text each time (a repeated sentence has few distinct
words and flatters it). Prints p50/p95/p99/mean.

Two comparison rows time the first of those prompts again and again, and one sentence
repeated to length: both are cheaper than the varied prompts (the CPU learns a
repeated input), which is why the budget is judged on the varied ones. Two more route
10-turn conversations whose user turns are those prompts (the conversation rule reads
the 8 earlier ones): with the earlier turns' scores remembered, as in a running
service where the earlier requests scored them, and re-scored every time (a scorer
that cannot be cached); each request's texts are fresh string copies, as a server
parses them, so hashing them is timed too. The cases take turns in blocks, so load
from other processes falls on all alike; the last column is each p50 ÷ that of
``Router.decide`` on the varied prompts.

Exits 1 when ``Router.decide`` misses the budget (p50 at 2,000 characters, or at
``--chars`` when ``--budget-us`` is given), so a regression is visible. On a busy
machine the figure rises with the load (printed): measure on an idle one.

    python scripts/bench_router.py
    python scripts/bench_router.py --iterations 5000 --strategy least_loaded
    python scripts/bench_router.py --chars 4000 --budget-us 200
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
try:
    import magi  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from magi.config.profile import STRATEGIES, ModelProfile  # noqa: E402
from magi.conversation import Conversation, Message  # noqa: E402
from magi.routing import HealthMonitor, Router, get_scorer  # noqa: E402
from magi.routing.scorer import ComplexityScore, Scorer  # noqa: E402

#: The length the budget is stated for, and the budget (p50 of ``Router.decide``).
BUDGET_CHARS = 2000
BUDGET_P50_US = 100.0
#: The learned scorer's budget (p50 at ``BUDGET_CHARS``), reported only.
LEARNED_BUDGET_P50_US = 200.0
#: Real prompts shorter than this are the short case.
SHORT_CHARS = 80


def real_prompts() -> list[str]:
    """Every prompt of ``data/prompts/*.jsonl`` (easy and hard, code, maths, prose), read
    as the bench reads prompt sets (:func:`magi.sweeps.prompts.load_prompts`)."""
    from magi.sweeps.prompts import load_prompts

    return [
        item.prompt
        for path in sorted((ROOT / "data" / "prompts").glob("*.jsonl"))
        for item in load_prompts(path)
    ]


def realistic_prompts(chars: int, count: int = 64, seed: int = 0) -> list[str]:
    """``count`` different prompts of exactly ``chars`` characters: the real prompts, each
    time in another (seeded) order, joined by blank lines and cut to length."""
    rng = random.Random(seed)
    pool = real_prompts()
    prompts: list[str] = []
    for _ in range(count):
        rng.shuffle(pool)
        parts: list[str] = []
        length = 0
        for prompt in itertools.cycle(pool):
            parts.append(prompt)
            length += len(prompt) + 2
            if length >= chars:
                break
        prompts.append("\n\n".join(parts)[:chars])
    assert len(set(prompts)) == count, "prompts must differ"
    return prompts


def repeated(chars: int) -> str:
    """One sentence repeated to ``chars`` characters: few distinct words, which flatters a
    scorer that works on distinct words (shown for comparison only)."""
    sentence = "Explain step by step how a hash map resolves collisions. "
    return (sentence * (chars // len(sentence) + 1))[:chars]


def conversations(users: Sequence[str], turns: int = 10) -> list[Conversation]:
    """One conversation per prompt of ``users``: it and the next ``turns - 1`` prompts as
    the user turns, a short assistant answer between them."""
    result = []
    for i in range(len(users)):
        messages: list[Message] = []
        for k in range(turns):
            if k:
                messages.append(Message("assistant", f"Answer {k}: it depends on the details."))
            messages.append(Message("user", users[(i + k) % len(users)]))
        result.append(Conversation(tuple(messages)))
    return result


def fresh(conversation: Conversation) -> Conversation:
    """The same conversation made of new string objects (their hashes not yet computed),
    as a server builds each request from the JSON it parsed."""
    return Conversation(tuple(Message(m.role, (m.content + " ")[:-1]) for m in conversation.messages))


class Uncached:
    """The heuristic scorer behind an object that cannot be weakly referenced, so the
    router remembers no turn scores for it: every request re-scores the earlier turns."""

    __slots__ = ("inner",)
    name = "heuristic"

    def __init__(self) -> None:
        self.inner = get_scorer("heuristic")

    def score(self, prompt: str) -> ComplexityScore:
        return self.inner.score(prompt)


Prepare = Callable[[Any], Any] | None


def timings(
    func: Callable[[Any], object],
    prompts: Sequence[Any],
    iterations: int,
    warmup: int,
    prepare: Prepare = None,
) -> list[int]:
    """Nanoseconds of ``func(prompt)`` per iteration, taking the prompts in turn
    (``prepare(prompt)`` first, untimed, when given)."""
    for i in range(warmup):
        func(prompts[i % len(prompts)] if prepare is None else prepare(prompts[i % len(prompts)]))
    samples: list[int] = []
    clock = time.perf_counter_ns
    for i in range(iterations):
        prompt = prompts[i % len(prompts)] if prepare is None else prepare(prompts[i % len(prompts)])
        start = clock()
        func(prompt)
        samples.append(clock() - start)
    return samples


def summary(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] / 1000

    return {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "mean": statistics.fmean(ordered) / 1000}


def make_router(strategy: str = "round_robin", scorer: Scorer | None = None) -> Router:
    profile = ModelProfile.model_validate(
        {
            "name": "Bench",
            "enabled_models": ["fast_a", "fast_b", "powerful_a", "powerful_b"],
            "tier_config": [
                {"name": "fast", "max_score": 5.0},
                {"name": "powerful", "max_score": float("inf")},
            ],
            "two_stage": {"enabled": True, "stage1_tier": "fast", "stage2_tier": "powerful"},
            "load_balancing": {"enabled": True, "strategy": strategy},
        }
    )
    members = {"fast": ["fast_a", "fast_b"], "powerful": ["powerful_a", "powerful_b"]}
    scorer = scorer if scorer is not None else get_scorer("heuristic")
    return Router(profile, members, scorer, HealthMonitor(profile.enabled_models))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--iterations", type=int, default=2000, help="timed iterations per case (default 2000)"
    )
    parser.add_argument(
        "--warmup", type=int, default=200, help="untimed iterations per case first (default 200)"
    )
    parser.add_argument(
        "--chars", type=int, default=BUDGET_CHARS, help=f"length of the long prompts (default {BUDGET_CHARS})"
    )
    parser.add_argument(
        "--strategy", choices=STRATEGIES, default="round_robin", help="balancer (default round_robin)"
    )
    parser.add_argument(
        "--budget-us",
        type=float,
        default=None,
        help=f"p50 budget of Router.decide on the long prompts (default {BUDGET_P50_US:g} at "
        f"{BUDGET_CHARS} chars, none at other lengths)",
    )
    parser.add_argument("--blocks", type=int, default=10, help="rounds the cases take turns in (default 10)")
    args = parser.parse_args(argv)
    budget = (
        args.budget_us
        if args.budget_us is not None
        else (BUDGET_P50_US if args.chars == BUDGET_CHARS else None)
    )

    long_prompts = realistic_prompts(args.chars)
    short_prompts = [p for p in real_prompts() if len(p) < SHORT_CHARS]
    scorer = get_scorer("heuristic")
    router = make_router(args.strategy)
    short = f"{len(short_prompts)} real, median {statistics.median(map(len, short_prompts)):.0f} chars"
    long = f"{len(long_prompts)} x {args.chars} chars"
    chats = conversations(long_prompts)
    uncached = make_router(args.strategy, Uncached())
    for chat in chats:  # the earlier requests of each conversation, as a service saw them
        router.decide(chat)
    cases: list[tuple[str, Callable[[Any], object], list[Any], Prepare]] = [
        (f"scorer, {long}", scorer.score, long_prompts, None),
        (f"Router.decide, {long}", router.decide, long_prompts, None),
        (f"scorer, {short}", scorer.score, short_prompts, None),
        (f"Router.decide, {short}", router.decide, short_prompts, None),
        # for comparison, what the same text costs when it never changes
        (f"Router.decide, 1 x {args.chars} chars, again", router.decide, long_prompts[:1], None),
        (f"Router.decide, 1 sentence repeated to {args.chars}", router.decide, [repeated(args.chars)], None),
        # the conversation rule: 10 user turns of --chars each, earlier turns remembered or not
        (f"Router.decide, 10-turn chat, {args.chars}-char turns", router.decide, chats, fresh),
        ("  the same, earlier turns re-scored", uncached.decide, chats, fresh),
        # the learned scorer (scorer: learned, the shipped model): budget p50 < 200 us at 2,000
        (f"learned scorer, {long}", get_scorer("learned").score, long_prompts, None),
        (f"learned scorer, {short}", get_scorer("learned").score, short_prompts, None),
    ]
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}; {args.iterations} iterations per case after "
        f"{args.warmup} warm-up, in {args.blocks} interleaved blocks; {args.strategy} balancing"
    )
    tiers = [router.decide(p).tier for p in long_prompts]
    print(
        f"long prompts route: {tiers.count('powerful')} of {len(tiers)} to powerful "
        f"(two-stage: picks in both tiers); first: {router.decide(long_prompts[0]).explain()[:110]}"
    )
    # The cases take turns block by block, so a burst of load from other processes
    # falls on all of them alike and the comparison rows stay comparable.
    samples: list[list[int]] = [[] for _ in cases]
    per_block = max(1, args.iterations // args.blocks)
    for block in range(args.blocks):
        for i, (_, func, prompts, prepare) in enumerate(cases):
            warmup = args.warmup if block == 0 else per_block // 10
            samples[i] += timings(func, prompts, per_block, warmup, prepare)
    stats = [summary(s) for s in samples]
    decide_p50 = stats[1]["p50"]  # Router.decide on the varied long prompts: the budget's case
    print(f"{'case':44} {'p50 us':>8} {'p95 us':>8} {'p99 us':>8} {'mean us':>8} {'p50 ÷ row 2':>11}")
    for (name, *_), st in zip(cases, stats, strict=True):
        print(
            f"{name:44} {st['p50']:8.1f} {st['p95']:8.1f} {st['p99']:8.1f} {st['mean']:8.1f} "
            f"{st['p50'] / decide_p50:11.2f}"
        )
    learned_p50 = stats[-2]["p50"]
    print(
        f"learned scorer p50 at {args.chars} chars: {learned_p50:.1f} us "
        f"(budget < {LEARNED_BUDGET_P50_US:g} us at {BUDGET_CHARS}; not part of the exit status)"
    )
    if budget is None:
        print(f"Router.decide p50 at {args.chars} chars: {decide_p50:.1f} us (no budget at this length)")
        return 0
    verdict = "within" if decide_p50 < budget else "OVER"
    print(f"Router.decide p50 at {args.chars} chars: {decide_p50:.1f} us, {verdict} budget < {budget:g} us")
    return 0 if decide_p50 < budget else 1


if __name__ == "__main__":
    raise SystemExit(main())
