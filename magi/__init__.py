"""MAGI: several local GGUF models behind one Hydra configuration.

Example:
    >>> import magi
    >>> magi.list_profiles()[:2]
    ['demo', 'development']
    >>> cfg = magi.compose(profile="production")
    >>> [t.name for t in cfg.profile.tier_config]
    ['powerful']

Sweeps from Python (the same as ``python run.py -m profile=demo,demo-single task=bench``):

    >>> summary = magi.sweep(profiles=["demo", "demo-single"], limit=5)   # doctest: +SKIP
"""

from typing import TYPE_CHECKING, Any

from magi.config import (
    LoadBalancingConfig,
    MagiConfig,
    ModelProfile,
    TierConfig,
    TwoStageConfig,
    compose,
    list_profiles,
)
from magi.errors import ConfigError, MAGIException, ProfileNotFoundError
from magi.profiles import ProfileManager

if TYPE_CHECKING:
    from magi.sweeps.api import sweep
    from magi.sweeps.calibration import CalibrationReport, calibrate
    from magi.sweeps.summary import SweepSummary

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "LoadBalancingConfig",
    "MAGIException",
    "MagiConfig",
    "ModelProfile",
    "ProfileManager",
    "ProfileNotFoundError",
    "TierConfig",
    "CalibrationReport",
    "SweepSummary",
    "TwoStageConfig",
    "__version__",
    "calibrate",
    "compose",
    "list_profiles",
    "sweep",
]


def __getattr__(name: str) -> Any:
    """Sweep helpers load on first use (they pull in tqdm and matplotlib)."""
    if name in ("sweep", "calibrate", "CalibrationReport", "SweepSummary"):
        import magi.sweeps

        return getattr(magi.sweeps, name)
    raise AttributeError(f"module 'magi' has no attribute {name!r}")
