"""MAGI's exception hierarchy.

Every error a user can cause is a :class:`MAGIException` carrying an HTTP-style
``status_code`` (the seed's convention) and a message that names the file, field or
model at fault and the valid options. The CLI and ``run.py`` print the message and
exit non-zero instead of showing a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: Exit status of the CLI and ``run.py`` for a user mistake (a :class:`MAGIException`).
EXIT_USER_ERROR = 2
#: Exit status after Ctrl-C (128 + SIGINT), with one line instead of a traceback.
EXIT_INTERRUPTED = 130
#: Exit status of a run that reported every prompt but failed some (its table marks them):
#: ``run.py`` tasks ``run`` and ``bench``, ``magi ask``, a sweep with failed jobs or prompts.
EXIT_PARTIAL = 1


class MAGIException(Exception):
    """Base class of every error MAGI raises on purpose.

    Args:
        message: What went wrong, where, and how to fix it.
        status_code: HTTP-style code: 400 bad request, 404 not found, 409 conflict,
            422 invalid content, 500 internal, 503 unavailable.
        details: Structured context (available options, problems, paths).
    """

    status_code: int = 500

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.details: dict[str, object] = dict(details or {})

    def __str__(self) -> str:
        return self.message


def format_options(options: Iterable[str]) -> str:
    """Render a list of valid options for an error message."""
    items = sorted(options)
    return ", ".join(items) if items else "(none)"


def did_you_mean(name: str, options: Sequence[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest option, or an empty string."""
    import difflib

    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


class ConfigError(MAGIException):
    """A configuration (profile, app config, override) is invalid.

    ``problems`` lists every problem found, each naming its field; ``source`` names
    the file the configuration came from, when there is one.
    """

    status_code = 422

    def __init__(
        self,
        problems: Sequence[str],
        *,
        source: str | None = None,
        headline: str | None = None,
    ) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        head = headline or f"Invalid configuration{where}"
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        body = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{head} ({count} {noun}):\n{body}",
            details={"problems": self.problems, "source": source},
        )


class ConfigFileError(ConfigError):
    """A config file cannot be read as YAML within MAGI's limits (unreadable, not UTF-8,
    too large or deep, an alias bomb, a duplicate key, a syntax error).

    The message is one line, ``"<file>: <problem>"``, so the CLI prints
    ``error: <file>: <problem>``.
    """

    def __init__(self, path: object, problem: str) -> None:
        super().__init__([problem], source=str(path))
        self.path = str(path)
        self.message = f"{path}: {problem}"
        self.args = (self.message,)


class OverrideError(ConfigError):
    """A command-line override Hydra's grammar cannot read (``prompt=${foo``).

    One line, ``"cannot read the override <override>: <problem>. <how to write it>"``,
    so ``run.py`` prints one ``error:`` line instead of Hydra's parser exception.
    """

    def __init__(self, override: str, problem: str) -> None:
        grammar = "https://hydra.cc/docs/advanced/override_grammar/basic/"
        super().__init__(
            [f"{override}: {problem} (key=value, Hydra's override grammar: {grammar})"],
            source="the command-line overrides",
        )
        self.override = override
        self.message = (
            f"cannot read the override {override}: {problem}. Quote text Hydra-style "
            '("prompt=\'...\'"), write \\${ for a literal ${, or use magi ask "...", '
            "which takes prompts as typed"
        )
        self.args = (self.message,)


class ProfileNotFoundError(MAGIException):
    """No profile of that name exists; the message lists the available ones."""

    status_code = 404

    def __init__(self, name: str, available: Sequence[str], where: str) -> None:
        self.name = name
        self.available = sorted(available)
        super().__init__(
            f"Profile '{name}' not found in {where}.{did_you_mean(name, self.available)} "
            f"Available profiles: {format_options(self.available)}",
            details={"name": name, "available": self.available},
        )


class ProfileExistsError(MAGIException):
    """Saving would overwrite an existing profile that the caller asked to keep."""

    status_code = 409


class InvalidProfileNameError(MAGIException):
    """A profile name cannot be turned into a safe file name."""

    status_code = 400


class ProfileWriteError(MAGIException):
    """A profile file cannot be written: full disk, read-only or unwritable folder
    (HTTP 503: storage unavailable, not bad input). The message names the file."""

    status_code = 503


class ModelError(MAGIException):
    """A model file is missing, unreadable or not what the configuration says."""

    status_code = 422


class ModelNotFoundError(MAGIException):
    """A model id is not in the registry; the message lists the known ids."""

    status_code = 404
