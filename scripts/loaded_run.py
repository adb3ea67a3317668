"""README command 1 (``python run.py``) on a machine with cores kept busy by other work.

Starts ``--busy`` processes that spin (``while True: pass``, one core each), then runs
``python run.py`` (the main job: the built-in prompts on the demo model) with the
given overrides, and prints its output (the answers and the routing table), its
exit status and wall time. Exits with run.py's status, so it can gate CI::

    .venv/bin/python scripts/loaded_run.py               # one busy core (of 2 here)
    .venv/bin/python scripts/loaded_run.py --busy 2 -- runtime.n_threads=1

``tests/test_runtime_timeouts.py::test_readme_command_1_exits_0_with_a_core_kept_busy``
runs it (slow test). The figures of the last measurement are in README "Timeouts".
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPIN = "while True: pass"


@dataclass
class LoadedRun:
    """What one loaded run did."""

    returncode: int
    seconds: float
    busy: int
    cores: int
    output: str

    def summary(self) -> str:
        return (
            f"python run.py with {self.busy} busy process(es) on {self.cores} core(s): "
            f"exit {self.returncode} in {self.seconds:.1f} s"
        )


def loaded_run(
    overrides: list[str] | None = None, *, busy: int = 1, timeout: float = 900.0, run_dir: Path | None = None
) -> LoadedRun:
    """Run ``python run.py *overrides`` while ``busy`` spinning processes hold cores."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
    try:
        time.sleep(0.5)  # let the spinners take their cores
        with tempfile.TemporaryDirectory(prefix="magi-loaded-") as tmp:
            out = run_dir or Path(tmp)
            command = [sys.executable, "run.py", f"hydra.run.dir={out}", *(overrides or [])]
            start = time.monotonic()
            proc = subprocess.run(
                command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
            )
            seconds = time.monotonic() - start
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    return LoadedRun(proc.returncode, seconds, busy, os.cpu_count() or 1, proc.stdout + proc.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=int, default=1, help="spinning processes to start (default 1)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before run.py is killed")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for run.py (after --)")
    args = parser.parse_args(argv)
    run = loaded_run(args.overrides, busy=args.busy, timeout=args.timeout)
    print(run.output)
    print(run.summary())
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
