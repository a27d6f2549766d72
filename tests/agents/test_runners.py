"""The rollout engine: local and vector runners give the same episodes; results sorted."""

from __future__ import annotations

import pytest

import browser_env  # noqa: F401 - registers the ids
from agents.experts.expert import ScriptedExpert
from agents.random_agent import RandomAgent
from agents.runners import Job, RolloutSpec, run_rollouts

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SPEC = RolloutSpec(env_kwargs={"modalities": ("elements", "text")}, max_steps=5)


def _jobs():
    # deliberately not sorted: results come back by (env id, seed) whatever the order
    return [
        Job("browser_env/miniwob.click-test-v0", 1),
        Job("browser_env/miniwob.click-button-v0", 1),
        Job("browser_env/miniwob.click-test-v0", 0),
        Job("browser_env/miniwob.click-button-v0", 0),
        Job("browser_env/miniwob.click-button-v0", 2),
    ]


def _key(results):
    return [(r.env_id, r.seed, r.success, r.steps, r.actions, r.status) for r in results]


@pytest.fixture(scope="module")
def expert_local():
    """The scripted expert's episodes of ``_jobs()`` under ``runner=local``, played
    once for the tests that compare another run with it."""
    return run_rollouts(_jobs(), SPEC, agent=ScriptedExpert(), runner="local")


def test_vector_runner_matches_local_runner_and_records(tmp_path, expert_local):
    local = expert_local
    spec = RolloutSpec(
        env_kwargs=SPEC.env_kwargs, max_steps=5, record_dir=str(tmp_path), source="scripted"
    )
    seen = []
    vector = run_rollouts(
        _jobs(), spec, agent=ScriptedExpert(), runner="vector", workers=2, on_result=seen.append
    )
    assert [(r.env_id, r.seed) for r in local] == sorted((j.env_id, j.seed) for j in _jobs())
    assert _key(vector) == _key(local)
    assert all(r.success for r in local)
    assert len(seen) == 5 and sorted(r.episode_dir for r in vector) == sorted(
        str(p) for p in tmp_path.iterdir()
    )


def test_vector_runner_with_a_random_agent_equals_local_and_times_out():
    jobs = [Job("browser_env/miniwob.click-button-v0", s) for s in (4, 5, 6)]
    local = run_rollouts(jobs, SPEC, agent=RandomAgent(), runner="local")
    vector = run_rollouts(jobs, SPEC, agent=RandomAgent(), runner="vector", workers=3)
    assert _key(vector) == _key(local)
    timed = RolloutSpec(env_kwargs=SPEC.env_kwargs, episode_timeout_s=1e-9)  # over at once
    # three jobs on two sub-envs: the third starts mid-run, and its deadline too is
    # checked before its first step (it used to play one)
    out = run_rollouts(jobs, timed, agent=RandomAgent(), runner="vector", workers=2)
    assert [(r.status, r.steps) for r in out] == [("timeout", 0)] * 3


@pytest.mark.parametrize(
    "kind",  # ~15 s each; runner=local's record_errors is what each Ray actor runs:
    # test_ray_runner.py's table test has a job that raises beside good ones
    [pytest.param("local", marks=pytest.mark.exhaustive), "vector"],
)
def test_a_runner_records_a_raising_episode_alone_when_asked(
    monkeypatch, tmp_path, kind, expert_local
):
    """An episode whose reset or step raises ends a plain run; with
    ``record_errors`` (what Ray actors use) it alone is an ``error``, with the
    steps it played and its recording ending there, and every other episode
    is the one a plain run plays."""
    import json

    from agents.rollout import Episode
    from agents.runners.local import LocalRunner
    from agents.runners.vector import VectorRunner

    bad_reset = Job("browser_env/miniwob.click-test-v0", 7, options={"url": "file:///etc/passwd"})
    bad_step = Job("browser_env/miniwob.enter-text-v0", 9)  # the expert's second step raises
    jobs = [*_jobs(), bad_reset, bad_step]
    step = Episode.step

    def flaky_step(self, *args, **kwargs):
        if self.seed == bad_step.seed and self.steps == 1:
            raise RuntimeError("the page went away")
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Episode, "step", flaky_step)
    with pytest.raises(ValueError, match="file"):
        run_rollouts(jobs, SPEC, agent=ScriptedExpert(), runner=kind, workers=3)
    spec = RolloutSpec(
        env_kwargs=SPEC.env_kwargs, max_steps=5, record_dir=str(tmp_path), source="scripted"
    )
    if kind == "local":
        runner = LocalRunner(spec, ScriptedExpert(), record_errors=True)
    else:
        runner = VectorRunner(spec, ScriptedExpert(), workers=3, record_errors=True)
    try:
        results = sorted(runner.run(jobs), key=lambda r: (r.env_id, r.seed))
    finally:
        runner.close()
    errors = {r.seed: r for r in results if r.status == "error"}
    assert set(errors) == {7, 9} and len(results) == len(jobs)
    assert errors[7].error.startswith("ValueError: ") and "file" in errors[7].error
    assert errors[7].steps == 0 and errors[7].episode_dir is None
    stepped = errors[9]
    assert stepped.error == "RuntimeError: the page went away"
    assert stepped.steps == 1 and stepped.actions[0]["action"] == "TYPE"
    meta = json.loads((tmp_path / stepped.episode_dir / "episode.json").read_text())
    assert meta["outcome"]["reason"] == "error" and meta["outcome"]["steps"] == 1
    ok = [r for r in results if r.status != "error"]
    assert _key(ok) == _key(expert_local)


