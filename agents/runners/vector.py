"""``runner=vector``: N envs in one shared Chromium, one batched policy call per step.

Per task, a :class:`~browser_env.vector.SharedBrowserVectorEnv` of up to
``workers`` sub-envs (all tasks share one :class:`~browser_env.vector.SharedBrowser`)
plays the task's jobs, refilling a sub-env with the next job as soon as its
episode ends. Each sub-env has its own fork of the agent (its episode state);
the leader agent's ``act_batch`` decides for every running sub-env in one
model call. The sub-envs are stepped through the vector env's ``envs``
rather than ``step``: episodes start and end at different steps, and
Gymnasium's vector ``step`` steps every sub-env. The sub-envs' resets and
steps run concurrently (:func:`browser_env.concurrent.run_concurrently`, as
the vector env's own ``step`` does).

The browser and the vector envs outlive one :meth:`VectorRunner.run`, so a
learner that plays a batch of episodes every optimiser step launches its
browser once.

``agent_ms`` of a step is the batch call's time divided by the batch size
(the model time each decision cost).

An exception an episode's reset or step raises, or its fork's decision (a
row of the batched call that raised alone: :class:`agents.batch.RowErrors`),
ends :meth:`VectorRunner.run` (as under ``runner=local``), unless
``record_errors``: then that episode alone is recorded with ``status="error"`` and the exception's type and
message, its sub-env takes the next job, and the others play on. When the
run ends on a reset's exception, the other episodes reset in that round
(concurrently: their resets had run) never played a step; like the jobs
after a failing one under ``runner=local`` they leave no recording, not a
zero-step ``abandoned`` one. Episodes that had played steps keep theirs
(ended ``abandoned`` when the envs close or reset; after Ctrl+C, in the loop
or in the caller's ``on_result``, ``complete: false`` with reason
``interrupted: KeyboardInterrupt``). Ray actors
with several envs use that, so that one bad job does not take the actor's
other episodes with it (an exception of the batched policy call itself
still ends the run: it belongs to no one episode).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from agents.batch import RowErrors
from agents.rollout import Episode, EpisodeResult
from agents.runners import (
    Job,
    RolloutSpec,
    abort_recording,
    by_env_id,
    collect,
    reset_error_result,
)
from browser_env.concurrent import run_concurrently
from browser_env.vector import close_all, launch_config

if TYPE_CHECKING:
    from agents.agent import Agent


__all__ = ["VectorRunner"]


class VectorRunner:
    """``workers`` shared-browser envs per task and the agent's batched policy.

    ``keep_envs``: every task's vector env stays open for later runs; else a
    task's is closed when the next task's opens. ``record_errors``: see the
    module docstring. ``close`` closes the envs, then the browser.
    """

    def __init__(
        self,
        spec: RolloutSpec,
        agent: Agent,
        *,
        workers: int,
        keep_envs: bool = False,
        record_errors: bool = False,
    ) -> None:
        if not hasattr(agent, "fork") or not hasattr(agent, "act_batch"):
            raise ValueError(
                f"runner=vector needs an agent with fork() and act_batch(); "
                f"{type(agent).__name__} has not: use runner=local or runner=ray"
            )
        self.spec, self.agent, self.workers, self.keep_envs = spec, agent, workers, keep_envs
        self.record_errors = record_errors
        # the envs' launch settings (extra_args, render_mode="human") are the
        # shared browser's: the sub-envs are handed it
        self._launch, self._env_kwargs = launch_config(dict(spec.env_kwargs))
        self.forks = [agent.fork() for _ in range(workers)]
        self.vecs: dict[str, Any] = {}
        self._shared: Any = None

    def _vec(self, env_id: str, n: int) -> Any:
        """The task's vector env with at least ``n`` sub-envs."""
        from browser_env.vector import SharedBrowser, SharedBrowserVectorEnv

        vec = self.vecs.get(env_id)
        if vec is not None and vec.num_envs >= n:
            return vec
        if vec is not None:
            self.vecs.pop(env_id).close()
        if not self.keep_envs:
            self.close_envs()
        if self._shared is None:
            self._shared = SharedBrowser(self._launch)
        self.vecs[env_id] = SharedBrowserVectorEnv(
            n,
            env_id=env_id,
            browser=self._shared,
            wrappers=[self.spec.wrap],
            autoreset_mode="Disabled",
            **self._env_kwargs,
        )
        return self.vecs[env_id]

    def run(
        self, jobs: Sequence[Job], on_result: Callable[[EpisodeResult], None] | None = None
    ) -> list[EpisodeResult]:
        played = self.iter_run(jobs)
        try:
            return collect(jobs, played, on_result)
        except BaseException as exc:
            # on_result raised (Ctrl+C too) while other sub-envs' episodes are
            # under way: raise it where _play waits, so they are recorded as
            # after an interrupt in its loop, not "abandoned" when the envs close
            with contextlib.suppress(BaseException):
                played.throw(exc)
            raise

    def iter_run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, EpisodeResult]]:
        """Play ``jobs``, yielding each (job, its episode's result) as it ends (the
        job object itself: a caller can tell apart jobs that are equal)."""
        groups: dict[str, collections.deque[Job]] = {}
        for job in by_env_id(jobs):
            groups.setdefault(job.env_id, collections.deque()).append(job)
        for env_id, pending in groups.items():
            n = min(self.workers, len(pending))
            vec = self._vec(env_id, n)
            play = _play(
                vec.envs[:n],
                self.forks[:n],
                self.agent,
                pending,
                self.spec,
                self._shared,
                record_errors=self.record_errors,
            )
            yield from play

    def close_envs(self) -> None:
        vecs, self.vecs = list(self.vecs.values()), {}
        close_all(vecs)

    def close(self) -> None:
        try:
            self.close_envs()
        finally:
            shared, self._shared = self._shared, None
            if shared is not None:
                shared.close()


