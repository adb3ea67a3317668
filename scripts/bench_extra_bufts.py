"""What ``runtime.use_extra_bufts=false`` costs: llama.cpp's extra weight buffers (repacked
CPU kernels, AMX) on against off, on one model, as ratios measured in one run.

    python scripts/bench_extra_bufts.py models/gemma-3-270m-q4_k_m.gguf

MAGI turns them off on a llama.cpp build with AMX kernels, which segfault on quantised
models (llama.cpp #20824). Both sides are loaded at once with one thread each; each of 4
rounds processes a 325-token prompt (prompt tokens/s) and then decodes 32 tokens greedily
(decode tokens/s) on each side, in alternating order; the ratios are medians of the
per-round ratios. Run it on a build without AMX kernels (on is then safe).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import llama_cpp  # noqa: E402

from magi.config.model_settings import amx_kernels  # noqa: E402
from magi.runtime.llama import model_params, quiet_llama_logs  # noqa: E402

if len(sys.argv) != 2:
    raise SystemExit("usage: python scripts/bench_extra_bufts.py MODEL.gguf")
if amx_kernels():
    raise SystemExit("this llama.cpp has AMX kernels: extra buffers on would crash (see README)")
path = sys.argv[1]
PROMPT = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 25)
ROUNDS, DECODE = 4, 32


def one_round(llm: llama_cpp.Llama) -> tuple[float, float]:
    """(prompt tokens/s, decode tokens/s) of one prompt from an empty context."""
    llm.reset()
    tokens = llm.tokenize(PROMPT.encode())
    start = time.perf_counter()
    llm.eval(tokens)
    prompt_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(DECODE):
        llm.eval([llm.sample(temp=0.0)])
    return len(tokens) / prompt_s, DECODE / (time.perf_counter() - start)


quiet_llama_logs()
llms = {}
for on in (True, False):
    with model_params(on):
        llms[on] = llama_cpp.Llama(model_path=path, n_ctx=1024, n_threads=1, n_threads_batch=1, verbose=False)
rates: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
for r in range(ROUNDS):
    for on in (True, False) if r % 2 == 0 else (False, True):
        rates[on].append(one_round(llms[on]))
for on in (True, False):
    prompt, decode = (statistics.median(x[i] for x in rates[on]) for i in (0, 1))
    print(f"extra buffers {'on ' if on else 'off'}: prompt {prompt:.0f} tok/s, decode {decode:.1f} tok/s")
pairs = list(zip(rates[True], rates[False], strict=True))
prompt_ratio, decode_ratio = (statistics.median(off[i] / on[i] for on, off in pairs) for i in (0, 1))
print(f"off / on: prompt {prompt_ratio:.2f}, decode {decode_ratio:.2f}")
