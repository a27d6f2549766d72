"""runner=ray (actors owning one env, or M contexts of one browser) and
RayVectorEnv on an embedded local Ray (one cluster for the module)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

import browser_env  # noqa: F401 - registers the ids
from agents.experts.expert import ScriptedExpert
from agents.runners import Job, RolloutSpec, run_rollouts

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SPEC = RolloutSpec(env_kwargs={"modalities": ("elements", "text")}, max_steps=5)
JOBS = [
    Job(f"browser_env/miniwob.{task}-v0", seed)
    for task in ("click-button", "click-test")
    for seed in (1, 0)
]


@pytest.fixture(scope="module")
def ray_cluster():
    from browser_env.ray_local import init_ray, shutdown_ray

    # the same cluster on a machine with a GPU; its own short temp dir under /tmp
    started = init_ray(num_cpus=2, num_gpus=0)
    yield
    if started:
        shutdown_ray()


def test_embedded_ray_listens_on_loopback_only(ray_cluster):
    import psutil
    import ray

    from browser_env.policy import is_loopback
    from browser_env.ray_local import processes_using

    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.2")
    if os.environ.get("RAY_ADDRESS"):
        pytest.skip("RAY_ADDRESS is set: the tests joined that cluster, not an embedded Ray")
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    temp_dir = ray._private.worker._global_node.get_temp_dir_path()
    procs = [psutil.Process(), *processes_using(temp_dir)]
    listening = {
        (proc.pid, conn.laddr.ip, conn.laddr.port)
        for proc in procs
        for conn in _connections(proc)
        if conn.status == psutil.CONN_LISTEN
    }
    assert len(listening) >= 3, listening  # GCS, raylet, this driver's core worker at least
    assert all(is_loopback(ip) for _, ip, _ in listening), listening


def _expert():
    return ScriptedExpert()


def _paths(obs):
    """The pages' paths: each process serves MiniWoB++ from a port of its own."""
    from urllib.parse import urlparse

    return tuple(urlparse(url).path for url in obs["url"])


def _connections(proc):
    """``proc``'s inet connections; none once it has exited (an idle Ray worker may
    exit between the listing and this read)."""
    import psutil

    try:
        return proc.net_connections(kind="inet")
    except psutil.NoSuchProcess:
        return []


def _gone(pids, within_s=20.0):
    """Whether every pid has exited (or is a zombie) within ``within_s``; a process
    may exit between any two looks at it, which counts as gone."""
    from browser_env.browser import process_running

    end = time.monotonic() + within_s
    while time.monotonic() < end:
        alive = [p for p in pids if process_running(p)]
        if not alive:
            return True
        time.sleep(0.5)
    return False


def test_ray_runner_table_equals_local_and_streams(ray_cluster):
    from benchmarks.report import summarize

    local = run_rollouts(JOBS, SPEC, agent=_expert(), runner="local")
    seen = []
    # a job whose reset raises shares an actor's call with a good one: it alone is an error
    bad = Job("browser_env/miniwob.click-test-v0", 5, options={"url": "file:///etc/passwd"})
    remote = run_rollouts(
        [bad, *JOBS],  # jobs keep their order within an env id: bad and click-test seed 1
        SPEC,
        make_agent=ScriptedExpert,  # an importable factory: actors unpickle it by reference
        runner="ray",
        workers=2,
        envs_per_worker=2,  # each actor: 2 contexts of one browser, a batched policy
        on_result=seen.append,
    )
    [error] = [r for r in remote if r.status == "error"]
    assert (error.seed, error.error.split(":")[0]) == (5, "ValueError")
    remote = [r for r in remote if r is not error]
    key = [(r.env_id, r.seed, r.success, r.steps, r.actions) for r in local]
    assert [(r.env_id, r.seed, r.success, r.steps, r.actions) for r in remote] == key
    rates = [(row["env_id"], row["success_rate"]) for row in summarize(local)[0]]
    assert [(row["env_id"], row["success_rate"]) for row in summarize(remote)[0]] == rates
    assert len(seen) == len(JOBS) + 1
    assert all(r.retries == 0 and r.status == "ok" for r in remote)


