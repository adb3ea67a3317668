"""MAGI: several local GGUF models behind one Hydra configuration.

Example:
    >>> import magi
    >>> magi.list_profiles()[:2]
    ['demo', 'development']
    >>> cfg = magi.compose(profile="production")
    >>> [t.name for t in cfg.profile.tier_config]
    ['powerful']
"""

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
    "TwoStageConfig",
    "__version__",
    "compose",
    "list_profiles",
]
