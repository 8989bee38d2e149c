"""Allowed values of the project's settings: one table for the command line and the bundles' configs.

A flag of ``python -m common`` and a setting of a bundle run (``--epochs`` under ``monai.bundle run``) are
checked by the same :func:`check_value` against the same :data:`RANGES`, so ``--epochs 0`` is refused in
the same words by both. It sits in the library, below :mod:`common.bundle_support` (which the configs call),
so the configs never import the command line (:mod:`common.app.cli`), which builds its parser on it.
Standard library only.
"""

from __future__ import annotations

import math

from common.errors import SettingsError

__all__ = ["RANGES", "SETTING_KINDS", "check_value", "describe_expected"]

# Allowed ranges of flags and bundle settings by name, (low, high) inclusive; None: unbounded. A name listed here
# is checked in every command that has it and by ``common.bundle_support.check_settings``.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "epochs": (1, None),
    "splits": (1, None),
    "n_splits": (1, None),
    "split": (0, None),
    "split_index": (0, None),
    "n_val": (0, None),
    "n_calib": (0, None),
    "n_test": (1, None),
    "seed": (0, 2**32 - 1),
    "split_seed": (0, 2**32 - 1),
    "batch_size": (1, None),
    "val_interval": (1, None),
    "n_slices": (1, None),
    "n_controls": (1, None),
    "n_patients": (0, None),
    "pd_controls": (1, None),
    "pd_patients": (0, None),
    "pet_controls": (1, None),
    "pet_patients": (0, None),
    "pd_ae_epochs": (1, None),
    "pd_sae_epochs": (1, None),
    "pd_sae_pairs": (1, None),
    "pairs_per_epoch": (1, None),
    "pairs_per_batch": (1, None),
    "val_pairs": (1, None),
    "patch_size": (1, None),
    "cache_workers": (0, None),
    "learning_rate": (0, None),
    "effect_size": (0, None),
    "heterogeneity": (0, None),
    "degree_min": (0, 100),
    "degree_max": (0, 100),
    "max_embedded_mb": (0, None),
    "alpha": (0, None),
    "beta": (0, None),
    "workers": (1, None),
    "registration_mm": (1, 6),
    "min_dice": (0, 1),
}
# Kinds of bundle settings checked by ``common.bundle_support.check_settings`` ('int' unless listed here); the
# command-line flags take theirs from the annotations.
SETTING_KINDS: dict[str, str] = {
    "learning_rate": "float",
    "alpha": "float",
    "beta": "float",
    "amp": "bool",
    "progress": "bool",
}
# Flags whose low end is excluded (a learning rate of 0 trains nothing).
_OPEN_LOW = {"learning_rate"}
_TRUE, _FALSE = {"true", "yes", "1"}, {"false", "no", "0"}


def describe_expected(kind: str, name: str) -> str:
    """What a value of setting ``name`` must be, in words (``an integer >= 1``), for the error messages."""
    lo, hi = RANGES.get(name, (None, None))
    what = {"int": "an integer", "float": "a finite number", "bool": "true or false"}.get(kind, "a value")
    if lo is not None and hi is not None:
        return f"{what} in [{lo}, {hi}]"
    if lo is not None:
        return f"{what} {'>' if name in _OPEN_LOW else '>='} {lo}"
    if hi is not None:
        return f"{what} <= {hi}"
    return what


def check_value(name: str, value, kind: str, optional: bool = False, option: str | None = None,
                source: str | None = None, strict: bool = False):
    """``value`` (a command-line string or a config value) as ``kind``, checked against :data:`RANGES`;
    raises :class:`SettingsError` naming the flag and the expected value. ``strict``: a config value, which must
    already be of its kind (a string is refused: MONAI passes ``--epochs abc`` on as the string 'abc')."""
    option = option or f"--{name}"
    if value is None or (isinstance(value, str) and value == "None" and optional):
        if optional:
            return None
        raise SettingsError(option, f"expected {describe_expected(kind, name)}, got None", source)
    if kind == "str":
        return value if isinstance(value, str) else str(value)

    def refuse():
        shown = repr(value) if isinstance(value, str) else f"{value!r} ({type(value).__name__})"
        raise SettingsError(option, f"expected {describe_expected(kind, name)}, got {shown}", source)

    if strict and isinstance(value, str):
        refuse()
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        refuse()
    if isinstance(value, bool):
        refuse()
    cast = int if kind == "int" else float
    accepted = (int,) if kind == "int" else (int, float)  # an int is a valid float, a float never a valid int
    if isinstance(value, accepted):
        number = cast(value)
    elif isinstance(value, str):
        try:
            number = cast(value.strip())
        except ValueError:
            refuse()
    else:
        refuse()
    if kind == "float" and not math.isfinite(number):
        refuse()
    lo, hi = RANGES.get(name, (None, None))
    if lo is not None and (number < lo or (number == lo and name in _OPEN_LOW)):
        refuse()
    if hi is not None and number > hi:
        refuse()
    return number
