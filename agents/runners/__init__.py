"""One rollout engine, three runners: ``local``, ``vector`` and ``ray``.

::

    from agents.runners import Job, RolloutEngine, RolloutSpec, run_rollouts

    jobs = [Job("browser_env/miniwob.click-button-v0", seed) for seed in range(8)]
    results = run_rollouts(jobs, RolloutSpec(env_kwargs={"headless": True}),
                           agent=agent, runner="vector", workers=4)

    with RolloutEngine(spec, agent=agent, runner="vector", workers=4) as engine:
        for step in range(steps):                 # envs and browser launched once
            results = engine.run(jobs_of(step))

This is *the* rollout loop of the project: ``benchmarks.run``,
``agents.run`` and the learners (GRPO groups, the evaluation gate, online
SDFT) all play their episodes through it; :mod:`learners.rollout` only turns
its results into training samples.

* ``local``: one env per task, one episode after another (:func:`agents.rollout.rollout`).
* ``vector``: ``workers`` envs as isolated contexts of one shared Chromium
  (:class:`browser_env.vector.SharedBrowserVectorEnv`), and one batched
  policy call for all of them per step (``agent.act_batch``).
* ``ray``: ``workers`` Ray actors, each owning ``envs_per_worker`` envs (M
  contexts of one browser when M > 1, with a batched policy) and an agent
  built by ``make_agent``; episodes stream back as they finish
  (``on_result``); an actor that dies is recreated and its episodes retried
  once; an episode past ``RolloutSpec.episode_timeout_s`` is recorded with
  ``status="timeout"``. Embedded local Ray by default, a cluster through
  ``RAY_ADDRESS``.

Whatever the runner, the results come back sorted by (env id, seed, agent
seed), so tables never depend on the order in which episodes finished; with
the same seeds the success table is the same across runners (the scripted
expert's is, by test), and greedy LLM episodes under ``local`` and
``vector`` are the same episodes (under ``ray`` a prompt's URL names the
actor's own MiniWoB++ port, so an LLM's output may differ).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agents.rollout import EpisodeResult
from agents.runners.options import (
    RUNNERS,
    RolloutOptions,
    check_limit,
    check_runner_options,
    is_finite_number,
    ray_spec_options,
    runner_options,
)

if TYPE_CHECKING:
    from agents.agent import Agent


__all__ = [
    "check_limit",
    "is_finite_number",
    "runner_options",
    "abort_recording",
    "RUNNERS",
    "RolloutOptions",
    "Job",
    "RolloutEngine",
    "RolloutSpec",
    "by_env_id",
    "check_env_ids",
    "check_runner_options",
    "collect",
    "failed_result",
    "reset_error_result",
    "ray_spec_options",
    "run_rollouts",
]


ResultCallback = Callable[[EpisodeResult], None]


@dataclasses.dataclass(frozen=True)
class Job:
    """One episode to play: the env id, its seed and reset options, and the
    agent's sampling seed (None: the task seed; GRPO gives each rollout of a
    group the same task seed and its own ``agent_seed``)."""

    env_id: str
    seed: int | None
    options: Mapping[str, Any] | None = None
    agent_seed: int | None = None


@dataclasses.dataclass(frozen=True)
class RolloutSpec:
    """How every runner makes envs and records episodes (picklable, for Ray).

    Attributes:
        env_kwargs: ``gymnasium.make`` keyword arguments for every env id
            (``headless``, ``modalities``, ``max_episode_steps``, ...).
        record_dir: when set, each env is wrapped in
            :class:`~browser_env.wrappers.RecordEpisode` writing there.
        agent_info: the recorded agent description (an ``AgentInfo`` or mapping).
        source: the recorded episode source (``agent``, ``scripted``).
        max_steps: the runner's own step limit per episode (None: the env's).
        episode_timeout_s: wall-clock limit per episode; past it the episode
            stops between steps with ``status="timeout"`` (ray: an actor stuck
            in one step longer than that plus ``kill_grace_s`` is killed and
            recreated, and the episode recorded as a timeout).
        kill_grace_s: see ``episode_timeout_s``.
        startup_timeout_s: ``runner=ray``: an actor not up this long after it
            was created (scheduled, its agent built, the agent calls replayed)
            is treated as one that died: recreated, its episodes played again
            once, then recorded as errors. None: wait for as long as it takes.
        keep_samples: fill ``EpisodeResult.samples`` (each step's prompt and
            completion token ids, what learners train on).
        ship_episodes: ``runner=ray`` with ``record_dir``: whether actors send
            each recorded episode back to the driver, which writes it into
            ``record_dir`` (:mod:`agents.runners.shipping`). None: the actors
            on another node than the driver's do; False: none do (a
            ``record_dir`` every node mounts); True: all do.
    """

    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    record_dir: str | None = None
    agent_info: Any = None
    source: str = "agent"
    max_steps: int | None = None
    episode_timeout_s: float | None = None
    kill_grace_s: float = 30.0
    startup_timeout_s: float | None = None
    keep_samples: bool = False
    ship_episodes: bool | None = None

    def __post_init__(self) -> None:
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")
        for name in ("episode_timeout_s", "startup_timeout_s"):
            check_limit(name, getattr(self, name))
        if not (is_finite_number(self.kill_grace_s) and self.kill_grace_s >= 0):
            raise ValueError(f"kill_grace_s must be finite seconds >= 0, got {self.kill_grace_s!r}")

    def wrap(self, env: Any) -> Any:
        """``env`` wrapped for recording when ``record_dir`` is set."""
        if self.record_dir is None:
            return env
        from browser_env.wrappers import RecordEpisode

        return RecordEpisode(env, self.record_dir, agent=self.agent_info, source=self.source)

    def make_env(self, env_id: str) -> Any:
        import gymnasium as gym

        import browser_env  # noqa: F401 - registers the ids

        return self.wrap(gym.make(env_id, **dict(self.env_kwargs)))


def by_env_id(jobs: Sequence[Job]) -> list[Job]:
    """``jobs`` grouped by env id (ids in order of first appearance, jobs in
    order within an id): a runner opens each task's envs once per run."""
    order: dict[str, list[Job]] = {}
    for job in jobs:
        order.setdefault(job.env_id, []).append(job)
    return [job for group in order.values() for job in group]


