"""Refusals: a config or command line an entry point will not run, said in one line.

An entry point's ``run(cfg)`` checks and builds what it needs (the config's
values, the runner's options, the suite, the env ids, the agent or the model)
inside :func:`refusing`, which turns what those checks raise (``ValueError``,
Gymnasium's errors such as ``NameNotFound``, omegaconf's
``MissingMandatoryValue``) into :class:`Refused`. Its ``@hydra.main`` task
function runs inside :func:`exit_on_refusal`, which prints a refusal as
``error: <message>`` on stderr and exits with status 2 (as ``argparse``
does), without a traceback::

    def run(cfg):
        with refusing():
            cfg = check_options(cfg)
            agent = build_agent(cfg)
        ...  # the episodes: what fails here keeps its traceback

    @hydra.main(...)
    def main(cfg):
        with exit_on_refusal():
            run(cfg)

What fails once the episodes or the training have started is no refusal (a
bug, a crash, a lost browser): it keeps its traceback. ``Refused`` is a
``ValueError`` chained from the original error, so ``run(cfg)`` called from a
test or a notebook raises a ``ValueError`` where it raised one before (and
where it raised Gymnasium's or omegaconf's error, one chained from it).

The check-and-build phase includes loading a model, where a library's own
``ValueError`` may be a bug rather than a refusal: with ``HYDRA_FULL_ERROR=1``
(Hydra's switch for whole tracebacks) :func:`exit_on_refusal` lets the
refusal through, with its cause's traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

__all__ = ["Refused", "exit_on_refusal", "refusing"]

#: a key whose value is ``???`` (its suffix) -> what sets it on the command line
_HOW_TO_SET = {
    "backend.model": (
        "model=tiny-random or model=/path/to/model (with backend=openai: the model id "
        "the server knows)"
    ),
}


class Refused(ValueError):
    """A config or command line the run refuses before anything starts."""


@contextlib.contextmanager
def refusing() -> Iterator[None]:
    """Raise what the block raises as :class:`Refused` (chained ``from`` it)
    when it is a ``ValueError``, a Gymnasium error or a mandatory value left
    unset (``???``), whose message then names the key and how to set it.
    Hydra's ``InstantiationException`` counts as what caused it. Anything
    else passes through unchanged."""
    import gymnasium
    from hydra.errors import InstantiationException
    from omegaconf.errors import MissingMandatoryValue

    refusable = (ValueError, MissingMandatoryValue, gymnasium.error.Error)
    try:
        yield
    except Refused:
        raise
    except InstantiationException as exc:  # building an agent: what its __init__ refused
        if not isinstance(exc.__cause__, refusable):
            raise
        raise _refused(exc.__cause__) from exc.__cause__
    except refusable as exc:
        raise _refused(exc) from exc


@contextlib.contextmanager
def exit_on_refusal() -> Iterator[None]:
    """For an ``@hydra.main`` task function: a :class:`Refused` from the block
    is printed as ``error: <line>`` per line of its message on stderr, and
    the process exits with status 2. Nothing else is caught; with
    ``HYDRA_FULL_ERROR=1`` nothing at all (the whole traceback is shown)."""
    try:
        yield
    except Refused as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        for line in (str(exc) or "refused").splitlines():
            print(f"error: {line}", file=sys.stderr)
        sys.stderr.flush()
        _drop_run_dir()
        raise SystemExit(2) from None


#: what Hydra itself puts in a run dir before the task function runs
_HYDRA_OWN = (".hydra",)


def _drop_run_dir() -> None:
    """Remove the run dir Hydra made for a refused run, and the parents it made
    that are left empty (never the first component, e.g. ``outputs``, nor the
    working dir): a refused run did nothing worth keeping, and a mistyped
    command should not leave an ``outputs/<date>/<time>`` behind. Only in
    Hydra's single-run mode (a sweep's dir is shared), and only when the dir
    holds nothing but Hydra's ``.hydra/`` and log files: a dir that holds
    anything else (``hydra.run.dir`` pointed at an earlier run) is kept."""
    import shutil
    from pathlib import Path

    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
            return
        run_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    except Exception:  # noqa: BLE001 - no Hydra run: nothing to drop
        return
    cwd = Path.cwd().resolve()
    if run_dir == cwd or cwd not in run_dir.parents or not run_dir.is_dir():
        return  # a dir outside the working dir was named on purpose
    entries = list(run_dir.iterdir())
    if any(e.name not in _HYDRA_OWN and not (e.suffix == ".log" and e.is_file()) for e in entries):
        return
    _close_logs_under(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    top = cwd / run_dir.relative_to(cwd).parts[0]
    for parent in run_dir.parents:
        if top not in parent.parents:  # stop at the first component
            break
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break


def _refused(exc: BaseException) -> Refused:
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(exc, MissingMandatoryValue) and getattr(exc, "full_key", None):
        return Refused(_unset(str(exc.full_key)))
    return Refused(str(exc) or type(exc).__name__)


def _unset(key: str) -> str:
    for suffix, how in _HOW_TO_SET.items():
        if key == suffix or key.endswith(f".{suffix}"):
            return f"{key} has no value: set it on the command line, e.g. {how}"
    return f"{key} has no value: set it on the command line ({key}=...)"


def _close_logs_under(directory: object) -> None:
    """Detach and close the logging file handlers writing under ``directory``
    (Hydra's job log), so nothing writes into (or re-creates) a removed dir."""
    import logging
    from pathlib import Path

    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in list(getattr(logger, "handlers", ())):
            path = getattr(handler, "baseFilename", None)
            if path and Path(directory) in Path(path).resolve().parents:
                logger.removeHandler(handler)
                handler.close()
