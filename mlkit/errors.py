"""Exceptions that mlkit raises for bad input.

Every error names the thing that is wrong (file, column, value) and, where it
helps, what was expected, so that a user can fix the input without reading code.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel

_M = TypeVar("_M", bound="BaseModel")


class MlkitError(Exception):
    """Base class of every error mlkit raises on purpose."""


class ConfigError(MlkitError, ValueError):
    """A configuration value or parameter is invalid."""


class DataError(MlkitError, ValueError):
    """Input data is missing, malformed or inconsistent.

    The message is built from the parts that are known: the file, the column,
    what was expected and what was found.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | Path | None = None,
        column: str | None = None,
        expected: str | None = None,
        got: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = str(path) if path is not None else None
        self.column = column
        self.expected = expected
        self.got = got
        self.hint = hint
        parts = []
        if self.path is not None:
            parts.append(self.path)
        if column is not None:
            parts.append(f"column {column!r}")
        where = ": ".join(parts)
        message = f"{where}: {problem}" if where else problem
        if expected is not None:
            message += f"; expected {expected}"
        if got is not None:
            message += f", got {got}"
        if hint is not None:
            message += f". {hint}"
        super().__init__(message)


def describe_validation_error(exc: Exception) -> str:
    """One ``field: message`` line per problem of a pydantic ValidationError.

    Other exceptions are returned as their string.
    """
    errors = getattr(exc, "errors", None)
    if errors is None:
        return str(exc)
    lines = []
    for error in errors():
        where = ".".join(str(part) for part in error.get("loc", ())) or "(top level)"
        message = error.get("msg", "invalid").removeprefix("Value error, ")
        if error.get("type") == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def validate_config(
    model: type[_M], data: Any, *, what: str, source: str, empty_ok: bool = True
) -> _M:
    """``data`` (a ``model`` instance, a mapping, or None when ``empty_ok``) as a
    validated ``model``; ConfigError naming ``source``, ``what`` and every
    invalid field otherwise."""
    from pydantic import ValidationError

    if isinstance(data, model):
        return data
    try:
        return model.model_validate(dict(data or {}) if empty_ok else dict(data))
    except ValidationError as exc:
        problems = describe_validation_error(exc)
        raise ConfigError(f"{source}: invalid {what}: {problems}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{source}: invalid {what}: expected a mapping, got {type(data).__name__}"
        ) from exc
