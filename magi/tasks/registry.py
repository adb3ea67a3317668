"""The task registry: name → function taking a validated MagiConfig."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magi.config.app import MagiConfig
from magi.errors import ConfigError, did_you_mean, format_options

Task = Callable[[MagiConfig], Any]
TASKS: dict[str, Task] = {}


def register_task(name: str) -> Callable[[Task], Task]:
    """Decorator: make a function selectable as ``task=<name>``."""

    def add(func: Task) -> Task:
        TASKS[name] = func
        return func

    return add


def get_task(name: str) -> Task:
    """The task called ``name``; a ConfigError lists the valid ones."""
    if name not in TASKS:
        raise ConfigError(
            [
                f"task.name: unknown task '{name}'.{did_you_mean(name, list(TASKS))} "
                f"Available: {format_options(TASKS)}"
            ]
        )
    return TASKS[name]
