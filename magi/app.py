"""What ``run.py`` does: validate the composed config once, then run its task.

Tasks register by name (``conf/task/<name>.yaml`` sets ``task.name``); each is a
top-level function taking the validated :class:`MagiConfig`, so tests call them
directly and any Hydra launcher can pickle them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from magi.config.app import MagiConfig
from magi.config.compose import to_container, validate_config
from magi.errors import ConfigError, MAGIException, did_you_mean, format_options

Task = Callable[[MagiConfig], Any]
TASKS: dict[str, Task] = {}


def register_task(name: str) -> Callable[[Task], Task]:
    """Decorator: make a function selectable as ``task=<name>``."""

    def add(func: Task) -> Task:
        TASKS[name] = func
        return func

    return add


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(
            [
                f"task.name: unknown task '{name}'.{did_you_mean(name, list(TASKS))} "
                f"Available: {format_options(TASKS)}"
            ]
        )
    return TASKS[name]


@register_task("run")
def run_task(config: MagiConfig) -> None:
    """Print the profile and how it routes (the runtime adds answers)."""
    from magi.render import profile_summary

    print(profile_summary(config.profile))


def config_from_hydra(cfg: DictConfig) -> MagiConfig:
    """Validate the config ``@hydra.main`` composed, naming the chosen profile file."""
    from hydra.core.hydra_config import HydraConfig

    choice = None
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("profile")
    return validate_config(to_container(cfg), profile_name=choice)


def main(cfg: DictConfig) -> Any:
    """Entry of ``run.py``: user mistakes print a clear message and exit 2."""
    try:
        config = config_from_hydra(cfg)
        return get_task(str(config.task.get("name", "run")))(config)
    except MAGIException as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
