"""Prompt-lookup decoding (``runtime.prompt_lookup``) on the refine stage, on the demo model.

    python scripts/bench_refine.py                  # Gemma 3 270M refines, lookup 10 (exit 1: missed)
    python scripts/bench_refine.py --model smollm2  # SmolLM2-135M-Instruct refines
    python scripts/bench_refine.py --rounds 5 --lookup 6

Refine-stage decode tokens/s (tokens after the first, per second after the first token)
with lookup ÷ without, greedy, the same text required on both sides:

1. Copy-heavy refine: the answer copies the draft in its prompt. Budget: at least 1.5x.
2. The bench prompts' real refines (``data/prompts/bench.jsonl`` through the demo profile's
   two-stage path, the prompts it sends to two stages). Budget: at least 0.97, over all
   refines (each prompt's ratio is reported).

Also the process's resident memory after each side (VmRSS) and its peak (VmHWM). The
sides alternate round by round, so drift and the other core's load hit both alike; each
time is the median over rounds. Exits 1 when a budget is missed or a text differs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import magi  # noqa: E402
from magi.config.model_settings import PROMPT_LOOKUP_TOKENS  # noqa: E402
from magi.models.demo import DEMO_MODELS  # noqa: E402
from magi.runtime.runner import Runner  # noqa: E402

COPY_BUDGET = 1.5
REAL_BUDGET = 0.97
DRAFT = (
    "The water cycle describes how water evaporates from oceans and lakes, rises as vapour, "
    "cools and condenses into clouds, and falls back as rain or snow, which flows into rivers "
    "and returns to the sea."
)
#: A refine whose answer copies its draft: the base model continues the pattern.
COPY_PROMPT = f"Draft: {DRAFT}\nFinal: {DRAFT}\nDraft: {DRAFT}\nFinal:"


def memory_kb() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in kB (Linux)."""
    out: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def compose(models_dir: Path, model_id: str, tokens: int, lookup: int) -> magi.MagiConfig:
    """The demo profile (two-stage) with ``model_id`` drafting and refining."""
    return magi.compose(
        profile="demo",
        overrides=[
            f"models.dirs=[{models_dir}]",
            f"models.registry={models_dir / 'registry.json'}",
            f"profile.enabled_models=[{model_id}]",
            "~profile.model_tiers",
            f"+profile.model_tiers={{{model_id}:[fast,powerful]}}",
            f"runtime.max_tokens={tokens}",
            f"runtime.prompt_lookup={lookup}",
        ],
    )


def decode(backend: object, prompt: str, settings: object) -> tuple[str, int, float]:
    """Text, tokens and decode seconds (after the first token) of one refine-stage call."""
    pieces: list[str] = []
    first: float | None = None
    for piece in backend.stream(prompt, settings):  # type: ignore[attr-defined]
        if first is None:
            first = time.perf_counter()
        pieces.append(piece)
    assert first is not None
    return "".join(pieces), len(pieces), time.perf_counter() - first


def bench_copy(runner_off: Runner, runner_on: Runner, rounds: int, tokens: int) -> dict[str, float]:
    from magi.runtime.backend import stage_settings

    (model_id,) = runner_off.specs
    spec_off, spec_on = runner_off.specs[model_id], runner_on.specs[model_id]
    off = stage_settings(spec_off.sampling.model_copy(update={"stop": []}), tokens, refine=True)
    on = stage_settings(spec_on.sampling.model_copy(update={"stop": []}), tokens, refine=True)
    times: dict[str, list[float]] = {"off": [], "on": []}
    texts: dict[str, set[str]] = {"off": set(), "on": set()}
    counts: set[int] = set()
    with runner_off.pool.lease(model_id) as backend:
        decode(backend, COPY_PROMPT, off)  # warm-up: load, and the prompt in the cache
        print(f"memory after a refine without lookup: {memory_kb()}")
        for _ in range(rounds):
            for side, settings in (("off", off), ("on", on)):
                text, n, seconds = decode(backend, COPY_PROMPT, settings)
                times[side].append(seconds)
                texts[side].add(text)
                counts.add(n)
    n = counts.pop() if len(counts) == 1 else -1
    rate = {side: (n - 1) / statistics.median(values) for side, values in times.items()}
    return {
        "tokens": n,
        "off_tok_s": rate["off"],
        "on_tok_s": rate["on"],
        "ratio": rate["on"] / rate["off"],
        "same_text": float(texts["off"] == texts["on"] and len(texts["off"]) == 1),
    }


