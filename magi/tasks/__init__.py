"""Tasks that ``run.py`` can run, selected by ``task=<name>`` (conf/task/<name>.yaml).

Each task is a top-level function taking the validated config, registered with
:func:`magi.tasks.registry.register_task`; tests call them directly and Hydra
launchers can pickle them. Their settings are validated by :mod:`magi.config.task`.

* ``run``        answer ``prompt`` (or built-in prompts) and show the routing
* ``bench``      time a prompt set, write ``metrics.json`` (sweeps summarise them)
* ``calibrate``  fit tier thresholds to target shares, save a new profile
* ``serve``      answer the OpenAI API over HTTP (magi.serve)
* ``tiers``      answer every prompt on every tier once, sweep thresholds offline
"""

from magi.tasks import bench as _bench  # noqa: F401  (registers "bench")
from magi.tasks import calibrate as _calibrate  # noqa: F401  (registers "calibrate")
from magi.tasks import run as _run  # noqa: F401  (registers "run")
from magi.tasks import serve as _serve  # noqa: F401  (registers "serve")
from magi.tasks import tiers as _tiers  # noqa: F401  (registers "tiers")
from magi.tasks.registry import TASKS, get_task, register_task

__all__ = ["TASKS", "get_task", "register_task"]
