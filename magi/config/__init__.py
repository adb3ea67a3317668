"""Configuration: the Pydantic schema and Hydra composition."""

from magi.config.app import MagiConfig, ModelPin, ModelsConfig, ModelSettings, RuntimeConfig
from magi.config.compose import compose, default_conf_dir, list_profiles, validate_config
from magi.config.model_settings import LoadSettings, ModelOverrides, SamplingSettings
from magi.config.profile import (
    STRATEGIES,
    LoadBalancingConfig,
    ModelProfile,
    TierConfig,
    TwoStageConfig,
)

__all__ = [
    "STRATEGIES",
    "LoadBalancingConfig",
    "LoadSettings",
    "MagiConfig",
    "ModelOverrides",
    "ModelPin",
    "ModelProfile",
    "ModelSettings",
    "ModelsConfig",
    "RuntimeConfig",
    "SamplingSettings",
    "TierConfig",
    "TwoStageConfig",
    "compose",
    "default_conf_dir",
    "list_profiles",
    "validate_config",
]