def bench_real(runner_off: Runner, runner_on: Runner, rounds: int) -> dict[str, object]:
    prompts = [json.loads(line)["prompt"] for line in (ROOT / "data/prompts/bench.jsonl").open()]
    two_stage = [p for p in prompts if runner_off.route(p).two_stage]
    per_prompt: list[dict[str, object]] = []
    total = {"off": [0, 0.0], "on": [0, 0.0]}
    same = True
    for prompt in two_stage:
        seconds: dict[str, list[float]] = {"off": [], "on": []}
        texts: dict[str, set[str]] = {"off": set(), "on": set()}
        tokens = {"off": 0, "on": 0}  # each side's own: the texts may differ
        for _ in range(rounds):
            for side, runner in (("off", runner_off), ("on", runner_on)):
                result = runner.run(prompt)
                refine = result.stages[-1]
                assert refine.stage == "refine", refine
                tokens[side] = refine.completion_tokens
                seconds[side].append(max(refine.total_s - refine.ttft_s, 1e-9))
                texts[side].add(result.text)
        ok = texts["off"] == texts["on"]
        same = same and ok
        med = {side: statistics.median(values) for side, values in seconds.items()}
        for side in total:
            total[side][0] += max(tokens[side] - 1, 0)
            total[side][1] += med[side]
        rates = {side: max(tokens[side] - 1, 0) / med[side] for side in med}
        per_prompt.append(
            {
                "prompt": prompt[:40],
                "tokens": tokens,
                "ratio": round(rates["on"] / rates["off"], 3) if rates["off"] else float("nan"),
                "same": ok,
            }
        )
    rate = {side: n / s for side, (n, s) in total.items()}
    return {
        "refines": len(two_stage),
        "off_tok_s": rate["off"],
        "on_tok_s": rate["on"],
        "ratio": rate["on"] / rate["off"],
        "min_prompt_ratio": min(
            (float(p["ratio"]) for p in per_prompt if p["ratio"] == p["ratio"]), default=float("nan")
        ),  # type: ignore[arg-type]
        "same_text": float(same),
        "per_prompt": per_prompt,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=96, help="refine answer length (copy-heavy case)")
    parser.add_argument("--lookup", type=int, default=PROMPT_LOOKUP_TOKENS, help="tokens drafted per step")
    parser.add_argument("--model", default="gemma", help="the demo model that refines: gemma or smollm2")
    parser.add_argument("--models-dir", type=Path, default=None, help="where to put the demo model")
    args = parser.parse_args()
    models = [m for m in DEMO_MODELS if args.model in m.id]
    if len(models) != 1:
        parser.error(f"--model {args.model!r}: one of {', '.join(m.id for m in DEMO_MODELS)}")
    (model,) = models
    models_dir = args.models_dir or Path(tempfile.mkdtemp(prefix="magi-bench-refine-"))
    model.ensure(models_dir, progress=False)
    print(f"model={model.id} rounds={args.rounds} lookup={args.lookup} tokens={args.tokens}")
    failed = False
    with (
        Runner(compose(models_dir, model.id, args.tokens, 0)) as runner_off,
        Runner(compose(models_dir, model.id, args.tokens, args.lookup), pool=runner_off.pool) as runner_on,
    ):
        copy = bench_copy(runner_off, runner_on, args.rounds, args.tokens)
        print(f"memory after copy-heavy refines: {memory_kb()}")
        print("copy-heavy refine:", {k: round(v, 3) for k, v in copy.items()})
        if copy["ratio"] < COPY_BUDGET or not copy["same_text"]:
            print(f"  MISSED: ratio >= {COPY_BUDGET} with the same text")
            failed = True
        real = bench_real(runner_off, runner_on, args.rounds)
        print(f"memory after real refines: {memory_kb()}")
        for row in real.pop("per_prompt"):  # type: ignore[attr-defined]
            print("  ", row)
        print("bench refines:", {k: round(v, 3) if isinstance(v, float) else v for k, v in real.items()})
        if float(real["ratio"]) < REAL_BUDGET or not real["same_text"]:  # type: ignore[arg-type]
            print(f"  MISSED: ratio >= {REAL_BUDGET} with the same text")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
