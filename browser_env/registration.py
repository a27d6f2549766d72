"""Gymnasium ids, registered with string entry points (nothing is imported)."""

from __future__ import annotations

import gymnasium as gym

__all__ = ["MINIWOB_MAX_STEPS", "OPEN_MAX_STEPS", "register_envs"]

ENTRY_POINT = "browser_env.env:BrowserEnv"
MINIWOB_MAX_STEPS = 10
OPEN_MAX_STEPS = 30

# Pages whose instance depends on the wall clock (dates, "today" highlights).
NONDETERMINISTIC = {
    "book-flight",
    "book-flight-nodelay",
    "choose-date",
    "choose-date-easy",
    "choose-date-medium",
    "choose-date-nodelay",
}


def register_envs() -> None:
    """Register every id once; safe to call again."""
    if "browser_env/open-v0" in gym.registry:
        return
    gym.register(
        id="browser_env/open-v0",
        entry_point=ENTRY_POINT,
        max_episode_steps=OPEN_MAX_STEPS,
        kwargs={"task": "open"},
        nondeterministic=True,
    )
    try:
        from browser_env.tasks.miniwob import miniwob_task_names

        names = miniwob_task_names()
    except (
        ModuleNotFoundError,
        FileNotFoundError,
    ):  # miniwob is a core dependency; be lenient anyway
        names = ()
    for name in names:
        gym.register(
            id=f"browser_env/miniwob.{name}-v0",
            entry_point=ENTRY_POINT,
            max_episode_steps=MINIWOB_MAX_STEPS,
            kwargs={"task": f"miniwob.{name}"},
            nondeterministic=name in NONDETERMINISTIC,
        )
