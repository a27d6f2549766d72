"""Tasks: what an episode asks for and how it is judged (see :mod:`.base`).

Families: MiniWoB++ pages (:mod:`.miniwob`), open-ended URL + goal
(:mod:`.open`) and the bundled local sites (:mod:`.sites`).
"""

from browser_env.tasks.base import Task
from browser_env.tasks.miniwob import MiniWoBTask, miniwob_task_names
from browser_env.tasks.open import OpenTask
from browser_env.tasks.sites import SiteTask, site_task_names

__all__ = ["MiniWoBTask", "OpenTask", "SiteTask", "Task", "miniwob_task_names", "site_task_names"]
