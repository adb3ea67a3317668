"""The sweep from Python: what ``python run.py -m ... task=bench`` does, in a notebook.

``@hydra.main`` cannot run inside a Jupyter kernel, so :func:`sweep` expands the
overrides with Hydra's own sweep grammar (``a=1,2``, ``range(...)``, ``choice(...)``;
the basic sweeper's cartesian product), composes each variant with
:func:`magi.compose`, benchmarks it in-process on the shared model pool (models
load once for the whole sweep, and stay loaded for the next cell), and writes the
same files as a Hydra sweep: ``<job>/metrics.json`` plus ``summary.csv``,
``summary.md`` and ``summary.png``.

Example:
    >>> import magi
    >>> summary = magi.sweep(profiles=["demo", "demo-single"], limit=5)   # doctest: +SKIP
    >>> summary                      # a Markdown table in Jupyter          # doctest: +SKIP
    >>> summary.plot()               # latency p50 vs powerful share        # doctest: +SKIP
    >>> summary.rows[0]["latency_p50_s"]                                     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from magi.config.app import MagiConfig
from magi.errors import ConfigError
from magi.runtime.pool import ModelPool
from magi.sweeps.summary import SweepSummary, parse_override


def expand_overrides(overrides: Sequence[str]) -> list[list[str]]:
    """One override list per job, as Hydra's basic sweeper would launch them.

    Example:
        >>> expand_overrides(["profile=demo,demo-single", "task=bench"])
        [['profile=demo', 'task=bench'], ['profile=demo-single', 'task=bench']]
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    except HydraException as exc:
        raise ConfigError([str(exc).strip()], source=f"sweep overrides {list(overrides)!r}") from None
    return [list(job) for batch in batches for job in batch]


def sweep(
    profiles: Sequence[str] = (),
    overrides: Sequence[str] = (),
    *,
    prompts: str | Path | None = None,
    limit: int | None = None,
    sweep_dir: str | Path | None = None,
    conf_dir: str | Path | None = None,
    progress: bool = True,
    pool: ModelPool | None = None,
    write: bool = True,
) -> SweepSummary:
    """Benchmark every variant and return the sweep's summary.

    Args:
        profiles: Profiles to compare (the override ``profile=a,b``).
        overrides: Hydra overrides, sweeps included: ``["runtime.max_tokens=32,64"]``.
        prompts: Prompt set (``task.prompts``); default the shipped bench set.
        limit: Use only the first N prompts (``task.limit``).
        sweep_dir: Folder for the jobs and summary files; default
            ``multirun/<date>/<time>`` like Hydra's.
        conf_dir: Config folder; default the project's ``conf/``.
        progress: Progress bars per variant.
        pool: Model pool; default the process-wide shared pool.
        write: Write ``summary.csv``/``.md``/``.png`` into ``sweep_dir``.

    Every variant is composed and validated before the first model runs, so a typo
    fails at once; a variant that fails while running becomes a failed row and the
    others go on.

    Raises:
        ConfigError / ProfileNotFoundError: a variant does not compose or validate
            (the message names the variant's overrides).
    """
    from magi.config.compose import compose
    from magi.errors import MAGIException
    from magi.runtime.pool import shared_pool
    from magi.sweeps.bench import run_bench
    from magi.sweeps.jobs import JobInfo
    from magi.sweeps.metrics import read_metrics

    args = list(overrides)
    if profiles:
        args.insert(0, "profile=" + ",".join(profiles))
    keys = {parse_override(a)[0] for a in args}
    if "task" not in keys:
        args.append("task=bench")
    for key, value in (("task.prompts", prompts), ("task.limit", limit)):
        if value is not None and key not in keys:
            args.append(f"{key}={value}")
    if not progress and "task.progress" not in keys:
        args.append("task.progress=false")
    jobs = expand_overrides(args)
    configs: list[MagiConfig] = []
    for job in jobs:
        try:
            config = compose(overrides=job, conf_dir=conf_dir)
        except MAGIException as exc:
            exc.message = f"Variant {' '.join(job)}: {exc.message}"
            raise
        if config.task.name != "bench":
            raise ConfigError(
                [f"task: sweeps run task=bench (variant {' '.join(job)} has task={config.task.name})"]
            )
        configs.append(config)
    folder = (
        Path(sweep_dir)
        if sweep_dir is not None
        else Path("multirun") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
    )
    folder = folder.resolve()
    pool = pool if pool is not None else shared_pool()
    started = time.perf_counter()
    results = []
    for num, (job, config) in enumerate(zip(jobs, configs, strict=True)):
        profile_key = next((parse_override(o)[1] for o in job if parse_override(o)[0] == "profile"), None)
        info = JobInfo(
            output_dir=folder / str(num),
            overrides=job,
            num=num,
            multirun=True,
            profile_key=profile_key,
            launcher="python",
        )
        # A failure is recorded in the job's metrics.json by run_bench; the next variant runs.
        with contextlib.suppress(Exception):
            run_bench(config, info, pool=pool)
        results.append((info.output_dir, read_metrics(info.output_dir)))
    summary = SweepSummary.from_metrics(results, folder, overrides=jobs, wall_s=time.perf_counter() - started)
    if write:
        summary.write(folder)
    return summary