def test_episodes_an_actor_sends_back_land_in_the_record_dir(ray_cluster, tmp_path):
    import dataclasses

    import ray

    from agents.runners import result_key
    from agents.runners.ray_runner import RayRunner
    from browser_env.episodes.loader import load_episode

    jobs = JOBS[2:]  # click-test, 2 seeds
    here = dataclasses.replace(SPEC, record_dir=str(tmp_path / "here"))
    local = run_rollouts(jobs, here, agent=_expert(), runner="local")
    # ship_episodes=True: as an actor on another node than the driver's does
    sent = dataclasses.replace(SPEC, record_dir=str(tmp_path / "sent"), ship_episodes=True)
    runner = RayRunner(sent, ScriptedExpert, workers=1, envs_per_worker=2)
    try:
        [actor] = runner.actors
        assert ray.get(actor.__ray_call__.remote(lambda w: w.ship_root)) is not None
        remote = sorted(runner.run(jobs), key=result_key)
    finally:
        runner.close()
    names = sorted(p.name for p in (tmp_path / "sent").iterdir())
    assert names == sorted(Path(r.episode_dir).name for r in remote)
    for mine, theirs in zip(local, remote, strict=True):
        assert Path(theirs.episode_dir).parent == tmp_path / "sent"
        a, b = load_episode(mine.episode_dir), load_episode(theirs.episode_dir)
        assert b.complete and [s.action for s in b.steps] == [s.action for s in a.steps]


def test_a_ray_engine_plays_workers_times_envs_per_worker_at_once(ray_cluster):
    from agents.runners import RolloutEngine

    with RolloutEngine(
        SPEC, make_agent=ScriptedExpert, runner="ray", workers=2, envs_per_worker=3
    ) as engine:
        assert engine.slots == 6


def test_a_killed_actor_is_replaced_and_its_episode_retried_once(ray_cluster, tmp_path):
    flag = tmp_path / "killed"
    pids_file = tmp_path / "browser_pids"

    def dying_expert():
        import os

        import psutil

        from agents.experts.expert import ScriptedExpert

        class DiesOnce(ScriptedExpert):
            def act(self, obs):
                if not flag.exists():
                    flag.write_text("1")
                    kids = psutil.Process().children(recursive=True)
                    pids_file.write_text(" ".join(str(p.pid) for p in kids))
                    os._exit(1)  # the actor dies mid-episode, with its browser running
                return super().act(obs)

        return DiesOnce()

    jobs = [Job("browser_env/miniwob.click-test-v0", 0)]
    results = run_rollouts(jobs, SPEC, make_agent=dying_expert, runner="ray", workers=1)
    assert len(results) == 1 and results[0].retries == 1
    assert results[0].status == "ok" and results[0].success
    orphans = [int(p) for p in Path(pids_file).read_text().split()]
    assert orphans and _gone(orphans)  # the dead actor's browser went with it


@pytest.mark.exhaustive  # ~20 s; the retry itself: test_a_killed_actor_is_replaced_and_its_episode_retried_once
def test_an_actor_that_died_while_idle_does_not_spend_its_next_jobs_retry(ray_cluster, tmp_path):
    """An actor killed between runs is found dead only when it is handed its next
    job, which it never began: that job is played on the recreated actor as a
    first attempt, so a death during that play is still retried once."""
    import signal

    import ray

    from agents.runners.ray_runner import RayRunner

    armed = tmp_path / "armed"  # while it exists, the next act kills its actor

    def dies_when_armed():
        import os

        from agents.experts.expert import ScriptedExpert

        class DiesWhenArmed(ScriptedExpert):
            def act(self, obs):
                if armed.exists():
                    armed.unlink()
                    os._exit(1)  # the actor dies in the episode's own play
                return super().act(obs)

        return DiesWhenArmed()

    def kill_idle_actor():
        pid = ray.get(runner.actors[0].pid.remote())
        os.kill(pid, signal.SIGKILL)
        assert _gone([pid])

    job = Job("browser_env/miniwob.click-test-v0", 0)
    runner = RayRunner(SPEC, dies_when_armed, workers=1)
    try:
        kill_idle_actor()
        [played] = runner.run([job])
        assert (played.status, played.success, played.retries) == ("ok", True, 0)
        kill_idle_actor()
        armed.write_text("1")
        [retried] = runner.run([job])  # its own attempt dies: retried once, not "lost twice"
        assert (retried.status, retried.success, retried.retries) == ("ok", True, 1)
        assert not armed.exists()
    finally:
        runner.close()