def _play(
    envs: Sequence[Any],
    forks: Sequence[Any],
    leader: Any,
    pending: Any,
    spec: RolloutSpec,
    browser: Callable[[], Any],
    *,
    record_errors: bool = False,
):
    """Yield each (job, its episode's result) as it ends, refilling the sub-env
    with the next job.

    ``browser`` (the envs' :class:`~browser_env.vector.SharedBrowser`) is called
    before each concurrent round of resets, so a browser or driver that died is
    replaced once, not by every sub-env at the same time. With
    ``record_errors`` an episode whose reset or step raises is yielded as an
    ``error`` result; else the exception ends the run.
    """
    slots: list[Episode | None] = [None] * len(envs)
    jobs: list[Job | None] = [None] * len(envs)
    deadlines: list[float] = [float("inf")] * len(envs)
    errors: dict[int, EpisodeResult] = {}  # sub-env -> its episode's error result

    def guarded(i: int, call: Callable[[], None]) -> None:
        try:
            call()
        except Exception as exc:
            if not record_errors:
                raise
            episode, slots[i] = slots[i], None
            if episode is None:  # its reset raised
                errors[i] = reset_error_result(jobs[i], exc, envs[i])
            else:  # the steps so far; its recording ends as an error, not "abandoned"
                errors[i] = episode.fail(exc)

    def start(i: int) -> None:
        slots[i] = jobs[i] = None
        if pending:
            job = jobs[i] = pending.popleft()
            timeout = spec.episode_timeout_s  # counted from before reset, as runner=local does
            deadlines[i] = float("inf") if timeout is None else time.monotonic() + timeout
            slots[i] = Episode(
                envs[i],
                forks[i],
                job.seed,
                options=job.options,
                max_steps=spec.max_steps,
                agent_seed=job.agent_seed,
                keep_samples=spec.keep_samples,
            )

    def start_all(indices: Sequence[int]) -> None:
        if indices and pending:
            browser()
        try:
            run_concurrently(
                [functools.partial(guarded, i, functools.partial(start, i)) for i in indices]
            )
        except BaseException:  # the run ends here: what this round began never played
            for i in indices:
                if slots[i] is not None:
                    _discard_unplayed(slots[i])
            raise

    try:
        start_all(range(len(envs)))
        while any(slot is not None for slot in slots) or errors:
            ended = list(errors)
            for i in ended:
                yield jobs[i], errors.pop(i)
            for i, slot in enumerate(slots):
                if slot is None:
                    continue
                if not slot.done and time.monotonic() > deadlines[i]:
                    try:
                        stopped = slot.stop("timeout")
                    except Exception as exc:  # its recording could not be ended: this one fails
                        if not record_errors:
                            raise
                        stopped = slot.fail(exc)
                    yield jobs[i], stopped
                    ended.append(i)
                elif slot.done:  # ended on reset (a zero-step limit) or on its last step
                    yield jobs[i], slot.result()
                    ended.append(i)
            if ended:
                start_all(ended)
                continue  # the new episodes' deadlines count before their first step
            active = [i for i, slot in enumerate(slots) if slot is not None and not slot.done]
            if not active:
                continue
            t0 = time.perf_counter()
            try:
                decisions = leader.act_batch(
                    [slots[i].obs for i in active], [forks[i] for i in active]
                )
            except RowErrors as exc:  # some rows' own failures: theirs alone (agents.batch)
                if not record_errors:  # as runner=local would raise it: the row's own
                    raise next(iter(exc.errors.values())) from None
                for i, result in zip(active, exc.results, strict=True):
                    if isinstance(result, Exception):
                        guarded(i, functools.partial(_reraise, result))
                decisions = [r for r in exc.results if not isinstance(r, Exception)]
                active = [
                    i
                    for i, r in zip(active, exc.results, strict=True)
                    if not isinstance(r, Exception)
                ]
            per_env_ms = (time.perf_counter() - t0) * 1e3 / max(1, len(active))
            run_concurrently(
                [
                    functools.partial(
                        guarded, i, functools.partial(slots[i].step, action, info, per_env_ms)
                    )
                    for i, (action, info) in zip(active, decisions, strict=True)
                ]
            )
    except BaseException as exc:  # Ctrl+C: the episodes under way stay incomplete
        for env in envs:
            abort_recording(env, exc)
        raise


def _reraise(exc: Exception) -> None:
    raise exc


def _discard_unplayed(episode: Episode) -> None:
    """Remove the recording of ``episode`` if it has not played a step (its
    run ended before it could): an episode that never was, not an abandoned one."""
    recorder = episode.recorder
    path = None if recorder is None else recorder.last_episode_dir
    if path is None or episode.steps:
        return
    with contextlib.suppress(Exception):  # a write that failed: the files go anyway
        recorder.end_episode("abandoned")
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(ValueError):
        recorder.episode_dirs.remove(path)  # it lists the episodes written
