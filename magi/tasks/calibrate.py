"""Task ``calibrate``: fit the profile's tier thresholds to target shares of prompts,
or to a quality target read off a ``task=tiers`` run.

    python run.py task=calibrate profile=development                      # powerful 30%
    python run.py task=calibrate profile=development task.shares.powerful=0.2 task.output=dev-20
    python run.py task=calibrate profile=development task.quality=0.95 task.tiers_run=outputs/D/T
    python run.py profile=development-calibrated prompt="..."             # use the result

Only the scorer runs (no model is loaded); a quality calibration reads the stored,
graded answers of the tiers run and asks no model either. The new profile is saved
through the ProfileManager into the profile group (``task.profiles_dir`` to put it
elsewhere), and ``calibration.json`` in the job's folder records the report.
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

    from magi.errors import ConfigError
    from magi.fileio import atomic_write_text
    from magi.routing.scorer import config_scorer
    from magi.sweeps.calibration import (
        DEFAULT_HOLDOUT_FRACTION,
        CalibrationReport,
        QualityCalibrationReport,
        calibrate,
        calibrate_quality,
        load_sets,
        read_tiers_run,
        save_calibrated,
    )
    from magi.sweeps.jobs import current_job

    settings = config.task if isinstance(config.task, CalibrateTaskConfig) else CalibrateTaskConfig()
    job = current_job()
    report: CalibrationReport | QualityCalibrationReport
    if settings.quality is not None:
        if settings.tiers_run is None:
            raise ConfigError(
                [
                    "task.quality needs task.tiers_run=RUN_DIR, the folder of a task=tiers run "
                    "(python run.py task=tiers profile=PROFILE)"
                ],
                headline="Cannot calibrate",
            )
        records, summary = read_tiers_run(settings.tiers_run, setting="task.tiers_run")
        report = calibrate_quality(
            config.profile,
            records,
            quality=settings.quality,
            holdout_fraction=settings.holdout_fraction or DEFAULT_HOLDOUT_FRACTION,
            seed=settings.seed,
            name=settings.output,
            run_dir=str(settings.tiers_run),
            scorer=config_scorer(config),
            run_scorer=summary.get("scorer"),
            setting="task.tiers_run",
            run_summary=summary,
            profile_key=job.profile_key,
        )
    else:
        fit, held, fit_name, held_name = load_sets(
            settings.prompts, settings.holdout, settings.holdout_fraction, seed=settings.seed
        )
        report = calibrate(
            config.profile,
            fit,
            shares=settings.shares,
            scorer=config_scorer(config),
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