@pytest.mark.parametrize("kind", ["local", "vector"])
def test_a_timeout_whose_recording_cannot_end_is_that_episodes_error(monkeypatch, tmp_path, kind):
    """Ending a timed-out episode's recording can fail (a full disk): with
    ``record_errors`` that episode is an ``error`` naming the cause, and the
    run goes on, under either runner."""
    from agents.runners.local import LocalRunner
    from agents.runners.vector import VectorRunner
    from browser_env.wrappers import RecordEpisode

    def disk_full(self, reason="ended"):
        raise OSError("disk full")

    monkeypatch.setattr(RecordEpisode, "end_episode", disk_full)
    spec = RolloutSpec(
        env_kwargs=SPEC.env_kwargs, record_dir=str(tmp_path), episode_timeout_s=1e-9
    )  # over at once
    jobs = [Job("browser_env/miniwob.click-button-v0", s) for s in (4, 5)]
    if kind == "local":
        runner = LocalRunner(spec, RandomAgent(), record_errors=True)
    else:
        runner = VectorRunner(spec, RandomAgent(), workers=2, record_errors=True)
    try:
        results = runner.run(jobs)
    finally:
        monkeypatch.undo()  # the envs' own close ends their recordings
        runner.close()
    assert sorted((r.seed, r.status, r.error) for r in results) == [
        (4, "error", "OSError: disk full"),
        (5, "error", "OSError: disk full"),
    ]


def test_a_vector_run_ended_by_a_reset_leaves_no_recording_of_episodes_never_played(tmp_path):
    """Without ``record_errors`` a reset that raises ends the run; the episodes
    reset beside it in that round (their resets ran concurrently) never played a
    step, so they leave no recording, as the jobs after it under runner=local."""
    import json

    from agents.runners.vector import VectorRunner

    spec = RolloutSpec(env_kwargs=SPEC.env_kwargs, max_steps=5, record_dir=str(tmp_path))
    env_id = "browser_env/miniwob.click-test-v0"
    bad = Job(env_id, 5, options={"url": "file:///etc/passwd"})
    runner = VectorRunner(spec, ScriptedExpert(), workers=3)
    try:
        with pytest.raises(ValueError, match="file"):
            runner.run([Job(env_id, 0), bad, Job(env_id, 1)])
        assert list(tmp_path.iterdir()) == []
        assert all(not env.episode_dirs for env in runner.vecs[env_id].envs)
        [played] = runner.run([Job(env_id, 2)])  # the envs play on, recording as before
        assert played.status == "ok" and played.success
    finally:
        runner.close()
    [kept] = tmp_path.iterdir()
    outcome = json.loads((kept / "episode.json").read_text())["outcome"]
    assert outcome["steps"] == played.steps and outcome["reason"] != "abandoned"


