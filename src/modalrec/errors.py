"""Exceptions that name the file, line and field that caused them."""

from __future__ import annotations


class ModalrecError(Exception):
    """Base class for every error modalrec raises on purpose."""


class DataError(ModalrecError, ValueError):
    """Malformed input data. The message names the file, line and field when known."""

    def __init__(self, message: str, *, path: object = None, line: int | None = None, field: str | None = None):
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ":".join(where[:2]) + (f" ({where[2]})" if len(where) > 2 else "")
        if len(where) == 1 and field is not None:
            prefix = f"field '{field}'"
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.path, self.line, self.field = path, line, field


class UnknownIdError(ModalrecError, KeyError):
    """An id that is not in a vocabulary."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "unknown id"


class MismatchError(ModalrecError, ValueError):
    """Two artefacts that must agree (vocabulary, features, checkpoint) do not."""


class ConfigError(ModalrecError, ValueError):
    """An unknown or invalid configuration key or value."""
