"""Task ``tiers``: answer every prompt on every tier of a profile once, then sweep
thresholds offline (:mod:`magi.sweeps.tiers`).

    python run.py task=tiers profile=development
    python run.py task=tiers profile=development task.prompts=data/prompts/mixed.jsonl task.limit=10
    python run.py task=tiers profile=development 'task.thresholds=[2,5,8]'

The run folder gets ``tiers.jsonl`` (one record per prompt and tier, or the two-stage
path), ``tiers_summary.json`` and ``tiers_summary.md`` (quality, share per tier and
cost for each arm alone and each threshold setting; the quality curve; APGR and
CPT). Answers are cached (``task.cache_dir``) and reused by a rerun with the same
models and settings. The table is printed at the end.
"""

from __future__ import annotations

from typing import Any

from magi.config.app import MagiConfig
from magi.tasks.registry import register_task


@register_task("tiers")
def tiers_task(config: MagiConfig) -> dict[str, Any]:
    """Answer (or reuse) every prompt on every arm, print the table; return the summary."""
    from magi.sweeps.jobs import current_job
    from magi.sweeps.tiers import SUMMARY_FILE, run_tiers, summary_table

    job = current_job()
    summary = run_tiers(config, job)
    print(summary_table(summary))
    print(
        f"\n{summary['asked']} answer(s) asked, {summary['reused']} reused (cache {summary['cache']}); "
        f"summary: {job.output_dir / SUMMARY_FILE}",
        flush=True,
    )
    return summary
