"""Remote vs local: decode speed and per-request overhead of the remote backend.

    python scripts/bench_remote.py                       # a tiny generated model
    python scripts/bench_remote.py --demo                # the bundled Gemma 3 270M (demo extra)
    python scripts/bench_remote.py --model path/to/model.gguf --tokens 128 --runs 10

Runs the same model in-process (LlamaBackend) and behind ``python -m llama_cpp.server``
on 127.0.0.1 (RemoteBackend, completions API), interleaved request by request, with
the same threads (default 1: steadier on a shared machine) and context, greedy.
Reports medians of:

* decode tokens/s of a ``--tokens``-token answer (after the first token), and TTFT;
* latency of a 1-token answer: the fixed cost of one request; remote minus local is
  the HTTP + server overhead per request;
* one ``count_tokens`` call (the runner counts the prompt once per request).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from magi.config.model_settings import LoadSettings  # noqa: E402
from magi.runtime.backend import (  # noqa: E402
    Backend,
    Generation,
    GenerationSettings,
    ModelSpec,
    RemoteSettings,
    generate,
)
from magi.runtime.llama import LlamaBackend  # noqa: E402
from magi.runtime.remote import RemoteBackend  # noqa: E402
from magi.runtime.resolve import default_threads  # noqa: E402
from magi.testing.servers import LlamaServerProcess  # noqa: E402
from magi.testing.tiny_gguf import write_tiny_model  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def measure(backends: dict[str, Backend], tokens: int, runs: int) -> dict[str, dict[str, float]]:
    """Interleaved: round i runs on every backend before round i + 1, so load from other
    processes on the machine hits local and remote alike."""
    settings = GenerationSettings(max_tokens=tokens, temperature=0.0, repeat_penalty=1.0)
    one = GenerationSettings(max_tokens=1, temperature=0.0, repeat_penalty=1.0)
    gens: dict[str, list[Generation]] = {name: [] for name in backends}
    one_token: dict[str, list[float]] = {name: [] for name in backends}
    count: dict[str, list[float]] = {name: [] for name in backends}
    for backend in backends.values():
        generate(backend, PROMPT, settings)  # warm-up: load, connections, caches
    for i in range(runs):
        for name, backend in backends.items():
            gens[name].append(generate(backend, f"{PROMPT} ({i})", settings))
    for i in range(runs * 5):
        for name, backend in backends.items():
            start = time.perf_counter()
            "".join(backend.stream(f"Say {i}.", one))
            one_token[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            backend.count_tokens(f"{PROMPT} [{i}]")  # a new text each time: no cache hit
            count[name].append(time.perf_counter() - start)
    return {
        name: {
            "tokens": statistics.median(g.completion_tokens for g in gens[name]),
            "decode_tps": statistics.median(g.tokens_per_s for g in gens[name]),
            "ttft_ms": statistics.median(g.ttft_s for g in gens[name]) * 1000,
            "total_ms": statistics.median(g.total_s for g in gens[name]) * 1000,
            "one_token_ms": statistics.median(one_token[name]) * 1000,
            "count_ms": statistics.median(count[name]) * 1000,
        }
        for name in backends
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a GGUF file (default: a tiny generated model)")
    parser.add_argument("--demo", action="store_true", help="use the bundled demo model")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--n-ctx", type=int, default=512)
    parser.add_argument(
        "--threads", type=int, default=1, help=f"threads of both (this machine has {default_threads()})"
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="magi-bench-remote-"))
    if args.demo:
        from magi.models.demo import ensure_demo_model

        model = ensure_demo_model(work, progress=False)
    elif args.model:
        model = args.model
    else:
        model = write_tiny_model(work / "Tiny-Llama-1B-Q4_K_M.gguf", size_label="1B")

    local = LlamaBackend(
        ModelSpec(
            "local",
            path=model,
            load=LoadSettings(
                n_ctx=args.n_ctx,
                n_threads=args.threads,
                n_threads_batch=args.threads,
                chat_format="completion",
            ),
        )
    )
    with LlamaServerProcess(model, n_ctx=args.n_ctx, n_threads=args.threads, log_dir=work) as server:
        remote = RemoteBackend(
            ModelSpec("remote", remote=RemoteSettings(url=server.url, model="m", api="completions"))
        )
        try:
            stats = measure({"local": local, "remote": remote}, args.tokens, args.runs)
        finally:
            remote.close()
            local.close()
    local_stats, remote_stats = stats["local"], stats["remote"]

    print(f"model {model.name}, {args.threads} threads, n_ctx {args.n_ctx}, {args.runs} runs, greedy")
    print(f"{'':24}{'local':>12}{'remote':>12}{'remote/local':>14}")
    for key, label in (
        ("tokens", "answer tokens"),
        ("decode_tps", "decode tokens/s"),
        ("ttft_ms", "first token ms"),
        ("total_ms", "answer ms"),
        ("one_token_ms", "1-token request ms"),
        ("count_ms", "count_tokens ms"),
    ):
        a, b = local_stats[key], remote_stats[key]
        print(f"{label:<24}{a:>12.2f}{b:>12.2f}{(b / a if a else float('nan')):>14.2f}")
    overhead = remote_stats["one_token_ms"] - local_stats["one_token_ms"]
    print(f"per-request overhead (1-token request, remote - local): {overhead:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
