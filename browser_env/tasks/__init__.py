"""Tasks: what an episode asks for and how it is judged (see :mod:`.base`).

Families: MiniWoB++ pages (:mod:`.miniwob`), open-ended URL + goal
(:mod:`.open`) and the bundled local sites (:mod:`.sites`). :func:`make_task`
builds one from the name an env's ``task`` argument takes.
"""

from __future__ import annotations

from typing import Any

from browser_env.tasks.base import Task
from browser_env.tasks.miniwob import MiniWoBTask, miniwob_task_names
from browser_env.tasks.open import OpenTask
from browser_env.tasks.sites import SiteTask, site_task_names

__all__ = [
    "MiniWoBTask",
    "OpenTask",
    "SiteTask",
    "Task",
    "make_task",
    "miniwob_task_names",
    "site_task_names",
]


def make_task(task: Task | str, **kwargs: Any) -> Task:
    """A task from a name: ``"miniwob.click-test"``, ``"sites.shop.buy-named"``, ``"open"``;
    a Task passes through."""
    if not isinstance(task, str):
        return task
    if task.startswith("miniwob."):
        return MiniWoBTask(task.removeprefix("miniwob."), **kwargs)
    if task == "open":
        return OpenTask(**kwargs)
    if task.startswith("sites."):
        return SiteTask(task.removeprefix("sites."), **kwargs)
    raise ValueError(
        f"unknown task {task!r}; use 'miniwob.<name>', 'sites.<site>.<template>', 'open' or a Task"
    )
