"""What this machine offers a MAGI process: the cores it may use.

One home for the core count that thread defaults (:mod:`magi.runtime.resolve`), sweep
jobs sharing the cores (:mod:`magi.sweeps.jobs`) and launcher configs
(``${magi.cores_up_to:N}``) all size themselves by.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity (which also reflects SLURM's and
    taskset's pinning), else the machine's count; at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
