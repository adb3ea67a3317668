"""What ``run.py`` does: validate the composed config once, then run its task.

Tasks live in :mod:`magi.tasks` and are chosen by ``task=<name>``.

A single run turns a user mistake (:class:`MAGIException`) into a clear message
and exit status 2. In a sweep (``python run.py -m``) one job's failure must not end
the others or hide the sweep summary, so the error is recorded in the job's
``metrics.json`` and the job returns NaN (see :func:`magi.sweeps.jobs.fail_job`);
the summary callback lists it as a failed row and ends with status 1.

Before Hydra composes anything, :func:`launch` reads the files it will compose
through MAGI's YAML limits (:func:`magi.config.compose.check_config_files`), so a
broken or hostile profile is refused with ``error: <file>: <problem>`` and status 2
rather than hanging Hydra or ending in a traceback, and an override Hydra's grammar
cannot read (``prompt=${foo``) is one ``error:`` line saying how to write it
(:func:`magi.config.compose.parse_overrides`); Ctrl-C ends with one line and
status 130, as ``magi ask`` does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from magi.config.app import MagiConfig
from magi.config.compose import (
    CONFIG_GROUPS,
    check_config_files,
    default_conf_dir,
    parse_overrides,
    to_container,
    validate_config,
)
from magi.errors import EXIT_INTERRUPTED, EXIT_PARTIAL, EXIT_USER_ERROR, MAGIException
from magi.sweeps.launchers import check_launcher
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
        sys.exit(EXIT_USER_ERROR)
    except BrokenPipeError:
        sys.exit(reader_gone())
    except Exception as exc:
        if job.multirun:
            return fail_job(exc, job, task=OmegaConf.select(cfg, "task.name", default=None))
        raise


def check_command_line(argv: Sequence[str], conf_dir: str | None = None) -> None:
    """Check the files ``run.py <argv>`` will compose (see :func:`check_config_files`).

    Raises:
        OverrideError: Hydra's grammar cannot read an override (``prompt=${foo``, an
            unquoted non-UTF-8 byte): one line saying how to write it, not Hydra's
            parser exception.
        ConfigFileError / ConfigError: a file breaks MAGI's limits, or a group option
            is not a name (``profile=123``).
        LauncherUnavailableError: the ``hydra/launcher`` plugin or cluster is missing.
    """
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(list(argv))
    parse_overrides(args.overrides or [])
    check_launcher(args.overrides or [], multirun=bool(args.multirun))
    check_config_files(
        conf_dir or default_conf_dir(),
        args.overrides or [],
        config_name=args.config_name or "config",
        search_dirs=[args.config_dir] if args.config_dir else [],
    )


def launch(hydra_main: Callable[[], Any], argv: Sequence[str] | None = None) -> None:
    """What ``run.py`` runs: check the config files, then the ``@hydra.main`` function.

    A file that breaks the limits exits 2 with ``error: <file>: <problem>``; Ctrl-C
    (while loading or answering) exits 130 with one line.
    """
    try:
        try:
            check_command_line(sys.argv[1:] if argv is None else argv)
        except MAGIException as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
        hydra_main()
    except KeyboardInterrupt:
        interrupted()


def reader_gone() -> int:
    """After the reader of stdout went away (``run.py | head``, ``magi ask ... | head``): the
    answer was stopped and its model freed on the way out; point stdout at /dev/null so the
    final flush cannot fail again. Returns the exit status, as Python's docs advise for
    SIGPIPE: the output was cut short."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_PARTIAL


def interrupted() -> None:
    """End the process after Ctrl-C: one line on stderr, status 130 (128 + SIGINT)."""
    print("interrupted", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)
