"""Notebook widgets: a profile picker that runs prompts and chats, and a sweep summary view.

* :class:`ProfilePicker` - choose a profile, check Hydra overrides as you type,
  run a prompt on the shared model pool and read the answer with its routing trace;
  or, in its chat mode (:class:`ChatView`), hold a conversation: a system prompt,
  the history with each answer's trace, a message box, Send and Reset.
* :class:`SweepView` / :func:`show_sweep` - a sweep's ``summary.csv`` as a table
  and its plot.
* :class:`HealthView` - a live table of a ``magi serve`` server's (or a local
  Runner's) models: circuit, loaded, requests, p50/p95 latency, tokens/s, and the
  routing mix.

Both are ipywidgets 8 boxes: display them in Jupyter or serve the notebook with
voila. They work without a kernel too (set ``.value``, call ``.click()``), which is
how the tests drive them.

Example:
    >>> from magi.widgets import ProfilePicker
    >>> ProfilePicker(profile="demo")     # doctest: +SKIP
"""

from magi.widgets.chat import ChatTurn, ChatView
from magi.widgets.health import HealthView
from magi.widgets.params import env_list, env_overrides, env_str, parse_overrides
from magi.widgets.picker import ProfilePicker
from magi.widgets.sweep import SweepNotFoundError, SweepView, read_summary, show_sweep

__all__ = [
    "ChatTurn",
    "ChatView",
    "HealthView",
    "ProfilePicker",
    "SweepNotFoundError",
    "SweepView",
    "env_list",
    "env_overrides",
    "env_str",
    "parse_overrides",
    "read_summary",
    "show_sweep",
]
