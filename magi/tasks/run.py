"""Task ``run``: answer ``prompt`` (or a few built-in prompts) and show the routing.

python run.py                                   # built-in prompts, default profile
python run.py profile=demo prompt="Why is the sky blue?"
"""

from __future__ import annotations

import sys
from typing import TextIO

from magi.config.app import MagiConfig
from magi.render import table
from magi.runtime.runner import Runner
from magi.runtime.trace import RunResult
from magi.tasks.registry import register_task

#: Prompts of rising difficulty, so one run shows every tier at work.
BUILTIN_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "Name three primary colors.",
    "Explain step by step why the sum of two odd numbers is always even, and prove it.",
    "Compare merge sort and quicksort: analyse their time complexity, memory use and "
    "stability, and explain when you would choose each.",
)


def print_stream(runner: Runner, prompt: str, out: TextIO | None = None) -> RunResult:
    """Stream one answer to ``out`` (default: the current ``sys.stdout``, looked up per
    call so ``redirect_stdout`` and notebook capture see it) with each stage marked;
    return its result."""
    out = out if out is not None else sys.stdout
    result = None
    at_line_start = True
    out.write(f"\n>>> {prompt}\n")
    for event in runner.stream(prompt):
        if event.kind == "stage":
            out.write(
                ("" if at_line_start else "\n") + f"[{event.stage} · {event.tier} · {event.model_id}]\n"
            )
            at_line_start = True
        elif event.kind == "token":
            out.write(event.text)
            at_line_start = event.text.endswith("\n")
        elif event.kind == "restart":
            out.write(f"\n[{event.model_id} failed; retrying on another model]\n")
            at_line_start = True
        elif event.kind == "done":
            result = event.result
            out.write("\n")
        out.flush()
    assert result is not None
    return result


def routing_table(results: list[RunResult]) -> str:
    """One row per answer: score, tier, model(s), tokens and timings."""
    rows = []
    for r in results:
        rows.append(
            (
                (r.prompt[:40] + "…") if len(r.prompt) > 41 else r.prompt,
                f"{r.score:.1f}",
                r.routed_tier + (" (2-stage)" if r.two_stage else ""),
                " → ".join(s.model_id for s in r.stages),
                r.completion_tokens,
                f"{r.ttft_s * 1000:.0f} ms",
                f"{r.total_s:.2f} s",
                f"{r.wait_s:.2f} s",
                f"{r.decode_tokens_per_s:.1f}",
                len(r.fallbacks),
            )
        )
    return table(
        (
            "prompt",
            "score",
            "tier",
            "model",
            "tokens",
            "first token",
            "total",
            "load/wait",
            "tok/s",
            "fallbacks",
        ),
        rows,
    )


@register_task("run")
def run_task(config: MagiConfig) -> list[dict[str, object]]:
    """Answer the prompt(s), print each answer as it streams and a routing table."""
    from magi.runtime.pool import shared_pool

    prompts = [config.prompt] if config.prompt else list(BUILTIN_PROMPTS)
    with Runner(config, pool=shared_pool()) as runner:
        results = [print_stream(runner, p) for p in prompts]
    print()
    print(routing_table(results))
    return [r.to_dict() for r in results]
