"""Where an entry point writes: Hydra's run directory, else a fixed default.

Every entry point (``agents.run``, ``browser_env.record``,
``benchmarks.run``, the learners) writes under the run directory that
``@hydra.main`` made for it; a plain call from Python or a test has none and
writes under ``outputs/``. This is the one place that decides. It lives at
the bottom of the import arrows so that every package may use it, and
imports Hydra only when called.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["run_dir"]


def run_dir(default: str | os.PathLike[str] = "outputs") -> Path:
    """Hydra's output directory of the running job, or ``Path(default)`` when
    no ``@hydra.main`` job is running (or Hydra is not installed)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):  # ValueError: not under @hydra.main
        return Path(default)
