"""Time discovery on a folder of models: a full scan, and incremental refreshes.

    python scripts/make_tiny_models.py /tmp/bench50 --count 50
    python scripts/bench_discovery.py /tmp/bench50

Prints the median of 7 runs of: a full ``discover()`` (every header read), a
``refresh()`` with nothing changed (registry loaded, nothing read, registry saved),
and a ``refresh()`` after one file's mtime changed (one header read).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from magi.models.discovery import ModelDiscoveryService  # noqa: E402


def median_ms(fn: Callable[[], object], runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(argv[0])
    service = ModelDiscoveryService(scan_path=folder, registry_path=folder / "registry.json")
    full = median_ms(service.discover)
    service.refresh()
    unchanged = median_ms(service.refresh)
    target = sorted(folder.glob("*.gguf"))[0]

    def touch_and_refresh() -> None:
        st = target.stat()
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        result = service.refresh()
        assert result.stats.read == 1, result.stats

    one_changed = median_ms(touch_and_refresh)
    models = len(service.refresh().registry.models)
    print(
        f"{models} models: full discover {full:.1f} ms | refresh, none changed {unchanged:.1f} ms | "
        f"refresh, 1 changed {one_changed:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
