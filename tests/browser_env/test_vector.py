"""Shared-browser vector envs: isolation, a crashed context, autoreset, make_vec == separate envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import browser_env  # noqa: F401 - registers the ids
from browser_env.vector import SharedBrowser, SharedBrowserVectorEnv

pytestmark = pytest.mark.browser

TEXT_ONLY = ("elements", "text")
CLICK = {"action": "CLICK", "element_id": "e1"}  # click-test's button: ends the episode
WAIT = {"action": "WAIT", "value": "0"}


def _page(vec, i):
    return vec.envs[i].unwrapped.page


def test_make_vec_gives_isolated_contexts_of_one_browser():
    vec = gym.make_vec("browser_env/miniwob.click-test-v0", num_envs=2, modalities=TEXT_ONLY)
    try:
        assert isinstance(vec, SharedBrowserVectorEnv)
        assert vec.spec.id == "browser_env/miniwob.click-test-v0"
        vec.reset(seed=0)
        a, b = _page(vec, 0), _page(vec, 1)
        assert a.context.browser is b.context.browser and a.context is not b.context
        assert a.url.split("?")[0] == b.url.split("?")[0]  # same origin, still isolated
        a.evaluate("() => { localStorage.setItem('k', 'v'); document.cookie = 'c=1; path=/'; }")
        assert a.evaluate("() => localStorage.getItem('k')") == "v"
        assert b.evaluate("() => localStorage.getItem('k')") is None
        assert "c=1" in a.evaluate("() => document.cookie")
        assert "c=1" not in b.evaluate("() => document.cookie")
        assert b.context.cookies() == [] and a.context.cookies() != []
    finally:
        vec.close()
    assert vec.browser.closed and a.context.browser is not None
    assert not a.context.browser.is_connected()


def test_a_sub_env_whose_close_raises_does_not_keep_the_others_open():
    vec = gym.make_vec("browser_env/miniwob.click-test-v0", num_envs=3, modalities=TEXT_ONLY)
    vec.reset(seed=0)
    closed = []
    for i, env in enumerate(vec.envs):
        close = env.close

        def closing(i=i, close=close):
            close()
            closed.append(i)
            if i == 0:
                raise OSError("a recorder's write failed")

        env.close = closing
    with pytest.raises(OSError, match="write failed"):
        vec.close()
    assert closed == [2, 1, 0] and vec.browser.closed  # every one (last first), then the browser


def test_a_crashed_context_does_not_end_the_others():
    vec = gym.make_vec("browser_env/miniwob.click-test-v0", num_envs=2, modalities=TEXT_ONLY)
    try:
        obs, _ = vec.reset(seed=[3, 4])
        crashed = _page(vec, 0)
        with pytest.raises(Exception, match="ERR_ABORTED"):  # the renderer dies mid-navigation
            crashed.goto("chrome://crash", timeout=5000)
        obs, reward, terminated, _, infos = vec.step((WAIT, CLICK))
        assert "crashed" in obs["last_action_error"][0]  # the crashed one says so ...
        assert reward[1] == 1.0 and terminated[1]  # ... and the other played on
        assert vec.browser().is_connected() and vec.browser.relaunches == 0
        obs, _ = vec.reset(seed=[3, 4])  # the crashed env plays again on a fresh page
        obs, reward, terminated, _, _ = vec.step((CLICK, CLICK))
        assert reward.tolist() == [1.0, 1.0] and terminated.all()
        assert _page(vec, 0) is not crashed
    finally:
        vec.close()


def _play_separately(env_id, seeds, actions, **kwargs):
    """What N separate ``gymnasium.make`` envs give, with NEXT_STEP autoreset by hand."""
    out = []
    for i, seed in enumerate(seeds):
        env = gym.make(env_id, **kwargs)
        try:
            trace = [env.reset(seed=seed)[0]]
            done = False
            for step in actions:
                if done:
                    obs, _ = env.reset()
                    trace.append((obs, 0.0, False, False))
                    done = False
                    continue
                obs, reward, terminated, truncated, _ = env.step(step[i])
                trace.append((obs, reward, terminated, truncated))
                done = terminated or truncated
        finally:
            env.close()
        out.append(trace)
    return out


def _same_obs(a, b):
    keys = ("goal", "url", "text", "last_action_error")
    return {k: a[k] for k in keys} == {k: b[k] for k in keys} and [
        (e["element_id"], e["text"], e["tag"]) for e in a["elements"]
    ] == [(e["element_id"], e["text"], e["tag"]) for e in b["elements"]]


def test_make_vec_matches_separate_envs_with_next_step_autoreset():
    env_id = "browser_env/miniwob.click-button-v0"
    seeds = [5, 6]
    # env 0 ends at step 1 (FINISH) and is autoreset at step 2; env 1 clicks around
    actions = [
        ({"action": "FINISH", "value": ""}, CLICK),
        (WAIT, {"action": "CLICK", "element_id": "e2"}),
        (CLICK, WAIT),
    ]
    expected = _play_separately(env_id, seeds, actions, modalities=TEXT_ONLY)
    vec = gym.make_vec(env_id, num_envs=2, modalities=TEXT_ONLY, autoreset_mode="NextStep")
    try:
        assert vec.autoreset_mode is gym.vector.AutoresetMode.NEXT_STEP
        obs, _ = vec.reset(seed=seeds)
        for i in range(2):
            assert _same_obs(_unbatch(obs, i), expected[i][0])
        for t, step in enumerate(actions, start=1):
            obs, reward, terminated, truncated, _ = vec.step(step)
            for i in range(2):
                want = expected[i][t]
                assert _same_obs(_unbatch(obs, i), want[0]), (t, i)
                assert (reward[i], terminated[i], truncated[i]) == tuple(want[1:]), (t, i)
        assert vec.get_attr("goal") == tuple(
            o["goal"] for o in (expected[0][-1][0], expected[1][-1][0])
        )
        assert vec.call("observe")[1]["url"] == expected[1][-1][0]["url"]
    finally:
        vec.close()


def _unbatch(obs, i):
    return {k: v[i] for k, v in obs.items()}


def test_same_step_autoreset_render_and_an_external_browser():
    with SharedBrowser() as shared:
        vec = SharedBrowserVectorEnv(
            2,
            task="miniwob.click-test",
            browser=shared,
            render_mode="rgb_array",
            autoreset_mode="SameStep",
        )
        try:
            vec.reset(seed=[0, 1])
            obs, reward, terminated, _, infos = vec.step((CLICK, WAIT))
            assert terminated.tolist() == [True, False] and reward[0] == 1.0
            assert infos["_final_obs"].tolist() == [True, False]
            assert infos["final_info"]["success"][0]
            assert obs["last_action_error"][0] == ""  # the new episode's first observation
            frames = vec.render()
            assert len(frames) == 2 and all(f.dtype == np.uint8 and f.ndim == 3 for f in frames)
        finally:
            vec.close()
        assert (
            shared.browser is not None and shared.browser.is_connected()
        )  # not the vec's to close


@pytest.mark.parametrize(  # ~8 s each; a dead browser replaced: test_runners.py's [browser]
    "victim", [pytest.param("browser", marks=pytest.mark.exhaustive), "driver"]
)
def test_a_browser_or_driver_that_died_while_idle_is_replaced_once_on_reset(victim):
    import psutil

    vec = gym.make_vec("browser_env/miniwob.click-test-v0", num_envs=3, modalities=TEXT_ONLY)
    try:
        vec.reset(seed=0)
        old = _page(vec, 0).context.browser
        if victim == "browser":
            pid = vec.browser._pid
            victim_proc = psutil.Process(pid)
        else:
            from browser_env.browser import driver_processes

            [victim_proc] = driver_processes()
        victim_proc.kill()
        victim_proc.wait(10)
        if victim == "browser":  # a step cannot go on without it: the episode is cut short
            _, _, _, truncated, infos = vec.step((WAIT, WAIT, WAIT))
            assert truncated.all()
            assert "the shared browser died" in infos["truncated_reason"][0]
        obs, _ = vec.reset(seed=0)  # the sub-envs reset concurrently on one new browser
        pages = [_page(vec, i) for i in range(3)]
        assert len({id(p.context.browser) for p in pages}) == 1
        assert pages[0].context.browser is not old and vec.browser.relaunches == 1
        _, reward, terminated, _, _ = vec.step((CLICK, CLICK, CLICK))
        assert reward.tolist() == [1.0, 1.0, 1.0] and terminated.all()
    finally:
        vec.close()


class _Steps(gym.Wrapper):
    """Counts the steps its sub-env took."""

    steps = 0

    def step(self, action):
        out = self.env.step(action)
        self.steps += 1
        return out


class _FailsWhenChosen(gym.Wrapper):
    """Raises in step when its sub-env is ``chosen`` (a recorder whose write failed)."""

    chosen = None

    def step(self, action):
        if self.env.unwrapped is _FailsWhenChosen.chosen:
            raise OSError("a recorder's write failed")
        return self.env.step(action)


@pytest.mark.parametrize("concurrent", [True, False])
def test_a_step_that_raises_in_one_sub_env_leaves_the_documented_sub_envs_stepped(concurrent):
    """The error propagates; concurrently every other sub-env has stepped (its
    call was in flight), one after another only those before it (SyncVectorEnv)."""
    vec = SharedBrowserVectorEnv(
        3,
        task="miniwob.click-test",
        modalities=TEXT_ONLY,
        wrappers=[_Steps, _FailsWhenChosen],
        concurrent=concurrent,
    )
    try:
        vec.reset(seed=0)
        _FailsWhenChosen.chosen = vec.envs[1].unwrapped
        with pytest.raises(OSError, match="write failed"):
            vec.step((WAIT, WAIT, WAIT))
        assert [env.env.steps for env in vec.envs] == ([1, 0, 1] if concurrent else [1, 0, 0])
        _FailsWhenChosen.chosen = None
        vec.reset(seed=0)
        _, reward, terminated, _, _ = vec.step((CLICK, CLICK, CLICK))
        assert reward.tolist() == [1.0, 1.0, 1.0] and terminated.all()
    finally:
        _FailsWhenChosen.chosen = None
        vec.close()


class _KillsTheBrowserOnReset(gym.Wrapper):
    """When ``armed``, kills the shared browser's main process as its reset begins."""

    armed = False

    def reset(self, **kwargs):
        if _KillsTheBrowserOnReset.armed:
            import psutil

            _KillsTheBrowserOnReset.armed = False
            victim = psutil.Process(self.env.unwrapped._shared_browser._pid)
            victim.kill()
            victim.wait(10)
        return self.env.reset(**kwargs)


