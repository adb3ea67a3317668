"""Prompt-lookup decoding on a bare ``llama_cpp.Llama`` (no MAGI in the way), the way the
product brief measured it: ``draft_model`` given at load, a copy-heavy prompt, greedy,
streamed decode rate (tokens after the first ÷ time after the first), best of 3, for 1 and
2 threads, and whether the text is the same. Run from the project root once README
command 1 has put the demo model in ``models/``::

    .venv/bin/python scripts/bench_lookup_raw.py [--model models/gemma-3-270m-q4_k_m.gguf]

Figures in docs/PERFORMANCE.md, "Prompt-lookup decoding". ``scripts/bench_refine.py``
measures the same through MAGI's refine stage, with budgets.
"""

from __future__ import annotations

import argparse
import time

from llama_cpp import Llama
from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

TEXT = (
    "The quick brown fox jumps over the lazy dog. TCP is a reliable, connection-oriented "
    "protocol that guarantees delivery and ordering, while UDP is a connectionless protocol "
    "that trades reliability for speed. "
) * 3
PROMPT = f"Rewrite the following text exactly, word for word.\nText: {TEXT}\nRewritten: "


def decode_rate(llm: Llama, max_tokens: int) -> tuple[float, str]:
    """Tokens per second after the first token of one greedy answer, from an empty context."""
    llm.reset()
    first: float | None = None
    pieces: list[str] = []
    for chunk in llm.create_completion(PROMPT, max_tokens=max_tokens, temperature=0, stream=True):
        if first is None:
            first = time.perf_counter()
        pieces.append(chunk["choices"][0]["text"])
    end = time.perf_counter()
    assert first is not None
    return (len(pieces) - 1) / (end - first), "".join(pieces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/gemma-3-270m-q4_k_m.gguf")
    parser.add_argument("--lookup", type=int, default=10, help="tokens drafted per step")
    parser.add_argument("--tokens", type=int, default=96)
    args = parser.parse_args()
    for threads in (1, 2):
        texts: dict[bool, str] = {}
        rates: dict[bool, float] = {}
        for lookup in (False, True):
            draft = LlamaPromptLookupDecoding(num_pred_tokens=args.lookup) if lookup else None
            llm = Llama(
                model_path=args.model,
                n_ctx=2048,
                n_threads=threads,
                n_threads_batch=threads,
                draft_model=draft,
                verbose=False,
            )
            decode_rate(llm, 4)  # warm up
            runs = [decode_rate(llm, args.tokens) for _ in range(3)]
            rates[lookup] = max(rate for rate, _ in runs)
            texts[lookup] = runs[0][1]
            llm.close()
        print(
            f"threads={threads}: off {rates[False]:.1f} tok/s, lookup {args.lookup} {rates[True]:.1f} tok/s, "
            f"ratio {rates[True] / rates[False]:.2f}, same text: {texts[True] == texts[False]}",
            flush=True,
        )


if __name__ == "__main__":
    main()
