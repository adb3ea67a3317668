"""Prefix reuse across the turns of a conversation, on a demo model.

    python scripts/bench_turns.py                       # Gemma 3 270M (completion transcript)
    python scripts/bench_turns.py --model smollm2       # SmolLM2-135M-Instruct (chat template)

A conversation's next turn starts with everything the model has processed already:
turn N must not process the whole history again. This runs a 10-turn conversation
whose history grows past 1,000 tokens and reports the time to first token (prompt
processing, in the stage's own timing: no load, no wait) of each turn, with reuse on
(MAGI's defaults: llama-cpp-python keeps the previous call's prefix, and the state
cache, ``runtime.state_cache_mb``, keeps each conversation's) and off (the model's
context is cleared before every turn and the state cache is 0). Then the same with
two conversations interleaved turn by turn on the one model, where only the state
cache can keep both. Budget: turn 10 ÷ turn 1 **≤ 1.5** with reuse, in both cases.
Also the state cache's size and the process's resident memory. Exits 1 over budget.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import magi  # noqa: E402
from magi.runtime.runner import Runner  # noqa: E402

BUDGET = 1.5
TURNS = 10
SYSTEM = "You are a patient tutor. Answer in one or two sentences."
TOPICS = [
    "the water cycle",
    "how vaccines train the immune system",
    "why the sky is blue",
    "how a bicycle stays upright",
    "what a hash table is",
    "how bread rises",
    "why seasons change",
    "how a refrigerator cools",
    "what inflation means",
    "how bees find flowers",
    "why ice floats",
    "how a compiler works",
]


def user_message(conversation: int, turn: int) -> str:
    """A distinct user turn of about 100 tokens (so ten turns pass 1,000 with the answers)."""
    topic = TOPICS[(turn + 5 * conversation) % len(TOPICS)]
    return (
        f"Question {turn + 1} of conversation {'AB'[conversation]}: I am reading about {topic}. "
        f"My notes say that {topic} is usually explained with a simple picture first, then with "
        "the details that make the picture fit the measurements people take. I would like the "
        "simple picture, one detail that people often get wrong about it, and how I could check "
        f"that detail myself at home or in a library. Please keep it short, since I have "
        f"{TURNS - turn} more questions after this one and I want to read all the answers together."
    )


def memory_kb() -> int:
    """Resident memory of this process, in kB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def compose(models_dir: Path, model_id: str, *, reuse: bool, tokens: int) -> magi.MagiConfig:
    return magi.compose(
        profile="demo-single",
        overrides=[
            f"models.dirs=[{models_dir}]",
            f"models.registry={models_dir / 'registry.json'}",
            f"profile.enabled_models=[{model_id}]",
            f"runtime.max_tokens={tokens}",
            # no deadlines: without reuse a late turn processes its whole history, which on
            # a busy machine takes longer than the demo tier's first-token deadline
            "runtime.first_token_timeout_factor=inf",
            "runtime.token_gap_timeout_factor=inf",
            "runtime.timeout_factor=inf",
            *([] if reuse else ["runtime.state_cache_mb=0"]),
        ],
    )


def count_evaluated(runner: Runner, model_id: str) -> list[int]:
    """Count the tokens llama.cpp is given to process (``Llama.eval``), from now on: the
    returned one-item list holds the running total."""
    evaluated = [0]
    with runner.pool.lease(model_id) as backend:
        llm = backend._require()  # type: ignore[attr-defined]
        real_eval = llm.eval

        def counting_eval(tokens: object) -> None:
            evaluated[0] += len(tokens)  # type: ignore[arg-type]
            real_eval(tokens)

        llm.eval = counting_eval
    return evaluated


def forget(runner: Runner, model_id: str) -> None:
    """Clear what the model has processed, so the next call starts from an empty context."""
    with runner.pool.lease(model_id) as backend:
        llm = backend._llm  # type: ignore[attr-defined]
        if llm is not None:
            llm.reset()


