"""The quickstart's ProfilePicker in a real browser: voila serves it, chromium drives it.

voila runs notebooks/quickstart.ipynb (pointed at tiny echo models through the
MAGI_NOTEBOOK_* variables) and playwright, in Debian's chromium, picks a profile,
types a bad override and sees the error, fixes it, runs a prompt and reads the answer
and trace from the page. A screenshot of the picker is saved in the test's tmp_path.

Needs ``apt-get install chromium`` (playwright cannot download browsers offline);
skipped, with that reason, only when /usr/bin/chromium is missing. CI installs it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.is_file(),
        reason="needs /usr/bin/chromium (apt-get install -y chromium); .ci/run installs it",
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"voila exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(
        f"voila did not listen on port {port} within {timeout} s:\n{log.read_text(errors='replace')}"
    )


@pytest.fixture
def voila_url(tmp_path: Path, echo_seed_models_dir: Path, registry_path: Path) -> Iterator[str]:
    """Serve the quickstart with voila on a free port; stop it (its whole process group) after."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        MAGI_NOTEBOOK_PROFILE="development",
        MAGI_NOTEBOOK_OVERRIDES="\n".join(
            [
                f"models.dirs=[{echo_seed_models_dir}]",
                f"models.registry={registry_path}",
                "models.demo=false",
                "runtime.max_tokens=8",
                "profile.two_stage.stage1_max_tokens=4",  # tiny models never stop early
            ]
        ),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
    )
    log = tmp_path / "voila.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "voila",
                "--no-browser",
                f"--port={port}",
                "--Voila.ip=127.0.0.1",
                "--VoilaConfiguration.show_tracebacks=True",
                "notebooks/quickstart.ipynb",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its kernels too: stopped together below
        )
    try:
        wait_for_port(port, proc, log)
        yield f"http://127.0.0.1:{port}/"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def test_picker_in_voila_picks_a_profile_validates_and_runs(voila_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(voila_url)
            picker = page.locator(".magi-picker")
            expect(picker).to_be_visible(timeout=120_000)  # voila ran the notebook up to the picker
            # the notebook's own picker.run(...) finished before we touch anything
            expect(page.locator(".magi-picker-status")).to_contain_text("✓ Done")

            # inputs are reachable by their labels
            profile = page.get_by_label("Profile")
            overrides = page.get_by_label("Overrides")
            prompt = page.get_by_label("Prompt")

            profile.select_option("fast-only")
            expect(page.locator(".magi-picker-profile-view")).to_contain_text("Fast Only")
            expect(page.locator(".magi-picker-validation")).to_contain_text("Valid: profile=fast-only")

            # live validation: a bad override is reported in place, the good config is kept
            original = overrides.input_value()
            overrides.fill(original + "\nprofile.two_stage.enabled=maybe")
            expect(page.locator(".magi-picker-validation .magi-invalid")).to_contain_text(
                "profile.two_stage.enabled"
            )
            expect(page.locator(".magi-picker-validation")).to_contain_text("Run uses the last valid config")
            overrides.fill(original)
            expect(page.locator(".magi-picker-validation")).to_contain_text("Valid: profile=fast-only")

            prompt.fill("Hello there")
            page.get_by_role("button", name="Run").click()
            trace = page.locator(".magi-picker-trace")
            expect(trace).to_contain_text("profile Fast Only", timeout=60_000)
            expect(page.locator(".magi-picker-status")).to_contain_text("✓ Done")
            answer = page.locator('.magi-picker-answer .magi-answer[data-state="done"]')
            expect(answer.locator('[data-stage="answer"]')).to_contain_text("qwen3_4p0b_q4km_fast")
            text = answer.locator(".magi-text").inner_text()
            assert text.strip() and set(text.strip()) == {":"}  # the echo model repeats 'A:'
            expect(trace).to_contain_text("Routing trace")
            expect(trace).to_contain_text("→ tier fast")

            # voila scrolls inside the page: only what fits the viewport is painted
            box = picker.bounding_box()
            assert box is not None
            page.set_viewport_size({"width": 1200, "height": int(box["height"]) + 200})
            picker.scroll_into_view_if_needed()
            shot = tmp_path / "picker.png"
            picker.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            print(f"screenshot: {shot}")
        finally:
            browser.close()
