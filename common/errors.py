"""The one exception type for bad user input, so messages always name the file and the problem."""

from __future__ import annotations

import os

__all__ = ["InputDataError"]


class InputDataError(ValueError):
    """Bad input data: the message starts with the offending file (or dataset) and says what is wrong.

    Raised before any work starts (validation runs up front), so no half-written output is left behind.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
