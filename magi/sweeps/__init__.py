"""Sweeps: benchmark profile variants, summarise them, calibrate tier thresholds.

* :mod:`magi.sweeps.prompts`    prompt sets (JSON lines or text) with clear errors
* :mod:`magi.sweeps.bench`      one variant's benchmark → ``metrics.json``
* :mod:`magi.sweeps.metrics`    the figures and the ``metrics.json`` file
* :mod:`magi.sweeps.jobs`       the Hydra job a task runs in; failures per job
* :mod:`magi.sweeps.launchers`  what each launcher needs (checked first); configs sized to the cores
* :mod:`magi.sweeps.summary`    :class:`SweepSummary`: table, CSV, Markdown, plot
* :mod:`magi.sweeps.callback`   the Hydra callback that writes a sweep's summary
* :mod:`magi.sweeps.api`        :func:`sweep`: the same sweep from Python / notebooks
* :mod:`magi.sweeps.calibration`  thresholds from target tier shares (RouteLLM-style)

Nothing here is imported by ``import magi`` until used: matplotlib and tqdm stay
unloaded for users who only compose configs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from magi.sweeps.api import sweep
    from magi.sweeps.calibration import CalibrationReport, calibrate
    from magi.sweeps.summary import SweepSummary

__all__ = ["CalibrationReport", "SweepSummary", "calibrate", "sweep"]


def __getattr__(name: str) -> Any:
    if name == "sweep":
        from magi.sweeps.api import sweep

        return sweep
    if name in ("calibrate", "CalibrationReport"):
        from magi.sweeps import calibration as module

        return getattr(module, name)
    if name == "SweepSummary":
        from magi.sweeps.summary import SweepSummary

        return SweepSummary
    raise AttributeError(f"module 'magi.sweeps' has no attribute {name!r}")
