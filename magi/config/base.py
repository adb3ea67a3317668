"""The one base class of every MAGI configuration model, and error formatting."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from magi.errors import ConfigError


class MagiModel(BaseModel):
    """Strict base: unknown keys are errors, infinity survives JSON.

    ``ser_json_inf_nan`` is set here because nested models do not inherit a
    parent's JSON settings.
    """

    model_config = ConfigDict(
        extra="forbid",
        ser_json_inf_nan="strings",
        validate_default=True,
        populate_by_name=True,
    )


class ConsistencyError(ValueError):
    """Several cross-field problems of one model, each starting with its field path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def _loc(loc: tuple[int | str, ...], prefix: str) -> str:
    parts: list[str] = [prefix] if prefix else []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(str(item))
    text = ".".join(parts).replace(".[", "[")
    return text or "(top level)"


def describe_validation_error(exc: ValidationError, prefix: str = "") -> list[str]:
    """Turn a Pydantic error into one readable line per problem.

    Each line names the field (dotted, with list indices), says what is wrong and
    shows the offending value, e.g.
    ``tier_config[1].max_score: Input should be a valid number (got 'abc')``.
    """
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(x for x in err["loc"] if x not in ("function-after[check_consistency()]",))
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        where = _loc(loc, prefix)
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, ConsistencyError):
            base = _loc(loc, prefix) if (loc or prefix) else ""
            lines.extend(f"{base}.{p}" if base else p for p in cause.problems)
            continue
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key (check the spelling; it is not a field of this section)")
            continue
        if err["type"] == "missing":
            lines.append(f"{where}: required field is missing")
            continue
        shown = ""
        if "input" in err and err["type"] not in ("value_error", "assertion_error"):
            value: Any = err["input"]
            if not isinstance(value, dict | list):
                shown = f" (got {value!r})"
        lines.append(f"{where}: {msg}{shown}")
    return lines


def validation_to_config_error(
    exc: ValidationError, *, source: str | None = None, prefix: str = ""
) -> ConfigError:
    """Wrap a Pydantic ``ValidationError`` into a :class:`ConfigError`."""
    return ConfigError(describe_validation_error(exc, prefix), source=source)