def _python(code: str):
    """``code`` run by a new interpreter (a Ray of its own), its output captured."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )


def _dies_while_a_plays(flag):
    """An agent factory: on the page whose goal is "b" it finishes at once; on
    "a" it waits one step (so "b" has ended and been sent back), then, the
    first time, kills its actor; once ``flag`` exists it finishes at once."""

    def make():
        import os
        import time

        from browser_env.actions import Action

        class DiesWhileAPlays(ScriptedExpert):
            def fork(self):
                return DiesWhileAPlays()

            def act(self, obs):
                self._step += 1
                if obs["goal"] == "b" or flag.exists():
                    return Action.finish("done"), {}
                if self._step == 1:
                    return Action("WAIT", value="0"), {}
                flag.write_text("1")
                time.sleep(2)  # "b"'s result reaches the driver first
                os._exit(1)

        return DiesWhileAPlays()

    return make


@pytest.mark.exhaustive  # ~12 s; a dead actor's episode retried: the killed-actor test
def test_a_dead_actors_episodes_are_told_apart_by_job_not_by_seed(ray_cluster, site_url, tmp_path):
    """Two jobs of one actor call with the same seed (open-v0 pages that
    differ only in their options): when the actor dies after one came back,
    the other is the one played again."""
    page = {"url": f"{site_url}form.html"}
    jobs = [Job("browser_env/open-v0", 0, {**page, "goal": goal}) for goal in ("a", "b")]
    results = run_rollouts(
        jobs,
        SPEC,
        make_agent=_dies_while_a_plays(tmp_path / "died"),
        runner="ray",
        workers=1,
        envs_per_worker=2,
    )
    assert (tmp_path / "died").exists()
    # "b" ended first: results that sort alike keep the jobs' order
    assert [(r.goal, r.status, r.retries) for r in results] == [("a", "ok", 1), ("b", "ok", 0)]


@pytest.mark.exhaustive  # ~18 s (a Ray of its own); the embedded Ray's clean-up: the token-and-files test
def test_a_ray_runner_that_fails_to_start_leaves_no_ray_behind():
    """An agent factory that cannot be sent to an actor: the error is raised
    and the embedded Ray the runner started is shut down."""
    if os.environ.get("RAY_ADDRESS"):
        pytest.skip("RAY_ADDRESS is set: the runner joins that cluster and starts no Ray")
    code = (
        "import threading, ray\n"
        "from agents.runners import RolloutSpec\n"
        "from agents.runners.ray_runner import RayRunner\n"
        "lock = threading.Lock()\n"
        "try:\n"
        "    RayRunner(RolloutSpec(), lambda: lock, workers=1)\n"
        "except TypeError as exc:\n"
        "    print('raised', ray.is_initialized())\n"
    )
    out = _python(code)
    assert out.stdout.split() == ["raised", "False"], out


@pytest.mark.exhaustive  # ~18 s (a Ray of its own); one close: the tests that end with no process left
def test_closing_a_ray_runner_twice_starts_no_ray():
    """``RayRunner.close`` says "safe twice", but a second close called
    ``ray.wait([])``, which starts a default Ray (writing ``~/.ray``) when none
    is connected, as after the first close shut the runner's own down."""
    if os.environ.get("RAY_ADDRESS"):
        pytest.skip("RAY_ADDRESS is set: the runner joins that cluster and starts no Ray")
    code = (
        "import ray\n"
        "from agents.experts import ScriptedExpert\n"
        "from agents.runners import RolloutSpec\n"
        "from agents.runners.ray_runner import RayRunner\n"
        "from browser_env.ray_local import close_actors\n"
        "runner = RayRunner(RolloutSpec(), ScriptedExpert, workers=1)\n"
        "runner.close()\n"
        "def no_init(*args, **kwargs):\n"
        "    raise RuntimeError('a Ray was started')\n"
        "ray.init = no_init\n"
        "runner.close()\n"
        "close_actors([], 1.0)\n"
        "print('closed', ray.is_initialized())\n"
    )
    out = _python(code)
    assert out.stdout.split() == ["closed", "False"], out


