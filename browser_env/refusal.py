"""Refusals: a config or command line an entry point will not run, said in one line.

An entry point's ``run(cfg)`` checks and builds what it needs (the config's
values, the runner's options, the suite, the env ids, the agent or the model)
inside :func:`refusing`, which turns what those checks raise (``ValueError``,
Gymnasium's errors such as ``NameNotFound``, omegaconf's
``MissingMandatoryValue``) into :class:`Refused`. Its ``@hydra.main`` task
function runs inside :func:`exit_on_refusal`, which prints a refusal as
``error: <message>`` on stderr and exits with status 2 (as ``argparse``
does), without a traceback, removing the files Hydra wrote for the refused
run (its ``.hydra/`` and an empty job log) and the run dir they leave
empty::

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
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from browser_env.dropped_signals import Resend, raising_dropped

__all__ = ["Refused", "exit_on_interrupt", "exit_on_refusal", "refusing"]

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
    the process exits with status 2, leaving no run dir behind where Hydra
    made one for this run alone (:func:`_drop_run_dir`). Nothing else is
    caught; with ``HYDRA_FULL_ERROR=1`` nothing at all (the whole traceback
    is shown, the run dir kept)."""
    fresh = _fresh_run()  # before the block logs anything
    try:
        yield
    except Refused as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        for line in (str(exc) or "refused").splitlines():
            print(f"error: {line}", file=sys.stderr)
        sys.stderr.flush()
        _drop_run_dir(fresh)
        raise SystemExit(2) from None


@contextlib.contextmanager
def exit_on_interrupt(note: str | None = None) -> Iterator[None]:
    """For an ``@hydra.main`` task function: Ctrl-C (``KeyboardInterrupt`` out of
    the block) ends the command with status 130, as a shell reports a process
    that SIGINT ended, after ``note`` (what was kept) on stderr, without the
    interrupt's traceback. With ``HYDRA_FULL_ERROR=1`` the traceback is shown
    (where a run that seemed stuck was).

    Ctrl-C in a terminal signals the whole process group: Chromium and
    Playwright's driver get SIGINT too and start closing, and the browser's
    "Target closed" can reach the main thread before the interrupt does (or
    instead of it, where Python drops a ``KeyboardInterrupt`` raised inside a
    weakref callback). So, in the main thread, the block notes the time of
    each SIGINT (and then raises ``KeyboardInterrupt`` as Python's own handler
    does), and an ``Exception`` out of the block within
    :data:`INTERRUPT_FALLOUT_S` of one is taken for the interrupt; a later one
    (a run that went on after a dropped Ctrl-C, then failed) keeps its
    traceback."""
    interrupts = _Interrupts()
    with _noting_sigint(interrupts):
        try:
            yield
        except BaseException as exc:
            interrupts.cancel()  # no KeyboardInterrupt raised again from here on
            fallout = bool(interrupts.times) and time.monotonic() - interrupts.times[-1] < (
                INTERRUPT_FALLOUT_S
            )
            stopped = isinstance(exc, KeyboardInterrupt) or (fallout and isinstance(exc, Exception))
            if not stopped or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            if note:
                print(note, file=sys.stderr, flush=True)
            raise SystemExit(130) from None


#: how long after a SIGINT an error out of :func:`exit_on_interrupt`'s block is
#: its doing (the browser and driver closing on the same Ctrl-C: well under 1 s here)
INTERRUPT_FALLOUT_S = 10.0


