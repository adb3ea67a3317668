"""Task ``serve``: answer the OpenAI API over HTTP with the profile (docs/SERVING.md).

    python run.py task=serve profile=demo
    python run.py task=serve profile=production task.port=9000 runtime.n_threads=4

Blocks until SIGTERM or Ctrl-C. The overrides given to ``run.py`` apply to the served
profile and, but for ``profile.*`` and ``task.*``, to the other profiles a request may
name (``model: magi/<profile>``).
"""

from __future__ import annotations

from magi.config.app import MagiConfig
from magi.tasks.registry import register_task


@register_task("serve")
def serve_task(config: MagiConfig) -> int:
    """Serve the composed profile until stopped; return 0."""
    from magi.serve import serve

    profile_key, overrides = None, []
    try:  # inside run.py: Hydra knows which profile was chosen and the command line's overrides
        from hydra.core.hydra_config import HydraConfig

        hydra = HydraConfig.get()
        profile_key = hydra.runtime.choices.get("profile")
        overrides = list(hydra.overrides.task)
    except ValueError:  # called directly, not under @hydra.main
        pass
    return serve(config, profile_key=profile_key, overrides=overrides)
