"""One exception type for bad input: it names the file, the task, the field and the fix."""

from __future__ import annotations


class PromoeError(Exception):
    """Base class of the errors this package raises for bad input or a bad setup."""


class DataError(PromoeError, ValueError):
    """A task file, record or data location is unusable.

    The message always names where the problem is (file, task, field) and what to do about it,
    so a user can fix it without reading the code.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        task: str | None = None,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem, self.file, self.task, self.field, self.fix = problem, file, task, field, fix
        where = ", ".join(
            f"{k} {v!r}" for k, v in (("file", file), ("task", task), ("field", field)) if v
        )
        msg = f"{where}: {problem}" if where else problem
        if fix:
            msg += f" (fix: {fix})"
        super().__init__(msg)


class ConfigError(PromoeError, ValueError):
    """A config file or override is unusable (unknown key, wrong type, bad value)."""
