"""Where the evaluations' summaries go: a logger, shown on standard output unless configured otherwise.

The evaluations log (``logging.getLogger(__name__)``) and never print. Their summary tables, the report a user
asked for with ``verbose=True``, go to :data:`SUMMARY_LOGGER`, which this module gives one handler writing
``%(message)s`` to the ``sys.stdout`` of the moment (a redirected CLI, pytest's ``capsys``) and does not propagate,
so that a root handler (a bundle's ``logging.conf``) does not show them twice. Silence them with
``logging.getLogger(SUMMARY_LOGGER).setLevel(logging.WARNING)``, or replace the handler.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["SUMMARY_LOGGER", "log_summary"]

SUMMARY_LOGGER = "common.evaluation.summary"


class _CurrentStdout(logging.StreamHandler):
    """A stream handler that looks ``sys.stdout`` up at every record instead of keeping the one it was made with."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; the current sys.stdout is used instead
        pass


def _summary_logger() -> logging.Logger:
    logger = logging.getLogger(SUMMARY_LOGGER)
    if not logger.handlers:
        logger.addHandler(_CurrentStdout())
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def log_summary(text: str, verbose: bool, module_logger: logging.Logger) -> None:
    """``text`` to the summary logger at INFO when ``verbose``, else to ``module_logger`` at DEBUG."""
    if verbose:
        _summary_logger().info(text)
    else:
        module_logger.debug(text)
