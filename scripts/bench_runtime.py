"""Runtime benchmarks on the demo model (Gemma 3 270M Q4_K_M), as ratios measured in one run.

    python scripts/bench_runtime.py                    # 15 rounds, 32 tokens
    python scripts/bench_runtime.py --only 1           # the overhead alone
    python scripts/bench_runtime.py --rounds 15 --tokens 64

1. **Overhead**: ``Runner.run`` ÷ the time its own ``Llama.create_completion(stream=True)``
   took in that run (:class:`CompletionTimer`): what MAGI adds around llama-cpp-python
   (routing, deadlines, trace, tokenising the prompt once). Budget: at most 1.01; judged
   in-run because two separate runs of the same prompt scatter by more than 1% on a
   machine with other load. Beside it, as separate runs (same prompt, same ``Llama``, same
   sampling settings and token count, every run from an empty context): ``Runner.run`` ÷
   a direct ``Llama.create_completion(stream=True)``. The Runner always streams, ``run`` too: the
   stall deadlines, the time budget, ``cancel`` and the repetition stop are judged token
   by token, so streaming against streaming is like with like. Also reported: what
   streaming itself costs in llama-cpp-python (direct streamed ÷ direct not streamed),
   and ``Runner.run`` ÷ direct not streamed (both costs together).
2. **MAGI's defaults**, through MAGI's own backend (``LlamaBackend`` on the resolved
   ``ModelSpec``, as a Runner loads it) against llama-cpp-python's constructor defaults
   (``Llama(model_path)``: half the cores for decode, all for prompts, ``n_ctx`` 512),
   both with MAGI's sampling settings: prompt processing (prompt tokens ÷ time to the
   first token) and decode (tokens after the first ÷ time after the first), reported.
3. **Two-stage ÷ single-stage time to first token** (budget: at most 1.1), the draft
   against the fast tier answering alone, on hard prompts neither side has just seen.

The router's figure has its own script: ``scripts/bench_router.py`` (varied prompts, a
balancing profile).

Every round takes a prompt of ``data/prompts/*.jsonl`` that no earlier round used, so
llama.cpp cannot reuse a cached prompt prefix from the round before. In (3), where both
sides share one loaded model, an unrelated prompt runs before each measured one, so
neither follows its own prompt. The sides are timed back to back, in alternating order
round by round, so drift and other processes' load fall on both alike; each ratio is the
median of the per-round ratios. Token counts must be equal on every side in every round.

Exits 1 when a budget is missed (printed with MISSED), so a regression is visible. The
figures rise and scatter with other load on the machine: measure on an idle one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_router import real_prompts  # noqa: E402

import magi  # noqa: E402
from magi.models.demo import DEMO_MODEL_ID, ensure_demo_model  # noqa: E402
from magi.runtime.backend import decode_rate, generate, stage_settings  # noqa: E402
from magi.runtime.llama import LlamaBackend, quiet_llama_logs  # noqa: E402
from magi.runtime.resolve import resolve_models  # noqa: E402
from magi.runtime.runner import Runner  # noqa: E402

OVERHEAD_BUDGET = 1.01
TTFT_BUDGET = 1.1
#: Precedes each measured run of (3): shares no prefix with the measured prompts.
FLUSH = "Name three colours."


def median(values: list[float]) -> float:
    return statistics.median(values)


def quartiles(values: list[float]) -> str:
    """The first and third quartiles of per-round ratios: how much the rounds scatter."""
    if len(values) < 2:
        return "-"
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{q1:.3f}-{q3:.3f}"


def compose(models_dir: Path, profile: str, tokens: int, *extra: str) -> magi.MagiConfig:
    return magi.compose(
        profile=profile,
        overrides=[
            f"models.dirs=[{models_dir}]",
            f"models.registry={models_dir / 'registry.json'}",
            "models.demo=false",  # the model is assembled into models_dir already
            "runtime.stop=[]",  # no stop sequence: the same token count on every side
            f"runtime.max_tokens={tokens}",
            *extra,
        ],
    )


def fresh_prompts() -> Iterator[str]:
    """The real prompts, each once (124): no round sees a prompt an earlier one used."""
    seen: set[str] = set()
    for prompt in real_prompts():
        if prompt not in seen and prompt != FLUSH:
            seen.add(prompt)
            yield prompt


def take(prompts: Iterator[str], what: str) -> str:
    try:
        return next(prompts)
    except StopIteration:
        raise SystemExit(f"out of fresh prompts for {what}: use fewer --rounds") from None


def streamed(chunks: Any) -> tuple[float, int, float]:
    """(time to the first token, tokens, total time) of a ``create_completion`` stream,
    counting tokens by LlamaBackend's rule: one chunk per token, then a closing chunk."""
    start = time.perf_counter()
    first = 0.0
    n = 0
    for chunk in chunks:
        choice = chunk["choices"][0]
        if choice["text"] or choice.get("finish_reason") is None:
            n += 1
            first = first or time.perf_counter() - start
    total = time.perf_counter() - start
    return first or total, n, total


