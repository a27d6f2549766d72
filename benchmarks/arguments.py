"""What the measurement scripts' command lines refuse before a browser starts
or a model loads, each as argparse's one-line error (exit code 2)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from browser_env.atomic import unwritable_reason

__all__ = ["refuse_below", "refuse_unwritable", "unknown_tasks"]


def refuse_below(
    parser: argparse.ArgumentParser, args: argparse.Namespace, least: int, *names: str
) -> None:
    """``parser.error`` for the first option of ``names`` (``args``' attribute
    names, e.g. ``max_steps`` for ``--max-steps``) whose value is below ``least``."""
    for name in names:
        value = getattr(args, name)
        if value < least:
            parser.error(f"--{name.replace('_', '-')} must be >= {least}, got {value}")


def refuse_unwritable(
    parser: argparse.ArgumentParser, path: str | os.PathLike[str] | None, option: str
) -> None:
    """``parser.error`` unless ``path`` (an output file's option, e.g. ``--json``;
    ``None`` or ``""``: not asked for) could be written: it is no directory, and
    the nearest of its ancestors that exists is a directory this process may
    write in (the scripts' atomic writes make the missing ones). Checked before
    the work, so a long measurement's figures are not lost at its end."""
    if not path:
        return
    target = Path(path).expanduser()
    if target.is_dir():
        parser.error(f"{option}: is a directory: {target}")
    problem = unwritable_reason(target.parent)
    if problem:
        parser.error(f"{option}: {problem}")


def unknown_tasks(tasks: Sequence[str], prefix: str = "browser_env/miniwob.") -> list[str]:
    """Those of ``tasks`` for which ``f"{prefix}{task}-v0"``, the id the scripts
    make, is no registered env: what a benchmark script's command line refuses
    before a browser starts. A task is named without its version
    (``click-test``; ``click-test-v0`` would make ``click-test-v0-v0``)."""
    import gymnasium as gym

    import browser_env  # noqa: F401 - registers the ids

    return [task for task in tasks if f"{prefix}{task}-v0" not in gym.registry]
