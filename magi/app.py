"""What ``run.py`` does: validate the composed config once, then run its task.

Tasks live in :mod:`magi.tasks` and are chosen by ``task=<name>``.

A single run turns a user mistake (:class:`MAGIException`) into a clear message
and exit status 2. In a sweep (``python run.py -m``) one job's failure must not end
the others or hide the sweep summary, so the error is recorded in the job's
``metrics.json`` and the job returns NaN (see :func:`magi.sweeps.jobs.fail_job`);
the summary callback lists it as a failed row and ends with status 1.
"""

from __future__ import annotations

import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf

from magi.config.app import MagiConfig
from magi.config.compose import CONFIG_GROUPS, to_container, validate_config
from magi.errors import MAGIException
from magi.tasks import get_task


def config_from_hydra(cfg: DictConfig) -> MagiConfig:
    """Validate the config ``@hydra.main`` composed, naming the chosen profile file."""
    from hydra.core.hydra_config import HydraConfig

    choices: dict[str, str | None] = {}
    if HydraConfig.initialized():
        chosen = HydraConfig.get().runtime.choices
        choices = {group: chosen.get(group) for group in CONFIG_GROUPS}
    return validate_config(to_container(cfg), choices=choices)


def main(cfg: DictConfig) -> Any:
    """Entry of ``run.py``: run the task; handle failures per run mode (see above)."""
    from magi.sweeps.jobs import current_job, fail_job, fit_threads

    job = current_job()
    try:
        config = config_from_hydra(cfg)
        if job.multirun:
            config = fit_threads(config, job)
        return get_task(config.task.name)(config)
    except MAGIException as exc:
        if job.multirun:
            return fail_job(exc, job, task=OmegaConf.select(cfg, "task.name", default=None))
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        if job.multirun:
            return fail_job(exc, job, task=OmegaConf.select(cfg, "task.name", default=None))
        raise
