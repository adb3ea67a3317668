"""``magi serve``: an OpenAI-compatible HTTP server for a profile (docs/SERVING.md).

* :mod:`magi.serve.app`: the FastAPI app (:func:`create_app`), its state
  (:class:`MagiServer`) and :func:`serve`, which runs it with uvicorn.
* :mod:`magi.serve.keys`: API keys (bearer tokens, constant-time compare).
* :mod:`magi.serve.metrics`: ``/metrics`` in Prometheus' format.
* :mod:`magi.serve.errors`: errors in OpenAI's format.

Needs the ``server`` extra (FastAPI, uvicorn; httptools and uvloop make it faster) and
``serve`` (prometheus-client): ``pip install -e '.[server,serve]'``.
"""

from magi.serve.app import MagiServer, create_app, serve
from magi.serve.keys import APIKeys

__all__ = ["APIKeys", "MagiServer", "create_app", "serve"]
