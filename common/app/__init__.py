"""The application layer: what users run, above the library that the bundles import.

- ``commands``: the ``python -m common`` commands (each a function whose signature gives its flags);
  ``cli``: the parser that reads flags, help and checks from those signatures.
- ``atlas_commands``, ``data_commands``, ``synth_commands``: the ``atlas``, ``validate``/``splits`` and
  ``synth`` front-ends that print what the library returns.
- ``experiment``, ``baseline``, ``benchmark``: the experiment drivers (train and evaluate the bundles over splits,
  fit the normative baseline on a split, the detection ladder).
- ``demo``, ``report``: the README's main job and its HTML page; ``release``: the bundle zips.

Nothing in the library (``common`` outside this package) and no bundle config imports it; ``tests/test_layers.py``
checks that, and ``docs/architecture.md`` draws the layers. Output folders and the bundles' location come from
:mod:`common.paths`, which the library shares.
"""

from common.app.commands import main

__all__ = ["main"]
