"""The contract every Task meets, as a test mixin (like ``tests/agents/backend_contract.py``).

A task family's test module subclasses :class:`TaskContract` and implements
``make_task()``; the mixin's tests then run that task in a real browser::

    class TestMyTasks(TaskContract):
        def make_task(self):
            return MyTask(...)

One env per subclass (class-scoped fixture), reset on a couple of seeds.
``reset_options`` is passed to every reset (e.g. open-v0's url and goal).
"""

from __future__ import annotations

from typing import Any

import pytest

from browser_env.tasks.base import Task

pytestmark = pytest.mark.browser


class TaskContract:
    """Tests every ``Task`` must pass. Subclasses implement :meth:`make_task`."""

    seeds: tuple[int, ...] = (0, 1)
    reset_options: dict[str, Any] = {}

    def make_task(self) -> Task:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def env(cls):
        from browser_env.env import BrowserEnv

        env = BrowserEnv(cls().make_task(), modalities=("elements", "text"))
        yield env
        env.close()

    def reset(self, env, seed: int) -> dict[str, Any]:
        return env.reset(seed=seed, options=dict(self.reset_options))[0]

    def test_is_a_task_with_typed_attributes(self):
        task = self.make_task()
        assert isinstance(task, Task)
        assert isinstance(task.name, str) and task.name
        assert task.viewport is None or (
            len(task.viewport) == 2 and all(int(v) > 0 for v in task.viewport)
        )
        for attribute in ("observation_root", "observation_exclude", "state_js"):
            assert getattr(task, attribute) is None or isinstance(getattr(task, attribute), str)
        region = task.screenshot_region
        assert region is None or (len(region) == 4 and all(int(v) >= 0 for v in region))
        if region is not None and task.viewport is not None:
            assert region[0] + region[2] <= task.viewport[0]
            assert region[1] + region[3] <= task.viewport[1]
        assert isinstance(task.fresh_context, bool)
        task.teardown()
        task.teardown()  # safe twice, and before any setup

    def test_setup_returns_the_goal_the_env_shows(self, env):
        obs = self.reset(env, self.seeds[0])
        assert isinstance(env.goal, str)
        assert obs["goal"] == env.goal

    def test_same_seed_same_goal(self, env):
        first = self.reset(env, self.seeds[0])["goal"]
        assert self.reset(env, self.seeds[0])["goal"] == first

    def test_validate_returns_reward_done_and_info(self, env):
        self.reset(env, self.seeds[-1])
        reward, done, info = env.task.validate(env.page, None)
        assert isinstance(reward, float) and isinstance(done, bool)
        assert {"raw_reward", "success", "reason"} <= set(info)
        assert info["success"] in (True, False, None)
        assert not done, "a fresh episode is not done before any action"

    def test_judge_agrees_with_validate(self, env):
        self.reset(env, self.seeds[0])
        state = env.page.evaluate(env.task.state_js) if env.task.state_js is not None else None
        for answer in (None, "not the answer"):
            assert env.task.judge(state, answer)[:2] == env.task.validate(env.page, answer)[:2]

    def test_finish_ends_the_episode(self, env):
        self.reset(env, self.seeds[0])
        _, reward, terminated, truncated, info = env.step({"action": "FINISH", "value": "zzz"})
        assert terminated and not truncated
        assert isinstance(reward, float) and "success" in info
