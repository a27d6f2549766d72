"""What the measurement scripts' command lines refuse before a browser starts
or a model loads, each as argparse's one-line error (exit code 2)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["refuse_below", "unknown_tasks"]


def refuse_below(
    parser: argparse.ArgumentParser, args: argparse.Namespace, least: int, *names: str
) -> None:
    """``parser.error`` for the first option of ``names`` (``args``' attribute
    names, e.g. ``max_steps`` for ``--max-steps``) whose value is below ``least``."""
    for name in names:
        value = getattr(args, name)
        if value < least:
            parser.error(f"--{name.replace('_', '-')} must be >= {least}, got {value}")


def unknown_tasks(tasks: Sequence[str], prefix: str = "browser_env/miniwob.") -> list[str]:
    """Those of ``tasks`` that, joined to ``prefix``, name no registered env: what
    a benchmark script's command line refuses before a browser starts."""
    import gymnasium as gym

    import browser_env  # noqa: F401 - registers the ids
    from browser_env.registration import resolve_env_id

    def known(task: str) -> bool:
        try:
            return resolve_env_id(prefix + task) in gym.registry
        except ValueError:  # another namespace
            return False

    return [task for task in tasks if not known(task)]