def test_bad_runner_arguments():
    with pytest.raises(ValueError, match="runner"):
        run_rollouts([], SPEC, agent=RandomAgent(), runner="threads")
    with pytest.raises(ValueError, match="make_agent"):
        run_rollouts([], SPEC, agent=RandomAgent(), runner="ray")
    with pytest.raises(ValueError, match="workers"):
        run_rollouts([], SPEC, agent=RandomAgent(), workers=0)
    with pytest.raises(ValueError, match="runner=ray only"):
        run_rollouts([], SPEC, agent=RandomAgent(), runner="vector", envs_per_worker=2)
    with pytest.raises(ValueError, match="each Ray actor's resources: runner=ray only"):
        run_rollouts([], SPEC, agent=RandomAgent(), runner="local", gpus_per_worker=1)


def _browsers():
    """This process's Chromium main processes (tagged at launch; not zombies)."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            line = proc.cmdline()
            alive = proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            continue
        tagged = any(a.startswith("--browser-env-id=") for a in line)
        if alive and tagged and not any(a.startswith("--type=") for a in line):
            found.append(proc)
    return found


@pytest.mark.parametrize(  # ~10 s each; a dead driver replaced: test_vector.py's [driver]
    "victim", ["browser", pytest.param("driver", marks=pytest.mark.exhaustive)]
)
def test_vector_runner_relaunches_a_dead_browser_once(victim):
    # the sub-envs reset concurrently: each used to find the browser gone and
    # launch one of its own (N browsers, N-1 of them left running)
    from agents.runners.vector import VectorRunner

    jobs = [Job("browser_env/miniwob.click-test-v0", s) for s in (0, 1, 2)]
    runner = VectorRunner(SPEC, ScriptedExpert(), workers=3, keep_envs=True)
    try:
        assert all(r.success for r in runner.run(jobs))
        [browser] = _browsers()
        if victim == "browser":  # what the OOM killer does
            browser.kill()
            browser.wait(10)
        else:
            from browser_env.browser import driver_processes

            [driver] = driver_processes()
            driver.kill()
            driver.wait(10)
        again = runner.run(jobs)
        assert [r.status for r in again] == ["ok"] * 3 and all(r.success for r in again)
        assert runner._shared.relaunches == 1
        [relaunched] = _browsers()
        assert relaunched.pid != browser.pid
        assert _left_of(browser.pid) == []  # its renderers etc. went with it
    finally:
        runner.close()
    assert _browsers() == []


def _left_of(pid, within_s=10.0):
    """The live processes of the browser whose main process (its group's leader) was ``pid``."""
    import time

    from browser_env.browser import process_group

    end = time.monotonic() + within_s
    while True:
        left = [proc.pid for proc in process_group(pid)]
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.2)


def test_close_all_closes_every_env_when_one_raises():
    # a recorder's failed background write raises from close(): the envs after it
    # (their browsers) must still be closed
    from browser_env.vector import close_all

    closed = []

    class Env:
        def __init__(self, name, fails=False):
            self.name, self.fails = name, fails

        def close(self):
            closed.append(self.name)
            if self.fails:
                raise OSError(f"{self.name}: disk full")

    with pytest.raises(OSError, match="b: disk full"):
        close_all([Env("a", fails=True), Env("b", fails=True), Env("c")])
    assert closed == ["c", "b", "a"]  # last first, every one, the first failure raised


def test_an_episode_whose_recording_cannot_end_still_reports_its_error(monkeypatch, tmp_path):
    from agents.rollout import Episode
    from agents.runners.local import LocalRunner
    from browser_env.wrappers import RecordEpisode

    step = Episode.step

    def flaky_step(self, *args, **kwargs):
        if self.steps == 1:
            raise RuntimeError("the page went away")
        return step(self, *args, **kwargs)

    def full_disk(self, reason):
        raise OSError("no space left on device")

    monkeypatch.setattr(Episode, "step", flaky_step)
    monkeypatch.setattr(RecordEpisode, "end_episode", full_disk)
    spec = RolloutSpec(
        env_kwargs=SPEC.env_kwargs, max_steps=5, record_dir=str(tmp_path), source="scripted"
    )
    runner = LocalRunner(spec, ScriptedExpert(), record_errors=True)
    try:
        [result] = runner.run([Job("browser_env/miniwob.enter-text-v0", 9)])
    finally:
        runner.close()
    assert (result.status, result.error, result.steps) == (
        "error",
        "RuntimeError: the page went away",
        1,
    )