def alternate(round_no: int, prompt: str, sides: list[Callable[[str], Any]]) -> list[Any]:
    """Run ``sides`` on ``prompt`` in order on even rounds and in reverse on odd ones;
    the results in order."""
    order = range(len(sides)) if round_no % 2 == 0 else reversed(range(len(sides)))
    results: dict[int, Any] = {}
    for i in order:
        results[i] = sides[i](prompt)
    return [results[i] for i in range(len(sides))]


class CompletionTimer:
    """Adds up the time a ``Llama`` spends in ``create_completion`` and its stream (set as
    the instance's attribute, so the Runner's calls and the direct ones go through it):
    what is left of a ``Runner.run`` is MAGI's own work, measured inside the same run, so
    it is immune to the load that makes two separate runs differ."""

    def __init__(self, llm: Any) -> None:
        self.real = llm.create_completion
        self.seconds = 0.0
        llm.create_completion = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = self.real(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        return self._timed(out) if kwargs.get("stream") else out

    def _timed(self, chunks: Iterator[Any]) -> Iterator[Any]:
        while True:
            start = time.perf_counter()
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            finally:
                self.seconds += time.perf_counter() - start
            yield chunk


def bench_overhead(models_dir: Path, prompts: Iterator[str], rounds: int, tokens: int) -> dict[str, Any]:

    config = compose(models_dir, "demo-single", tokens)
    with Runner(config, start_health_checks=False) as runner:
        spec = runner.specs[DEMO_MODEL_ID]
        warm = take(prompts, "warm-up")
        runner.run(warm)  # loads the model
        # The direct side calls the very Llama the Runner loaded (so one model instance's
        # memory layout and caches serve both), and every run starts from an empty
        # context (reset(), untimed): no side reuses the previous run's prompt prefix.
        direct = runner.pool.backend(DEMO_MODEL_ID)._llm
        timer = CompletionTimer(direct)
        sampling = stage_settings(spec.sampling).llama_kwargs()  # the same sampling settings

        def text(prompt: str) -> str:
            return spec.sampling.prompt_template.replace("{prompt}", prompt)

        def direct_plain(prompt: str) -> tuple[float, int]:
            direct.reset()
            start = time.perf_counter()
            out = direct.create_completion(text(prompt), **sampling)
            return time.perf_counter() - start, out["usage"]["completion_tokens"]

        def direct_stream(prompt: str) -> tuple[float, int]:
            direct.reset()
            _, n, total = streamed(direct.create_completion(text(prompt), stream=True, **sampling))
            return total, n

        def magi_run(prompt: str) -> tuple[float, int, float]:
            direct.reset()
            timer.seconds = 0.0
            start = time.perf_counter()
            result = runner.run(prompt)
            total = time.perf_counter() - start
            return total, result.completion_tokens, total / timer.seconds

        direct_plain(warm), direct_stream(warm), magi_run(warm)
        plain_s, stream_s, magi_s, own, tokens_seen = [], [], [], [], []
        for r in range(rounds):
            prompt = take(prompts, "the overhead rounds")
            sides = [direct_plain, direct_stream, magi_run]
            (tp, n_plain), (ts, n_stream), (tm, n_magi, share) = alternate(r, prompt, sides)
            if not n_plain == n_stream == n_magi:
                raise SystemExit(
                    f"round {r}: token counts differ (direct {n_plain}, direct streamed {n_stream}, "
                    f"Runner {n_magi}) on {prompt[:60]!r}: the comparison would not be like with like"
                )
            plain_s.append(tp)
            stream_s.append(ts)
            magi_s.append(tm)
            own.append(share)
            tokens_seen.append(n_magi)
    return {
        "plain_ms": median(plain_s) * 1000,
        "stream_ms": median(stream_s) * 1000,
        "magi_ms": median(magi_s) * 1000,
        **ratios("in_run", own),
        **ratios("magi_vs_stream", [m / s for m, s in zip(magi_s, stream_s, strict=True)]),
        **ratios("stream_vs_plain", [s / p for s, p in zip(stream_s, plain_s, strict=True)]),
        **ratios("magi_vs_plain", [m / p for m, p in zip(magi_s, plain_s, strict=True)]),
        "tokens": f"{min(tokens_seen)}-{max(tokens_seen)}",
    }


def bench_defaults(models_dir: Path, prompts: Iterator[str], rounds: int, tokens: int) -> dict[str, Any]:
    import llama_cpp

    config = compose(models_dir, "demo-single", tokens)
    spec = resolve_models(config)[0][DEMO_MODEL_ID]
    settings = stage_settings(spec.sampling)
    ours = LlamaBackend(spec)
    ours.load()
    quiet_llama_logs()
    assert spec.path is not None
    theirs = llama_cpp.Llama(model_path=str(spec.path), verbose=False)  # llama-cpp-python's defaults

    def run_ours(prompt: str) -> tuple[float, float, int]:
        g = generate(ours, prompt, settings)
        return (
            g.prompt_tokens / g.ttft_s,
            decode_rate(g.completion_tokens, g.ttft_s, g.total_s),
            g.completion_tokens,
        )

    def run_theirs(prompt: str) -> tuple[float, float, int]:
        text = ours.format_prompt(prompt, settings)
        n_prompt = len(theirs.tokenize(text.encode("utf-8"), add_bos=True, special=True))
        ttft, n, total = streamed(theirs.create_completion(text, stream=True, **settings.llama_kwargs()))
        return n_prompt / ttft, decode_rate(n, ttft, total), n

    warm = take(prompts, "warm-up")
    run_ours(warm), run_theirs(warm)
    pp_ratio, dec_ratio, pp_a, pp_b, dec_a, dec_b = [], [], [], [], [], []
    for r in range(rounds):
        prompt = take(prompts, "the defaults rounds")
        (pa, da, na), (pb, db, nb) = alternate(r, prompt, [run_theirs, run_ours])
        if na != nb:
            raise SystemExit(f"round {r}: token counts differ (defaults {na}, MAGI {nb}) on {prompt[:60]!r}")
        pp_a.append(pa), pp_b.append(pb), dec_a.append(da), dec_b.append(db)
        pp_ratio.append(pb / pa)
        dec_ratio.append(db / da)
    result = {
        "theirs_pp": median(pp_a),
        "ours_pp": median(pp_b),
        "pp_ratio": median(pp_ratio),
        "theirs_decode": median(dec_a),
        "ours_decode": median(dec_b),
        "decode_ratio": median(dec_ratio),
        "theirs_threads": f"{theirs.n_threads}/{theirs.n_threads_batch}",
        "ours_threads": f"{spec.load.n_threads}/{spec.load.n_threads_batch}",
        "theirs_n_ctx": theirs.n_ctx(),
        "ours_n_ctx": spec.n_ctx,
    }
    theirs.close()
    ours.close()
    return result


def bench_two_stage_ttft(
    models_dir: Path, prompts: Iterator[str], rounds: int, tokens: int
) -> dict[str, Any]:
    # the demo profile with Gemma in both tiers, as the published figures were measured
    gemma = (
        f"profile.enabled_models=[{DEMO_MODEL_ID}]",
        "~profile.model_tiers",
        f"+profile.model_tiers={{{DEMO_MODEL_ID}:[fast,powerful]}}",
    )
    two = compose(models_dir, "demo", tokens, *gemma, f"profile.two_stage.stage1_max_tokens={tokens}")
    single = compose(  # every prompt answered by the fast tier alone
        models_dir,
        "demo",
        tokens,
        *gemma,
        "profile.two_stage.enabled=false",
        "profile.tier_config.0.max_score=10",
    )
    a: list[float] = []
    b: list[float] = []
    per_round: list[float] = []
    with (
        Runner(two, start_health_checks=False) as r2,
        Runner(single, pool=r2.pool, start_health_checks=False) as r1,
    ):
        hard = (p for p in prompts if r2.route(p).two_stage)  # the prompts two-stage drafts
        warm = take(hard, "warm-up")
        r1.run(warm), r2.run(warm)

        def measured(runner: Runner, prompt: str) -> float:
            r1.run(FLUSH)  # the model's last prompt is an unrelated one, as for a new request
            result = runner.run(prompt)
            assert result.two_stage == (runner is r2), result.explain()
            return result.ttft_s

        def single_ttft(prompt: str) -> float:
            return measured(r1, prompt)

        def two_stage_ttft(prompt: str) -> float:
            return measured(r2, prompt)

        for r in range(rounds):
            prompt = take(hard, "the two-stage rounds")
            ta, tb = alternate(r, prompt, [single_ttft, two_stage_ttft])
            a.append(ta)
            b.append(tb)
            per_round.append(tb / ta)
    return {"single_ms": median(a) * 1000, "two_ms": median(b) * 1000, **ratios("ratio", per_round)}


def ratios(name: str, values: list[float]) -> dict[str, Any]:
    """``name``: the median of per-round ratios; ``name_q``: their quartiles."""
    return {name: median(values), f"{name}_q": quartiles(values)}


def verdict(value: float, budget: float) -> str:
    return f"(budget <= {budget})" if value <= budget else f"MISSED (budget <= {budget})"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=32, help="tokens generated per answer (max_tokens)")
    parser.add_argument(
        "--only", type=int, choices=(1, 2, 3), action="append", help="run only these (repeatable)"
    )
    parser.add_argument("--models-dir", type=Path, default=None, help="where to assemble the demo model")
    parser.add_argument("--overhead-budget", type=float, default=OVERHEAD_BUDGET, help="budget of (1)")
    parser.add_argument("--ttft-budget", type=float, default=TTFT_BUDGET, help="budget of (3)")
    args = parser.parse_args()
    only = set(args.only or (1, 2, 3))
    models_dir = args.models_dir or Path(tempfile.mkdtemp(prefix="magi-bench-"))
    model = ensure_demo_model(models_dir, progress=False)
    print(f"demo model: {model}; rounds={args.rounds}, tokens={args.tokens}; load {os.getloadavg()[0]:.2f}")
    prompts = fresh_prompts()
    missed = False

    if 1 in only:
        o = bench_overhead(models_dir, prompts, args.rounds, args.tokens)
        missed |= o["in_run"] > args.overhead_budget
        print(
            f"1. Runner.run ÷ its own create_completion stream, in the same run ({o['tokens']} tokens): "
            f"{o['in_run']:.4f} [quartiles {o['in_run_q']}] {verdict(o['in_run'], args.overhead_budget)}\n"
            f"   separate runs, same prompt: Runner.run {o['magi_ms']:.1f} ms ÷ direct create_completion "
            f"streamed {o['stream_ms']:.1f} ms: {o['magi_vs_stream']:.3f} [{o['magi_vs_stream_q']}]\n"
            f"   streaming in llama-cpp-python, streamed ÷ not streamed ({o['plain_ms']:.1f} ms): "
            f"{o['stream_vs_plain']:.3f} [{o['stream_vs_plain_q']}]; "
            f"Runner.run ÷ direct not streamed: {o['magi_vs_plain']:.3f} [{o['magi_vs_plain_q']}]"
        )
    if 2 in only:
        d = bench_defaults(models_dir, prompts, args.rounds, args.tokens)
        print(
            f"2. MAGI defaults (LlamaBackend: threads {d['ours_threads']}, n_ctx {d['ours_n_ctx']}) ÷ "
            f"llama-cpp-python defaults (threads {d['theirs_threads']}, n_ctx {d['theirs_n_ctx']}):\n"
            f"   prompt processing {d['ours_pp']:.0f} vs {d['theirs_pp']:.0f} tok/s: {d['pp_ratio']:.2f}; "
            f"decode {d['ours_decode']:.1f} vs {d['theirs_decode']:.1f} tok/s: {d['decode_ratio']:.2f} "
            "(reported)"
        )
    if 3 in only:
        t = bench_two_stage_ttft(models_dir, prompts, args.rounds, args.tokens)
        missed |= t["ratio"] > args.ttft_budget
        print(
            f"3. time to first token, fresh prompts: two-stage {t['two_ms']:.1f} ms ÷ single fast tier "
            f"{t['single_ms']:.1f} ms: {t['ratio']:.3f} [quartiles {t['ratio_q']}] "
            f"{verdict(t['ratio'], args.ttft_budget)}"
        )
    print("router: python scripts/bench_router.py")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
