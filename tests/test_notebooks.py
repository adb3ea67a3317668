"""The shipped notebooks: stored without outputs, and run top to bottom in a real kernel.

The notebooks read their parameters from environment variables (magi.widgets.params),
which the kernel inherits: here they point at tiny echo models and temporary folders.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import magi

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SHIPPED = sorted(NOTEBOOKS.glob("*.ipynb"))
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def tiny_env(monkeypatch: pytest.MonkeyPatch, models_dir: Path, registry: Path, profile: str) -> None:
    """Environment of the kernel: this checkout's magi, tiny models, short answers."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MAGI_NOTEBOOK_PROFILE", profile)
    monkeypatch.setenv(
        "MAGI_NOTEBOOK_OVERRIDES",
        "\n".join(
            [
                f"models.dirs=[{models_dir}]",
                f"models.registry={registry}",
                "models.demo=false",
                "runtime.max_tokens=8",
                "profile.two_stage.stage1_max_tokens=4",  # tiny models never stop early
            ]
        ),
    )


def execute(path: Path, timeout: int = 300):  # -> nbformat.NotebookNode
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    return nb


def outputs_text(nb) -> str:  # noqa: ANN001 - nbformat.NotebookNode
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(str(out.get("data", {}).get("text/plain", "")))
            parts.append(str(out.get("data", {}).get("text/html", "")))
    return "\n".join(parts)


def test_there_are_notebooks() -> None:
    assert {p.name for p in SHIPPED} >= {"quickstart.ipynb", "sweeps.ipynb", "serve.ipynb"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path: Path) -> None:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], (
                f"{path.name} cell {i} has stored outputs: clear them before committing"
            )
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
    assert "widgets" not in nb.metadata, f"{path.name} stores widget state: clear it before committing"


@pytest.mark.slow
def test_quickstart_runs_top_to_bottom(
    monkeypatch: pytest.MonkeyPatch, echo_seed_models_dir: Path, registry_path: Path
) -> None:
    tiny_env(monkeypatch, echo_seed_models_dir, registry_path, "development")
    nb = execute(NOTEBOOKS / "quickstart.ipynb")
    text = outputs_text(nb)
    assert "Profile 'Development' (profile=development)" in text  # compose + profile_summary
    assert "tier_config[0].max_score" in text and "runtime.temperature" in text  # every problem at once
    assert "-> tier powerful (two-stage)" in text  # explain() of the streamed, hard prompt
    assert "[draft · fast · qwen3_4p0b_q4km_fast]" in text
    assert "Routing trace" in text
    mimes = {m for cell in nb.cells for out in cell.get("outputs", []) for m in out.get("data", {})}
    assert WIDGET_MIME in mimes  # the picker was displayed
    assert "Development -> " in text  # picker.run(block=True) answered
    # a two-turn conversation in Python: the second answer's messages carry the first turn
    assert "turn 1:" in text and "turn 2:" in text
    assert "   system: Answer in one short sentence." in text
    assert "     user: Name a primary colour." in text and "     user: And another one?" in text
    assert text.count("assistant: ") >= 1
    # and in the picker's chat mode: two turns, four messages
    assert "4 messages; the last answer from" in text


@pytest.mark.slow
@pytest.mark.skipif(
    not hasattr(magi, "sweep"),
    reason="notebooks/sweeps.ipynb needs magi.sweep(profiles=, overrides=, out_dir=) from the sweeps work",
)
def test_sweeps_notebook_runs_top_to_bottom(
    monkeypatch: pytest.MonkeyPatch, echo_seed_models_dir: Path, registry_path: Path, tmp_path: Path
) -> None:
    tiny_env(monkeypatch, echo_seed_models_dir, registry_path, "development")
    monkeypatch.setenv("MAGI_NOTEBOOK_PROFILES", "development,fast-only")
    monkeypatch.setenv("MAGI_NOTEBOOK_OUT", str(tmp_path / "sweep"))
    nb = execute(NOTEBOOKS / "sweeps.ipynb", timeout=600)
    text = outputs_text(nb)
    assert "sweep folder:" in text
    assert list((tmp_path / "sweep").rglob("summary.csv")), "the sweep left no summary.csv"
    mimes = {m for cell in nb.cells for out in cell.get("outputs", []) for m in out.get("data", {})}
    assert WIDGET_MIME in mimes  # the SweepView was displayed


@pytest.mark.slow
def test_serve_notebook_runs_top_to_bottom(
    monkeypatch: pytest.MonkeyPatch, echo_seed_models_dir: Path, registry_path: Path
) -> None:
    tiny_env(monkeypatch, echo_seed_models_dir, registry_path, "development")
    monkeypatch.delenv("MAGI_API_KEYS", raising=False)
    nb = execute(NOTEBOOKS / "serve.ipynb")
    text = outputs_text(nb)
    assert "serving profile 'development' at http://127.0.0.1:" in text
    assert "{'status': 'ok', 'profile': 'development'}" in text
    assert "[fast] answer qwen3_4p0b_q4km_fast: " in text  # the openai client's answers, traced
    assert "[powerful] draft qwen3_4p0b_q4km_fast -> refine deepseek_r10528qwen3_8p0b_q4km_powerful" in text
    assert "streamed " in text
    mimes = {m for cell in nb.cells for out in cell.get("outputs", []) for m in out.get("data", {})}
    assert WIDGET_MIME in mimes  # the HealthView was displayed
    assert "qwen3_4p0b_q4km_fast: circuit closed, loaded True, " in text
    assert "routing mix of Development: fast " in text
    assert 'magi_requests_total{model="qwen3_4p0b_q4km_fast"' in text  # /metrics, the same counts
    assert "server stopped: exit 0" in text
