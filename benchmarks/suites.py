"""A suite is a list of env ids and the seeds each is rolled out on.

Suites are Hydra configs (``conf/suite/*.yaml``) that instantiate :class:`Suite`::

    _target_: benchmarks.suites.Suite
    name: miniwob_smoke
    tasks: [click-test, click-button]
    prefix: browser_env/miniwob.

Every task is played on the same seeds ``seed, seed + 1, ...`` so agents are
compared on identical instances; ``seed`` is the run's, else the suite's own
(e.g. the held-out seeds of a suite that a policy was trained on). ``tasks:
all`` expands to every MiniWoB++ task page.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

__all__ = ["Suite"]


@dataclasses.dataclass(frozen=True)
class Suite:
    """Attributes:
    name: shown in tables and file names.
    tasks: task names (joined to ``prefix``) or ``"all"`` for every MiniWoB++ page.
    prefix: prepended to each task to form the env, in any spelling that
        :func:`browser_env.registration.resolve_env_id` accepts (``miniwob.``,
        ``browser_env/miniwob.``); the version defaults to ``-v0``.
    max_episode_steps: overrides the registered step limit when set.
    env_kwargs: passed to ``gymnasium.make`` for every task.
    exclude: task names left out (e.g. of ``all``).
    seed: the first seed when the run sets none (``seed=null``).
    """

    name: str
    tasks: Sequence[str] | str
    prefix: str = "browser_env/miniwob."
    max_episode_steps: int | None = None
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    exclude: Sequence[str] = ()
    seed: int = 0

    @property
    def task_names(self) -> tuple[str, ...]:
        if isinstance(self.tasks, str):
            if self.tasks != "all":
                raise ValueError(f"tasks must be a list of names or 'all', got {self.tasks!r}")
            from browser_env.tasks.miniwob import miniwob_task_names

            names: Sequence[str] = miniwob_task_names()
        else:
            names = self.tasks
        names = tuple(n for n in names if n not in set(self.exclude))
        if not names:
            raise ValueError(f"suite {self.name!r} has no tasks")
        return names

    @property
    def env_ids(self) -> tuple[str, ...]:
        from browser_env.registration import resolve_env_id

        return tuple(resolve_env_id(f"{self.prefix}{task}") for task in self.task_names)

    @staticmethod
    def seeds(start: int, episodes: int) -> range:
        if episodes < 1:
            raise ValueError("episodes must be >= 1")
        return range(start, start + episodes)
