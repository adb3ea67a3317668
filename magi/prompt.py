"""What a prompt must be before any model is asked: text, not blank, encodable as UTF-8.

One rule for every entry point: the Runner (``run``, ``stream``, ``run_many``,
``route``), ``magi ask`` and ``run.py``'s ``prompt=`` field all call
:func:`check_prompt`, so input that can never succeed is the request's error (422),
never a model's failure.
"""

from __future__ import annotations

from magi.errors import MAGIException


def escaped_byte(char: str) -> int | None:
    """The input byte a lone surrogate stands for, or None for any other character.

    Python's ``surrogateescape`` (argv, files read with it) turns each byte that is not
    valid UTF-8 into one of U+DC80..U+DCFF: ``"caf\\udce9"`` for ``b"caf\\xe9"``.

    Example:
        >>> hex(escaped_byte("\\udce9"))
        '0xe9'
    """
    code = ord(char)
    return code - 0xDC00 if 0xDC80 <= code <= 0xDCFF else None


class InvalidPromptError(MAGIException):
    """A prompt no model could ever process (not text, empty, or not encodable as UTF-8): the
    request's fault (422), refused before any model is asked, so it never counts
    against a model's circuit breaker."""

    status_code = 422


def check_prompt(prompt: object, *, what: str = "The prompt") -> str:
    """Return ``prompt`` if a model can be given it; else raise :class:`InvalidPromptError`.

    A lone surrogate (``"caf\\udce9"``, what Python makes of the non-UTF-8 bytes
    ``b"caf\\xe9"`` in argv or a file read with ``surrogateescape``) cannot be encoded
    for the tokenizer: every model would fail on it.

    Example:
        >>> check_prompt("café")
        'café'
    """
    if not isinstance(prompt, str):
        raise InvalidPromptError(f"{what} must be text (str), not {type(prompt).__name__}.")
    if not prompt.strip():
        blank = " (only whitespace)" if prompt else ""
        raise InvalidPromptError(f"{what} is empty{blank}: there is no question to answer.")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = ord(prompt[exc.start])
        byte = escaped_byte(prompt[exc.start])
        origin = (
            f", which stands for the byte 0x{byte:02X} of input that was not valid UTF-8"
            if byte is not None
            else ""
        )
        raise InvalidPromptError(
            f"{what} is not valid Unicode text: the character at position {exc.start} is a lone "
            f"surrogate (U+{char:04X}{origin}). Send UTF-8 text, e.g. convert the input with "
            "`iconv -f latin1 -t utf-8`.",
            details={"position": exc.start, "codepoint": f"U+{char:04X}"},
        ) from None
    return prompt
