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

from typing import TYPE_CHECKING

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

# Heavier parts load on first use, so `import magi` stays quick for configuration work.
_LAZY = {
    "Runner": "magi.runtime.runner",
    "RunResult": "magi.runtime.trace",
    "ModelPool": "magi.runtime.pool",
    "shared_pool": "magi.runtime.pool",
    "ModelRegistry": "magi.models.registry",
    "ModelDiscoveryService": "magi.models.discovery",
    "ProfilePicker": "magi.widgets",
    # sweep helpers pull in tqdm and matplotlib
    "sweep": "magi.sweeps",
    "calibrate": "magi.sweeps",
    "CalibrationReport": "magi.sweeps",
    "SweepSummary": "magi.sweeps",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'magi' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "LoadBalancingConfig",
    "MAGIException",
    "MagiConfig",
    "ModelDiscoveryService",
    "ModelPool",
    "ModelProfile",
    "ModelRegistry",
    "ProfileManager",
    "ProfilePicker",
    "RunResult",
    "Runner",
    "ProfileNotFoundError",
    "TierConfig",
    "CalibrationReport",
    "SweepSummary",
    "TwoStageConfig",
    "__version__",
    "calibrate",
    "compose",
    "list_profiles",
    "shared_pool",
    "sweep",
]
