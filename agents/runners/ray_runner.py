"""``runner=ray``: Ray actors, each owning its envs and an agent.

Each :class:`RolloutWorker` actor builds its agent once (``make_agent``) and
keeps its envs between jobs and runs: with ``envs_per_worker=1`` one env
(a browser of its own), played as ``runner=local`` plays; with
``envs_per_worker=M`` M contexts of one shared browser, played as
``runner=vector`` plays (one batched policy call for the actor's running
episodes). The driver hands every idle actor its next (up to M) jobs; the
call is a Ray streaming generator (:meth:`RolloutWorker.stream`), so each
episode comes back as it ends (``on_result``), not when the actor's call does.

* An actor that dies (its process killed, out of memory, a node lost) is
  recreated and the episodes it was playing and had not returned are played
  again, once; a second
  death records an episode with ``status="error"``. ``EpisodeResult.retries``
  says which were replayed. An actor that had started and then died while
  idle (between calls) is found dead only when it is handed its next jobs;
  it had not begun them (each call first tells the driver that it has), so
  they go to its replacement with their retry unspent. A death before the
  call began on an actor still starting counts (an agent that cannot be
  built fails its jobs rather than being rebuilt for ever). What
  :meth:`RayRunner.call_agents` did to the agents (e.g. load the learner's
  latest adapter) is done again to a recreated actor's agent.
* ``episode_timeout_s``: the actor stops an episode between steps and
  returns it with ``status="timeout"``; an actor stuck inside one call longer
  than the timeout plus ``kill_grace_s`` is killed (its Playwright driver
  takes its browser down with it) and recreated, and its episodes recorded
  as timeouts. That clock starts once the actor is up (scheduled, its agent
  built, the agent calls replayed), not when its jobs were handed over.
* ``startup_timeout_s``: an actor not up that long after it was created (a
  ``make_agent`` that hangs on an unreachable model server, a cluster with no
  room for it) is treated as one that died: killed, recreated, and its
  episodes played again once, then recorded as errors. The limit covers the
  whole start (a worker process scheduled and started, ~1-2 s on the
  2-core development machine, then the agent built and the calls replayed),
  so set it well above a normal start, model load included. Without it (the
  default) the driver waits for as long as it takes, as Ray does for
  resources (an autoscaling cluster may take minutes to grow).
* An exception a job's episode raises (one ``runner=local`` would raise)
  records that episode with ``status="error"`` and the exception's own type
  and message (the steps it played, its recording ending as ``error``), and
  the actor plays its other episodes on: its runner records errors per
  episode (``record_errors``). An exception outside any one episode (e.g. the
  batched policy call's) records every job of that actor's call.
* At the end every actor closes its envs (and browser) and agent, and only
  then is killed.
* Recorded episodes (``record_dir``) reach the driver's ``record_dir`` from
  any node: an actor on another node than the driver's records into a temp
  dir of its own and sends each episode back with its result
  (:mod:`agents.runners.shipping`; ``RolloutSpec.ship_episodes``).

Ray runs embedded by default (:func:`browser_env.ray_local.init_ray`:
``ray.init(address="local")`` on 127.0.0.1, no dashboard, usage stats off, a
temp dir of its own under /tmp); with ``RAY_ADDRESS`` set it joins that
cluster, where ``browser-rl`` must be installed on every node. A Ray already
initialised by the caller is used as it is and left running.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from agents.rollout import EpisodeResult, describe_error
from agents.runners import Job, RolloutSpec, by_env_id, failed_result, in_job_order, shipping
from browser_env.ray_local import check_placeable, close_actors, init_ray, shutdown_ray

__all__ = ["RayRunner", "RolloutWorker", "init_ray"]

CLOSE_TIMEOUT_S = 120.0  # RayRunner.close: how long its actors have to close, all together


class RolloutWorker:
    """A Ray actor's state: one agent and its envs. Also usable in-process."""

    def __init__(
        self,
        make_agent: Callable[[], Any],
        spec: RolloutSpec,
        envs_per_worker: int = 1,
        driver_node: str | None = None,
    ) -> None:
        import browser_env  # noqa: F401 - registers the ids in the actor's process

        # episodes recorded here, sent back with their results (None: written in place)
        self.ship_root: str | None = None
        self.node = self.node_id() if driver_node is not None else None  # None: not in Ray
        if spec.record_dir is not None and shipping.ships(
            spec.ship_episodes, self.node, driver_node
        ):
            self.ship_root = str(shipping.ship_root())
            spec = dataclasses.replace(spec, record_dir=self.ship_root)
        self.agent = make_agent()
        self.failed_calls: dict[Any, str] = {}  # token -> why (see call_agent)
        if envs_per_worker > 1:
            from agents.runners.vector import VectorRunner

            self.runner: Any = VectorRunner(
                spec, self.agent, workers=envs_per_worker, record_errors=True
            )
        else:
            from agents.runners.local import LocalRunner

            self.runner = LocalRunner(spec, self.agent, record_errors=True)

    def pid(self) -> int:
        return os.getpid()

    def gpu_ids(self) -> list[Any]:
        """The GPUs Ray gave this actor (empty when it asked for none)."""
        import ray

        return list(ray.get_gpu_ids())

    def node_id(self) -> str:
        """The Ray node this actor runs on (hex id)."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def stream(
        self, jobs: Sequence[Job], announce: bool = False
    ) -> Iterator[tuple[int, EpisodeResult, bytes | None] | None]:
        """Play ``jobs`` (at most ``envs_per_worker`` of them run at once), yielding
        each episode as it ends (called as a Ray streaming generator: the driver
        has each episode as it ends): its job's position in ``jobs``, its result,
        and its recorded episode packed (:func:`shipping.pack`) when this actor
        ships them, else None. ``announce``: first yield None, once this actor
        has begun the call (the driver's sign that the jobs' attempt has begun:
        an actor that dies before it says so never played them).

        Raises:
            RuntimeError: a call of :meth:`call_agent` failed (see there).
        """
        if announce:
            yield None
        if self.failed_calls:
            raise RuntimeError(
                "this worker's agent is not the one the driver set up, so it plays "
                f"nothing: {'; '.join(self.failed_calls.values())}"
            )
        positions: dict[int, collections.deque[int]] = {}  # id(job) -> its positions
        for position, job in enumerate(jobs):
            positions.setdefault(id(job), collections.deque()).append(position)
        for job, result in self.runner.iter_run(jobs):
            position = positions[id(job)].popleft()
            if self.ship_root is None or result.episode_dir is None:
                yield position, result, None
                continue
            try:
                packed = shipping.pack(result.episode_dir)
            except OSError as exc:  # the result still counts; its files are kept at close
                warnings.warn(f"episode {result.episode_dir} not sent back: {exc}", stacklevel=2)
                yield position, dataclasses.replace(result, episode_dir=None), None
                continue
            shutil.rmtree(result.episode_dir, ignore_errors=True)
            yield position, result, packed

    def call_agent(self, fn: Callable[[Any], Any], token: Any = None) -> None:
        """``fn(agent)``. A call that raises (``token``: the driver's name for it)
        is remembered until a call of that token succeeds; meanwhile
        :meth:`stream` refuses to play, since the agent is not the one the
        driver set up (e.g. an adapter that failed to load on a recreated actor)."""
        try:
            fn(self.agent)
        except Exception as exc:
            if token is not None:
                self.failed_calls[token] = describe_error(exc)
            raise
        self.failed_calls.pop(token, None)

    def close(self) -> None:
        """Close the envs (the browser) and the agent, and keep on this node the
        recorded episodes not sent back, even when a close raises (which is then
        raised); safe twice."""
        runner, self.runner = self.runner, None
        agent, self.agent = self.agent, None
        try:
            if runner is not None:
                runner.close()
        finally:
            try:
                if agent is not None and hasattr(agent, "close"):
                    agent.close()
            finally:
                self._keep_unsent()

    def _keep_unsent(self) -> None:
        if self.ship_root is None:  # what was not sent back stays on this node
            return
        kept = shipping.keep_unsent(self.ship_root)
        if kept:
            warnings.warn(
                f"{len(kept)} recorded episode(s) were not sent back to the driver; "
                f"kept on node {self.node or 'here'}: " + ", ".join(map(str, kept)),
                stacklevel=3,
            )


class RayRunner:
    """``workers`` :class:`RolloutWorker` actors that live until :meth:`close`,
    each asking Ray for ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs.

    Raises:
        ValueError: a resource is negative, or the actors cannot all be placed
            on a Ray running on this machine (they would wait for ever); on a
            cluster joined through ``RAY_ADDRESS``, which may grow, that is a
            warning.
    """

    def __init__(
        self,
        spec: RolloutSpec,
        make_agent: Callable[[], Any],
        *,
        workers: int,
        envs_per_worker: int = 1,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
    ) -> None:
        if cpus_per_worker < 0 or gpus_per_worker < 0:
            raise ValueError(
                f"cpus_per_worker and gpus_per_worker must be >= 0, "
                f"got {cpus_per_worker} and {gpus_per_worker}"
            )
        if spec.record_dir is not None:  # actors need not share the driver's cwd
            spec = dataclasses.replace(spec, record_dir=os.path.abspath(spec.record_dir))
        self.spec, self.make_agent = spec, make_agent
        self.workers, self.envs_per_worker = workers, envs_per_worker
        # what call_agents did, by key, in order: replayed on recreated actors
        self._agent_calls: dict[Any, Callable[[Any], Any]] = {}
        self._calls_made = 0
        # actor index -> a call that returns once the actor is up (see run's hard limit)
        self._starting: dict[int, Any] = {}
        self._started_at = [0.0] * workers  # when each actor was (re)created
        self.actors: list[Any] = [None] * workers
        self._started = init_ray(
            num_cpus=max(os.cpu_count() or 1, math.ceil(workers * cpus_per_worker))
        )
        try:  # nothing left behind when a start fails (e.g. make_agent does not pickle)
            self._start_all(cpus_per_worker, gpus_per_worker)
        except BaseException:
            self.close()
            raise

    def _start_all(self, cpus_per_worker: float, gpus_per_worker: float) -> None:
        import ray

        # the warning points at RayRunner's caller
        check_placeable(self.workers, cpus_per_worker, gpus_per_worker, stacklevel=3)
        self._driver_node = ray.get_runtime_context().get_node_id()
        self._actor_cls = ray.remote(
            num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=0
        )(RolloutWorker)
        for index in range(self.workers):
            self._start(index)

    def _start(self, index: int) -> None:
        actor = self._actor_cls.remote(
            self.make_agent, self.spec, self.envs_per_worker, self._driver_node
        )
        for token, fn in self._agent_calls.items():
            # in order, before any play (actor calls are FIFO); one that fails
            # makes the actor refuse to play (its jobs come back as errors)
            actor.call_agent.remote(fn, token)
        self.actors[index] = actor
        self._starting[index] = actor.pid.remote()  # returns after __init__ and the calls
        self._started_at[index] = time.monotonic()

    def _replace(self, index: int) -> None:
        import ray

        ray.kill(self.actors[index], no_restart=True)
        self._start(index)

    def _up(self, index: int) -> bool:
        """Whether actor ``index`` has started (or failed to: its play says so)."""
        import ray

        starting = self._starting.get(index)
        if starting is not None and ray.wait([starting], timeout=0)[0]:
            del self._starting[index]
        return index not in self._starting

    def _startup_left(self, index: int) -> float | None:
        """Seconds actor ``index`` has left to start (``startup_timeout_s``), or
        None when it is up or has no limit."""
        limit = self.spec.startup_timeout_s
        if limit is None or self._up(index):
            return None
        return max(0.0, limit - (time.monotonic() - self._started_at[index]))

    def call_agents(self, fn: Callable[[Any], Any], key: str | None = None) -> None:
        """``fn(agent)`` in every actor, and in every actor made later; a later
        call with the same ``key`` replaces this one there (e.g. the latest
        adapter replaces the previous). An actor that died meanwhile, or is
        past ``startup_timeout_s`` without having started, is recreated (and
        gets every call, this one included); an actor still starting is waited
        for up to that limit (without one, for as long as it takes)."""
        import ray

        self._calls_made += 1
        token = ("key", key) if key is not None else ("call", self._calls_made)
        self._agent_calls.pop(token, None)  # a new key goes last, as it was made last
        self._agent_calls[token] = fn
        calls = [actor.call_agent.remote(fn, token) for actor in self.actors]
        for index, call in enumerate(calls):
            try:
                try:
                    ray.get(call, timeout=self._startup_left(index))
                except ray.exceptions.GetTimeoutError:
                    if not self._up(index):  # past its start-up limit: as if it died
                        self._replace(index)
                        continue
                    ray.get(call)  # up just in time: the call itself may take long
            except ray.exceptions.RayActorError:
                self._replace(index)

    def run(
        self, jobs: Sequence[Job], on_result: Callable[[EpisodeResult], None] | None = None
    ) -> list[EpisodeResult]:
        import ray

        play = _Play(self, jobs, on_result)
        try:
            while play.queue or play.running:
                play.hand_out()
                ready, _ = ray.wait(list(play.running), num_returns=1, timeout=1.0)
                for gen in ready:
                    play.collect(gen)
                play.check_clocks(time.monotonic())
        except BaseException:
            # Left early (on_result raised, Ctrl-C): the episodes in flight will not
            # be collected. Their actors are replaced now, so that neither a later
            # run nor close() waits behind them (nor counts their time as its own).
            for call in play.running.values():
                self._replace(call.index)
            play.running.clear()
            raise
        return in_job_order(jobs, play.results)

    def close(self) -> None:
        """Close every actor's envs (browser) and agent, all at once and for at most
        ``CLOSE_TIMEOUT_S`` in all, then kill the actors; shut down the Ray this
        runner started. Safe twice."""
        import ray

        try:
            # an actor that never started (waiting for resources) has nothing to close
            up = [a for i, a in enumerate(self.actors) if a is not None and self._up(i)]
            try:
                close_actors(up, CLOSE_TIMEOUT_S)
            finally:
                # every actor: the ones still starting (those closed were killed already,
                # and killing one again does nothing)
                for actor in self.actors:
                    if actor is not None:
                        ray.kill(actor, no_restart=True)
        finally:
            self.actors = []
            self._starting.clear()
            started, self._started = self._started, False
            if started:
                shutdown_ray()


@dataclasses.dataclass
class _Call:
    """An actor call in flight: its actor, its ``{position in the call: (job,
    attempt)}`` not yet returned, when its kill clock started, whether its actor
    had started (or failed to) when it was handed the jobs, and whether the
    actor has begun the call (:meth:`RolloutWorker.stream`'s ``announce``)."""

    index: int
    left: dict[int, tuple[Job, int]]
    began: float
    actor_was_up: bool
    begun: bool = False


class _Play:
    """One :meth:`RayRunner.run`: the jobs not yet handed out (``queue``, each
    with its attempt), the actor calls in flight (``running``: a streaming
    generator -> its :class:`_Call`) and the results so far, in the order they
    came back."""

    def __init__(
        self,
        runner: RayRunner,
        jobs: Sequence[Job],
        on_result: Callable[[EpisodeResult], None] | None,
    ) -> None:
        self.runner, self.on_result = runner, on_result
        self.queue = collections.deque((job, 0) for job in by_env_id(jobs))
        self.running: dict[Any, _Call] = {}
        self.idle = collections.deque(range(runner.workers))
        self.results: list[tuple[Job, EpisodeResult]] = []
        spec = runner.spec
        self.hard_limit = (
            None if spec.episode_timeout_s is None else spec.episode_timeout_s + spec.kill_grace_s
        )

    def finish(self, job: Job, result: EpisodeResult) -> None:
        self.results.append((job, result))
        if self.on_result is not None:
            self.on_result(result)

    def hand_out(self) -> None:
        """Give every idle actor its next jobs: up to ``envs_per_worker`` of one
        env id (an actor's envs hold one task at a time)."""
        while self.queue and self.idle:
            index = self.idle.popleft()
            batch = [self.queue.popleft()]
            while (
                self.queue
                and len(batch) < self.runner.envs_per_worker
                and self.queue[0][0].env_id == batch[0][0].env_id
            ):
                batch.append(self.queue.popleft())
            up = self.runner._up(index)  # then a death before it begins them is an idle one
            stream = self.runner.actors[index].stream.options(num_returns="streaming")
            gen = stream.remote([job for job, _ in batch], announce=True)
            self.running[gen] = _Call(index, dict(enumerate(batch)), time.monotonic(), up)

    def end(self, gen: Any) -> tuple[int, list[tuple[Job, int]]]:
        """``gen``'s call is over: its actor is idle; what it had not returned."""
        call = self.running.pop(gen)
        self.idle.append(call.index)
        return call.index, list(call.left.values())

    def lost(self, gen: Any, why: str) -> None:
        """``gen``'s actor is gone (or given up on): a new one in its place, and
        the episodes it had not returned played again, once. Jobs its actor never
        began, though it had started (it died while idle), are handed out again
        as they were: that was not their attempt."""
        call = self.running[gen]
        counts = call.begun or not call.actor_was_up
        index, left = self.end(gen)
        self.runner._replace(index)
        for job, attempt in reversed(left):
            if not counts:
                self.queue.appendleft((job, attempt))
            elif attempt == 0:
                self.queue.appendleft((job, 1))
            else:
                self.finish(job, failed_result(job, "error", f"worker lost twice: {why}", 1))

    def collect(self, gen: Any) -> None:
        """The next thing ``gen`` (ready) returned: an episode, its end, or why it failed."""
        import ray

        try:
            item = ray.get(next(gen))
        except StopIteration:  # the call ended: every episode came back
            _, left = self.end(gen)
            for job, attempt in left:  # (none, unless the worker lost one)
                self.finish(
                    job, failed_result(job, "error", "the worker returned no result", attempt)
                )
        except ray.exceptions.RayTaskError as exc:
            _, left = self.end(gen)
            cause = getattr(exc, "cause", None)  # what the actor raised
            error = str(exc) if cause is None else describe_error(cause)
            for job, attempt in left:
                self.finish(job, failed_result(job, "error", error, attempt))
        except ray.exceptions.RayError as exc:  # the actor died, ran out of memory, lost
            self.lost(gen, describe_error(exc))  # its node or a returned object
        else:
            if item is None:  # the actor has begun the call: its jobs' attempt counts
                self.running[gen].begun = True
                return
            position, result, packed = item
            if packed is not None:  # recorded on another node: into record_dir here
                record_dir = str(self.runner.spec.record_dir)
                result.episode_dir = _arrived(packed, record_dir, result)
            left = self.running[gen].left
            job, result.retries = left.pop(position)
            self.finish(job, result)
            if not left:  # all back: idle now (the call's end is a formality)
                self.end(gen)

    def check_clocks(self, now: float) -> None:
        """Give up on actors past their start-up limit (as on one that died) and
        on calls past ``episode_timeout_s + kill_grace_s`` (timeouts); a call's
        kill clock starts once its actor is up."""
        runner = self.runner
        for gen, call in list(self.running.items()):
            index = call.index
            if not runner._up(index):
                if runner._startup_left(index) == 0:
                    limit = runner.spec.startup_timeout_s
                    self.lost(gen, f"the worker did not start within {limit:g} s")
                else:
                    call.began = now
            elif (
                self.hard_limit is not None
                and now - call.began > self.hard_limit
                and not gen.next_ready()
            ):
                _, unreturned = self.end(gen)
                runner._replace(index)
                error = f"no result within {self.hard_limit:.0f} s: the worker was killed"
                for job, attempt in unreturned:
                    self.finish(job, failed_result(job, "timeout", error, attempt))


def _arrived(packed: bytes, record_dir: str, result: EpisodeResult) -> str | None:
    """Where the episode an actor sent back now is, or None (with a warning)
    when it could not be put into ``record_dir``: the run goes on without it,
    and its bytes are kept beside ``record_dir`` when they can be
    (:func:`shipping.keep_unshipped`)."""
    try:
        return str(shipping.unpack(packed, record_dir))
    except (OSError, ValueError) as exc:
        what = f"the recording of {result.env_id} seed {result.seed}"
        try:
            kept = shipping.keep_unshipped(packed, record_dir, f"{result.env_id}-{result.seed}")
        except OSError as again:
            warnings.warn(f"{what} was lost: {exc}; keeping its tar failed: {again}", stacklevel=2)
        else:
            warnings.warn(f"{what} was not unpacked ({exc}); its tar is kept: {kept}", stacklevel=2)
        return None
