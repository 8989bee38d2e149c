"""The project's exception types for bad user input and their one-block report at every entry point.

Messages always name the file (or the setting) and the problem. ``python -m common`` and bundle runs under
``python -m monai.bundle run`` (through :func:`install_excepthook`, the first ``initialize`` item of every bundle
config) print them as one ``error:`` block and exit with code 2; the traceback only on request (``--debug`` or
``BRAIN_ANOMALY_DEBUG=1``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback

__all__ = [
    "DEBUG_ENV",
    "EXIT_CODE",
    "PROJECT_ERRORS",
    "InputDataError",
    "SettingsError",
    "debug_requested",
    "exit_on_project_error",
    "find_project_error",
    "format_error",
    "install_excepthook",
]

DEBUG_ENV = "BRAIN_ANOMALY_DEBUG"
EXIT_CODE = 2  # a usage/data error, as argparse and `validate` use it; 1 stays "the program failed"


class InputDataError(ValueError):
    """Bad input data: the message starts with the offending file (or dataset) and says what is wrong.

    Raised before any work starts (validation runs up front), so no half-written output is left behind.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class SettingsError(ValueError):
    """A bad setting (a command-line flag or a bundle config value): names the setting and the expected value.

    ``source`` is where the setting came from when that is not the command line (e.g. the config file)."""

    def __init__(self, setting: str, problem: str, source: str | os.PathLike | None = None):
        self.setting = setting
        self.problem = problem
        self.source = None if source is None else os.fspath(source)
        super().__init__(f"{self.source + ': ' if self.source else ''}{setting}: {problem}")


PROJECT_ERRORS = (InputDataError, SettingsError)


def find_project_error(exc: BaseException | None) -> BaseException | None:
    """The first project error in ``exc``'s chain (itself, then ``__cause__`` / ``__context__``), else None:
    MONAI wraps errors raised in config expressions in its own RuntimeErrors."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, PROJECT_ERRORS):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ if exc.__cause__ is not None else exc.__context__
    return None


def debug_requested(argv: list[str] | None = None) -> bool:
    """True when ``BRAIN_ANOMALY_DEBUG`` is set (not 0/false/empty) or ``--debug`` is on the command line."""
    if os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return True
    argv = sys.argv if argv is None else argv
    return any(a == "--debug" or a.lower() in ("--debug=true", "--debug=1") for a in argv)


def format_error(exc: BaseException, hint: bool = True) -> str:
    """The ``error:`` block of an exception: the project error in its chain (file or setting, and the
    problem), else its type and message; with a line on how to see the traceback."""
    err = find_project_error(exc) or exc
    text = str(err) if isinstance(err, PROJECT_ERRORS) else f"{type(err).__name__}: {err}"
    lines = [f"error: {text}"]
    if hint and not isinstance(err, SettingsError):  # a bad flag's traceback says nothing more
        lines.append(f"  (the full traceback: set {DEBUG_ENV}=1 or pass --debug)")
    return "\n".join(lines)


def _report_and_exit_code(exc: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(format_error(exc, hint=not debug), file=sys.stderr)
    return EXIT_CODE


@contextlib.contextmanager
def exit_on_project_error(debug: bool | None = None):
    """Turn a project error anywhere in an exception's chain into the ``error:`` block and ``SystemExit(2)``;
    other exceptions pass unchanged."""
    try:
        yield
    except Exception as exc:  # re-raised unless it carries a project error
        if find_project_error(exc) is None:
            raise
        debug = debug_requested() if debug is None else (debug or debug_requested([]))
        sys.stdout.flush()
        raise SystemExit(_report_and_exit_code(exc, debug)) from None


def install_excepthook() -> bool:
    """Report an uncaught project error as the ``error:`` block and exit with code 2 (bundle runs).

    The first ``initialize`` item of every bundle config calls it, so it covers errors in later ``initialize``
    items, ``run`` and ``finalize``; errors while MONAI parses the arguments and configs come earlier and keep
    MONAI's traceback. Other exceptions go to the previous hook unchanged (traceback, exit code 1).

    The hook ends with ``os._exit(2)``: Python fixes the exit status of an uncaught exception at 1 and ignores a
    ``SystemExit`` raised inside ``sys.excepthook``, so exiting from the hook is the only way to give the
    documented code 2. ``os._exit`` skips ``atexit`` handlers and stream buffers, hence the explicit flushes and
    ``logging.shutdown()`` (which flushes and closes the log files) first.

    Log records carrying a project error lose their traceback too (unless debugging): MONAI's ``StatsHandler``
    logs every exception of an Ignite run with ``logger.exception`` before re-raising it. Idempotent; returns True."""
    if getattr(sys.excepthook, "_brain_anomaly_hook", False):
        return True
    previous = sys.excepthook
    make_record = logging.getLogRecordFactory()

    def record_factory(*args, **kwargs):
        record = make_record(*args, **kwargs)
        if record.exc_info and find_project_error(record.exc_info[1]) is not None and not debug_requested():
            record.exc_info, record.exc_text = None, None
        return record

    def hook(exc_type, exc, tb):
        if find_project_error(exc) is None:
            return previous(exc_type, exc, tb)
        code = _report_and_exit_code(exc, debug_requested())
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        logging.shutdown()
        os._exit(code)

    hook._brain_anomaly_hook = True
    sys.excepthook = hook
    logging.setLogRecordFactory(record_factory)
    return True