def test_a_recreated_actor_whose_replayed_agent_call_fails_plays_nothing(ray_cluster, tmp_path):
    """An actor made after ``call_agents`` replays the calls; when one fails
    there (an adapter that will not load on the new actor), its jobs are
    errors naming why, not episodes of an agent the driver did not set up."""
    import ray

    from agents.runners.ray_runner import RayRunner

    adapter = tmp_path / "adapter"
    adapter.write_text("weights")

    def load(agent, path=str(adapter)):
        with open(path) as f:  # FileNotFoundError once it is gone
            agent.loaded = f.read()

    runner = RayRunner(SPEC, ScriptedExpert, workers=1)
    try:
        runner.call_agents(load, key="adapter")
        adapter.unlink()
        ray.kill(runner.actors[0], no_restart=True)  # recreated by the next run
        [result] = runner.run(JOBS[2:3])
        # the killed actor died idle: the job's one play is on the recreated actor
        assert (result.status, result.retries) == ("error", 0)
        assert "plays nothing" in result.error and "FileNotFoundError" in result.error
        adapter.write_text("weights 2")
        runner.call_agents(load, key="adapter")  # the same key, now it loads
        [result] = runner.run(JOBS[2:3])
        assert result.status == "ok" and result.success
        [actor] = runner.actors
        assert ray.get(actor.__ray_call__.remote(lambda w: w.agent.loaded)) == "weights 2"
    finally:
        runner.close()


@pytest.mark.exhaustive  # ~25 s (three 6 s start-up clocks); a lost actor's retry: the killed-actor test
def test_an_actor_that_does_not_start_in_time_counts_as_dead(ray_cluster, tmp_path):
    """``startup_timeout_s``: an actor whose agent hangs while it is built (a
    model server that never answers) neither hangs ``call_agents`` nor ``run``:
    it is replaced, and its episode played again once, then recorded as an
    error naming why. The replacements' calls are replayed."""
    import ray

    from agents.runners.ray_runner import RayRunner

    starts = tmp_path / "starts"
    starts.write_text("0")

    def hangs_three_times():
        import time

        from agents.experts.expert import ScriptedExpert

        n = int(starts.read_text()) + 1
        starts.write_text(str(n))
        if n <= 3:
            time.sleep(3600)
        return ScriptedExpert()

    spec = dataclasses.replace(SPEC, startup_timeout_s=6.0)  # a normal start: ~1-4 s under load
    runner = RayRunner(spec, hangs_three_times, workers=1)
    try:
        began = time.monotonic()
        runner.call_agents(lambda agent: setattr(agent, "marked", True), key="mark")
        assert 5.9 <= time.monotonic() - began < 30  # start 1 given up on, start 2 begun
        [failed] = runner.run(JOBS[2:3])  # starts 2 and 3 hang: given up on twice
        assert (failed.status, failed.retries) == ("error", 1)
        assert failed.error == "worker lost twice: the worker did not start within 6 s"
        # the fourth start (begun as the third was given up on) need not race
        # the 6 s clock on a loaded machine: the runner reads the limit as it checks
        runner.spec = dataclasses.replace(runner.spec, startup_timeout_s=None)
        [played] = runner.run(JOBS[2:3])  # on the fourth actor
        assert (played.status, played.success, played.retries) == ("ok", True, 0)
        assert starts.read_text() == "4"
        [actor] = runner.actors
        assert ray.get(actor.__ray_call__.remote(lambda w: w.agent.marked))  # replayed
    finally:
        runner.close()


