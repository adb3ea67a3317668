"""Sweep launchers: a missing plugin or cluster ends in one line that names the fix,
and the jobs that run at once share the cores (jobs x llama.cpp threads <= cores)
under joblib, submitit's local executor and a real local Ray cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from magi.machine import usable_cores

from .conftest import ROOT

PROMPTS = [
    {"id": "easy", "prompt": "Hi there"},
    {"id": "easy2", "prompt": "Name a color."},
]


def run_py(
    *args: str, block: str | None = None, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """``python run.py *args``; ``block`` makes that module fail to import, as when
    the plugin that provides it is not installed."""
    code = "import runpy, sys\n"
    if block:
        code += f"sys.modules[{block!r}] = None\n"
    code += f"sys.argv = ['run.py', *{list(args)!r}]\nrunpy.run_path('run.py', run_name='__main__')\n"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})},
        timeout=timeout,
    )


def demo_sweep(sweep_dir: Path, launcher: str) -> list[str]:
    """The issue's command: two demo profiles, one bench prompt, on ``launcher``."""
    return [
        "-m",
        "profile=demo,demo-single",
        "task=bench",
        "task.limit=1",
        f"hydra/launcher={launcher}",
        f"hydra.sweep.dir={sweep_dir}",
    ]


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The run failed with status 2 and exactly one ``error:`` line, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("launcher", "plugin", "extra"),
    [
        ("parallel", "hydra_plugins.hydra_joblib_launcher", "joblib"),
        ("slurm", "hydra_plugins.hydra_submitit_launcher", "slurm"),
        ("submitit_local", "hydra_plugins.hydra_submitit_launcher", "slurm"),
        ("ray-cluster", "hydra_plugins.hydra_ray_launcher", "ray"),
    ],
)
def test_a_launcher_whose_plugin_is_missing_names_the_install_command(
    launcher: str, plugin: str, extra: str, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    line = one_error_line(run_py(*demo_sweep(sweep_dir, launcher), block=plugin))
    assert f"hydra/launcher={launcher}" in line and f"pip install -e '.[{extra}]'" in line, line
    assert not sweep_dir.exists()  # refused before any job ran


def test_a_missing_ray_plugin_is_named_outside_a_sweep_too(tmp_path: Path) -> None:
    """Hydra composes the launcher config even for one run, and fails there."""
    line = one_error_line(
        run_py(
            "hydra/launcher=ray-cluster",
            f"hydra.run.dir={tmp_path}",
            block="hydra_plugins.hydra_ray_launcher",
        )
    )
    assert "pip install -e '.[ray]'" in line, line


def path_without(command: str) -> str:
    """``$PATH`` less the folders that hold ``command``."""
    folders = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(d for d in folders if not (Path(d) / command).exists())


def test_slurm_without_a_cluster_is_one_line_that_points_at_submitit_local(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "sweep"
    proc = run_py(*demo_sweep(sweep_dir, "slurm"), env={"PATH": path_without("srun")})
    line = one_error_line(proc)
    assert "srun" in line and "hydra/launcher=submitit_local" in line, line
    assert not sweep_dir.exists()


def test_slurm_launcher_config_does_not_stop_a_single_run(tmp_path: Path) -> None:
    """Without ``-m`` the launcher is never used: no cluster is needed to print the config."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = run_py("--cfg", "hydra", "hydra/launcher=slurm", env={"PATH": path_without("srun")})
    assert proc.returncode == 0, proc.stderr
    assert "SlurmLauncher" in proc.stdout


def test_cores_up_to_resolver_caps_at_this_machine() -> None:
    from magi.sweeps.launchers import register_resolvers

    register_resolvers()
    cfg = OmegaConf.create({"many": "${magi.cores_up_to:4096}", "one": "${magi.cores_up_to:1}"})
    assert cfg.many == usable_cores() and cfg.one == 1


@pytest.mark.parametrize(
    ("launcher", "plugin", "key"),
    [
        ("parallel", "hydra_plugins.hydra_joblib_launcher", "n_jobs"),
        ("ray-cluster", "hydra_plugins.hydra_ray_launcher", "ray.remote.num_cpus"),
    ],
)
def test_shipped_launcher_configs_fit_this_machine(launcher: str, plugin: str, key: str) -> None:
    """parallel's n_jobs and Ray's num_cpus per job never exceed the cores here (a Ray
    task asking for more CPUs than the cluster has waits forever)."""
    from hydra import compose, initialize_config_dir

    pytest.importorskip(plugin)
    import magi  # noqa: F401  - registers ${magi.cores_up_to:N}

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    value = OmegaConf.select(cfg.hydra.launcher, key)
    assert 1 <= value <= usable_cores(), (key, value)


def write_multirun_yaml(sweep_dir: Path, task: list[str], max_batch_size: int | None) -> None:
    """The file Hydra's basic sweeper saves in the sweep folder before any job runs."""
    sweep_dir.mkdir(parents=True)
    cfg = {
        "hydra": {
            "sweeper": {
                "_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                "max_batch_size": max_batch_size,
                "params": None,
            },
            "overrides": {"task": task},
        }
    }
    OmegaConf.save(OmegaConf.create(cfg), sweep_dir / "multirun.yaml")


def test_jobs_at_once_come_from_the_sweeps_batches(tmp_path: Path) -> None:
    """submitit's local executor starts a whole batch at once: 3 x 2 jobs in batches
    of 4 are 4 at once for jobs 0-3, 2 for jobs 4-5."""
    from magi.sweeps.jobs import jobs_in_batch

    sweep_dir = tmp_path / "sweep"
    write_multirun_yaml(sweep_dir, ["profile=a,b,c", "runtime.max_tokens=1,2", "task=bench"], 4)
    assert [jobs_in_batch(sweep_dir / str(n), n) for n in range(6)] == [4, 4, 4, 4, 2, 2]
    write_multirun_yaml(tmp_path / "all", ["profile=a,b,c"], None)
    assert jobs_in_batch(tmp_path / "all" / "0", 0) == 3
    assert jobs_in_batch(tmp_path / "none" / "0", 0) == 1  # no multirun.yaml: assume alone


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return path


def tiny_bench(sweep_dir: Path, models_dir: Path, prompt_file: Path) -> list[str]:
    """``task=bench`` over two profiles on the tiny seed models."""
    return [
        "-m",
        "profile=development,fast-only",
        "task=bench",
        f"task.prompts='{prompt_file}'",
        "task.progress=false",
        f"hydra.sweep.dir='{sweep_dir}'",
        f"models.dirs=['{models_dir}']",
        f"models.registry='{models_dir / 'registry.json'}'",
        "models.demo=false",
        "runtime.max_tokens=4",
        "profile.two_stage.stage1_max_tokens=4",
        "runtime.n_ctx=512",
    ]


def job_metrics(sweep_dir: Path, jobs: int = 2) -> list[dict]:
    return [json.loads((sweep_dir / str(i) / "metrics.json").read_text()) for i in range(jobs)]


@pytest.mark.slow
def test_submitit_local_jobs_share_the_cores(
    seed_models_dir: Path, prompt_file: Path, tmp_path: Path
) -> None:
    """The local executor runs both jobs at once: each gets cores // 2 threads, not all."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "sweep"
    proc = run_py(
        *tiny_bench(sweep_dir, seed_models_dir, prompt_file),
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
    )
    assert proc.returncode == 0, proc.stderr
    for m in job_metrics(sweep_dir):
        assert m["status"] == "ok" and m["job"]["launcher"] == "submitit", m
        assert m["job"]["parallel_jobs"] == 2
        assert m["n_threads"] == [max(usable_cores() // 2, 1)]


#: A local Ray on 127.0.0.1 only (Ray otherwise binds the machine's network address)
#: that sends no usage statistics.
LOCAL_RAY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.mark.slow
def test_ray_launcher_runs_a_sweep_on_a_local_ray(
    seed_models_dir: Path, prompt_file: Path, tmp_path: Path
) -> None:
    """A real Ray: ``ray.init()`` starts a local cluster, each job is a Ray task given
    ``num_cpus`` CPUs, and its llama.cpp threads follow them (1 here, not all cores)."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    sweep_dir = tmp_path / "sweep"
    proc = run_py(
        *tiny_bench(sweep_dir, seed_models_dir, prompt_file),
        "hydra/launcher=ray-cluster",
        "+hydra.launcher.ray.init.include_dashboard=false",
        "hydra.launcher.ray.remote.num_cpus=1",
        env=LOCAL_RAY,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Ray Launcher is launching 2 jobs" in proc.stdout + proc.stderr
    for m in job_metrics(sweep_dir):
        assert m["status"] == "ok" and m["job"]["launcher"] == "ray", m
        assert m["job"]["pid"] != os.getpid()
        assert m["n_threads"] == [1]
    assert (sweep_dir / "summary.csv").is_file()
