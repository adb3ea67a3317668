"""How long does ``magi.compose`` take when it composed the same thing before?

The picker composes on every change, and Hydra's composition costs 100+ ms. A repeated
composition with the config folder unchanged comes from a cache (a stat of every file
under the folder, then a deep copy). Budget, measured in one run: warm ÷ cold
**≤ 0.05** (the issue's absolute figure: under 5 ms). Rounds alternate a cold compose
(cache cleared: Hydra, MAGI's YAML checks, validation) and a warm one; medians.

    python scripts/bench_compose.py
    python scripts/bench_compose.py --rounds 50 --profile development -o runtime.n_ctx=512

Exits 1 when the ratio is over budget, 2 when the cache did not take (a file under the
folder changed in the last ``RACY_NS``: run again).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import magi  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from magi.config.compose import (  # noqa: E402
    RACY_NS,
    clear_compose_cache,
    compose,
    conf_fingerprint,
    default_conf_dir,
)

BUDGET_RATIO = 0.05


def _ms(func: object, *args: object, **kwargs: object) -> float:
    start = time.perf_counter()
    func(*args, **kwargs)  # type: ignore[operator]
    return (time.perf_counter() - start) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20, help="cold/warm pairs (default 20)")
    parser.add_argument("--profile", default="production", help="profile to compose (default production)")
    parser.add_argument("-o", "--override", action="append", default=[], help="a Hydra override (repeatable)")
    parser.add_argument("--conf-dir", type=Path, default=None, help="config folder (default: MAGI's)")
    parser.add_argument("--budget", type=float, default=BUDGET_RATIO, help="max warm ÷ cold (default 0.05)")
    args = parser.parse_args(argv)
    conf = (args.conf_dir or default_conf_dir()).resolve()

    def run() -> object:
        return compose(args.profile, args.override, conf_dir=conf)

    clear_compose_cache()
    run()  # imports, Hydra's plugin scan
    cold: list[float] = []
    warm: list[float] = []
    stat: list[float] = []
    for _ in range(args.rounds):
        clear_compose_cache()
        cold.append(_ms(run))
        warm.append(_ms(run))
        stat.append(_ms(conf_fingerprint, conf))
    files = len(conf_fingerprint(conf)[0])
    hot = statistics.median(warm)
    ratio = hot / statistics.median(cold)
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"{conf} ({files} files), profile={args.profile} overrides={args.override}; {args.rounds} rounds"
    )
    print(f"{'':34} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
    for name, samples in (
        ("cold (Hydra + checks + validate)", cold),
        ("warm (cached, deep copy)", warm),
        ("  of which folder fingerprint", stat),
    ):
        print(f"{name:34} {statistics.median(samples):10.3f} {min(samples):8.3f} {max(samples):8.3f}")
    print(f"warm ÷ cold = {ratio:.4f} (budget <= {args.budget}); warm {hot:.3f} ms (issue: < 5 ms)")
    if ratio > 0.5:
        print(
            f"the cache did not take: a file under {conf} changed less than {RACY_NS / 1e9:.0f} s "
            "before a compose; run again",
            file=sys.stderr,
        )
        return 2
    if ratio > args.budget:
        print(f"OVER BUDGET: warm ÷ cold {ratio:.4f} > {args.budget}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