def run_conversations(
    runner: Runner, model_id: str, count: int, *, reuse: bool
) -> list[list[dict[str, float]]]:
    """``count`` conversations of :data:`TURNS` turns, interleaved turn by turn; per
    conversation and turn: time to first token and the prompt's tokens."""
    histories: list[list[dict[str, str]]] = [[{"role": "system", "content": SYSTEM}] for _ in range(count)]
    rows: list[list[dict[str, float]]] = [[] for _ in range(count)]
    forget(runner, model_id)
    evaluated = count_evaluated(runner, model_id)
    for turn in range(TURNS):
        for c in range(count):
            if not reuse:
                forget(runner, model_id)
            histories[c].append({"role": "user", "content": user_message(c, turn)})
            before = evaluated[0]
            result = runner.run(histories[c])
            stage = result.stages[-1]
            histories[c].append({"role": "assistant", "content": result.text})
            # tokens processed: the prompt's that were not re-used, and the answer's but its last
            processed = evaluated[0] - before - max(stage.completion_tokens - 1, 0)
            rows[c].append(
                {"ttft_s": stage.ttft_s, "prompt_tokens": stage.prompt_tokens, "processed": processed}
            )
    return rows


def state_cache_mb(runner: Runner, model_id: str) -> float:
    with runner.pool.lease(model_id) as backend:
        cache = backend.state_cache  # type: ignore[attr-defined]
        return cache.size_bytes / 2**20 if cache is not None else 0.0


def main() -> int:
    from magi.models.demo import DEMO_MODELS

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="gemma", help="which demo model: gemma or smollm2")
    parser.add_argument("--tokens", type=int, default=32, help="answer length of each turn")
    parser.add_argument("--rounds", type=int, default=1, help="repeat each case and take medians")
    parser.add_argument("--models-dir", type=Path, default=None)
    args = parser.parse_args()
    models = [m for m in DEMO_MODELS if args.model in m.id]
    if len(models) != 1:
        parser.error(f"--model {args.model!r}: one of {', '.join(m.id for m in DEMO_MODELS)}")
    models_dir = args.models_dir or Path(tempfile.mkdtemp(prefix="magi-bench-turns-"))
    models[0].ensure(models_dir, progress=False)
    model_id = models[0].id
    print(f"model {model_id}, {TURNS} turns, answers of at most {args.tokens} tokens, rounds {args.rounds}")
    failed = False
    for count in (1, 2):
        ratios: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.rounds):
            for reuse in (True, False):
                config = compose(models_dir, model_id, reuse=reuse, tokens=args.tokens)
                with Runner(config, start_health_checks=False) as runner:
                    rows = run_conversations(runner, model_id, count, reuse=reuse)
                    cache = state_cache_mb(runner, model_id)
                    rss = memory_kb() / 1024
                for c, turns in enumerate(rows):
                    first, last = turns[0], turns[-1]
                    ratio = last["ttft_s"] / first["ttft_s"]
                    ratios[reuse].append(ratio)
                    print(
                        f"  {'interleaved' if count > 1 else 'one conversation':16} {'AB'[c]} "
                        f"reuse {'on ' if reuse else 'off'}: turn 1 {first['ttft_s'] * 1000:7.1f} ms "
                        f"({first['processed']:.0f} of {first['prompt_tokens']:.0f} tokens processed), "
                        f"turn {TURNS} {last['ttft_s'] * 1000:7.1f} ms "
                        f"({last['processed']:.0f} of {last['prompt_tokens']:.0f}), ratio {ratio:5.2f}"
                    )
                print(f"    state cache {cache:.1f} MB, process resident {rss:.0f} MB")
        on, off = statistics.median(ratios[True]), statistics.median(ratios[False])
        case = "two interleaved" if count > 1 else "one conversation"
        verdict = "ok" if on <= BUDGET else "MISSED"
        print(
            f"{case}: turn {TURNS} / turn 1 TTFT with reuse {on:.2f} (budget <= {BUDGET}: {verdict}), "
            f"without {off:.2f}"
        )
        failed = failed or on > BUDGET
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
