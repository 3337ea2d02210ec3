"""Errors that reach the user as one clear message instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input: names the offending file (when there is one) and the problem.

    The CLI prints ``str(error)`` and exits with status 2; the dashboard shows it in an
    error box. Everything else in the package raises it for problems the user can fix.
    """

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
