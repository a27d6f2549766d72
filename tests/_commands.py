"""A command line of this project run as a user runs it: ``python -m MODULE
ARGS`` in a subprocess, for the tests of what a command prints and its exit
status (a refusal is one ``error:`` line and status 2).

Importable from every test directory: ``tests/`` is on ``sys.path`` because
``tests/conftest.py`` is there (pytest's default ``prepend`` import mode).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: what every command runs with here: no hub, no wandb, no Ray usage report
_QUIET = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def python_m(
    module: str,
    *args: str,
    cwd: str | os.PathLike[str] = ROOT,
    env: Mapping[str, str] | None = None,
    unset: Iterable[str] = (),
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``python -m module *args`` in ``cwd``, its output captured as text, no
    input (``stdin`` is ``/dev/null``). The
    environment is this one's with this checkout first on ``PYTHONPATH`` (``cwd``
    may be a scratch dir), the hub offline, wandb disabled, Ray's usage stats
    off and ``HYDRA_FULL_ERROR`` unset (which would turn a refusal into a
    traceback); ``env`` sets more, ``unset`` removes variables."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=_command_env(env, unset),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,  # nothing to type: a command never waits on the terminal
    )


def start_m(
    module: str,
    *args: str,
    cwd: str | os.PathLike[str] = ROOT,
    env: Mapping[str, str] | None = None,
    stdin: Any = subprocess.DEVNULL,
) -> subprocess.Popen[str]:
    """:func:`python_m` started, not waited for: in a session of its own (a
    terminal's Ctrl-C is ``os.killpg(proc.pid, SIGINT)``), its stdout and
    stderr piped as text (``proc.communicate()``). SIGINT is at its default
    in the command, as in a terminal, even where the tests run with it
    ignored (a shell without job control starts ``make test &`` or a CI job
    so, and the command would inherit that: Python then installs no handler).
    ``stdin``: what the command reads (``subprocess.PIPE`` for a prompt that
    waits)."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=_command_env(env, ()),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=stdin,
        start_new_session=True,
        preexec_fn=_sigint_as_in_a_terminal,
    )


def _sigint_as_in_a_terminal() -> None:
    """In the child before ``exec``: SIGINT's default action and unblocked."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _command_env(env: Mapping[str, str] | None, unset: Iterable[str]) -> dict[str, str]:
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    full = {**os.environ, **_QUIET, "PYTHONPATH": pythonpath, **(env or {})}
    for name in ("HYDRA_FULL_ERROR", *unset):
        full.pop(name, None)
    return full
