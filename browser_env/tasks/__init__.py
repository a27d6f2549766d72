"""Tasks: what an episode asks for and how it is judged (see :mod:`.base`)."""

from browser_env.tasks.base import Task
from browser_env.tasks.miniwob import MiniWoBTask, miniwob_task_names
from browser_env.tasks.open import OpenTask

__all__ = ["MiniWoBTask", "OpenTask", "Task", "miniwob_task_names"]
