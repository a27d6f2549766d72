"""Where an entry point writes: Hydra's run directory, else a fixed default.

Every entry point (``agents.run``, ``browser_env.record``,
``benchmarks.run``, the learners) writes under the run directory that
``@hydra.main`` made for it; a plain call from Python or a test has none and
writes under ``outputs/``. This is the one place that decides. It lives at
the bottom of the import arrows so that every package may use it, and
imports Hydra only when called.

An entry point whose config has an ``output_dir`` key points Hydra's own
run dir (``.hydra/``, the log) at it through the ``coalesce`` resolver
(:func:`register_resolvers`), so ``output_dir=DIR`` leaves nothing under
``outputs/``:
``hydra.run.dir: ${coalesce:${output_dir},'outputs/NAME/${now:%H-%M-%S}'}``.
Such an entry point also lists
:class:`browser_env.hydra_callbacks.RefuseHeldRunDir` in ``hydra.callbacks``: a second run into a dir another run holds is refused
before Hydra writes its ``.hydra/`` files there (over the first run's).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["coalesce", "register_resolvers", "run_dir"]


def run_dir(default: str | os.PathLike[str] = "outputs") -> Path:
    """Hydra's output directory of the running job, or ``Path(default)`` when
    no ``@hydra.main`` job is running (or Hydra is not installed)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):  # ValueError: not under @hydra.main
        return Path(default)


def coalesce(*values: object) -> object:
    """The first of ``values`` that is neither ``None`` nor ``""`` (``None`` if
    none is): an empty ``output_dir=`` means unset, not the working directory."""
    return next((value for value in values if value is not None and value != ""), None)


def register_resolvers() -> None:
    """Registers ``${coalesce:A,B,...}`` with OmegaConf (once; later calls do
    nothing). An entry point calls this at import, before ``@hydra.main``
    composes its config."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("coalesce"):
        OmegaConf.register_new_resolver("coalesce", coalesce)
