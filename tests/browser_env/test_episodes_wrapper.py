"""RecordEpisode: one directory per episode, for single and vector envs."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from _episode_helpers import FakeBrowserEnv

from browser_env.episodes import AgentInfo, iter_episodes, load_episode
from browser_env.wrappers import AnnotatedAction, RecordEpisode

CLICK_OK = {"action": "CLICK", "element_id": "e2"}
CLICK_CANCEL = {"action": "CLICK", "element_id": "e1"}


def test_records_each_episode_with_annotations(tmp_path):
    env = RecordEpisode(
        FakeBrowserEnv(),
        tmp_path,
        agent=AgentInfo(name="llm", model="tiny"),
        source="agent",
        env_kwargs={"screenshot": True},
    )
    obs, info = env.reset(seed=5)
    env.set_step_extras(
        prompt=[{"role": "user", "content": "hi"}],
        raw_output="{...}",
        guards=["g1"],
        temperature=0.5,
    )
    env.step(CLICK_CANCEL)
    env.step(AnnotatedAction(CLICK_OK, prompt="p2", raw_output="out2", extras={"k": np.int64(3)}))
    first = env.last_episode_dir
    env.reset(seed=6)
    env.step("garbage")  # an invalid action is recorded, not dropped
    env.set_agent_info(model="bigger")
    env.reset(seed=7)  # abandons episode 2
    env.close()  # abandons episode 3 (no steps)
    assert len(env.episode_dirs) == 3 and env.episode_dirs[0] == first

    ep = load_episode(first)
    assert (
        ep.meta.env_id == "browser_env/fake-v0"
        and ep.meta.task == "fake-click"
        and ep.meta.seed == 5
    )
    assert ep.meta.goal.startswith("Click <b>OK</b>") and ep.meta.env_kwargs == {"screenshot": True}
    assert ep.meta.agent.model == "tiny"
    s0, s1 = ep.steps
    assert (
        s0.prompt == [{"role": "user", "content": "hi"}]
        and s0.raw_output == "{...}"
        and s0.guards == ["g1"]
    )
    assert s0.extras == {"temperature": 0.5}
    assert (
        s1.prompt == "p2" and s1.raw_output == "out2" and s1.guards == [] and s1.extras == {"k": 3}
    )
    assert s1.action == CLICK_OK and s1.success and s0.timings["step_ms"] >= 0
    assert ep.complete and ep.outcome.success and ep.outcome.reason == "success"
    assert ep.final_observation["url"] == "http://fake/5/2"
    # the observation recorded for a step is the one BEFORE it
    assert [s.observation["url"] for s in ep.steps] == ["http://fake/5/0", "http://fake/5/1"]

    ep2 = load_episode(env.episode_dirs[1])
    assert ep2.complete and ep2.outcome.reason == "abandoned" and not ep2.outcome.terminated
    assert (
        ep2.steps[0].action is None
        and ep2.steps[0].action_input == "garbage"
        and ep2.steps[0].error
    )
    ep3 = load_episode(env.episode_dirs[2])
    assert ep3.outcome.steps == 0 and ep3.meta.agent.model == "bigger"


def test_truncation_ends_episode(tmp_path):
    env = RecordEpisode(FakeBrowserEnv(screenshot=False, max_steps=2), tmp_path)
    env.reset(seed=0)
    for _ in range(2):
        *_, truncated, _info = env.step(CLICK_CANCEL)
    assert truncated and not env.recording
    ep = load_episode(env.last_episode_dir)
    assert ep.outcome.truncated and ep.outcome.reason == "max_steps" and ep.outcome.steps == 2


def test_step_before_reset_raises(tmp_path):
    with pytest.raises(gymnasium.error.ResetNeeded):
        RecordEpisode(FakeBrowserEnv(), tmp_path).step(CLICK_OK)


def test_spec_kwargs_are_recorded_for_replay(tmp_path):
    gymnasium.register(
        "browser_env_test/fake-rec-v0", entry_point=FakeBrowserEnv, kwargs={"max_steps": 4}
    )
    try:
        env = RecordEpisode(
            gymnasium.make("browser_env_test/fake-rec-v0", screenshot=False), tmp_path
        )
        env.reset(seed=1, options={"x": 1})
        env.step(CLICK_OK)
        ep = load_episode(env.last_episode_dir)
        assert ep.meta.env_kwargs == {"max_steps": 4, "screenshot": False}
        assert ep.meta.reset_options == {"x": 1}
    finally:
        gymnasium.registry.pop("browser_env_test/fake-rec-v0")


def _factory(root, index):
    def make():
        return RecordEpisode(
            FakeBrowserEnv(max_steps=3),
            root / f"env{index}",
            screenshots=index == 0,
            agent={"name": "scripted-test"},
            source="scripted",
        )

    return make


@pytest.mark.parametrize(
    "vector_cls", [gymnasium.vector.SyncVectorEnv, gymnasium.vector.AsyncVectorEnv]
)
def test_inside_vector_envs(tmp_path, vector_cls):
    kwargs = {"shared_memory": False} if vector_cls is gymnasium.vector.AsyncVectorEnv else {}
    envs = vector_cls([_factory(tmp_path, i) for i in range(2)], **kwargs)
    envs.reset(seed=[10, 20])
    for t in range(4):
        # env0 wins at its 2nd step; env1 never does and truncates after 3
        actions = (
            AnnotatedAction(CLICK_OK if t == 1 else CLICK_CANCEL, prompt=f"p0-{t}"),
            AnnotatedAction(CLICK_CANCEL, prompt=f"p1-{t}"),
        )
        envs.step(actions)
    envs.close()
    env0 = list(iter_episodes(tmp_path / "env0", include_incomplete=True))
    env1 = list(iter_episodes(tmp_path / "env1", include_incomplete=True))
    assert all(e.complete for e in env0 + env1)
    # env0: episode 1 solved in 2 steps, autoreset, then one more step before close
    assert [e.outcome.steps for e in env0] == [2, 1]
    assert env0[0].outcome.success and env0[0].meta.seed == 10 and env0[0].meta.source == "scripted"
    assert [s.prompt for s in env0[0].steps] == ["p0-0", "p0-1"]
    assert env0[0].steps[0].observation["screenshot"] == "screenshots/step_00000.png"
    assert env0[1].outcome.reason == "abandoned"
    assert env1[0].outcome.truncated and env1[0].outcome.steps == 3 and env1[0].meta.seed == 20
    assert env1[0].steps[0].observation["screenshot"] is None


def test_episode_dirs_keeps_the_last_keep_dirs(tmp_path):
    """A long run's recorder lists its last ``keep_dirs`` episodes, not every one
    (a training run's millions would grow the process); every episode is on disk."""
    env = RecordEpisode(FakeBrowserEnv(), tmp_path, keep_dirs=2)
    written = []
    for seed in range(4):
        env.reset(seed=seed)
        env.step(CLICK_OK)
        written.append(env.last_episode_dir)
    env.close()
    assert list(env.episode_dirs) == written[-2:] and env.last_episode_dir == written[-1]
    assert [e.meta.seed for e in iter_episodes(tmp_path)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="keep_dirs must be >= 1 or None, got 0"):
        RecordEpisode(FakeBrowserEnv(), tmp_path, keep_dirs=0)
