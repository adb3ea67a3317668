"""ProfilePicker: pick a profile, check overrides as you type, run a prompt or chat, read the trace.

The widget is a thin view over the same pipeline as ``run.py``: every change of the
profile or the overrides goes through :func:`magi.compose` (Hydra → Pydantic), so
what the widget calls valid is exactly what ``python run.py`` would accept, and
errors are the same messages, shown in place. The last valid config is kept, so a
half-typed override never loses a working setup.

Runs go through one :class:`~magi.runtime.runner.Runner` on a shared
:class:`~magi.runtime.pool.ModelPool` (:func:`~magi.runtime.pool.shared_pool` by
default): models stay loaded across runs, profile switches and other pickers, and
the Runner is rebuilt only when the validated config changes.

Generation runs in a background thread by default so the notebook stays
responsive while the answer streams in; ``threaded=False`` (or
``picker.run(block=True)``) runs in the caller's thread, which is what tests and
scripted notebooks want: ``Button.click()`` then returns with the answer shown.
The Stop button (or :meth:`ProfilePicker.stop`) cancels a running answer at its
next token: the model is freed at once, the text so far stays, marked as stopped.

Two modes (the Mode toggle, or ``mode=``): **Prompt** answers one prompt, as
``runner.run(prompt)``; **Chat** (:class:`~magi.widgets.chat.ChatView`) keeps a
conversation: a system prompt field, the history with each answer's trace, a message
box, Send and Reset. Send streams the answer through the same path as Run (status,
progress, Stop), sending the whole history as messages, the system field as
``system=``. Switching the profile or the overrides keeps the conversation: the next
message goes with the whole history to the new profile (each answer's trace names
the profile that wrote it), which is how two profiles are compared on the same
conversation; Reset starts a new one.

Example:
    >>> from magi.widgets import ProfilePicker
    >>> picker = ProfilePicker(profile="demo")          # doctest: +SKIP
    >>> picker                                           # doctest: +SKIP
    >>> picker.prompt_text.value = "Why is the sky blue?"  # doctest: +SKIP
    >>> result = picker.run(block=True)                  # doctest: +SKIP
    >>> print(result.explain())                          # doctest: +SKIP
    >>> picker.mode = "chat"                             # doctest: +SKIP
    >>> picker.send("Name a primary colour.", block=True)  # doctest: +SKIP
    >>> picker.send("And another one?", block=True).messages  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import yaml

from magi.config.app import MagiConfig
from magi.config.compose import compose, default_conf_dir, list_profiles
from magi.errors import ConfigError, MAGIException
from magi.runtime.pool import ModelPool, shared_pool
from magi.runtime.runner import Runner, StreamEvent
from magi.runtime.trace import RunResult
from magi.widgets.chat import INDENT, LABEL_STYLE, ChatTurn, ChatView, primary_button, tag, text_box
from magi.widgets.params import parse_overrides
from magi.widgets.tables import StagePart, answer_html, profile_html, trace_html, validation_html

logger = logging.getLogger(__name__)

#: Seconds between two redraws of the streaming answer: enough for a smooth stream
#: without sending one widget message per token at ~100 tokens/s.
REDRAW_INTERVAL = 0.05


def default_profile(conf_dir: Path, options: Sequence[str]) -> str:
    """The profile ``conf/config.yaml``'s defaults list selects, else the first option."""
    try:
        data = yaml.safe_load((conf_dir / "config.yaml").read_text(encoding="utf-8")) or {}
        for entry in data.get("defaults", []):
            if isinstance(entry, dict) and entry.get("profile") in options:
                return str(entry["profile"])
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    if not options:
        raise ConfigError([f"{conf_dir / 'profile'}: no profiles found (add a YAML file there)"])
    return options[0]


def _problems(exc: MAGIException) -> tuple[str, list[str]]:
    """A short headline and the list of problems of an error, for :func:`validation_html`.

    The headline leaves out ConfigError's source (the override list or the config
    files): the overrides are right above it, and each problem names its field.
    """
    problems = (
        exc.problems if isinstance(exc, ConfigError) else (str(exc).splitlines() or [type(exc).__name__])
    )
    count = len(problems)
    return f"Invalid configuration ({count} problem{'s' if count != 1 else ''})", problems