@pytest.mark.exhaustive  # ~21 s; a run left early under local/vector: test_runners' Ctrl-C tests
def test_a_run_left_early_does_not_leave_its_episodes_running(ray_cluster):
    """``on_result`` raising (or Ctrl-C) while an episode is still playing: the
    actor playing it is replaced, so close() (or a later run) does not wait
    behind an episode nobody will collect."""
    import ray

    from agents.runners.ray_runner import RayRunner

    def slow_on_click_button():
        import time

        from agents.experts.expert import ScriptedExpert

        class Slow(ScriptedExpert):
            def act(self, obs):
                if "click-button" in obs["url"]:
                    time.sleep(300)
                return super().act(obs)

        return Slow()

    class Stop(Exception):
        pass

    def stop(result):
        raise Stop(result.env_id)

    runner = RayRunner(SPEC, slow_on_click_button, workers=2)
    try:
        pids = [ray.get(actor.pid.remote()) for actor in runner.actors]
        jobs = [Job("browser_env/miniwob.click-button-v0", 0), JOBS[2]]  # slow, then quick
        with pytest.raises(Stop, match="click-test"):
            runner.run(jobs, on_result=stop)
        assert _gone([pids[0]])  # the slow episode's actor, with its 300 s sleep
        [result] = runner.run(JOBS[2:3])  # the engine plays on
        assert result.status == "ok" and result.success
    finally:
        start = time.monotonic()
        runner.close()
    assert time.monotonic() - start < 60  # not 120 s behind the sleeping episode


@pytest.mark.exhaustive  # ~25 s (a 15 s agent build); the episode timeout: test_runners' timeout tests
def test_the_kill_clock_starts_once_the_actor_is_up_and_errors_keep_their_cause(
    ray_cluster, tmp_path
):
    """An actor that takes 15 s to build its agent, longer than the episode's
    hard limit but within ``startup_timeout_s``: neither clock cuts it (the
    kill clock starts once the actor is up, the start-up clock stops then).
    The hard limit is well above a cold episode (a new actor's Playwright
    driver, Chromium and task page, on a loaded machine)."""
    import ray

    from agents.runners.ray_runner import RayRunner

    built = tmp_path / "built"

    def slow_expert():
        import time

        from agents.experts.expert import ScriptedExpert

        if not built.exists():  # the first actor only: its replacement starts at once
            built.touch()
            time.sleep(15)  # a model that takes longer to load than the hard limit below
        return ScriptedExpert()

    spec = RolloutSpec(
        env_kwargs=SPEC.env_kwargs,
        max_steps=5,
        episode_timeout_s=12.0,
        kill_grace_s=1.0,
        startup_timeout_s=60.0,  # slow (15 s + the worker's start) but in time
    )
    runner = RayRunner(spec, slow_expert, workers=1)
    try:
        [played] = runner.run([Job("browser_env/miniwob.click-test-v0", 0)])
        assert (played.status, played.success, played.retries) == ("ok", True, 0)
        # an exception the episode raises is recorded with its own type and message
        bad = Job("browser_env/miniwob.click-test-v0", 1, options={"url": "file:///etc/passwd"})
        [failed] = runner.run([bad])
        assert failed.status == "error" and failed.error.startswith("ValueError: ")
        assert "file" in failed.error and "ray::" not in failed.error
        # an actor that died while idle is recreated by the next call_agents
        ray.kill(runner.actors[0], no_restart=True)
        runner.call_agents(lambda agent: setattr(agent, "marked", True), key="mark")
        [again] = runner.run([Job("browser_env/miniwob.click-test-v0", 0)])
        assert again.status == "ok" and again.success

        def marked(agent):
            assert agent.marked

        ray.get(runner.actors[0].call_agent.remote(marked))  # the recreated actor's agent
    finally:
        runner.close()


