"""How long does a routing decision take? (Budget: p50 under 100 us at 2,000 characters.)

Times, with ``time.perf_counter_ns`` over many iterations after a warm-up:

* the heuristic scorer alone,
* ``Router.decide`` (score + tier + balancer picks + health filter) for a two-tier,
  two-stage, round-robin profile with two models per tier,

on a 2,000-character prompt (a mix of code, prose and maths built from
``data/prompts/labelled.jsonl``) and on a short prompt, and prints p50/p95/p99/mean.

    python scripts/bench_router.py
    python scripts/bench_router.py --iterations 5000 --chars 4000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import magi  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from magi.config.profile import ModelProfile  # noqa: E402
from magi.routing import HealthMonitor, Router, get_scorer  # noqa: E402


def build_prompt(chars: int) -> str:
    """A deterministic prompt of exactly ``chars`` characters mixing every kind of cue."""
    lines = [
        json.loads(line)["prompt"]
        for line in (ROOT / "data/prompts/labelled.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    # hard prompts first so code fences, maths and prose all appear in the first 2,000 chars
    text = "\n".join(reversed(lines))
    while len(text) < chars:
        text += "\n" + text
    return text[:chars]


def timings(func: Callable[[], object], iterations: int, warmup: int) -> list[int]:
    for _ in range(warmup):
        func()
    samples: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(iterations):
        start = clock()
        func()
        samples.append(clock() - start)
    return samples


def summary(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] / 1000

    return {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "mean": statistics.fmean(ordered) / 1000}


def make_router() -> Router:
    profile = ModelProfile.model_validate(
        {
            "name": "Bench",
            "enabled_models": ["fast_a", "fast_b", "powerful_a", "powerful_b"],
            "tier_config": [
                {"name": "fast", "max_score": 5.0},
                {"name": "powerful", "max_score": float("inf")},
            ],
            "two_stage": {"enabled": True, "stage1_tier": "fast", "stage2_tier": "powerful"},
            "load_balancing": {"enabled": True, "strategy": "round_robin"},
        }
    )
    members = {"fast": ["fast_a", "fast_b"], "powerful": ["powerful_a", "powerful_b"]}
    return Router(profile, members, get_scorer("heuristic"), HealthMonitor(profile.enabled_models))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--iterations", type=int, default=2000, help="timed iterations per case (default 2000)"
    )
    parser.add_argument("--warmup", type=int, default=200, help="untimed iterations first (default 200)")
    parser.add_argument("--chars", type=int, default=2000, help="length of the long prompt (default 2000)")
    args = parser.parse_args(argv)

    long_prompt = build_prompt(args.chars)
    short_prompt = "What is the capital of France?"
    scorer = get_scorer("heuristic")
    router = make_router()
    cases: list[tuple[str, Callable[[], object]]] = [
        (f"scorer, {len(long_prompt)} chars", lambda: scorer.score(long_prompt)),
        (f"Router.decide, {len(long_prompt)} chars", lambda: router.decide(long_prompt)),
        (f"scorer, {len(short_prompt)} chars", lambda: scorer.score(short_prompt)),
        (f"Router.decide, {len(short_prompt)} chars", lambda: router.decide(short_prompt)),
    ]
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"{args.iterations} iterations after {args.warmup} warm-up"
    )
    decision = router.decide(long_prompt)
    print(f"long prompt routes: {decision.explain()[:150]}")
    print(f"{'case':34} {'p50 us':>8} {'p95 us':>8} {'p99 us':>8} {'mean us':>8}")
    for name, func in cases:
        stats = summary(timings(func, args.iterations, args.warmup))
        print(f"{name:34} {stats['p50']:8.1f} {stats['p95']:8.1f} {stats['p99']:8.1f} {stats['mean']:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
