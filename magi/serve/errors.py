"""Errors in OpenAI's format: ``{"error": {"message", "type", "param", "code"}}``.

Every error a client can get from ``magi serve`` has this body and the HTTP status of
its cause: a :class:`~magi.errors.MAGIException`'s ``status_code`` maps through
(404 unknown model or profile, 422 a request no model could answer, 503 no model
could answer it), and the server adds its own (401 a missing or wrong API key, 413 a
body over ``task.max_body_bytes``, 429 the request queue full). The ``openai`` client
raises the matching exception (``NotFoundError``, ``UnprocessableEntityError``, ...)
with the message.

Example:
    >>> body = error_body(404, "Model 'x' not found.", param="model")
    >>> body["error"]["type"], body["error"]["param"], body["error"]["code"]
    ('not_found_error', 'model', 'model_not_found')
"""

from __future__ import annotations

from typing import Any

from magi.errors import MAGIException

#: OpenAI's error ``type`` by HTTP status (the ones its API documents), else by class.
_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}

#: A short machine-readable ``code`` by HTTP status.
_CODES: dict[int, str] = {
    401: "invalid_api_key",
    404: "model_not_found",
    413: "request_too_large",
    429: "queue_full",
    503: "no_model_available",
}


def error_type(status: int) -> str:
    """OpenAI's ``type`` for an HTTP status: ``server_error`` for any 5xx."""
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The JSON body of an error response."""
    return {
        "error": {
            "message": message,
            "type": error_type(status),
            "param": param,
            "code": code if code is not None else _CODES.get(status),
        }
    }


class ServeError(MAGIException):
    """An error of one HTTP request (the server's own: 401, 413, 429, a bad field)."""

    def __init__(
        self, message: str, *, status_code: int, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.param = param
        self.code = code


def status_of(exc: BaseException) -> int:
    """The HTTP status an exception answers with: a MAGIException's own, else 500."""
    status = getattr(exc, "status_code", None) if isinstance(exc, MAGIException) else None
    return status if isinstance(status, int) and 400 <= status <= 599 else 500


def exception_body(exc: BaseException) -> dict[str, Any]:
    """The error body of an exception: a MAGIException's message as it is (it names the
    field, model or message index at fault), any other as an internal error."""
    status = status_of(exc)
    if not isinstance(exc, MAGIException):
        return error_body(500, f"Internal error ({type(exc).__name__}); the server log has the traceback.")
    param = getattr(exc, "param", None)
    if param is None and exc.details.get("index") is not None:
        param = f"messages[{exc.details['index']}]"
    return error_body(status, str(exc), param=param, code=getattr(exc, "code", None))
