"""Task ``bench``: time a prompt set on one profile variant and write ``metrics.json``.

    python run.py task=bench                                   # the default profile
    python run.py task=bench task.prompts=my.jsonl task.limit=5
    python run.py -m profile=demo,demo-single task=bench       # a sweep + summary

The job's ``metrics.json`` (in Hydra's output folder) holds the figures; a sweep's
callback (:class:`magi.sweeps.callback.SweepSummary`) gathers them into one table
and plot. The task returns the p50 latency in seconds, so Hydra sweepers (Optuna)
can minimise it. A single run whose prompts partly failed prints its table, then
exits 1 (in a sweep the summary callback does that).
"""

from __future__ import annotations

import sys

from magi.config.app import MagiConfig
from magi.errors import EXIT_PARTIAL
from magi.tasks.registry import register_task


@register_task("bench")
def bench_task(config: MagiConfig) -> float:
    """Benchmark the composed profile; return its p50 latency (seconds)."""
    from magi.sweeps.bench import headline, run_bench
    from magi.sweeps.jobs import current_job
    from magi.sweeps.summary import SweepSummary

    job = current_job()
    metrics = run_bench(config, job)
    if job.multirun:
        print(f"[job {job.num}] {headline(metrics)}", flush=True)
    else:
        summary = SweepSummary.from_metrics([(job.output_dir, metrics)], job.output_dir)
        print(summary.to_text())
        print(f"\nmetrics: {job.output_dir / 'metrics.json'}", flush=True)
        if summary.partial:  # every prompt was tried and reported; the run still failed
            print(f"error: {summary.partial[0]['error']}", file=sys.stderr)
            sys.exit(EXIT_PARTIAL)
    return float(metrics["latency_s"]["p50"])