def test_an_actors_results_name_their_jobs_by_position():
    """``RolloutWorker.stream`` (in-process here) gives each result its job's
    place in the call, so the driver tells apart jobs that look alike: the
    same job object twice, equal jobs."""
    from agents.runners.ray_runner import RolloutWorker

    job = Job("browser_env/miniwob.click-test-v0", 3)
    jobs = [job, Job(job.env_id, 3, agent_seed=7), job, Job(job.env_id, 3)]
    worker = RolloutWorker(ScriptedExpert, SPEC, envs_per_worker=2)
    try:
        played = [
            (position, result.seed, result.agent_seed)
            for position, result, _ in worker.stream(jobs)
        ]
    finally:
        worker.close()
    assert sorted(played) == [(0, 3, None), (1, 3, 7), (2, 3, None), (3, 3, None)]


class _FinishesBFirst(ScriptedExpert):
    """Finishes at once on the page whose goal is "b", one step later on others."""

    def fork(self):
        return _FinishesBFirst()

    def act(self, obs):
        from browser_env.actions import Action

        self._step += 1
        if obs["goal"] == "b" or self._step > 1:
            return Action.finish("done"), {}
        return Action("WAIT", value="0"), {}


def test_results_that_sort_alike_keep_the_jobs_order(site_url):
    """Two open-v0 jobs with one seed (pages that differ in their options): the
    second ends first under runner=vector, yet the results are in job order, as
    under runner=local."""
    page = {"url": f"{site_url}form.html"}
    jobs = [Job("browser_env/open-v0", 0, {**page, "goal": goal}) for goal in ("a", "b")]
    ended = []
    for runner in ("local", "vector"):
        results = run_rollouts(
            jobs,
            SPEC,
            agent=_FinishesBFirst(),
            runner=runner,
            workers=2,
            on_result=lambda r, runner=runner: ended.append((runner, r.goal)),
        )
        assert [(r.goal, r.steps) for r in results] == [("a", 2), ("b", 1)]
    assert ended == [("local", "a"), ("local", "b"), ("vector", "b"), ("vector", "a")]