class _Interrupts:
    """What :func:`_noting_sigint` saw: each SIGINT's time (``time.monotonic``),
    and the send of a dropped ``KeyboardInterrupt``'s SIGINT again, if one is due."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.resend: Resend | None = None

    def cancel(self) -> None:
        if self.resend is not None:
            self.resend.cancel()


@contextlib.contextmanager
def _noting_sigint(interrupts: _Interrupts) -> Iterator[None]:
    """While the block runs, note each SIGINT's time in ``interrupts``, then do
    what the handler before did; only in the main thread, and only over
    Python's own handler (one the caller put in, or ``SIG_IGN``, is left alone).

    A ``KeyboardInterrupt`` the handler raised inside a ``__del__`` or a
    weakref callback, where Python drops it (printing "Exception ignored
    in ..."), is raised again in the main thread
    (:func:`browser_env.dropped_signals.raising_dropped`); the report is not
    printed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        yield
        return

    def note(signum: int, frame: Any) -> None:
        interrupts.times.append(time.monotonic())
        previous(signum, frame)

    with raising_dropped(
        KeyboardInterrupt, signal.SIGINT, note, ours=lambda: bool(interrupts.times)
    ) as interrupts.resend:
        yield


#: the files Hydra writes into a run dir before the task function runs
_HYDRA_FILES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")


def _fresh_run() -> tuple[Path, Path] | None:
    """This Hydra single run's dir and job log file (resolved) when the log is
    empty (or absent) as the task begins; ``None`` for a log with lines in it,
    an earlier run's (Hydra appends to it), to be kept, and when there is no
    Hydra run or it is a multirun (its sweep dir is shared)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
            return None
        hydra = HydraConfig.get()
        run_dir = Path(hydra.runtime.output_dir).resolve()
        log = run_dir / f"{hydra.job.name}.log"
        fresh = not log.exists() or log.stat().st_size == 0
    except Exception:  # noqa: BLE001 - no Hydra run, or no reading its log: nothing to drop
        return None
    return (run_dir, log) if fresh else None


def _drop_run_dir(run: tuple[Path, Path] | None) -> None:
    """Remove what Hydra wrote for this refused run (``.hydra/{config,hydra,
    overrides}.yaml`` and the job log, when it was empty as the task began),
    then the run dir and its parents while they are empty, but not the first
    directory below the working dir (``outputs``): a mistyped command leaves
    no ``outputs/<date>/<time>`` behind.

    Only files Hydra writes are removed, one by one, and directories only when
    empty (``rmdir``), so a ``hydra.run.dir`` that names an earlier run's dir
    or a dir of one's own keeps everything else in it, and the dir itself;
    nothing is removed while another run holds the dir
    (:func:`browser_env.dirlock.hold_dir`: a run whose ``output_dir`` it is,
    not yet past loading its model, holds nothing else there yet).
    Nothing happens unless the run dir is below the working dir, or in a
    multirun (its sweep dir is shared); ``run``: :func:`_fresh_run`'s."""
    if run is None:
        return
    run_dir, log = run
    cwd = Path.cwd().resolve()
    if cwd not in run_dir.parents or not run_dir.is_dir():
        return  # a dir outside the working dir was named on purpose
    from browser_env.dirlock import DirInUse, hold_dir, remove_empty_dirs

    try:
        with hold_dir(run_dir, "hydra.run.dir"):  # not while another run holds it
            ours = {run_dir / name for name in _HYDRA_FILES} | {log}
            present = {p for p in run_dir.rglob("*") if not p.is_dir()}
            if not present <= ours:
                return  # anything else in it: the dir is not this run's alone
            _close_logs_under(run_dir)
            for path in present:
                path.unlink(missing_ok=True)
            parents = [p for p in run_dir.parents if p.parent != cwd and cwd in p.parents]
            for directory in (run_dir / ".hydra", run_dir):
                try:
                    directory.rmdir()  # only when empty
                except OSError:
                    return
            remove_empty_dirs(parents)  # outputs/ itself stays
    except DirInUse:
        return  # a run that holds it (its output_dir) is writing there: its files


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


def _close_logs_under(directory: Path) -> None:
    """Detach and close the logging file handlers writing under ``directory``
    (Hydra's job log), so nothing writes into (or re-creates) a removed dir."""
    import logging

    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in list(getattr(logger, "handlers", ())):
            path = getattr(handler, "baseFilename", None)
            if path and directory in Path(path).resolve().parents:
                logger.removeHandler(handler)
                handler.close()
