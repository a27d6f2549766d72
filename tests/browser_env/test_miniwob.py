"""MiniWoB++ through gymnasium.make: registration, seeding, rewards, the timer, check_env."""

from __future__ import annotations

import contextlib
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import browser_env
from browser_env.registration import env_id
from browser_env.tasks.miniwob import miniwob_task_names

pytestmark = pytest.mark.browser


def click_target_button(env, obs):
    target = obs["goal"].split('"')[1]
    button = next(e for e in obs["elements"] if e["tag"] == "button" and e["text"] == target)
    return env.step({"action": "CLICK", "element_id": button["element_id"]})


@contextlib.contextmanager
def opened(task, **task_kwargs):
    env = gym.make(f"browser_env/miniwob.{task}-v0", task_kwargs=task_kwargs)
    try:
        yield env
    finally:
        env.close()


def test_tasks_that_reload_each_episode_are_registered_deterministic():
    from browser_env.registration import NONDETERMINISTIC
    from browser_env.tasks.miniwob import RELOAD_EACH_EPISODE, MiniWoBTask

    assert set(RELOAD_EACH_EPISODE) <= set(miniwob_task_names())
    for name in RELOAD_EACH_EPISODE:
        assert name not in NONDETERMINISTIC
        assert not gym.spec(env_id(name)).nondeterministic
        assert MiniWoBTask(name).reload_each_episode
        assert not MiniWoBTask(name, reload_each_episode=False).reload_each_episode
    assert not MiniWoBTask("click-test").reload_each_episode
    assert MiniWoBTask("click-test", reload_each_episode=True).reload_each_episode


def test_every_task_page_is_registered():
    names = miniwob_task_names()
    assert len(names) >= 120 and "click-test" in names and "flight.AA" in names
    for name in names:
        assert env_id(name) in gym.registry
    assert "browser_env/open-v0" in gym.registry


@pytest.fixture(scope="module")
def click_button():
    env = gym.make("browser_env/miniwob.click-button-v0")
    yield env
    env.close()


def test_same_seed_same_instance_and_elements(click_button):
    first, _ = click_button.reset(seed=11)
    click_button.reset(seed=12)
    again, info = click_button.reset(seed=11)
    assert info["seed"] == 11
    assert first["goal"] == again["goal"] and first["text"] == again["text"]

    def strip(obs):
        return [
            {k: (v.tolist() if k == "bbox" else v) for k, v in e.items()} for e in obs["elements"]
        ]

    assert strip(first) == strip(again)
    np.testing.assert_array_equal(first["screenshot"], again["screenshot"])
    goals = {click_button.reset(seed=s)[0]["goal"] for s in range(8)}
    assert len(goals) > 1  # different seeds give different instances


def test_a_hover_left_by_the_last_episode_does_not_show_after_reset():
    # click-menu-2's "Menu" button is highlighted while the mouse is over it:
    # the page is kept across resets, the mouse position with it unless moved off
    # (kept here: by default this task's page is loaded afresh, RELOAD_EACH_EPISODE)
    with opened("click-menu-2", reload_each_episode=False) as env:
        first, _ = env.reset(seed=0)
        menu = next(e for e in first["elements"] if e["text"] == "Menu")
        hovered, *_ = env.step({"action": "CLICK", "element_id": menu["element_id"]})
        assert (hovered["screenshot"] != first["screenshot"]).any()
        again, _ = env.reset(seed=0)
        np.testing.assert_array_equal(first["screenshot"], again["screenshot"])


def test_reset_waits_for_the_images_of_the_new_instance():
    # seed 0's query is text only and the menu's icons are hidden, so the jQuery UI
    # icon sprite is first fetched for seed 123's query, here over a slow network
    # (on a kept page: see the test above); a generous limit for the images, as
    # the emulated latency on a loaded machine can take longer than the 2 s default
    with opened("click-menu-2", reload_each_episode=False, ready_timeout_ms=10_000) as env:
        text_only, _ = env.reset(seed=0)
        assert "icon" not in text_only["goal"]
        cdp = env.unwrapped.page.context.new_cdp_session(env.unwrapped.page)
        cdp.send("Network.enable")
        slow = {"offline": False, "latency": 400, "downloadThroughput": -1, "uploadThroughput": -1}
        cdp.send("Network.emulateNetworkConditions", slow)
        with_icon, _ = env.reset(seed=123)
        cdp.send("Network.emulateNetworkConditions", {**slow, "latency": 0})
        assert "icon" in with_icon["goal"]
        settled, _ = env.reset(seed=123)
        np.testing.assert_array_equal(with_icon["screenshot"], settled["screenshot"])


