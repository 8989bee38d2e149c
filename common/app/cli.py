"""The project's command-line parser: help and argument checks read from each command's signature and docstring.

A command is a plain function (or a class whose public methods are subcommands). Its signature gives the flags,
their types and defaults; the ``Args:`` section of its docstring gives each flag's one-line help;
:data:`common.settings.RANGES` gives the allowed range of every flag of that name in any command. So adding a flag
is one parameter and one docstring line, and it is checked and documented with no more code.

Why not ``fire.Fire``: Fire takes ``-h`` as an abbreviation of the first flag starting with ``h`` (``synth pd -h``
wrote a 40-subject cohort), passes ``1.5`` on to an ``int`` flag, turns ``abc`` into a traceback and hands unknown
flags on silently or with an obscure message. Values are still read the way Fire reads them where that is what a
user means: ``--flag`` alone is True, ``--noflag`` False, ``--n-controls`` equals ``--n_controls``,
``--flag=value`` equals ``--flag value``, and positional arguments fill the parameters in order.

Nothing here imports more than the standard library, so ``--help`` stays fast; commands import their heavy
modules (torch, MONAI, nibabel) inside their bodies.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from common.errors import SettingsError
from common.settings import RANGES, check_value, describe_expected

__all__ = ["GLOBAL_FLAGS", "RANGES", "Flag", "check_value", "flags_of", "format_help", "iter_commands",
           "parse_command_line", "run_command_line"]

GLOBAL_FLAGS = {
    "--help, -h": "show this help and exit (never runs the command)",
    "--debug": "on an error, print the full traceback too (or set BRAIN_ANOMALY_DEBUG=1)",
}


@dataclass(frozen=True)
class Flag:
    """One parameter of a command: its name, type ('int', 'float', 'bool', 'str'), default and help line."""

    name: str
    kind: str
    optional: bool
    default: object
    required: bool
    help: str

    @property
    def option(self) -> str:
        return f"--{self.name}"


def _kind(annotation) -> tuple[str, bool]:
    """('int' | 'float' | 'bool' | 'str', accepts None) from an annotation, also a string one
    (``from __future__ import annotations``)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    parts = [p.strip() for p in str(text).split("|")]
    optional = "None" in parts
    base = next((p for p in parts if p != "None"), "str")
    return (base if base in ("int", "float", "bool") else "str"), optional


def _docstring_args(func: Callable) -> dict[str, str]:
    """``name -> help`` from the ``Args:`` section of a docstring (continuation lines are joined)."""
    lines = inspect.getdoc(func) or ""
    helps: dict[str, str] = {}
    current = None
    in_args = False
    for line in lines.splitlines():
        if line.strip() == "Args:":
            in_args = True
            continue
        if not in_args:
            continue
        if line and not line.startswith(" "):
            break  # the next section
        stripped = line.strip()
        if line.startswith("    ") and not line.startswith("     ") and ":" in stripped:
            current, text = stripped.split(":", 1)
            helps[current] = text.strip()
        elif current and stripped:
            helps[current] += " " + stripped
    return helps


def _summary(func_or_class) -> tuple[str, str]:
    """(first line, the rest up to ``Args:``) of a docstring."""
    doc = inspect.getdoc(func_or_class) or ""
    doc = doc.split("\nArgs:")[0].strip()
    first, _, rest = doc.partition("\n")
    return first.strip(), rest.strip()


def flags_of(func: Callable) -> list[Flag]:
    """The flags of a command function, in signature order."""
    helps = _docstring_args(func)
    flags = []
    for name, param in inspect.signature(func).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        kind, optional = _kind(param.annotation)
        required = param.default is inspect.Parameter.empty
        flags.append(Flag(name, kind, optional, None if required else param.default, required, helps.get(name, "")))
    return flags


def _is_group(obj) -> bool:
    return inspect.isclass(obj)


def _subcommands(group) -> dict[str, Callable]:
    instance = group()
    return {name: getattr(instance, name) for name in vars(group) if not name.startswith("_")
            and callable(getattr(instance, name))}


def iter_commands(commands: Mapping[str, object], path: tuple[str, ...] = ()):
    """``(path, target)`` of every command and group in the tree, depth first (groups before their commands)."""
    for name, obj in commands.items():
        yield (*path, name), obj
        if _is_group(obj):
            yield from iter_commands(_subcommands(obj), (*path, name))


def _flag_line(flag: Flag) -> str:
    kind = flag.kind.upper()
    name = flag.name.upper() if flag.required else f"{flag.option} {kind}"
    default = "required" if flag.required else f"default: {flag.default}"
    return f"  {name:<26} {flag.help} ({default})"


def format_help(path: Sequence[str], target, prog: str = "python -m common") -> str:
    """The help of a command (its flags) or a group (its subcommands), as ``-h`` prints it."""
    title = " ".join([prog, *path])
    lines = []
    if isinstance(target, Mapping) or _is_group(target):
        commands = target if isinstance(target, Mapping) else _subcommands(target)
        lines.append(f"usage: {title} COMMAND [FLAGS]   ({title} COMMAND --help for its flags)")
        if not isinstance(target, Mapping):
            lines += ["", _summary(target)[0]]
        lines += ["", "commands:"]
        for name, obj in commands.items():
            lines.append(f"  {name:<12} {_summary(obj)[0]}")
    else:
        flags = flags_of(target)
        positional = " ".join(f.name.upper() for f in flags if f.required)
        lines.append(f"usage: {title} {positional + ' ' if positional else ''}[FLAGS]")
        first, rest = _summary(target)
        lines += ["", first] + ([rest] if rest else [])
        if flags:
            lines += ["", "arguments and flags (--a-b equals --a_b; a bool flag alone means true):"]
            lines += [_flag_line(f) for f in flags]
    lines += ["", "global flags:"] + [f"  {name:<26} {text}" for name, text in GLOBAL_FLAGS.items()]
    return "\n".join(lines)


