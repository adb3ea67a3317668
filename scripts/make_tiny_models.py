"""Write tiny llama GGUF models (about 0.5 MB each) that stand in for real ones.

    python scripts/make_tiny_models.py models --seed-models          # the seed's 3 models
    python scripts/make_tiny_models.py models --name "Llama 3.1 8B" --basename Llama-3.1 \
        --size-label 8B --file-type Q5_K_M --out Llama-3.1-8B-Q5_K_M.gguf
    python scripts/make_tiny_models.py /tmp/many --count 50           # a folder for timing
    magi discover models --no-demo                                    # then register them

The files load in llama-cpp-python and generate text in milliseconds; their
metadata (name, size label, file type) decides the model id and tier discovery
gives them. See magi/testing/tiny_gguf.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from magi.testing.tiny_gguf import make_seed_models, write_tiny_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder to write into (created if absent)")
    parser.add_argument(
        "--seed-models",
        action="store_true",
        help="write the seed's Qwen3-4B, DeepSeek-R1-0528-Qwen3-8B and Qwen2.5-Coder-14B",
    )
    parser.add_argument("--count", type=int, default=0, help="write this many varied models")
    parser.add_argument("--out", default=None, help="file name of one custom model")
    parser.add_argument("--name", default="Tiny Llama", help="general.name")
    parser.add_argument("--basename", default="Tiny-Llama", help="general.basename")
    parser.add_argument("--size-label", default=None, help="general.size_label, e.g. 4B")
    parser.add_argument("--file-type", default="Q4_K_M", help="general.file_type, e.g. Q4_K_M")
    parser.add_argument("--context-length", type=int, default=4096, help="llama.context_length")
    parser.add_argument("--echo", action="store_true", help="echo variant: repeats the last prompt token")
    parser.add_argument("--shards", type=int, default=1, help="split into this many files")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    written: list[Path] = []
    if args.seed_models:
        written += make_seed_models(args.folder, echo=args.echo).values()
    for i in range(args.count):
        size = (1, 4, 8, 14, 32)[i % 5]
        written.append(
            write_tiny_model(
                args.folder / f"Tiny-{i:03d}-{size}B-Q4_K_M.gguf",
                name=f"Tiny {i:03d} {size}B",
                basename=f"Tiny-{i:03d}",
                size_label=f"{size}B",
                seed=i,
                echo=args.echo,
                context_length=args.context_length,
            )
        )
    if args.out or not (args.seed_models or args.count):
        out = args.out or f"{args.basename}-{args.size_label or 'tiny'}-{args.file_type}.gguf"
        written.append(
            write_tiny_model(
                args.folder / out,
                name=args.name,
                basename=args.basename,
                size_label=args.size_label,
                file_type=args.file_type,
                context_length=args.context_length,
                echo=args.echo,
                shards=args.shards,
            )
        )
    for path in written:
        print(path)
    print(f"wrote {len(written)} model(s) in {time.perf_counter() - start:.3f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