def test_a_field_focused_last_episode_is_not_focused_after_reset():
    # the page is kept across resets: a field the last episode clicked kept its focus
    with opened("enter-text") as env:
        first, _ = env.reset(seed=0)
        field = next(e for e in first["elements"] if e["tag"] == "input")
        clicked, *_ = env.step({"action": "CLICK", "element_id": field["element_id"]})
        assert any(e["focused"] for e in clicked["elements"])
        again, _ = env.reset(seed=0)
    assert not any(e["focused"] for e in first["elements"])
    assert not any(e["focused"] for e in again["elements"])
    np.testing.assert_array_equal(first["screenshot"], again["screenshot"])


def test_the_first_episode_lists_elements_drawn_only_by_a_css_image():
    # social-media's icons are `content: url(...)` images: until one has loaded its
    # element has no size and was not listed (a first reset showed 0 elements, not 20)
    with opened("social-media") as env:
        first, _ = env.reset(seed=100)
        env.reset(seed=150)
        again, _ = env.reset(seed=100)
    assert len(first["elements"]) == 20
    assert [(e["element_id"], e["bbox"].tolist()) for e in first["elements"]] == [
        (e["element_id"], e["bbox"].tolist()) for e in again["elements"]
    ]
    np.testing.assert_array_equal(first["screenshot"], again["screenshot"])


def test_the_first_episode_waits_for_the_images_the_instance_makes():
    # order-food's rows hold <img> elements the instance creates (no currentSrc yet
    # when the setup looked); a row takes its image's height once it has loaded, so
    # a first episode listed every row below the first 9 px higher than later ones
    with opened("order-food") as env:
        first, _ = env.reset(seed=100)
        again, _ = env.reset(seed=100)
    boxes = [(e["element_id"], e["bbox"].tolist()) for e in first["elements"]]
    assert len(boxes) > 20
    assert boxes == [(e["element_id"], e["bbox"].tolist()) for e in again["elements"]]


def test_a_page_drawn_again_after_other_instances_looks_the_same():
    # jQuery UI tabs: with Chromium's partial raster, each redraw of the widget's
    # rounded corners came out one level off (6, then 11 pixels); BASE_ARGS turns it off
    with opened("click-tab") as env:
        shots = [env.reset(seed=s)[0]["screenshot"].copy() for s in (123, 5, 123, 7, 123)]
    np.testing.assert_array_equal(shots[0], shots[2])
    np.testing.assert_array_equal(shots[0], shots[4])


def test_unseeded_resets_follow_the_env_rng(click_button):
    click_button.reset(seed=5)
    a = [click_button.reset()[1]["seed"] for _ in range(3)]
    click_button.reset(seed=5)
    b = [click_button.reset()[1]["seed"] for _ in range(3)]
    assert a == b and len(set(a)) == 3


def test_success_and_failure_rewards(click_button):
    obs, _ = click_button.reset(seed=3)
    obs, reward, terminated, truncated, info = click_target_button(click_button, obs)
    assert (reward, terminated, truncated, info["success"], info["raw_reward"]) == (
        1.0,
        True,
        False,
        True,
        1.0,
    )
    obs, _ = click_button.reset(seed=3)
    target = obs["goal"].split('"')[1]
    wrong = next((e for e in obs["elements"] if e["tag"] == "button" and e["text"] != target), None)
    if wrong is not None:
        _, reward, terminated, _, info = click_button.step(
            {"action": "CLICK", "element_id": wrong["element_id"]}
        )
        assert (reward, terminated, info["success"]) == (-1.0, True, False)


@pytest.mark.parametrize("raw", ["null", "NaN"])
def test_an_episode_the_page_ended_without_a_reward_is_a_failure(click_button, raw):
    # a page script that ends the episode but leaves its rewards unset (null, or
    # NaN from a bad computation): judge used to raise (float(None)) out of step
    click_button.reset(seed=3)
    click_button.unwrapped.page.evaluate(
        f"() => {{ WOB_DONE_GLOBAL = true; WOB_REWARD_GLOBAL = {raw};"
        f" WOB_RAW_REWARD_GLOBAL = {raw}; }}"
    )
    _, reward, terminated, truncated, info = click_button.step({"action": "WAIT", "value": "0"})
    assert (reward, terminated, truncated) == (0.0, True, False)
    assert (info["success"], info["raw_reward"]) == (False, 0.0)


def test_observation_is_scoped_to_the_task_area(click_button):
    obs, _ = click_button.reset(seed=0)
    assert obs["screenshot"].shape == (210, 160, 3)
    assert "Episodes done" not in obs["text"] and "START" not in obs["text"]
    assert obs["goal"] in obs["text"]