def _parse_flags(path: Sequence[str], func: Callable, tokens: Sequence[str]) -> dict:
    """Keyword arguments of ``func`` from command-line ``tokens``, every value checked; SettingsError otherwise."""
    flags = {f.name: f for f in flags_of(func)}
    known = ", ".join(f.option for f in flags.values()) or "none"
    command = " ".join(path)
    values: dict[str, object] = {}
    positional: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("-") or _is_number(token):
            positional.append(token)
            continue
        if not token.startswith("--"):
            raise SettingsError(token, f"unknown flag of '{command}' (short flags are not abbreviations here); "
                                       f"known flags: {known}")
        name, has_value, raw = token[2:].partition("=")
        name = name.replace("-", "_")
        flag = flags.get(name)
        if flag is None and name.startswith("no") and name[2:] in flags and flags[name[2:]].kind == "bool" \
                and not has_value:
            flag, raw, has_value = flags[name[2:]], "false", "="
        if flag is None:
            raise SettingsError(token.partition("=")[0], f"unknown flag of '{command}'; known flags: {known}")
        if flag.name in values:
            raise SettingsError(flag.option, "given twice")
        if not has_value:
            if flag.kind == "bool":
                raw = "true"
                if i < len(tokens) and not tokens[i].startswith("-"):
                    raw = tokens[i]  # `--flag value`: a value that is not true/false is refused, not positional
                    i += 1
            elif i < len(tokens) and (not tokens[i].startswith("--") or _is_number(tokens[i])):
                raw = tokens[i]
                i += 1
            else:
                raise SettingsError(flag.option, f"needs a value: {describe_expected(flag.kind, flag.name)}")
        values[flag.name] = check_value(flag.name, raw, flag.kind, flag.optional, flag.option)
    # Positional arguments fill the required parameters only: a stray word must not become an output folder
    # or a count (Fire's `synth pd --paper_size 2` made n_controls 2 and wrote a paper-size cohort).
    free = [f for f in flags.values() if f.required and f.name not in values]
    if len(positional) > len(free):
        raise SettingsError(positional[len(free)], f"unexpected argument of '{command}'; it takes "
                                                   f"{', '.join(f.name.upper() for f in free) or 'none'}")
    for flag, raw in zip(free, positional, strict=False):
        values[flag.name] = check_value(flag.name, raw, flag.kind, flag.optional, flag.name.upper())
    missing = [f.name.upper() for f in flags.values() if f.required and f.name not in values]
    if missing:
        raise SettingsError(missing[0], f"missing argument of '{command}' (see {command} --help)")
    return values


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def parse_command_line(commands: Mapping[str, object], argv: Sequence[str], prog: str = "python -m common"):
    """``(path, func, kwargs, help_text)`` for ``argv``: ``help_text`` is set (and func None) when ``-h``/``--help``
    is anywhere in argv or no command is given. Raises SettingsError for an unknown command or a bad flag."""
    argv = list(argv)
    wants_help = any(a in ("-h", "--help") for a in argv)
    argv = [a for a in argv if a not in ("-h", "--help")]
    target: object = commands
    path: list[str] = []
    while isinstance(target, Mapping) or _is_group(target):
        choices = target if isinstance(target, Mapping) else _subcommands(target)
        if not argv or argv[0].startswith("-"):
            if wants_help or not argv:
                return path, None, {}, format_help(path, target, prog)
            raise SettingsError(argv[0], f"expected a command of '{' '.join([prog, *path])}' first: "
                                         f"{', '.join(choices)}")
        name = argv.pop(0)
        if name not in choices:
            raise SettingsError(name, f"unknown command of '{' '.join([prog, *path])}'; commands: "
                                      f"{', '.join(choices)}")
        path.append(name)
        target = choices[name]
    if wants_help:
        return path, None, {}, format_help(path, target, prog)
    return path, target, _parse_flags(path, target, argv), None


def debug_flag(argv: Sequence[str]) -> tuple[list[str], bool]:
    """argv without the global ``--debug`` flag, and whether it was there."""
    rest = [a for a in argv if a != "--debug"]
    return rest, len(rest) != len(argv)


def run_command_line(commands: Mapping[str, object], argv: Sequence[str] | None = None,
                     prog: str = "python -m common") -> object:
    """Parse ``argv`` (default ``sys.argv[1:]``), print help or call the command; project errors (bad flags,
    bad data) print one ``error:`` block and exit 2, with the traceback under ``--debug``."""
    from common.errors import exit_on_project_error

    argv = list(sys.argv[1:] if argv is None else argv)
    argv, debug = debug_flag(argv)
    with exit_on_project_error(debug=debug):
        _path, func, kwargs, help_text = parse_command_line(commands, argv, prog)
        if help_text is not None:
            try:
                print(help_text, flush=True)
            except BrokenPipeError:  # `--help | head`
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until exit, as stdout would
            return None
        return func(**kwargs)
