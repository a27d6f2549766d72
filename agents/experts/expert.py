"""The ``expert`` agent: hand-written (scripted) MiniWoB++ and bundled-site solvers.

These policies are **scripted, not learned**: each is a few lines of Python
that reads the goal and the observation and picks the action a careful person
would. They exist to record demonstrations for learners and to give a ceiling
for the benchmark tables. Every ``info`` says so (``"scripted": True``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agents.experts import choose, click, forms  # noqa: F401 - registers the policies
from agents.experts.base import POLICIES, Context, ExpertError, task_from_url
from agents.experts.sites import SITE_POLICIES, site_task
from browser_env.actions import Action, Verb
from browser_env.registration import task_name

__all__ = [
    "SUPPORTED_TASKS",
    "ScriptedExpert",
    "UnsupportedTaskError",
    "expert_task",
    "unsupported_env_ids",
]

SUPPORTED_TASKS: tuple[str, ...] = tuple(sorted(POLICIES))


class UnsupportedTaskError(ValueError):
    """The observation's task has no scripted expert."""


class ScriptedExpert:
    """Dispatches on the MiniWoB++ task named in ``obs["url"]``, or for a
    bundled site on the site in the URL and the template its goal matches (or
    on ``task`` when given: ``click-button``, ``sites.shop.buy-named``), to a
    scripted per-task policy.

    ``act`` returns the action (its ``reasoning`` is the rationale) and
    ``info = {"agent": "expert", "scripted": True, "task": ..., "rationale": ...}``.
    A task with no policy raises :class:`UnsupportedTaskError` listing the
    supported ones. When a policy meets a page it does not understand it
    returns FINISH with the reason in ``info["error"]`` rather than guess.
    """

    name = "expert"

    def __init__(self, task: str | None = None) -> None:
        if task is not None and task not in POLICIES and task not in SITE_POLICIES:
            raise UnsupportedTaskError(_unsupported(task))
        self.task = task
        self.goal = ""
        self._memory: dict[str, Any] = {}
        self._step = 0

    def reset(self, goal: str = "", *, seed: int | None = None) -> None:
        self.goal = goal
        self._memory = {}
        self._step = 0

    def close(self) -> None:
        """Nothing to release."""

    def act(self, obs: Mapping[str, Any]) -> tuple[Action, dict[str, Any]]:
        url, goal = str(obs.get("url") or ""), str(obs.get("goal") or self.goal)
        task = self.task or task_from_url(url) or site_task(url, goal)
        policy = POLICIES.get(task) or (SITE_POLICIES[task][1] if task in SITE_POLICIES else None)
        if policy is None:
            raise UnsupportedTaskError(_unsupported(task or str(obs.get("url") or "")))
        ctx = Context(
            task=task,
            goal=goal,
            obs=obs,
            step=self._step,
            memory=self._memory,
        )
        self._step += 1
        info: dict[str, Any] = {"agent": self.name, "scripted": True, "task": task}
        try:
            decision = policy(ctx)
        except (ExpertError, IndexError) as exc:
            reason = f"scripted expert for {task} cannot handle this page: {exc}"
            action = Action(Verb.FINISH, value="", reasoning=reason)
            return action, info | {"rationale": reason, "error": reason}
        return decision.action, info | {"rationale": decision.rationale}

    def fork(self) -> ScriptedExpert:
        """A new agent with the same settings and an episode state of its own."""
        return ScriptedExpert(self.task)

    def act_batch(
        self,
        observations: Sequence[Mapping[str, Any]],
        agents: Sequence[ScriptedExpert] | None = None,
    ) -> list[tuple[Action, dict[str, Any]]]:
        """``agents[i].act(observations[i])`` for each i (no model to batch); rows
        that raise: :class:`agents.batch.RowErrors`."""
        from agents.batch import act_each

        return act_each(observations, [self] if agents is None else list(agents))


def expert_task(env_id: str) -> str:
    """The task name the expert dispatches on for a registered env id:
    ``browser_env/miniwob.click-test-v0`` -> ``click-test``,
    ``browser_env/sites.shop.buy-named-v0`` -> ``sites.shop.buy-named``; ""
    for any other (``browser_env/open-v0``: its task is the page's, known
    only once it is open)."""
    name = task_name(env_id)
    if name.startswith("miniwob."):
        return name.removeprefix("miniwob.")
    return name if name.startswith("sites.") else ""


def unsupported_env_ids(env_ids: Iterable[str]) -> list[str]:
    """The ids among ``env_ids`` (in their order, each once) of a MiniWoB++
    task or bundled-site template with no scripted policy, which
    :meth:`ScriptedExpert.act` would refuse in the first step of its episode."""
    unsupported = []
    for env_id in dict.fromkeys(env_ids):
        task = expert_task(env_id)
        if task and task not in POLICIES and task not in SITE_POLICIES:
            unsupported.append(env_id)
    return unsupported


def _unsupported(task: str) -> str:
    return f"no scripted expert for task {task!r}; supported tasks: {', '.join(SUPPORTED_TASKS)}"