@pytest.mark.parametrize(("reward_type", "expected"), [("binary", 1.0), ("time_decayed", None)])
def test_reward_types(reward_type, expected):
    env = gym.make(
        "browser_env/miniwob.click-button-v0",
        task_kwargs={"reward_type": reward_type},
        modalities=("elements",),
    )
    try:
        obs, _ = env.reset(seed=3)
        _, reward, terminated, _, info = click_target_button(env, obs)
        assert terminated and info["raw_reward"] == 1.0
        if expected is None:
            assert 0.0 < reward < 1.0  # scaled by the wall-clock time the page measured
        else:
            assert reward == expected
    finally:
        env.close()


def test_timer_is_off_by_default_and_can_be_turned_on():
    off = gym.make("browser_env/miniwob.click-test-v0", modalities=("text",))
    on = gym.make(
        "browser_env/miniwob.click-test-v0",
        modalities=("text",),
        task_kwargs={"episode_timer": True, "episode_max_time_ms": 300},
    )
    try:
        off.reset(seed=0)
        on.reset(seed=0)
        _, reward_off, done_off, _, _ = off.step({"action": "WAIT", "value": "500"})
        _, reward_on, done_on, _, info = on.step({"action": "WAIT", "value": "500"})
        assert (reward_off, done_off) == (0.0, False)
        assert (reward_on, done_on, info["reason"]) == (-1.0, True, "timed out")
    finally:
        off.close()
        on.close()


def test_step_limit_truncates():
    env = gym.make("browser_env/miniwob.click-test-v0", max_episode_steps=2, modalities=("text",))
    try:
        env.reset(seed=0)
        assert env.step({"action": "WAIT", "value": "0"})[3] is False
        _, _, terminated, truncated, _ = env.step({"action": "WAIT", "value": "0"})
        assert (terminated, truncated) == (False, True)
    finally:
        env.close()


def test_text_only_env_has_no_screenshot_in_space_or_observation():
    env = gym.make("browser_env/miniwob.click-test-v0", modalities=("elements", "text"))
    try:
        obs, info = env.reset(seed=0)
        assert "screenshot" not in obs and "screenshot" not in env.observation_space.spaces
        assert "screenshot" not in info["timings"]
    finally:
        env.close()


def test_render_rgb_array_returns_the_screenshot():
    env = gym.make("browser_env/miniwob.click-test-v0", render_mode="rgb_array")
    try:
        obs, _ = env.reset(seed=0)
        frame = env.render()
        assert frame.shape == (210, 160, 3) and frame.dtype == np.uint8 and frame.std() > 0
    finally:
        env.close()


def test_flight_task_loads_over_http():
    env = gym.make("browser_env/miniwob.flight.AA-v0", modalities=("elements", "text"))
    try:
        obs, _ = env.reset(seed=0)
        assert obs["url"].startswith("http://127.0.0.1:") and obs["goal"]
        assert len(obs["elements"]) > 3
        env.step({"action": "FINISH"})  # an episode ends: the harness shows its reward
        again, _ = env.reset(seed=0)
    finally:
        env.close()
    # MiniWoB++'s harness (its reward display: last reward, episodes done) is not
    # part of the observation, on the flight pages as on the others
    for seen in (obs, again):
        assert "Last reward" not in seen["text"] and "Episodes done" not in seen["text"]
    assert again["text"] == obs["text"]


def _check(env_id: str) -> None:
    env = gym.make(env_id, disable_env_checker=True).unwrapped
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(env)
    finally:
        env.close()


@pytest.mark.parametrize(  # each id: test_check_env_every_registered_id (exhaustive)
    "env_id",
    [
        "browser_env/miniwob.click-button-v0",
        pytest.param("browser_env/open-v0", marks=pytest.mark.exhaustive),  # ~12 s
    ],
)
def test_check_env_passes_without_warning_filters(env_id):
    _check(env_id)


@pytest.mark.slow
@pytest.mark.exhaustive
@pytest.mark.parametrize(  # the bundled sites' ids: test_sites.py (exhaustive tier)
    "env_id",
    sorted(i for i in gym.registry if i.startswith("browser_env/") and "/sites." not in i),
)
def test_check_env_every_registered_id(env_id):
    _check(
        env_id
    )  # ids in registration.NONDETERMINISTIC are flagged so; check_env honours the flag


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, browser_env; print(any(m.startswith(('playwright', 'torch')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert browser_env.Action is not None