def test_entry_point_runner_options_are_checked_and_zero_is_not_a_default():
    from omegaconf import OmegaConf

    from agents.runners import runner_options

    assert runner_options(OmegaConf.create({})) == {
        "runner": "local",
        "workers": 1,
        "envs_per_worker": 1,
        "cpus_per_worker": 1.0,
        "gpus_per_worker": 0.0,
    }
    nulls = OmegaConf.create({"runner": None, "workers": None, "envs_per_worker": None})
    assert runner_options(nulls)["workers"] == 1
    assert runner_options({"runner": "ray", "workers": 3, "envs_per_worker": 2})["workers"] == 3
    for bad, match in [
        ({"workers": 0}, "workers must be >= 1"),
        ({"runner": "ray", "envs_per_worker": 0}, "envs_per_worker must be >= 1"),
        ({"runner": "bogus"}, "runner must be one of"),
        ({"runner": "local", "envs_per_worker": 3}, "runner=ray only"),
        # each names its option (learners call this without agents.run's checks)
        ({"workers": "abc"}, r"workers must be an integer, got workers='abc'"),
        ({"workers": 1.5}, r"workers must be an integer, got workers=1.5"),
        ({"workers": True}, r"workers must be a number, got workers=True"),
        ({"runner": "ray", "cpus_per_worker": "lots"}, r"cpus_per_worker must be a number"),
        ({"runner": "ray", "cpus_per_worker": "nan"}, r"cpus_per_worker must be a finite number"),
        ({"runner": "ray", "gpus_per_worker": float("inf")}, r"gpus_per_worker must be a finite"),
        ({"runner": "ray", "gpus_per_worker": -1}, r"gpus_per_worker must be a finite number >= 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            runner_options(bad)
    assert runner_options({"workers": "3"})["workers"] == 3  # a string from a command line


def test_ray_spec_options_are_checked_and_ray_only():
    from omegaconf import OmegaConf

    from agents.runners import ray_spec_options

    unset = {"ship_episodes": None, "startup_timeout_s": None}
    assert ray_spec_options(OmegaConf.create({}), "local") == unset
    assert ray_spec_options(OmegaConf.create(unset), "vector") == unset
    cfg = OmegaConf.create({"ship_episodes": False, "startup_timeout_s": 90})
    assert ray_spec_options(cfg, "ray") == {"ship_episodes": False, "startup_timeout_s": 90.0}
    assert ray_spec_options({"ship_episodes": True}, "ray")["ship_episodes"] is True
    with pytest.raises(ValueError, match="ship_episodes is .*: runner=ray only"):
        ray_spec_options({"ship_episodes": True}, "vector")
    with pytest.raises(ValueError, match="startup_timeout_s is .*: runner=ray only"):
        ray_spec_options({"startup_timeout_s": 60}, "local")
    with pytest.raises(ValueError, match="true, false or null, got 'yes'"):
        ray_spec_options({"ship_episodes": "yes"}, "ray")
    for bad in (0, -5, "60", True, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="startup_timeout_s must be finite seconds > 0"):
            ray_spec_options({"startup_timeout_s": bad}, "ray")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"episode_timeout_s": -1}, "episode_timeout_s must be finite seconds > 0"),
        ({"episode_timeout_s": 0}, "episode_timeout_s must be finite seconds > 0"),
        ({"episode_timeout_s": True}, "episode_timeout_s must be finite seconds > 0"),
        ({"max_steps": 0}, "max_steps must be >= 1"),
        ({"kill_grace_s": -0.5}, "kill_grace_s must be finite seconds >= 0"),
        ({"startup_timeout_s": 0}, "startup_timeout_s must be finite seconds > 0"),
        # a Ray get with an infinite timeout overflows: null is "no limit"
        ({"startup_timeout_s": float("inf")}, "startup_timeout_s must be finite seconds > 0"),
    ],
)
def test_a_rollout_spec_refuses_limits_no_episode_could_meet(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RolloutSpec(**kwargs)
    assert RolloutSpec(episode_timeout_s=None, max_steps=None).episode_timeout_s is None


def test_an_unknown_env_id_fails_before_any_episode_plays():
    import gymnasium

    jobs = [
        Job("browser_env/miniwob.click-button-v0", 0),
        Job("browser_env/miniwob.clik-test-v0", 0),
    ]
    for runner in ("local", "vector"):
        with pytest.raises(gymnasium.error.NameNotFound, match="clik-test"):
            run_rollouts(jobs, SPEC, agent=RandomAgent(), runner=runner)


def test_an_engine_says_how_many_episodes_it_plays_at_once():
    """A caller that plays in rounds (agents.run's online learning) sizes them by ``slots``."""
    from agents.runners import RolloutEngine

    for runner, workers, slots in (("local", 1, 1), ("vector", 3, 3)):
        with RolloutEngine(SPEC, agent=RandomAgent(), runner=runner, workers=workers) as engine:
            assert engine.slots == slots


class _WaitsThenCtrlC:
    """WAITs; its ``interrupt_at``-th decision (over all its forks) is Ctrl+C."""

    def __init__(self, interrupt_at, calls=None):
        self.interrupt_at, self.calls = interrupt_at, calls if calls is not None else [0]

    def reset(self, goal="", *, seed=None):
        pass

    def act(self, obs):
        from browser_env.actions import Action, Verb

        self.calls[0] += 1
        if self.calls[0] == self.interrupt_at:
            raise KeyboardInterrupt
        return Action(Verb.WAIT, None, "0"), {}

    def fork(self):
        return _WaitsThenCtrlC(self.interrupt_at, self.calls)

    def act_batch(self, observations, agents):
        return [agent.act(obs) for agent, obs in zip(agents, observations, strict=True)]


@pytest.mark.parametrize("kind", ["local", "vector"])
def test_ctrl_c_mid_episode_leaves_its_recording_incomplete_and_no_browser(tmp_path, kind):
    # Closing the envs after Ctrl+C used to mark the episodes under way complete
    # ("abandoned"), as if they had been played to an end the run chose.
    from browser_env.episodes.loader import find_episode_dirs, load_episode

    spec = RolloutSpec(env_kwargs=SPEC.env_kwargs, max_steps=10, record_dir=str(tmp_path))
    jobs = [Job("browser_env/miniwob.click-checkboxes-v0", s) for s in (0, 1)]
    seen = []
    with pytest.raises(KeyboardInterrupt):
        run_rollouts(
            jobs, spec, agent=_WaitsThenCtrlC(4), runner=kind, workers=2, on_result=seen.append
        )
    assert seen == [] and _browsers() == []
    episodes = [load_episode(d) for d in find_episode_dirs(tmp_path)]
    assert len(episodes) == (1 if kind == "local" else 2)
    for episode in episodes:
        assert not episode.complete and episode.outcome.steps == len(episode.steps) > 0
        assert episode.outcome.reason == "interrupted: KeyboardInterrupt"


class _FirstForkSolves:
    """The first fork is the scripted expert (one click solves click-test); the
    others WAIT, so their episodes are under way when the first one ends."""

    def __init__(self):
        self.forks = 0

    def fork(self):
        self.forks += 1
        return ScriptedExpert() if self.forks == 1 else _WaitsThenCtrlC(interrupt_at=0)

    def act_batch(self, observations, agents):
        return [agent.act(obs) for agent, obs in zip(agents, observations, strict=True)]


def test_ctrl_c_in_on_result_leaves_the_episodes_under_way_interrupted(tmp_path):
    # They were recorded "abandoned" (complete) when the envs closed: only an
    # interrupt inside the runner's loop reached abort_recording.
    from browser_env.episodes.loader import find_episode_dirs, load_episode

    spec = RolloutSpec(env_kwargs=SPEC.env_kwargs, max_steps=10, record_dir=str(tmp_path))
    jobs = [Job("browser_env/miniwob.click-test-v0", s) for s in (0, 1, 2)]
    seen = []

    def on_result(result):
        seen.append(result)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_rollouts(
            jobs, spec, agent=_FirstForkSolves(), runner="vector", workers=2, on_result=on_result
        )
    assert [(r.success, r.steps) for r in seen] == [(True, 1)] and _browsers() == []
    episodes = {e.meta.seed: e for e in map(load_episode, find_episode_dirs(tmp_path))}
    assert sorted(episodes) == [0, 1]  # the third job never started
    assert episodes[0].complete and episodes[0].outcome.success
    waiting = episodes[1]
    assert not waiting.complete and waiting.outcome.steps == len(waiting.steps) == 1
    assert waiting.outcome.reason == "interrupted: KeyboardInterrupt"


def test_ctrl_c_in_on_result_under_runner_local_interrupts_no_episode(tmp_path):
    # runner=local calls on_result between episodes: none is under way then
    from browser_env.episodes.loader import find_episode_dirs, load_episode

    spec = RolloutSpec(env_kwargs=SPEC.env_kwargs, max_steps=10, record_dir=str(tmp_path))
    jobs = [Job("browser_env/miniwob.click-test-v0", s) for s in (0, 1)]

    def on_result(result):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_rollouts(jobs, spec, agent=ScriptedExpert(), runner="local", on_result=on_result)
    episodes = [load_episode(d) for d in find_episode_dirs(tmp_path)]
    assert [(e.meta.seed, e.complete, e.outcome.success) for e in episodes] == [(0, True, True)]
    assert _browsers() == []


class _FailsOnSeed5(RandomAgent):
    """A policy with a bug on one page: its ``act`` raises in the episode of seed 5."""

    def reset(self, goal="", *, seed=None):
        super().reset(goal, seed=seed)
        self.bad = seed == 5

    def act(self, obs):
        if self.bad:
            raise KeyError("policy bug on this page")
        return super().act(obs)

    def fork(self):
        return _FailsOnSeed5(seed=self._seed)


def test_an_agent_that_raises_in_one_episode_fails_that_episode_alone_under_vector():
    """Under runner=vector (and ray actors with several envs) the batched decision
    of the other episodes stands: the same statuses as runner=local (before, the
    whole batch failed). Without record_errors the agent's own exception ends the run."""
    from agents.runners.local import LocalRunner
    from agents.runners.vector import VectorRunner

    jobs = [Job("browser_env/miniwob.click-button-v0", s) for s in (4, 5, 6)]
    spec = RolloutSpec(env_kwargs=SPEC.env_kwargs, max_steps=3)
    results = {}
    for kind, runner in (
        ("local", LocalRunner(spec, _FailsOnSeed5(), record_errors=True)),
        ("vector", VectorRunner(spec, _FailsOnSeed5(), workers=3, record_errors=True)),
    ):
        try:
            results[kind] = sorted(runner.run(jobs), key=lambda r: r.seed)
        finally:
            runner.close()
    assert [(r.seed, r.status) for r in results["vector"]] == [(4, "ok"), (5, "error"), (6, "ok")]
    assert _key(results["vector"]) == _key(results["local"])
    assert "KeyError" in results["vector"][1].error
    with pytest.raises(KeyError, match="policy bug"):
        run_rollouts(jobs, spec, agent=_FailsOnSeed5(), runner="vector", workers=3)


def test_the_shared_browser_launches_as_the_envs_would(site_url):
    """runner=vector's one browser takes the envs' launch settings (extra_args were
    dropped: a proxy or user-agent switch silently not applied)."""
    spec = RolloutSpec(
        env_kwargs={**SPEC.env_kwargs, "extra_args": ("--user-agent=BROWSER-RL-TEST",)},
        max_steps=1,
    )
    from agents.runners.vector import VectorRunner

    runner = VectorRunner(spec, RandomAgent(), workers=1)
    try:
        runner.run([Job("browser_env/open-v0", 0, options={"url": site_url + "form.html"})])
        env = runner.vecs["browser_env/open-v0"].envs[0].unwrapped
        assert env.page.evaluate("navigator.userAgent") == "BROWSER-RL-TEST"
    finally:
        runner.close()


class _ResetFailsOnSeed5(RandomAgent):
    def reset(self, goal="", *, seed=None):
        if seed == 5:
            raise KeyError("cannot start on this page")
        super().reset(goal, seed=seed)

    def fork(self):
        return _ResetFailsOnSeed5(seed=self._seed)


@pytest.mark.parametrize("kind", ["local", "vector"])
def test_an_agent_whose_reset_raises_names_the_recording_its_error_left(tmp_path, kind):
    """The env's reset went well, so a recording was open: it ends as ``error``
    and the result names it (it was left in episodes/ with no result naming it)."""
    import json

    from agents.runners.local import LocalRunner
    from agents.runners.vector import VectorRunner

    spec = RolloutSpec(env_kwargs=SPEC.env_kwargs, max_steps=2, record_dir=str(tmp_path))
    jobs = [Job("browser_env/miniwob.click-button-v0", s) for s in (4, 5)]
    if kind == "local":
        runner = LocalRunner(spec, _ResetFailsOnSeed5(), record_errors=True)
    else:
        runner = VectorRunner(spec, _ResetFailsOnSeed5(), workers=2, record_errors=True)
    try:
        results = sorted(runner.run(jobs), key=lambda r: r.seed)
    finally:
        runner.close()
    failed = results[1]
    assert (failed.status, failed.steps) == ("error", 0) and "KeyError" in failed.error
    meta = json.loads((tmp_path / failed.episode_dir / "episode.json").read_text())
    assert meta["seed"] == 5 and meta["outcome"]["reason"] == "error"
    named = {str(tmp_path / r.episode_dir) for r in results}
    on_disk = {str(p.parent) for p in tmp_path.rglob("episode.json")}
    assert on_disk == named


class _KillsTheBrowserFirst(RandomAgent):
    """Kills this process's browser before its first decision (what the OOM killer does)."""

    def act(self, obs):
        if not getattr(self, "killed", False):
            self.killed = True
            for browser in _browsers():
                browser.kill()
                browser.wait(10)
        return super().act(obs)


def test_an_episode_whose_browser_died_is_an_error_not_an_agents_failure():
    """The env truncates an episode it cannot go on with (info["truncated_reason"]);
    the result says so (status "error"), so a benchmark lists it under errors and
    GRPO leaves it out, instead of scoring the agent's 0 reward; the next episode
    plays in a relaunched browser."""
    jobs = [Job("browser_env/miniwob.click-button-v0", s) for s in (4, 5)]
    died, then = run_rollouts(jobs, SPEC, agent=_KillsTheBrowserFirst(), runner="local")
    assert (died.status, died.steps, died.truncated) == ("error", 1, True)
    assert died.error.startswith("the episode could not go on: ") and not died.success
    assert then.status == "ok" and then.steps >= 1