def result_key(result: EpisodeResult) -> tuple[str, int, int]:
    """The order results come back in: (env id, seed, agent seed), None first."""
    seed = -1 if result.seed is None else result.seed
    return result.env_id, seed, -1 if result.agent_seed is None else result.agent_seed


def failed_result(job: Job, status: str, error: str, retries: int = 0) -> EpisodeResult:
    """The result of an episode that could not be played to its end."""
    return EpisodeResult(
        env_id=job.env_id,
        seed=job.seed,
        goal="",
        success=False,
        episode_return=0.0,
        steps=0,
        terminated=False,
        truncated=True,
        answer=None,
        action_errors=0,
        env_step_ms=[],
        agent_ms=[],
        reset_ms=0.0,
        status=status,
        error=error,
        retries=retries,
        agent_seed=job.agent_seed,
    )


def collect(
    jobs: Sequence[Job],
    played: Iterable[tuple[Job, EpisodeResult]],
    on_result: Callable[[EpisodeResult], None] | None = None,
) -> list[EpisodeResult]:
    """The results of ``played`` (a runner's ``iter_run`` of ``jobs``), each
    passed to ``on_result`` as it comes, then in job order (:func:`in_job_order`)."""
    out: list[tuple[Job, EpisodeResult]] = []
    for job, result in played:
        out.append((job, result))
        if on_result is not None:
            on_result(result)
    return in_job_order(jobs, out)


def in_job_order(
    jobs: Sequence[Job], played: Sequence[tuple[Job, EpisodeResult]]
) -> list[EpisodeResult]:
    """The results of ``played`` ((job object, its result) pairs, in the order
    they ended) in the order of ``jobs``: results that sort alike (same env id
    and seeds, e.g. open-v0 pages that differ in their options) then keep the
    jobs' order under every runner, not the order they happened to end in."""
    order: dict[int, int] = {}
    for i, job in enumerate(jobs):
        order.setdefault(id(job), i)  # the same object twice: equal jobs, either place
    return [result for _, result in sorted(played, key=lambda pair: order.get(id(pair[0]), -1))]


def check_env_ids(jobs: Iterable[Job]) -> None:
    """Raise Gymnasium's ``NameNotFound`` (with its suggestions) for a job whose
    env id is not registered."""
    import gymnasium as gym

    for env_id in sorted({job.env_id for job in jobs}):
        gym.spec(env_id)


def abort_recording(env: Any, exc: BaseException) -> None:
    """Leave the episode ``env`` is recording ``complete: false``, with reason
    ``interrupted: <type>``, when ``exc`` interrupts it (Ctrl+C, ``SystemExit``:
    not an ``Exception``, which ends the run with the recording ``abandoned``
    when the envs close). A recording that cannot be ended is let be."""
    import contextlib

    from agents.rollout import find_recorder

    if isinstance(exc, Exception | GeneratorExit):
        return
    recorder = find_recorder(env)
    if recorder is not None:
        with contextlib.suppress(Exception):
            recorder.abort(f"interrupted: {type(exc).__name__}")


def reset_error_result(job: Job, exc: BaseException, env: Any) -> EpisodeResult:
    """The ``error`` result of ``job``, whose episode raised ``exc`` before it
    began (its reset, or the agent's); a recording the env had opened for it
    (the env's reset went well, the agent's raised) ends as ``error`` and the
    result names it, as any other result names its recording."""
    import contextlib
    import dataclasses

    from agents.rollout import describe_error, find_recorder

    result = failed_result(job, "error", describe_error(exc))
    recorder = find_recorder(env)
    if recorder is not None and recorder.recording:
        with contextlib.suppress(Exception):
            recorder.end_episode("error")
        if recorder.last_episode_dir is not None:
            result = dataclasses.replace(result, episode_dir=str(recorder.last_episode_dir))
    return result