def test_a_browser_that_dies_during_a_concurrent_reset_is_relaunched_once_for_all():
    """The first sub-env to find it dead relaunches it; the others, asking for it
    while that launch is in flight, wait for it (not an error, not a second one)."""
    vec = SharedBrowserVectorEnv(
        3, task="miniwob.click-test", modalities=TEXT_ONLY, wrappers=[_KillsTheBrowserOnReset]
    )
    try:
        vec.reset(seed=0)
        old = _page(vec, 0).context.browser
        _KillsTheBrowserOnReset.armed = True  # sub-env 0's reset kills it, mid-round
        obs, _ = vec.reset(seed=0)
        pages = [_page(vec, i) for i in range(3)]
        assert len({id(p.context.browser) for p in pages}) == 1
        assert pages[0].context.browser is not old and vec.browser.relaunches == 1
        assert list(obs["last_action_error"]) == ["", "", ""]
        _, reward, terminated, _, _ = vec.step((CLICK, CLICK, CLICK))
        assert reward.tolist() == [1.0, 1.0, 1.0] and terminated.all()
    finally:
        _KillsTheBrowserOnReset.armed = False
        vec.close()


def test_launch_settings_with_a_given_browser_are_refused_not_dropped():
    """browser= is launched by its owner: launch settings beside it would be
    silently ignored (a user-agent or proxy switch not applied), so they are
    refused; without browser= they are the env's own browser's."""
    from browser_env.browser import BrowserConfig
    from browser_env.vector import launch_config

    shared = SharedBrowser()  # launches on first use only: never here
    with pytest.raises(ValueError, match=r"^extra_args: how to launch a browser, but browser="):
        SharedBrowserVectorEnv(2, task="click-test", browser=shared, extra_args=("--lang=de",))
    shared.close()
    config, rest = launch_config(
        {"extra_args": ["--lang=de"], "render_mode": "human", "modalities": ("text",)}
    )
    assert config == BrowserConfig(headless=False, extra_args=("--lang=de",))
    assert rest == {"render_mode": "human", "modalities": ("text",)}
