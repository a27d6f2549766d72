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


@pytest.fixture
def two_envs(site_url):
    """Two envs with their own browsers, each on the form page."""
    envs = [BrowserEnv("open", modalities=TEXT_ONLY) for _ in range(2)]
    try:
        for env in envs:
            env.reset(seed=0, options={"url": site_url + "form.html"})
        yield envs
    finally:
        for env in envs:
            env.close()


def test_calls_overlap_while_each_keeps_its_own_order(two_envs):
    envs = two_envs
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


@pytest.mark.parametrize(  # ~11 s each; SameStep's own semantics: test_vector.py
    "mode", ["NextStep", pytest.param("SameStep", marks=pytest.mark.exhaustive)]
)
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


def _interrupt_main_after(seconds):
    """A real SIGINT to the main thread after ``seconds`` (it lands in the event
    loop that waits for the driver, as Ctrl+C does)."""
    import signal
    import threading

    main = threading.main_thread().ident
    timer = threading.Timer(seconds, signal.pthread_kill, (main, signal.SIGINT))
    timer.start()
    return timer


def test_an_interrupt_reaches_every_call_in_flight_and_none_resumes_later(two_envs, sigint_raises):
    # The calls parked in the driver used to be left there: each resumed
    # whenever the driver next answered it, in the middle of the caller's
    # next Playwright calls (closing the envs it was resetting), and failed
    # on a cancelled future.
    import time

    envs = two_envs
    log = []

    def work(name, env):
        try:
            env.page.wait_for_timeout(4000)
        except KeyboardInterrupt:
            log.append(f"{name} interrupted")
            raise
        log.append(f"{name} resumed")

    timer = _interrupt_main_after(0.3)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_concurrently([lambda: work("a", envs[0]), lambda: work("b", envs[1])])
    finally:
        timer.cancel()
    assert time.monotonic() - started < 3.0  # at once, not once the calls' waits end
    assert sorted(log) == ["a interrupted", "b interrupted"]
    past_the_waits_ms = (started + 5.0 - time.monotonic()) * 1000
    envs[0].page.wait_for_timeout(past_the_waits_ms)  # the driver has answered the calls
    assert sorted(log) == ["a interrupted", "b interrupted"]
    assert envs[1].page.evaluate("1 + 1") == 2  # the driver is still usable


class _SlowReset(gym.Wrapper):
    """A sub-env whose reset waits in the driver once ``slow`` is set, and logs;
    ``waiting`` is called as the wait starts."""

    slow = False
    waiting = staticmethod(lambda: None)

    def __init__(self, env, log):
        super().__init__(env)
        self.log = log

    def reset(self, **kwargs):
        out = self.env.reset(**kwargs)
        if _SlowReset.slow:
            _SlowReset.waiting()
            try:
                self.env.unwrapped.page.wait_for_timeout(10_000)
            except KeyboardInterrupt:
                self.log.append("interrupted")
                raise
            self.log.append("resumed")
        return out


def test_an_interrupted_concurrent_reset_closes_cleanly_and_records_nothing_torn(
    tmp_path, monkeypatch, sigint_raises
):
    import signal
    import threading

    import psutil

    from browser_env.episodes.loader import find_episode_dirs, load_episode
    from browser_env.vector import SharedBrowserVectorEnv
    from browser_env.wrappers import RecordEpisode

    log = []
    vec = SharedBrowserVectorEnv(
        3,
        env_id="browser_env/miniwob.click-button-v0",
        modalities=TEXT_ONLY,
        wrappers=[lambda env: _SlowReset(env, log), lambda env: RecordEpisode(env, tmp_path)],
    )
    try:
        vec.reset(seed=0)
        # Ctrl+C once all three resets wait in the driver (a fixed delay could
        # come while a loaded machine is still resetting the pages)
        arrived, all_waiting = [], threading.Event()

        def waiting():
            arrived.append(1)
            if len(arrived) == 3:
                all_waiting.set()

        main = threading.main_thread().ident
        sender = threading.Thread(
            target=lambda: all_waiting.wait(60) and signal.pthread_kill(main, signal.SIGINT),
            daemon=True,
        )
        monkeypatch.setattr(_SlowReset, "slow", True)
        monkeypatch.setattr(_SlowReset, "waiting", staticmethod(waiting))
        sender.start()
        with pytest.raises(KeyboardInterrupt):
            vec.reset(seed=10)
        assert log == ["interrupted"] * 3  # every sub-env's reset stopped there
    finally:
        vec.close()
    chromium = [p for p in psutil.Process().children(recursive=True) if _live_chromium(p)]
    assert chromium == []
    assert log == ["interrupted"] * 3
    assert not [t.name for t in threading.enumerate() if t.name.startswith("episode-")]
    episodes = [load_episode(d) for d in find_episode_dirs(tmp_path)]
    assert len(episodes) == 3 and all(e.complete for e in episodes)


def _live_chromium(proc) -> bool:
    """Whether ``proc`` is a running Chromium process; one that exits while we look
    (between listing the children and reading its name) is not."""
    import psutil

    from browser_env.browser import process_running

    try:
        return "chrom" in proc.name().lower() and process_running(proc)
    except psutil.Error:
        return False
