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


def refuse_string_number(value: Any, mode: str) -> Any:
    """Refuse a number written as a string (outside JSON), with a hint about infinity.

    YAML reads ``inf`` (no dot) as a string, which Pydantic's lax mode would
    silently turn into a float; JSON stores infinity as the string "Infinity", so
    strings are accepted in JSON mode only.
    """
    if isinstance(value, str) and mode != "json":
        if value.strip().lower().lstrip("+.") in ("inf", "infinity"):
            hint = "write infinity as .inf in YAML files, or inf in command-line overrides"
        else:
            hint = "write a number, unquoted"
        raise ValueError(f"must be a number, not the string {value!r}: {hint}")
    return value


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


def _model_at(model: type[BaseModel] | None, loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class found by following ``loc`` through ``model``'s field types."""
    import typing

    current: Any = model
    keyed = False  # the last field was a mapping: the next item is one of its keys
    for item in loc:
        if isinstance(item, int) or current is None or keyed:
            keyed = False
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(item))
            if field is None:
                return None
            current = field.annotation
            keyed = typing.get_origin(current) is dict
        else:
            return None
        # unwrap Optional / list / dict to the model inside, if any
        for _ in range(3):
            args = [a for a in typing.get_args(current) if a is not type(None)]
            if isinstance(current, type) and issubclass(current, BaseModel):
                break
            current = args[-1] if args else None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def describe_validation_error(
    exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None
) -> list[str]:
    """Turn a Pydantic error into one readable line per problem.

    Each line names the field (dotted, with list indices), says what is wrong and
    shows the offending value, e.g.
    ``tier_config[1].max_score: Input should be a valid number (got 'abc')``.
    """
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
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
            owner = _model_at(model or _root_model(exc), loc[:-1])
            if owner is not None:
                from magi.errors import did_you_mean, format_options

                valid = list(owner.model_fields)
                lines.append(
                    f"{where}: unknown key.{did_you_mean(str(loc[-1]), valid)} "
                    f"Valid keys here: {format_options(valid)}"
                )
            else:
                lines.append(f"{where}: unknown key (check the spelling)")
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


def _root_model(exc: ValidationError) -> type[BaseModel] | None:
    """The model class a ValidationError was raised for (by its title)."""
    for cls in _all_subclasses(MagiModel):
        if cls.__name__ == exc.title:
            return cls
    return None


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def validation_to_config_error(
    exc: ValidationError, *, source: str | None = None, prefix: str = ""
) -> ConfigError:
    """Wrap a Pydantic ``ValidationError`` into a :class:`ConfigError`."""
    return ConfigError(describe_validation_error(exc, prefix), source=source)
