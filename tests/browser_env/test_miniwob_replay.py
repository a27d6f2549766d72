"""The same seed and the same actions give the same observations, whatever came
before: after another episode on the same page and in a fresh env.

Stronger than ``check_env``'s determinism checks (one sampled action, which is
mostly not a valid one): each episode here clicks seeded random visible
elements, and every observation of it (screenshot pixels, elements with their
boxes and flags, text) is compared. Ids in ``registration.NONDETERMINISTIC``
are left out; this test is how the "(ours)" entries there were found.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from browser_env.registration import NONDETERMINISTIC, env_id
from browser_env.tasks.miniwob import miniwob_task_names

pytestmark = pytest.mark.browser

CLICKS = 4


def _snapshot(obs):
    elements = [
        {k: (v.tolist() if k == "bbox" else v) for k, v in e.items()} for e in obs["elements"]
    ]
    return obs["screenshot"].copy(), elements, obs["text"]


def _episode(env, seed, clicks_seed):
    """The observations of an episode of seeded random clicks on visible elements."""
    obs, _ = env.reset(seed=seed)
    seen = [_snapshot(obs)]
    rng = np.random.default_rng(clicks_seed)
    for _ in range(CLICKS):
        ids = [e["element_id"] for e in obs["elements"] if e["visible"]]
        if not ids:
            break
        pick = ids[int(rng.integers(len(ids)))]
        obs, _, terminated, truncated, _ = env.step({"action": "CLICK", "element_id": pick})
        seen.append(_snapshot(obs))
        if terminated or truncated:
            break
    return seen


def _difference(expected, got):
    """Where two episodes' observations first differ, or None."""
    if len(expected) != len(got):
        return f"{len(expected)} observations vs {len(got)}"
    for i, ((shot_a, els_a, text_a), (shot_b, els_b, text_b)) in enumerate(
        zip(expected, got, strict=True)
    ):
        pixels = int((shot_a != shot_b).any(-1).sum())
        if pixels or els_a != els_b or text_a != text_b:
            return f"observation {i}: {pixels} pixels, elements equal {els_a == els_b}, text equal {text_a == text_b}"
    return None


@pytest.mark.slow
@pytest.mark.exhaustive
@pytest.mark.parametrize("task", [t for t in miniwob_task_names() if t not in NONDETERMINISTIC])
def test_seeded_clicks_replay_identically(task):
    env = gym.make(env_id(task), disable_env_checker=True)
    try:
        first = _episode(env, seed=100, clicks_seed=0)
        _episode(env, seed=150, clicks_seed=50)  # another history on the same page
        again = _episode(env, seed=100, clicks_seed=0)
    finally:
        env.close()
    env = gym.make(env_id(task), disable_env_checker=True)
    try:
        fresh = _episode(env, seed=100, clicks_seed=0)
    finally:
        env.close()
    assert _difference(first, again) is None, f"after another episode: {_difference(first, again)}"
    assert _difference(first, fresh) is None, f"in a fresh env: {_difference(first, fresh)}"


@pytest.mark.slow
@pytest.mark.parametrize("reload_each_episode", [None, False])
def test_a_task_whose_widgets_keep_state_reloads_its_page(reload_each_episode):
    # click-menu-2's menu keeps its highlighted item across episodes on a kept
    # page (miniwob.RELOAD_EACH_EPISODE): by default its page is loaded afresh
    # at each reset and the replay is identical; kept, the same clicks differ
    env = gym.make(
        env_id("click-menu-2"),
        disable_env_checker=True,
        task_kwargs={"reload_each_episode": reload_each_episode},
    )
    try:
        assert env.unwrapped.task.reload_each_episode is (reload_each_episode is None)
        first = _episode(env, seed=100, clicks_seed=0)
        _episode(env, seed=150, clicks_seed=50)
        again = _episode(env, seed=100, clicks_seed=0)
    finally:
        env.close()
    if reload_each_episode is None:
        assert _difference(first, again) is None
    else:
        assert _difference(first, again) is not None


def test_a_replay_that_differs_is_caught():
    # the comparison itself: a flipped pixel, a moved box, other text each count
    shot = np.zeros((4, 4, 3), dtype=np.uint8)
    base = [(shot, [{"element_id": "e1", "bbox": [0.0, 0.0, 1.0, 1.0]}], "a")]
    assert _difference(base, [(shot.copy(), [dict(base[0][1][0])], "a")]) is None
    flipped = shot.copy()
    flipped[1, 2, 0] = 1
    assert "1 pixels" in _difference(base, [(flipped, base[0][1], "a")])
    moved = [{"element_id": "e1", "bbox": [0.0, 1.0, 1.0, 1.0]}]
    assert "elements equal False" in _difference(base, [(shot, moved, "a")])
    assert "text equal False" in _difference(base, [(shot, base[0][1], "b")])
    assert "observations" in _difference(base, base * 2)
