"""run_concurrently: calls on one thread's Playwright overlap, keep their order, and fail alone."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import browser_env  # noqa: F401 - registers the ids
from browser_env.concurrent import run_concurrently
from browser_env.env import BrowserEnv

pytestmark = pytest.mark.browser

TEXT_ONLY = ("elements", "text")


def test_without_a_driver_the_calls_run_in_order():
    log = []
    assert run_concurrently([lambda i=i: log.append(i) or i * i for i in range(3)]) == [0, 1, 4]
    assert log == [0, 1, 2]


def test_calls_overlap_while_each_keeps_its_own_order(site_url):
    envs = [BrowserEnv("open", modalities=TEXT_ONLY) for _ in range(2)]
    try:
        for env in envs:
            env.reset(seed=0, options={"url": site_url + "form.html"})
        log = []

        def work(name, env):
            for k in range(2):
                log.append(f"{name}{k}")
                env.page.wait_for_timeout(200)  # blocks in Playwright: the other one runs
            return name

        assert run_concurrently([lambda: work("a", envs[0]), lambda: work("b", envs[1])]) == [
            "a",
            "b",
        ]
        # Interleaved: b started while a waited; sequentially it would be a0 a1 b0 b1.
        assert log.index("b0") < log.index("a1")
        assert log.index("a0") < log.index("a1") and log.index("b0") < log.index("b1")
    finally:
        for env in envs:
            env.close()


def test_one_failing_call_lets_the_others_finish_then_raises(site_url):
    env = BrowserEnv("open", modalities=TEXT_ONLY)
    try:
        env.reset(seed=0, options={"url": site_url + "form.html"})
        finished = []

        def fails():
            env.page.wait_for_timeout(50)
            raise ValueError("boom")

        def succeeds():
            env.page.wait_for_timeout(150)
            finished.append(True)
            return env.page.title()

        with pytest.raises(ValueError, match="boom"):
            run_concurrently([fails, succeeds])
        assert finished == [True]
        assert env.page.evaluate("1 + 1") == 2  # the driver is still usable
    finally:
        env.close()


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_concurrent_and_sequential_vector_steps_agree(mode):
    env_id = "browser_env/miniwob.click-button-v0"
    finish, click = {"action": "FINISH", "value": ""}, {"action": "CLICK", "element_id": "e1"}
    wait = {"action": "WAIT", "value": "0"}
    actions = [(finish, click, wait), (wait, wait, click), (click, wait, finish)]
    traces = []
    for concurrent in (True, False):
        vec = gym.make_vec(
            env_id, num_envs=3, modalities=TEXT_ONLY, autoreset_mode=mode, concurrent=concurrent
        )
        try:
            obs, _ = vec.reset(seed=[7, 8, 9])
            trace = [(list(obs["goal"]), list(obs["text"]))]
            for step in actions:
                obs, reward, terminated, truncated, infos = vec.step(step)
                trace.append(
                    (
                        list(obs["goal"]),
                        list(obs["text"]),
                        reward.tolist(),
                        terminated.tolist(),
                        truncated.tolist(),
                        sorted(k for k in infos if not k.startswith("_")),
                    )
                )
            obs, _ = vec.reset(
                seed=[1, 2, 3], options={"reset_mask": np.array([True, False, True])}
            )
            trace.append((list(obs["goal"]),))
        finally:
            vec.close()
        traces.append(trace)
    assert traces[0] == traces[1]
    assert traces[0][1][3][0] is True  # env 0 ended on FINISH: the trace has an episode end


def test_a_latch_parks_a_call_until_another_opens_it(site_url):
    from browser_env.concurrent import Latch

    with pytest.raises(RuntimeError, match="event loop"):
        Latch(object()).wait()  # no driver's loop: nothing could open it meanwhile
    env = BrowserEnv("open", modalities=TEXT_ONLY)
    try:
        env.reset(seed=0, options={"url": site_url + "form.html"})
        latch, log = Latch(), []

        def opens():
            env.page.wait_for_timeout(200)  # the waiting call is parked meanwhile
            log.append("opened")
            latch.open()

        def waits(name):
            latch.wait()
            log.append(name)

        run_concurrently([lambda: waits("a"), opens, lambda: waits("b")])
        assert log == ["opened", "a", "b"]
        latch.wait()  # open: returns at once
    finally:
        env.close()
