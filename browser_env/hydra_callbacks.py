"""Hydra callbacks of the entry points (``hydra.callbacks`` in their YAML).

:class:`RefuseHeldRunDir`: a second run into an output dir that another run
holds (:func:`browser_env.dirlock.hold_dir`) is refused before Hydra writes
its ``.hydra/*.yaml`` and job log there. The entry point's own hold comes
only when its task function runs, after Hydra has written those files over
the first run's; ``on_run_start`` comes before them. This module imports
Hydra: only Hydra imports it (by ``_target_``).
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback

__all__ = ["RefuseHeldRunDir"]


class RefuseHeldRunDir(Callback):
    """Before a single run's job starts: when another run holds the run dir,
    print the refusal as ``error: ...`` (the entry point's own words for it)
    and exit with status 2. ``key``: the setting the dir came from."""

    def __init__(self, key: str = "output_dir") -> None:
        self.key = key

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        from browser_env.dirlock import DirInUse, check_not_held

        try:
            check_not_held(config.hydra.run.dir, self.key)
        except DirInUse as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
