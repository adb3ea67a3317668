"""What ``run.py`` does: validate the composed config once, then run its task.

Tasks live in :mod:`magi.tasks` and are chosen by ``task=<name>``.
"""

from __future__ import annotations

import sys
from typing import Any

from omegaconf import DictConfig

from magi.config.app import MagiConfig
from magi.config.compose import to_container, validate_config
from magi.errors import MAGIException
from magi.tasks import get_task


def config_from_hydra(cfg: DictConfig) -> MagiConfig:
    """Validate the config ``@hydra.main`` composed, naming the chosen profile file."""
    from hydra.core.hydra_config import HydraConfig

    choice = endpoints = None
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        choice = choices.get("profile")
        endpoints = choices.get("endpoints")
    return validate_config(to_container(cfg), profile_name=choice, endpoints_name=endpoints)


def main(cfg: DictConfig) -> Any:
    """Entry of ``run.py``: user mistakes print a clear message and exit 2."""
    try:
        config = config_from_hydra(cfg)
        return get_task(str(config.task.get("name", "run")))(config)
    except MAGIException as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
