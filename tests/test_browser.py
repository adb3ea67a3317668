"""The quickstart's ProfilePicker in a real browser: voila serves it, chromium drives it.

voila runs notebooks/quickstart.ipynb (pointed at tiny echo models through the
MAGI_NOTEBOOK_* variables) and playwright, in Debian's chromium, picks a profile,
types a bad override and sees the error, fixes it, runs a prompt and reads the answer
and trace from the page; in the notebook's second picker (chat mode) it resets the
conversation, sends two turns and reads both answers and their traces. Screenshots
of the pickers are saved in the test's tmp_path.

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
            # the quickstart shows two pickers: one in prompt mode, then one in chat mode
            picker = page.locator(".magi-picker").first
            expect(picker).to_be_visible(timeout=120_000)  # voila ran the notebook up to the picker
            # the notebook's own picker.run(...) finished before we touch anything
            expect(picker.locator(".magi-picker-status")).to_contain_text("✓ Done")

            # inputs are reachable by their labels
            profile = picker.get_by_label("Profile")
            overrides = picker.get_by_label("Overrides")
            prompt = picker.get_by_label("Prompt")

            profile.select_option("fast-only")
            expect(picker.locator(".magi-picker-profile-view")).to_contain_text("Fast Only")
            expect(picker.locator(".magi-picker-validation")).to_contain_text("Valid: profile=fast-only")

            # live validation: a bad override is reported in place, the good config is kept
            original = overrides.input_value()
            overrides.fill(original + "\nprofile.two_stage.enabled=maybe")
            expect(picker.locator(".magi-picker-validation .magi-invalid")).to_contain_text(
                "profile.two_stage.enabled"
            )
            expect(picker.locator(".magi-picker-validation")).to_contain_text(
                "Run uses the last valid config"
            )
            overrides.fill(original)
            expect(picker.locator(".magi-picker-validation")).to_contain_text("Valid: profile=fast-only")

            prompt.fill("Hello there")
            picker.get_by_role("button", name="Run").click()
            trace = picker.locator(".magi-picker-trace")
            expect(trace).to_contain_text("profile Fast Only", timeout=60_000)
            expect(picker.locator(".magi-picker-status")).to_contain_text("✓ Done")
            answer = picker.locator('.magi-picker-answer .magi-answer[data-state="done"]')
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


def test_chat_mode_in_voila_sends_two_turns_and_reads_both_answers(voila_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1400})
            page.set_default_timeout(60_000)
            page.goto(voila_url)
            chat = page.locator(".magi-picker").nth(1)  # the quickstart's chat-mode picker
            expect(chat).to_be_visible(timeout=120_000)
            status = chat.locator(".magi-picker-status")
            history = chat.locator(".magi-picker-history")
            # the notebook's own two chat.send(...) calls answered before we touch anything
            expect(status).to_contain_text("✓ Done", timeout=120_000)
            expect(status).to_contain_text("turn 2")
            expect(history.locator('.magi-chat-turn[data-state="done"]')).to_have_count(2)
            # chat mode shows its own inputs, not the prompt box
            expect(chat.get_by_label("Prompt", exact=True)).to_be_hidden()
            expect(chat.get_by_label("System")).to_have_value("Answer in one short sentence.")

            chat.get_by_role("button", name="Reset").click()
            expect(history).to_contain_text("No messages yet")
            expect(status).to_have_text("New conversation")

            message = chat.get_by_label("Message")
            send = chat.get_by_role("button", name="Send")
            turns = history.locator(".magi-chat-turn")
            for n, text in enumerate(["Hello there", "Tell me more"], start=1):
                message.fill(text)
                send.click()
                expect(turns.nth(n - 1)).to_have_attribute("data-state", "done", timeout=60_000)
                expect(status).to_contain_text(f"turn {n}")
                expect(message).to_have_value("")  # the message moved into the history
            expect(turns).to_have_count(2)

            for n, text in enumerate(["Hello there", "Tell me more"]):
                turn = turns.nth(n)
                expect(turn.locator(".magi-chat-user")).to_contain_text(text)
                # the final stage's text (an easy message: one stage on the fast tier)
                stage = turn.locator('.magi-answer[data-state="done"] [data-stage]').last
                expect(stage).to_contain_text("qwen3_4p0b_q4km_fast")
                answer = stage.locator(".magi-text").inner_text()
                assert answer.strip(), f"turn {n + 1} has no answer text"
                summary = turn.locator(".magi-chat-summary")
                expect(summary).to_contain_text("tier fast · answer qwen3_4p0b_q4km_fast · score")
                expect(summary).to_contain_text("profile Development")
                summary.click()  # unfolds the full routing trace
                expect(turn.locator(".magi-trace-table")).to_be_visible()

            box = chat.bounding_box()
            assert box is not None
            page.set_viewport_size({"width": 1200, "height": int(box["height"]) + 200})
            chat.scroll_into_view_if_needed()
            shot = tmp_path / "chat.png"
            chat.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            print(f"screenshot: {shot}")
        finally:
            browser.close()
