"""Tasks that ``run.py`` can run, selected by ``task=<name>`` (conf/task/<name>.yaml).

Each task is a top-level function taking the validated config, registered with
:func:`magi.tasks.registry.register_task`; tests call them directly and Hydra
launchers can pickle them.
"""

from magi.tasks import run as _run  # noqa: F401  (registers "run")
from magi.tasks.registry import TASKS, get_task, register_task

__all__ = ["TASKS", "get_task", "register_task"]
