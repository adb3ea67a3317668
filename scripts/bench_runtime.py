"""Runtime benchmarks on the demo model, as ratios measured in one run.

    python scripts/bench_runtime.py                 # all four, 5 rounds each
    python scripts/bench_runtime.py --rounds 9 --tokens 128

1. Runner end-to-end time / a direct ``Llama.create_completion`` with the same
   settings (greedy, same prompt, same token count). Budget: at most 1.03.
2. Tokens/s with MAGI's defaults / tokens/s with llama-cpp-python's constructor
   defaults (``Llama(model_path)``: half the cores, n_ctx 512). Reported.
3. Router decision (score + tier + pick) on a 2,000-character prompt: p50 (< 100 µs).
4. Two-stage time to first token / single fast-tier time to first token (<= 1.1).

A and B alternate round by round so drift and the other core's load hit both
alike; each figure is the median over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import magi  # noqa: E402
from magi.models.demo import ensure_demo_model  # noqa: E402
from magi.runtime.backend import stage_settings  # noqa: E402
from magi.runtime.llama import LlamaBackend  # noqa: E402
from magi.runtime.resolve import default_batch_threads, default_threads  # noqa: E402
from magi.runtime.runner import Runner  # noqa: E402

PROMPT = "Explain why the sky is blue."
HARD = "Explain step by step why the sum of two odd numbers is always even, and prove it."


def median(values: list[float]) -> float:
    return statistics.median(values)


def compose(models_dir: Path, profile: str, tokens: int, *extra: str) -> magi.MagiConfig:
    return magi.compose(
        profile=profile,
        overrides=[
            f"models.dirs=[{models_dir}]",
            f"models.registry={models_dir / 'registry.json'}",
            "runtime.stop=[]",  # same token count on both sides
            f"runtime.max_tokens={tokens}",
            *extra,
        ],
    )


def bench_end_to_end(model: Path, models_dir: Path, rounds: int, tokens: int) -> dict[str, float]:
    import llama_cpp

    config = compose(models_dir, "demo-single", tokens)
    with Runner(config) as runner:
        spec = next(iter(runner.specs.values()))
        # the same settings MAGI's backend loads and samples with, by the same field names
        direct = llama_cpp.Llama(**LlamaBackend(spec).llama_kwargs())
        sampling = stage_settings(spec.sampling).llama_kwargs()
        text = spec.sampling.prompt_template.replace("{prompt}", PROMPT)

        def run_direct() -> tuple[float, int]:
            start = time.perf_counter()
            out = direct.create_completion(text, **sampling)
            return time.perf_counter() - start, out["usage"]["completion_tokens"]

        def run_magi() -> tuple[float, int]:
            start = time.perf_counter()
            result = runner.run(PROMPT)
            return time.perf_counter() - start, result.completion_tokens

        run_direct(), run_magi()  # warm both
        a, b = [], []
        for _ in range(rounds):
            t, n_direct = run_direct()
            a.append(t)
            t, n_magi = run_magi()
            b.append(t)
        direct.close()
    assert n_direct == n_magi, (n_direct, n_magi)
    return {"direct_s": median(a), "magi_s": median(b), "ratio": median(b) / median(a), "tokens": n_magi}


def bench_defaults(model: Path, rounds: int, tokens: int) -> dict[str, float]:
    import llama_cpp

    from magi.runtime.llama import quiet_llama_logs

    quiet_llama_logs()
    theirs = llama_cpp.Llama(model_path=str(model), verbose=False)  # llama-cpp-python's defaults
    ours = llama_cpp.Llama(
        model_path=str(model),
        n_ctx=2048,
        n_threads=default_threads(),
        n_threads_batch=default_batch_threads(),
        verbose=False,
    )

    def tok_s(llm: llama_cpp.Llama) -> float:
        start = time.perf_counter()
        out = llm.create_completion(PROMPT, max_tokens=tokens, temperature=0.0)
        return out["usage"]["completion_tokens"] / (time.perf_counter() - start)

    tok_s(theirs), tok_s(ours)
    a, b = [], []
    for _ in range(rounds):
        a.append(tok_s(theirs))
        b.append(tok_s(ours))
    result = {
        "llama_cpp_defaults_tok_s": median(a),
        "magi_defaults_tok_s": median(b),
        "ratio": median(b) / median(a),
        "llama_cpp_threads": theirs.n_threads,
        "magi_threads": default_threads(),
    }
    theirs.close()
    ours.close()
    return result


def bench_router(models_dir: Path, iterations: int = 2000) -> dict[str, float]:
    config = compose(models_dir, "demo", 8)
    prompt = (HARD + " ") * (2000 // (len(HARD) + 1) + 1)
    prompt = prompt[:2000]
    with Runner(config, start_health_checks=False) as runner:
        for _ in range(200):
            runner.route(prompt)
        times = []
        for _ in range(iterations):
            start = time.perf_counter_ns()
            runner.route(prompt)
            times.append(time.perf_counter_ns() - start)
    times.sort()
    return {"p50_us": times[len(times) // 2] / 1000, "p95_us": times[int(len(times) * 0.95)] / 1000}


def bench_two_stage_ttft(models_dir: Path, rounds: int, tokens: int) -> dict[str, float]:
    two = compose(models_dir, "demo", tokens)
    single = compose(
        models_dir, "demo", tokens, "profile.two_stage.enabled=false", "profile.tier_config.0.max_score=10"
    )  # the same prompt, answered by the fast tier alone
    a, b = [], []
    with Runner(two) as r2, Runner(single, pool=r2.pool) as r1:
        assert r2.route(HARD).two_stage and not r1.route(HARD).two_stage
        r1.run(HARD), r2.run(HARD)
        for _ in range(rounds):
            a.append(r1.run(HARD).ttft_s)
            b.append(r2.run(HARD).ttft_s)
    return {
        "single_ttft_ms": median(a) * 1000,
        "two_stage_ttft_ms": median(b) * 1000,
        "ratio": median(b) / median(a),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--models-dir", type=Path, default=None, help="where to assemble the demo model")
    args = parser.parse_args()
    models_dir = args.models_dir or Path(tempfile.mkdtemp(prefix="magi-bench-"))
    model = ensure_demo_model(models_dir, progress=False)
    print(f"demo model: {model}; rounds={args.rounds}, tokens={args.tokens}, threads={default_threads()}")

    e2e = bench_end_to_end(model, models_dir, args.rounds, args.tokens)
    print(
        f"1. end-to-end: direct {e2e['direct_s'] * 1000:.1f} ms, MAGI {e2e['magi_s'] * 1000:.1f} ms "
        f"({e2e['tokens']} tokens) -> ratio {e2e['ratio']:.3f} (budget <= 1.03)"
    )
    d = bench_defaults(model, args.rounds, args.tokens)
    print(
        f"2. tokens/s: llama-cpp-python defaults ({d['llama_cpp_threads']} thread) "
        f"{d['llama_cpp_defaults_tok_s']:.1f}, MAGI defaults ({d['magi_threads']} threads) "
        f"{d['magi_defaults_tok_s']:.1f} -> ratio {d['ratio']:.2f}"
    )
    r = bench_router(models_dir)
    print(
        f"3. router decision, 2,000 chars: p50 {r['p50_us']:.1f} µs, p95 {r['p95_us']:.1f} µs "
        "(budget p50 < 100)"
    )
    t = bench_two_stage_ttft(models_dir, args.rounds, args.tokens)
    print(
        f"4. time to first token: single fast tier {t['single_ttft_ms']:.1f} ms, two-stage "
        f"{t['two_stage_ttft_ms']:.1f} ms -> ratio {t['ratio']:.3f} (budget <= 1.1)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
