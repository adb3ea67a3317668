"""What each sweep launcher needs, checked before Hydra starts, and the resolver that
sizes the shipped launcher configs to this machine.

Hydra reports a launcher that cannot run late and obscurely: a launcher config whose
plugin is not installed fails to compose with ``Could not load 'hydra/launcher/ray'``,
and ``hydra/launcher=slurm`` off a cluster ends in submitit's traceback
(``Could not detect "srun"``). :func:`check_launcher` runs first (from
:func:`magi.app.check_command_line`) and turns both into one line with the fix::

    error: hydra/launcher=ray-cluster needs Hydra's Ray launcher plugin, which is not
    installed: pip install -e '.[ray]'

The shipped configs (``conf/hydra/launcher/*.yaml``) size themselves with
``${magi.cores_up_to:N}`` (at most ``N``, at most this machine's cores), so the jobs
that run at once never ask for more cores than there are; each job then gives
llama.cpp the cores it got (:func:`magi.sweeps.jobs.fit_threads`).
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from magi.errors import MAGIException
from magi.machine import usable_cores


class LauncherUnavailableError(MAGIException):
    """The chosen ``hydra/launcher`` cannot run here: its plugin or cluster is missing."""

    status_code = 503


@dataclass(frozen=True)
class LauncherNeeds:
    """What one ``hydra/launcher`` option needs.

    Attributes:
        plugin: The Hydra plugin module that provides the launcher.
        what: The plugin's name for messages.
        extra: MAGI's pip extra that installs it.
        command: A program the launcher calls in a sweep (``srun`` for SLURM).
        instead: What to use when ``command`` is missing.
    """

    plugin: str
    what: str
    extra: str
    command: str | None = None
    instead: str = ""


_JOBLIB = LauncherNeeds("hydra_plugins.hydra_joblib_launcher", "Hydra's joblib launcher plugin", "joblib")
_SUBMITIT = LauncherNeeds(
    "hydra_plugins.hydra_submitit_launcher", "Hydra's submitit launcher plugin", "slurm"
)
_SLURM = LauncherNeeds(
    _SUBMITIT.plugin,
    _SUBMITIT.what,
    _SUBMITIT.extra,
    command="srun",
    instead="run it from a SLURM login node, or run the same sweep on this machine "
    "with hydra/launcher=submitit_local",
)
_RAY = LauncherNeeds("hydra_plugins.hydra_ray_launcher", "Hydra's Ray launcher plugin", "ray")

#: ``hydra/launcher`` options (MAGI's and the plugins' own names) and their needs.
LAUNCHERS: dict[str, LauncherNeeds] = {
    "parallel": _JOBLIB,
    "joblib": _JOBLIB,
    "submitit_local": _SUBMITIT,
    "slurm": _SLURM,
    "submitit_slurm": _SLURM,
    "ray-cluster": _RAY,
    "ray": _RAY,
}

_GROUP = "hydra/launcher"


def chosen_launcher(overrides: Sequence[str]) -> str | None:
    """The ``hydra/launcher=NAME`` of a command line (the last one wins, as in Hydra)."""
    choice = None
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and key.lstrip("+~").split("@")[0] == _GROUP:
            choice = value.strip().strip("'\"") or None
    return choice


def check_launcher(overrides: Sequence[str], *, multirun: bool) -> None:
    """Refuse a ``hydra/launcher`` that cannot run here, before Hydra composes.

    A missing plugin is refused in every mode (Hydra composes the launcher config for
    a single run too); a missing ``srun`` only in a sweep (``-m``), where the
    launcher runs. Unknown names are left to Hydra, which lists the options.

    Raises:
        LauncherUnavailableError: one line naming the launcher and the fix.
    """
    name = chosen_launcher(overrides)
    needs = LAUNCHERS.get(name or "")
    if needs is None:
        return
    try:
        importlib.import_module(needs.plugin)
    except ImportError:
        raise LauncherUnavailableError(
            f"{_GROUP}={name} needs {needs.what}, which is not installed: pip install -e '.[{needs.extra}]'"
        ) from None
    if multirun and needs.command and shutil.which(needs.command) is None:
        raise LauncherUnavailableError(
            f"{_GROUP}={name} submits SLURM jobs, but SLURM is not on this machine "
            f"('{needs.command}' is not on PATH): {needs.instead}"
        )


def cores_up_to(limit: str | int) -> int:
    """``${magi.cores_up_to:N}``: ``N``, or this machine's cores when there are fewer."""
    return max(min(int(limit), usable_cores()), 1)


def register_resolvers() -> None:
    """Register ``magi.cores_up_to`` with OmegaConf (idempotent).

    Called on import of :mod:`magi.config.compose` (so by ``import magi``): every
    process that composes MAGI's ``conf/`` or reads its launcher config, ``run.py``,
    its launcher and each job process, has it.
    """
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("magi.cores_up_to"):
        OmegaConf.register_new_resolver("magi.cores_up_to", cores_up_to)
