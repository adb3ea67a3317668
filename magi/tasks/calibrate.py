"""Task ``calibrate``: fit the profile's tier thresholds to target shares of prompts.

    python run.py task=calibrate profile=development                      # powerful 30%
    python run.py task=calibrate profile=development task.shares.powerful=0.2 task.output=dev-20
    python run.py profile=development-calibrated prompt="..."             # use the result

Only the scorer runs (no model is loaded). The new profile is saved through the
ProfileManager into the profile group (``task.profiles_dir`` to put it elsewhere),
and ``calibration.json`` in the job's folder records targets and achieved shares.
"""

from __future__ import annotations

from typing import Any

from magi.config.app import MagiConfig
from magi.config.task import CalibrateTaskConfig
from magi.tasks.registry import register_task


@register_task("calibrate")
def calibrate_task(config: MagiConfig) -> dict[str, Any]:
    """Calibrate, save the variant, print the report; return it as plain data."""
    import json

    from magi.fileio import atomic_write_text
    from magi.sweeps.calibration import calibrate, load_sets, save_calibrated
    from magi.sweeps.jobs import current_job

    settings = config.task if isinstance(config.task, CalibrateTaskConfig) else CalibrateTaskConfig()
    job = current_job()
    fit, held, fit_name, held_name = load_sets(
        settings.prompts, settings.holdout, settings.holdout_fraction, seed=settings.seed
    )
    report = calibrate(
        config.profile,
        fit,
        shares=settings.shares,
        scorer=config.scorer,
        holdout=held,
        name=settings.output,
        prompts_file=fit_name,
        holdout_file=held_name,
    )
    save_calibrated(
        report,
        profiles_dir=settings.profiles_dir,
        source_key=job.profile_key,
        overwrite=settings.overwrite,
    )
    data = report.to_dict()
    atomic_write_text(job.output_dir / "calibration.json", json.dumps(data, indent=2, default=str) + "\n")
    print(report.to_text(), flush=True)
    return data