class RolloutEngine:
    """A runner that keeps its envs, browser, actors and agent between runs.

    ``local`` and ``vector`` use ``agent`` (or ``make_agent()``, closed with
    the engine); ``ray`` builds one agent per actor with ``make_agent``
    (picklable). ``envs_per_worker`` (ray only) gives each actor M envs as
    contexts of one browser; ``cpus_per_worker`` and ``gpus_per_worker`` (ray
    only) are the Ray resources each actor asks for (as RLlib's
    ``num_cpus_per_env_runner`` / ``num_gpus_per_env_runner``): an actor
    whose agent runs a model on a GPU needs ``gpus_per_worker > 0`` (a
    fraction packs several actors onto one GPU), since Ray hides the GPUs
    from an actor that asked for none. ``keep_envs`` keeps every task's envs open
    between runs (a learner's few tasks); by default a task's envs close when
    the next task's open (a suite's many tasks). Use it as a context manager
    or call :meth:`close` (safe twice).

    ``slots`` is how many episodes it plays at once (local: 1, vector:
    ``workers``, ray: ``workers * envs_per_worker``): a caller that plays in
    rounds (online learning) gives it that many jobs a round.
    """

    def __init__(
        self,
        spec: RolloutSpec,
        *,
        agent: Agent | None = None,
        make_agent: Callable[[], Any] | None = None,
        runner: str = "local",
        workers: int = 1,
        envs_per_worker: int = 1,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        keep_envs: bool = False,
    ) -> None:
        check_runner_options(
            runner,
            workers=workers,
            envs_per_worker=envs_per_worker,
            cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker,
        )
        if agent is None and make_agent is None:
            raise ValueError("give agent= or make_agent=")
        self.runner_name = runner
        self.slots = {"local": 1, "vector": workers}.get(runner, workers * envs_per_worker)
        self._own_agent: Any = None
        if runner == "ray":
            if make_agent is None:
                raise ValueError("runner=ray builds an agent in every actor: give make_agent=")
            from agents.runners.ray_runner import RayRunner

            self.agent = None
            self.runner: Any = RayRunner(
                spec,
                make_agent,
                workers=workers,
                envs_per_worker=envs_per_worker,
                cpus_per_worker=cpus_per_worker,
                gpus_per_worker=gpus_per_worker,
            )
            return
        if agent is None:
            agent = self._own_agent = make_agent()
        self.agent = agent
        try:
            if runner == "vector":
                from agents.runners.vector import VectorRunner

                self.runner = VectorRunner(spec, agent, workers=workers, keep_envs=keep_envs)
            else:
                from agents.runners.local import LocalRunner

                self.runner = LocalRunner(spec, agent, keep_envs=keep_envs)
        except BaseException:
            self._close_agent()
            raise

    def run(
        self, jobs: Sequence[Job], on_result: ResultCallback | None = None
    ) -> list[EpisodeResult]:
        """Play every job; the results sorted by (env id, seed, agent seed).
        ``on_result`` is called with each result as it arrives. An env id that
        is not registered raises Gymnasium's error before any episode plays
        (under every runner: a Ray actor would otherwise record it as an
        ``error`` episode)."""
        check_env_ids(jobs)
        return sorted(self.runner.run(jobs, on_result), key=result_key)

    def call_agents(self, fn: Callable[[Any], Any], key: str | None = None) -> None:
        """``fn(agent)`` on the agent that acts: the local one, or every Ray
        actor's (``fn`` picklable; actors recreated later get it too, only the
        latest of the calls with one ``key``)."""
        if self.runner_name == "ray":
            self.runner.call_agents(fn, key)
        else:
            fn(self.agent)

    def _close_agent(self) -> None:
        agent, self._own_agent = self._own_agent, None
        if agent is not None and hasattr(agent, "close"):
            agent.close()

    def close(self) -> None:
        runner, self.runner = getattr(self, "runner", None), None
        try:
            if runner is not None:
                runner.close()
        finally:
            self._close_agent()

    def __enter__(self) -> RolloutEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_rollouts(
    jobs: Sequence[Job],
    spec: RolloutSpec,
    *,
    agent: Agent | None = None,
    make_agent: Callable[[], Any] | None = None,
    runner: str = "local",
    workers: int = 1,
    envs_per_worker: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    on_result: ResultCallback | None = None,
) -> list[EpisodeResult]:
    """Play every job once with a :class:`RolloutEngine` made for it (and
    closed after); the results sorted by (env id, seed, agent seed)."""
    check_env_ids(jobs)  # before a browser or Ray starts
    with RolloutEngine(
        spec,
        agent=agent,
        make_agent=make_agent,
        runner=runner,
        workers=workers,
        envs_per_worker=envs_per_worker,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
    ) as engine:
        return engine.run(jobs, on_result)