def test_gpus_per_worker_beyond_the_clusters_gpus_is_refused(ray_cluster):
    from agents.runners.ray_runner import RayRunner

    with pytest.raises(ValueError, match=r"gpus_per_worker=0.5 but the largest Ray node has 0 GPU"):
        RayRunner(SPEC, ScriptedExpert, workers=1, gpus_per_worker=0.5)
    with pytest.raises(ValueError, match=r"needs 3 CPUs but the Ray cluster has 2"):
        RayRunner(SPEC, ScriptedExpert, workers=3)
    with pytest.raises(ValueError, match="must be >= 0"):
        RayRunner(SPEC, ScriptedExpert, workers=1, cpus_per_worker=-1)


def test_agents_run_under_ray_builds_no_agent_in_the_driver(ray_cluster, monkeypatch, tmp_path):
    """The actors build their agents; the driver names it from the config."""
    import json

    from hydra import compose, initialize_config_dir

    import agents.run

    conf = str(Path(__file__).resolve().parents[2] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose(
            config_name="run",
            overrides=["agent=expert", "env=miniwob.click-button", "episodes=2", "runner=ray"]
            + ["workers=2", f"episodes_dir={tmp_path}", "ship_episodes=true"],
        )
    built, real = [], agents.run.build_agent

    def counted(cfg):  # pickled into the actors too, where it counts in their own copy
        built.append(cfg)
        return real(cfg)

    from agents.runners import ray_runner

    arrived, unpack = [], ray_runner._arrived

    def unpacked(packed, record_dir, result):  # the driver's side of ship_episodes=true
        arrived.append(record_dir)
        return unpack(packed, record_dir, result)

    monkeypatch.setattr(agents.run, "build_agent", counted)
    monkeypatch.setattr(ray_runner, "_arrived", unpacked)
    result = agents.run.run_episodes(cfg, verbose=False)
    assert built == [] and result["success_rate"] == 1.0
    assert arrived == [str(tmp_path)] * 2
    recorded = [json.loads(p.read_text()) for p in tmp_path.glob("*/episode.json")]
    assert len(recorded) == 2 and all(e["agent"]["name"] == "expert" for e in recorded)


def test_an_actors_episodes_stream_back_as_each_ends(ray_cluster):
    """Two episodes in one actor's call (envs_per_worker=2): the short one comes
    back while the long one still plays, not when the call ends."""

    from browser_env.actions import coerce_action

    class _SlowOnSeedOne(ScriptedExpert):  # local: actors unpickle it by value
        """The expert, but on seed 1 it first WAITs twice, 2 s a decision."""

        def reset(self, goal="", *, seed=None):
            super().reset(goal, seed=seed)
            self._slow = 2 if seed == 1 else 0

        def act(self, obs):
            if self._slow:
                self._slow -= 1
                time.sleep(2.0)
                return coerce_action({"action": "WAIT", "value": "0"}), {}
            return super().act(obs)

        def fork(self):
            return _SlowOnSeedOne(self.task)

    seen = {}
    jobs = [Job("browser_env/miniwob.click-button-v0", seed) for seed in (0, 1)]
    results = run_rollouts(
        jobs,
        SPEC,
        make_agent=_SlowOnSeedOne,
        runner="ray",
        workers=1,
        envs_per_worker=2,
        on_result=lambda r: seen.setdefault(r.seed, time.monotonic()),
    )
    assert [(r.seed, r.success, r.steps) for r in results] == [(0, True, 1), (1, True, 3)]
    assert seen[1] - seen[0] > 1.0, seen  # the second WAIT alone takes 2 s


def test_ray_vector_env_matches_sync_vector_env_and_leaves_no_process(ray_cluster):
    import gymnasium as gym
    import psutil
    import ray

    from browser_env.ray_vector import RayVectorEnv

    env_id = "browser_env/miniwob.click-test-v0"
    kwargs = {"modalities": ("elements", "text")}
    click, wait = {"action": "CLICK", "element_id": "e1"}, {"action": "WAIT", "value": "0"}
    actions = [(click, wait), (wait, click), (wait, wait)]  # each env ends once, autoresets once
    traces = []
    for make in (
        lambda: gym.make_vec(env_id, 2, vectorization_mode="sync", **kwargs),
        lambda: RayVectorEnv(env_id, 2, **kwargs),
    ):
        vec = make()
        try:
            obs, _ = vec.reset(seed=[7, 8])
            trace = [(obs["goal"], _paths(obs))]
            for step in actions:
                obs, reward, terminated, truncated, _ = vec.step(step)
                trace.append((obs["goal"], _paths(obs), reward.tolist(), terminated.tolist()))
            assert vec.get_attr("goal") == obs["goal"]
            traces.append(trace)
            if isinstance(vec, RayVectorEnv):
                pids = ray.get([a.pid.remote() for a in vec.actors])
                tree = [c.pid for p in pids for c in psutil.Process(p).children(recursive=True)]
        finally:
            vec.close()
    assert traces[0] == traces[1]
    assert traces[0][1][3] == [True, False] and traces[0][2][2] == [0.0, 1.0]
    assert tree and _gone(pids + tree)  # actors and their browsers are gone after close


@pytest.mark.exhaustive  # ~15 s (four envs); RayVectorEnv against SyncVectorEnv: the test above
def test_ray_vector_env_refuses_what_sync_vector_env_refuses_without_touching_an_env(
    ray_cluster,
):
    """A step the ``Disabled`` autoreset mode refuses (an env waiting for its
    reset) and a reset with a mask of the wrong dtype change no sub-env, as in
    ``SyncVectorEnv``; a closed RayVectorEnv refuses every call (Ray would
    otherwise start a plain instance of its own)."""
    import gymnasium as gym
    import numpy as np

    from browser_env.ray_vector import RayVectorEnv

    env_id = "browser_env/miniwob.click-test-v0"
    kwargs, mode = {"modalities": ("elements", "text")}, {"autoreset_mode": "Disabled"}
    click, wait = {"action": "CLICK", "element_id": "e1"}, {"action": "WAIT", "value": "0"}
    traces = []
    for make in (
        lambda: gym.make_vec(env_id, 2, vectorization_mode="sync", vector_kwargs=mode, **kwargs),
        lambda: RayVectorEnv(env_id, 2, **mode, **kwargs),
    ):
        vec = make()
        try:
            vec.reset(seed=[3, 4])
            _, _, terminated, _, _ = vec.step((click, wait))  # env 0 ends; env 1 steps on
            steps = [vec.get_attr("_elapsed_steps")]
            with pytest.raises(AssertionError):
                vec.step((wait, wait))  # env 0 waits for its reset
            steps.append(vec.get_attr("_elapsed_steps"))
            with pytest.raises(TypeError, match="dtype"):
                vec.reset(options={"reset_mask": np.array([1, 0])})
            steps.append(vec.get_attr("_elapsed_steps"))
            vec.reset(options={"reset_mask": np.array([True, False])})
            steps.append(vec.get_attr("_elapsed_steps"))
            traces.append((terminated.tolist(), steps))
        finally:
            vec.close()
    assert traces[0] == traces[1]
    assert traces[0] == ([True, False], [(1, 1), (1, 1), (1, 1), (0, 1)])
    with pytest.raises(RuntimeError, match="closed"):
        vec.step((wait, wait))
    with pytest.raises(RuntimeError, match="closed"):
        vec.get_attr("goal")


def test_a_ray_vector_env_whose_init_fails_after_its_actors_were_made_leaves_none_alive(
    ray_cluster,
):
    """An unknown ``autoreset_mode`` is refused by ``SyncVectorEnv.__init__``,
    after the actors (and their browsers) were made: they must be closed and
    killed, or each would hold its CPU, and its browser, for good."""
    import ray

    from browser_env.ray_vector import RayVectorEnv

    with pytest.raises(ValueError, match="AutoresetMode") as raised:
        RayVectorEnv(
            "browser_env/open-v0", num_envs=2, num_cpus=1, autoreset_mode="bogus", start_ray=False
        )
    # (``raised`` keeps the half-made env, and so its actor handles, referenced,
    # as a caller that keeps the exception does)
    total = ray.cluster_resources()["CPU"]
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0.0) < total and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0.0) == total, "an actor still holds its CPU"
    assert raised.value is not None