class ProfilePicker(widgets.VBox):
    """A profile picker with live override validation and a streaming run.

    Args:
        profile: The profile to start with (an option of the ``profile`` group);
            default: the one ``conf/config.yaml`` selects.
        overrides: Hydra overrides to start with, e.g. ``["runtime.max_tokens=64"]``.
        conf_dir: Hydra config folder; default :func:`magi.config.compose.default_conf_dir`.
        pool: Model pool shared by the runs; default the process-wide
            :func:`~magi.runtime.pool.shared_pool`.
        threaded: Run generation in a background thread (``True``, for notebooks)
            or in the caller's thread (``False``, for tests and scripts).
        prompt: Initial text of the prompt box.
        mode: ``"prompt"`` (one prompt, Run) or ``"chat"`` (a conversation, Send).
        system: Initial text of the chat mode's system prompt field.

    Attributes worth reading: :attr:`config` (the last valid config),
    :attr:`errors` (problems of the current input), :attr:`result` (the last
    answer), and the child widgets (``profile_dropdown``, ``overrides_text``,
    ``mode_toggle``, ``prompt_text``, ``run_button``, ``stop_button``, ``status``,
    ``answer``, ``trace``...); the chat mode's are on :attr:`chat` (``system_text``,
    ``history``, ``message_text``, ``send_button``, ``reset_button``).
    """

    MODES = ("prompt", "chat")

    def __init__(
        self,
        profile: str | None = None,
        overrides: Sequence[str] = (),
        *,
        conf_dir: str | Path | None = None,
        pool: ModelPool | None = None,
        threaded: bool = True,
        prompt: str = "",
        mode: str = "prompt",
        system: str = "",
    ) -> None:
        self.conf_dir = Path(conf_dir).resolve() if conf_dir else default_conf_dir()
        self.pool = pool if pool is not None else shared_pool()
        self.threaded = threaded
        self.result: RunResult | None = None
        self.last_error: BaseException | None = None
        self.errors: list[str] = []
        self.runner_builds = 0
        self._config: MagiConfig | None = None
        self._config_profile: str | None = None
        self._config_error: MAGIException | None = None
        self._runner: Runner | None = None
        self._runner_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._busy = False
        self._cancel = threading.Event()  # the running answer's; a new one per run
        self._thread: threading.Thread | None = None
        self._suspend = False
        self._parts: list[StagePart] = []
        self._turn: ChatTurn | None = None  # the chat turn being answered (None: a prompt)
        self._last_draw = 0.0

        if mode not in self.MODES:
            from magi.errors import format_options

            raise ValueError(f"Unknown mode {mode!r}; the modes are {format_options(self.MODES)}.")
        names = list_profiles(self.conf_dir)
        if profile is None:
            profile = default_profile(self.conf_dir, names)
        elif profile not in names:
            # the same 404 as compose(): names the folder and lists the options
            from magi.errors import ProfileNotFoundError

            raise ProfileNotFoundError(profile, names, str(self.conf_dir / "profile"))

        self.profile_dropdown = widgets.Dropdown(
            options=names,
            value=profile,
            description="Profile",
            style=LABEL_STYLE,
            tooltip="Options of the Hydra 'profile' group (conf/profile/*.yaml)",
        )
        self.refresh_button = widgets.Button(
            description="Refresh",
            icon="refresh",
            tooltip="Re-read the profile folder: profiles saved with ProfileManager appear",
        )
        self.profile_view = widgets.HTML(layout=widgets.Layout(margin=f"4px 0 4px {INDENT}"))
        self.overrides_text = text_box(
            "Overrides",
            "One Hydra override per line, e.g.\nprofile.two_stage.enabled=false\nruntime.max_tokens=64",
            rows=max(2, min(len(overrides) + 1, 6)),
            value="\n".join(overrides),
            tooltip="Hydra overrides, one per line; checked as you type",
        )
        self.validation = widgets.HTML(layout=widgets.Layout(margin=f"0 0 4px {INDENT}"))
        self.mode_toggle = widgets.ToggleButtons(
            options=[("Prompt", "prompt"), ("Chat", "chat")],
            value=mode,
            description="Mode",
            style={**LABEL_STYLE, "button_width": "90px"},
            tooltips=["Answer one prompt", "A conversation: system prompt, history, message"],
            # the label beside its buttons, as for the other inputs (voila stacks them otherwise)
            layout=widgets.Layout(display="flex", flex_flow="row", align_items="center"),
        )
        self.chat = ChatView(system=system)
        self.prompt_text = text_box(
            "Prompt", "Ask something, e.g. Why is the sky blue?", rows=3, value=prompt
        )
        self.run_button = primary_button(
            "Run", "play", "Answer the prompt with the chosen profile (models stay loaded between runs)"
        )
        self.stop_button = widgets.Button(
            description="Stop",
            icon="stop",
            button_style="danger",
            disabled=True,
            tooltip="Stop the running answer; the text written so far is kept",
        )
        self.progress = widgets.IntProgress(
            value=0,
            min=0,
            max=1,
            description="Tokens",
            bar_style="info",
            style={"description_width": "50px"},
            layout=widgets.Layout(display="none", width="240px"),
        )
        self.status = widgets.Label(value="Ready", layout=widgets.Layout(margin="0 0 0 12px"))
        self.answer = widgets.HTML(layout=widgets.Layout(margin=f"4px 0 0 {INDENT}"))
        self.trace = widgets.HTML(layout=widgets.Layout(margin=f"4px 0 0 {INDENT}"))

        tag(
            [
                (self.profile_dropdown, "profile"),
                (self.refresh_button, "refresh"),
                (self.profile_view, "profile-view"),
                (self.overrides_text, "overrides"),
                (self.validation, "validation"),
                (self.mode_toggle, "mode"),
                (self.prompt_text, "prompt"),
                (self.run_button, "run"),
                (self.stop_button, "stop"),
                (self.progress, "progress"),
                (self.status, "status"),
                (self.answer, "answer"),
                (self.trace, "trace"),
            ]
        )

        super().__init__(
            children=[
                widgets.HBox([self.profile_dropdown, self.refresh_button]),
                self.profile_view,
                self.overrides_text,
                self.validation,
                self.mode_toggle,
                self.prompt_text,
                self.chat,
                widgets.HBox(
                    [
                        self.run_button,
                        self.chat.send_button,
                        self.chat.reset_button,
                        self.stop_button,
                        self.progress,
                        self.status,
                    ],
                    layout=widgets.Layout(align_items="center"),
                ),
                self.answer,
                self.trace,
            ]
        )
        self.add_class("magi-picker")

        self.profile_dropdown.observe(self._on_input_change, names="value")
        self.overrides_text.observe(self._on_input_change, names="value")
        self.refresh_button.on_click(self._on_refresh_click)
        self.run_button.on_click(self._on_run_click)
        self.stop_button.on_click(self._on_stop_click)
        self.mode_toggle.observe(lambda _change: self._show_mode(), names="value")
        self.chat.send_button.on_click(self._on_send_click)
        self.chat.reset_button.on_click(self._on_reset_click)
        self._show_mode()
        self.validate()

    # -- configuration ---------------------------------------------------------------------
    @property
    def profile(self) -> str:
        """The profile chosen in the dropdown (which may not be the valid one; see :attr:`config`)."""
        return str(self.profile_dropdown.value)

    @property
    def overrides(self) -> list[str]:
        """The overrides typed in the box, one per line (blank and ``#`` lines skipped)."""
        return parse_overrides(self.overrides_text.value)

    @property
    def valid(self) -> bool:
        """Whether the current profile and overrides compose and validate."""
        return not self.errors

    @property
    def config(self) -> MagiConfig:
        """The last valid config: the current input's if valid, else the one before.

        Raises:
            MAGIException: nothing has been valid yet (the error of the current input).
        """
        if self._config is None:
            assert self._config_error is not None
            raise self._config_error
        return self._config

    @property
    def config_profile(self) -> str | None:
        """The profile option the last valid config was composed from."""
        return self._config_profile

    def validate(self) -> bool:
        """Compose the chosen profile with the overrides; show the outcome in place.

        On success the config becomes :attr:`config` and the profile table is
        redrawn; on failure the problems are listed and the last valid config stays.
        """
        profile, overrides = self.profile, self.overrides
        try:
            config = compose(profile, overrides, conf_dir=self.conf_dir)
        except MAGIException as exc:
            headline, self.errors = _problems(exc)
            self._config_error = exc
            note = ""
            if self._config is not None:
                note = (
                    f"Run uses the last valid config (profile={self._config_profile}, "
                    f"'{self._config.profile.name}')."
                )
            self.validation.value = validation_html(self.errors, headline=headline, note=note)
            return False
        self._config, self._config_profile, self._config_error = config, profile, None
        self.errors = []
        extra = f" with {len(overrides)} override{'s' if len(overrides) != 1 else ''}" if overrides else ""
        self.validation.value = validation_html([], headline=f"Valid: profile={profile}{extra}")
        self._draw_profile()
        return True

    def refresh(self) -> list[str]:
        """Re-read the profile group (e.g. after ``ProfileManager.save_profile``); keep the choice."""
        names = list_profiles(self.conf_dir)
        current = self.profile
        new = sorted(set(names) - set(self.profile_dropdown.options))
        self._suspend = True
        try:
            self.profile_dropdown.options = names
            fallback = current if current in names else default_profile(self.conf_dir, names)
            self.profile_dropdown.value = fallback
        finally:
            self._suspend = False
        self.validate()  # the chosen profile's file may have changed too
        self.status.value = f"{len(names)} profiles" + (f"; new: {', '.join(new)}" if new else "")
        return names

    def _on_input_change(self, _change: dict[str, Any]) -> None:
        if not self._suspend:
            self.validate()

    def _draw_profile(self) -> None:
        if self._config is not None:
            self.profile_view.value = profile_html(
                self._config.profile, key=self._config_profile, loaded=self.pool.loaded_ids
            )

    # -- running -----------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Whether a run is in progress."""
        return self._busy

    @property
    def runner(self) -> Runner | None:
        """The Runner of the last run's config (``None`` before the first run)."""
        return self._runner

    @property
    def mode(self) -> str:
        """``"prompt"`` (one prompt, Run) or ``"chat"`` (a conversation, Send); settable."""
        return str(self.mode_toggle.value)

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in self.MODES:
            from magi.errors import format_options

            raise ValueError(f"Unknown mode {value!r}; the modes are {format_options(self.MODES)}.")
        self.mode_toggle.value = value

    @property
    def messages(self) -> list[dict[str, str]]:
        """The chat mode's conversation so far (user and assistant messages, no system prompt)."""
        return self.chat.messages()

    def run(self, prompt: str | None = None, *, block: bool | None = None) -> RunResult | None:
        """Answer ``prompt`` (default: the prompt box) with the last valid config.

        Args:
            prompt: Text to answer; also written into the prompt box.
            block: Wait for the answer (``True``) or stream it from a background
                thread (``False``); default ``not threaded``.

        Returns:
            The :class:`RunResult` when blocking, else ``None`` (see :meth:`wait`).

        Raises:
            ValueError: the prompt is empty.
            MAGIException: no valid config yet (409 when a run is already in progress),
                or, when blocking, the run's own error (also shown in the widget).
        """
        if prompt is not None:
            self.prompt_text.value = prompt
        text = self.prompt_text.value
        if not text.strip():
            self.status.value = "Type a prompt first."
            raise ValueError("The prompt is empty: type one in the Prompt box or pass run(prompt=...).")
        config = self._claim()
        self.answer.value = ""
        self.trace.value = ""
        return self._start(text, config, None, None, block)

    def send(self, message: str | None = None, *, block: bool | None = None) -> RunResult | None:
        """Chat mode's Send: answer ``message`` (default: the message box) with the
        conversation so far, the system prompt field as ``system=``.

        The message joins the history at once (the box is emptied); the answer streams
        into the history view with its stages, then its trace. A failed answer is shown
        and left out of the next request, its message put back into the empty box.

        Returns:
            The :class:`RunResult` when blocking (its ``messages`` are the conversation
            as answered), else ``None`` (see :meth:`wait`).

        Raises:
            ValueError: the message is empty.
            MAGIException: no valid config yet (409 when a run is already in progress),
                or, when blocking, the run's own error (also shown in the history).
        """
        box = self.chat.message_text
        if message is not None:
            box.value = message
        text = box.value
        if not text.strip():
            self.status.value = "Type a message first."
            raise ValueError("The message is empty: type one in the Message box or pass send(message=...).")
        config = self._claim()
        turn = self.chat.begin(text)
        box.value = ""
        return self._start(self.chat.request(), config, self.chat.system, turn, block)

    def reset(self) -> None:
        """Chat mode's Reset: forget the conversation (the system prompt stays).

        Raises:
            MAGIException: an answer is streaming (409): stop it or wait for it first.
        """
        with self._state_lock:
            if self._busy:
                self.status.value = "Stop the answer (or wait for it) before Reset."
                raise MAGIException(
                    "An answer is in progress; stop it or wait for it before Reset.", status_code=409
                )
            self.chat.reset()
        self.status.value = "New conversation"

    def _claim(self) -> MagiConfig:
        """The config to run with, the widget marked busy (one run at a time)."""
        try:
            config = self.config
        except MAGIException:
            self.status.value = "Fix the configuration first (see the errors above)."
            raise
        with self._state_lock:
            if self._busy:
                self.status.value = "Still answering the previous prompt…"
                raise MAGIException(
                    "A run is already in progress; wait for it (picker.wait()).", status_code=409
                )
            self._busy = True
            self._cancel = threading.Event()
        return config

    def _start(
        self,
        request: str | list[dict[str, str]],
        config: MagiConfig,
        system: str | None,
        turn: ChatTurn | None,
        block: bool | None,
    ) -> RunResult | None:
        """Stream the answer in this thread (``block``) or a background one."""
        self._turn = turn
        self._show_busy(True)
        self.last_error = None
        args = (request, config, system, turn)
        if block if block is not None else not self.threaded:
            return self._execute(*args)
        self._thread = threading.Thread(
            target=self._execute_quietly, args=args, name="magi-picker-run", daemon=True
        )
        self._thread.start()
        return None

    def wait(self, timeout: float | None = None) -> RunResult | None:
        """Wait for a background run to finish; returns its result (``None`` on error:
        see :attr:`last_error`; :attr:`result` keeps the last answer)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"The run did not finish within {timeout} s")
        return self.result if self.last_error is None else None

    def stop(self) -> bool:
        """Cancel the running answer (the Stop button): it ends at its next token, the
        model is released, and the text so far stays, marked as stopped. Returns whether
        a run was in progress."""
        with self._state_lock:
            if not self._busy:
                return False
            self._cancel.set()
        self.status.value = "Stopping…"
        self.stop_button.disabled = True
        return True

    def _on_stop_click(self, _button: widgets.Button) -> None:
        self.stop()

    def _on_run_click(self, _button: widgets.Button) -> None:
        try:
            self.run()
        except Exception as exc:  # a click has nowhere to raise to; run() showed the error
            logger.debug("run failed: %s", exc)

    def _on_send_click(self, _button: widgets.Button) -> None:
        try:
            self.send()
        except Exception as exc:  # a click has nowhere to raise to; send() showed the error
            logger.debug("send failed: %s", exc)

    def _on_reset_click(self, _button: widgets.Button) -> None:
        try:
            self.reset()
        except MAGIException as exc:  # shown in the status line
            logger.debug("reset refused: %s", exc)

    def _on_refresh_click(self, _button: widgets.Button) -> None:
        try:
            self.refresh()
        except MAGIException as exc:
            self.status.value = f"✗ {str(exc).splitlines()[0]}"

    def _runner_for(self, config: MagiConfig) -> Runner:
        """The cached Runner, rebuilt only when the validated config changed."""
        with self._runner_lock:
            if self._runner is not None and self._runner.config == config:
                return self._runner
            if self._runner is not None:
                self._runner.close()  # stops its health checks; the shared pool keeps the models
                self._runner = None
            self.status.value = f"Preparing the models of '{config.profile.name}'…"
            self._runner = Runner(config, pool=self.pool)
            self.runner_builds += 1
            return self._runner

    def _budget(self, runner: Runner, event: StreamEvent) -> int | None:
        """The most tokens a stage may write, for the progress bar (``None``: unlimited):
        the runner's own rule (:func:`~magi.runtime.backend.stage_settings`) on the model's
        settings."""
        from magi.runtime.backend import stage_settings

        config = runner.config
        stage_budget = config.profile.two_stage.stage1_max_tokens if event.stage == "draft" else None
        spec = runner.specs.get(event.model_id)
        sampling = spec.sampling if spec is not None else config.runtime.sampling
        return stage_settings(sampling, stage_budget).max_tokens

    def _execute_quietly(
        self,
        request: str | list[dict[str, str]],
        config: MagiConfig,
        system: str | None,
        turn: ChatTurn | None,
    ) -> None:
        try:
            self._execute(request, config, system, turn)
        except Exception as exc:  # shown in the widget by _execute
            logger.debug("background run failed: %s", exc)

    def _execute(
        self,
        request: str | list[dict[str, str]],
        config: MagiConfig,
        system: str | None,
        turn: ChatTurn | None,
    ) -> RunResult:
        """Stream one answer into the widget (the answer box, or the chat ``turn`` of the
        history); show what is happening at each step."""
        parts: list[StagePart] = []
        self._parts = parts
        if turn is not None:
            turn.parts = parts
        restarts = 0
        tokens = 0
        try:
            runner = self._runner_for(config)
            result: RunResult | None = None
            # a prompt runs as it always has; a chat turn sends the conversation and its system prompt
            extra = {"system": system} if system is not None else {}
            for event in runner.stream(request, cancel=self._cancel, **extra):
                if event.kind == "stage":
                    if parts and parts[-1].stage == event.stage and not parts[-1].pieces:
                        parts.pop()  # the previous model failed before writing anything
                        restarts += 1
                    parts.append(StagePart(event.stage, event.tier, event.model_id, restarts=restarts))
                    restarts = 0
                    tokens = 0
                    budget = self._budget(runner, event)
                    self.progress.max = budget or 1
                    self.progress.value = 0
                    self.progress.layout.display = "" if budget else "none"
                    loading = not self.pool.backend(event.model_id).loaded
                    self.status.value = (
                        f"Loading model {event.model_id}…"
                        if loading
                        else f"Generating ({event.stage}) on {event.model_id}…"
                    )
                    self._draw_answer(force=True)
                elif event.kind == "token":
                    if not parts[-1].pieces:
                        self.status.value = f"Generating ({event.stage}) on {event.model_id}…"
                    parts[-1].pieces.append(event.text)
                    tokens += 1
                    self._draw_answer(tokens=tokens)
                elif event.kind == "restart":
                    parts.pop()  # discard the failed model's text; the stage continues elsewhere
                    restarts += 1
                    self.status.value = f"{event.model_id} failed; retrying on another model…"
                    self._draw_answer(force=True)
                elif event.kind == "done":
                    result = event.result
            assert result is not None
            self.result = result
            if turn is not None:
                self.chat.finish(result)
            else:
                self.answer.value = answer_html(parts, done=True, finish=result.finish_reason)
                self.trace.value = trace_html(result)
            self._draw_profile()  # the "loaded" column
            where = f"{result.completion_tokens} tokens, tier {result.tier}, model {result.model_id}"
            if turn is not None:
                where = f"turn {len(self.chat.turns)}, {where}"
            if result.cancelled:
                self.status.value = f"■ Stopped after {result.total_s:.2f} s: {where} (partial answer kept)"
            else:
                early = f" (ended early: {result.finish_reason})" if result.ended_early else ""
                self.status.value = f"✓ Done in {result.total_s:.2f} s: {where}{early}"
            return result
        except Exception as exc:
            self.last_error = exc
            message = str(exc) if isinstance(exc, MAGIException) else f"{type(exc).__name__}: {exc}"
            if turn is not None:
                self.chat.fail(message)
                if not self.chat.message_text.value:
                    self.chat.message_text.value = turn.user  # to send again, or edit
            else:
                self.answer.value = answer_html(parts, done=True, error=message)
            self.status.value = f"✗ Error: {message.splitlines()[0] if message else type(exc).__name__}"
            raise
        finally:
            self.progress.layout.display = "none"
            self._busy = False
            self._show_busy(False)

    def _show_busy(self, busy: bool) -> None:
        """The Run and Send buttons say when a run is in progress (and cannot start a
        second one); Reset waits for the answer."""
        self.run_button.disabled = busy
        self.run_button.description = "Running…" if busy else "Run"
        self.run_button.icon = "hourglass-half" if busy else "play"
        send = self.chat.send_button
        send.disabled = busy
        send.description = "Answering…" if busy else "Send"
        send.icon = "hourglass-half" if busy else "paper-plane"
        self.chat.reset_button.disabled = busy
        self.stop_button.disabled = not busy

    def _show_mode(self) -> None:
        """Show the chosen mode's inputs and outputs; the other mode's keep their state."""
        chat = self.mode == "chat"
        for widget in (self.prompt_text, self.run_button, self.answer, self.trace):
            widget.layout.display = "none" if chat else ""
        for widget in (self.chat, self.chat.send_button, self.chat.reset_button):
            widget.layout.display = "" if chat else "none"

    def _draw_answer(self, *, force: bool = False, tokens: int | None = None) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < REDRAW_INTERVAL:
            return
        self._last_draw = now
        if tokens is not None:
            self.progress.value = min(tokens, self.progress.max)
        if self._turn is not None:
            self.chat.draw()  # the turn's parts are self._parts
        else:
            self.answer.value = answer_html(self._parts)

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the widget and its Runner; models stay in the (shared) pool."""
        with self._runner_lock:
            if self._runner is not None:
                self._runner.close()
                self._runner = None
        for child in list(self.children):
            if isinstance(child, widgets.Box):
                for grandchild in child.children:
                    grandchild.close()
            child.close()
        super().close()