def test_ray_vector_env_refuses_more_actors_than_ray_can_place(ray_cluster):
    """On a Ray already running (here 2 CPUs), actors that could never all be
    placed are refused at once instead of waiting for ever."""
    from browser_env.ray_vector import RayVectorEnv

    if os.environ.get("RAY_ADDRESS"):
        pytest.skip("RAY_ADDRESS is set: a cluster may grow, so that is a warning")
    began = time.monotonic()
    with pytest.raises(ValueError, match="num_envs=3 x num_cpus=1 needs 3 CPUs .* has 2"):
        RayVectorEnv("browser_env/miniwob.click-test-v0", 3, num_cpus=1, start_ray=False)
    assert time.monotonic() - began < 30


def test_ray_vector_env_refuses_an_unknown_id_before_ray_starts():
    code = (
        "import gymnasium, ray\n"
        "from browser_env.ray_vector import RayVectorEnv\n"
        "try:\n"
        "    RayVectorEnv('browser_env/miniwob.no-such-task-v0', 2)\n"
        "except gymnasium.error.Error as exc:\n"
        "    print(type(exc).__name__, ray.is_initialized())\n"
    )
    out = _python(code)
    assert out.stdout.split() == ["NameNotFound", "False"], out.stderr


def test_the_embedded_ray_keeps_its_token_and_files_to_itself(tmp_path):
    """A token in the process's environment (no ~/.ray/auth_token, no notice
    printed into a progress bar), and a driver that ends without
    shutdown_ray (here: raises) still leaves no temp dir and no token behind:
    the exit runs shutdown_ray. One Ray start, in a process of its own."""
    import subprocess
    import sys

    if os.environ.get("RAY_ADDRESS"):
        pytest.skip("RAY_ADDRESS is set: init_ray joins that cluster and makes no temp dir")
    code = (
        "import atexit, os, ray\n"
        "from browser_env.ray_local import init_ray\n"
        "def after():\n"  # registered first, so it runs after init_ray's own exit hook
        "    print(root, os.path.exists(root), ray.is_initialized(),\n"
        "          'RAY_AUTH_MODE' in os.environ or 'RAY_AUTH_TOKEN' in os.environ)\n"
        "atexit.register(after)\n"
        "assert init_ray(num_cpus=1, num_gpus=0)\n"
        "root = os.path.dirname(ray._private.worker._global_node.get_temp_dir_path())\n"
        "assert os.path.isdir(root)\n"
        "assert os.environ['RAY_AUTH_MODE'] == 'token' and os.environ['RAY_AUTH_TOKEN']\n"
        "assert ray.get(ray.remote(lambda: 7).remote()) == 7\n"  # workers have the token
        "raise SystemExit(3)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "HOME": str(tmp_path)},
    )
    assert out.returncode == 3, out
    root, *flags = out.stdout.split()
    assert root.startswith("/tmp/ray-rollouts-") and flags == ["False", "False", "False"], out
    assert not (tmp_path / ".ray").exists()
    assert "Token authentication" not in out.stderr, out.stderr


def test_closing_actors_raises_what_a_close_raised_and_kills_them_all(ray_cluster):
    """browser_env.ray_local.close_actors (RayRunner.close, RayVectorEnv.close): an
    actor whose close raised (a recorder's failed final write) is not silent, as
    closing local envs is not; a dead actor is not an error; every actor is killed."""
    import ray

    from browser_env.ray_local import close_actors

    @ray.remote(num_cpus=0)
    class Closer:
        def __init__(self, fails):
            self.fails = fails

        def close(self):
            if self.fails:
                raise OSError("the final episode write failed")

        def pid(self):
            return os.getpid()

    actors = [Closer.remote(False), Closer.remote(True), Closer.remote(False)]
    pids = ray.get([a.pid.remote() for a in actors])
    ray.kill(actors[2], no_restart=True)  # died before close: nothing to close
    with pytest.raises(OSError, match="final episode write failed"):
        close_actors(actors, 60)
    assert _gone(pids, within_s=60)
    close_actors([Closer.remote(False)], 60)  # all well: nothing raised
