"""Roll an agent over a suite and report: ``python -m benchmarks.run suite=S agent=A``.

::

    python -m benchmarks.run                                  # the embedded default
    python -m benchmarks.run suite=miniwob_expert agent=expert episodes=50
    python -m benchmarks.run agent=llm backend=openai model=meta/llama-3.1-8b-instruct
    python -m benchmarks.run --multirun agent=random,expert
    python -m benchmarks.run suite=miniwob_smoke agent=expert runner=ray workers=2
    python -m benchmarks.run output_dir=runs/a resume=true       # go on with a stopped run
    python -m benchmarks.run --multirun agent=random,expert 'output_dir=runs/${hydra:job.num}'

``runner=local|vector|ray`` and ``workers=N`` pick the rollout engine's runner
(:mod:`agents.runners`); the table is the same whichever runs it.

Prints a table (task, episodes, success rate, mean steps, mean reward, step
latency) and writes into the run's Hydra output dir: ``results.json`` (see
:mod:`benchmarks.report`), ``success.png``, a wandb run (offline unless a key
is set; ``wandb=false`` turns it off; :mod:`benchmarks.tracking`) and, with ``record=true``, one
episode directory per episode under ``episodes/`` (open them with
``python -m browser_env.view <dir>``). :func:`run` is the plain function
behind the ``@hydra.main`` wrapper; tests call it with a composed config.

A config that cannot run (``episodes=0``, ``runner=vectr``, an unknown task,
``agent=llm`` with no ``model=``, a model path that does not exist,
``agent=expert`` on a suite with tasks it has no policy for) is refused before
anything is written, a model loads or a browser starts: the command prints
``error: <why>`` and exits with status 2 (:mod:`browser_env.refusal`). So is
a second run into an output dir that a running one holds (it is held for the
whole run: :func:`browser_env.dirlock.hold_dir`), ``resume=true`` where there
is no ``results.jsonl`` (outside a ``--multirun`` sweep, whose jobs that never
started have none), and a resume with fewer ``episodes=`` than the log holds.
A run stopped by Ctrl-C or SIGTERM (a scheduler's) says in one line how many
episodes ``results.jsonl`` kept and how to play the rest with ``resume=true``,
and exits with status 130 or 143, without a traceback. ``results.json``
records the config as the agent was built from it (the top-level ``model=``
in its backend) and the command-line overrides, by which
:mod:`benchmarks.compare` labels runs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from agents.rollout import EpisodeResult
from agents.runners import (
    Job,
    RolloutSpec,
    check_env_ids,
    ray_spec_options,
    result_key,
    run_rollouts,
    runner_options,
)
from benchmarks.config import BenchmarkConfig, register_config
from benchmarks.report import format_table, plot_success, write_results
from benchmarks.result_log import ResultLog, fingerprint, restore_logged, set_aside_unlogged
from benchmarks.suites import Suite
from browser_env.dirlock import hold_dir
from browser_env.refusal import exit_on_interrupt, exit_on_refusal, refusing
from browser_env.registration import task_name
from browser_env.rundir import register_resolvers

__all__ = ["main", "run"]


PER_JOB = "${hydra:job.num}"
"""What makes an ``output_dir=`` template name one dir per ``--multirun`` job, the
same one when the sweep runs again (``job.override_dirname`` holds the overrides,
``resume=true`` among them; ``job.id`` is a launcher's, e.g. a SLURM job id)."""


def _output_dir(cfg: DictConfig) -> Path:
    if cfg.get("output_dir"):
        raw = str(OmegaConf.to_container(cfg, resolve=False)["output_dir"])
        if _in_a_sweep() and PER_JOB not in raw:
            raise ValueError(
                f"output_dir={raw} with --multirun would put every job's results in one dir; "
                "name one per job (output_dir='runs/${hydra:job.num}', which resume=true "
                "can name again) or leave it out (each job writes to hydra.sweep.dir/<job number>)"
            )
        return Path(cfg.output_dir)
    from browser_env.rundir import run_dir

    return run_dir(Path("outputs") / "benchmarks")


def _in_a_sweep() -> bool:
    """Whether this is a ``--multirun`` job (whose overrides reach every job alike)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run(cfg: DictConfig) -> dict[str, Any]:
    """Roll ``cfg.agent`` over ``cfg.suite``; return the ``results.json`` content.

    The output dir is held from before its ``results.jsonl`` is read until the
    run ends (:func:`browser_env.dirlock.hold_dir`): a second run into it is
    refused at once, naming ``output_dir``."""
    from hydra.utils import instantiate

    import browser_env  # noqa: F401 - registers the ids
    from agents.agent_config import check_agent
    from agents.hub_progress import hub_progress
    from agents.run_config import check_options

    with refusing():  # before anything is written, a model loads or a browser starts
        cfg = check_options(cfg, BenchmarkConfig)
        options = runner_options(cfg)
        ray_options = ray_spec_options(cfg, options["runner"])
        if cfg.get("resume") and not cfg.get("output_dir"):
            raise ValueError("resume=true needs output_dir=DIR: the stopped run's output dir")
        suite: Suite = instantiate(cfg.suite)
        env_ids = suite.env_ids
        check_env_ids(Job(env_id, 0) for env_id in env_ids)
        check_agent(cfg, env_ids)
        out = _output_dir(cfg)
    with _holding(out), hub_progress(bool(cfg.progress)):  # progress=false: no loading bars
        return _play(cfg, out, suite, options, ray_options)


def _play(
    cfg: DictConfig,
    out: Path,
    suite: Suite,
    options: dict[str, Any],
    ray_options: dict[str, Any],
) -> dict[str, Any]:
    """:func:`run` once its options are checked and ``out`` is held."""
    from tqdm.auto import tqdm

    from agents.run import build_agent, recording_info

    runner = options["runner"]
    start = suite.seed if cfg.get("seed") is None else int(cfg.seed)
    seeds = Suite.seeds(start, int(cfg.episodes))
    jobs = [Job(env_id, seed) for env_id in suite.env_ids for seed in seeds]
    with refusing():  # a stopped run's log without resume=true; another run's, or none, with it
        log = _open_log(cfg, out, jobs, start)
    kept = [log.done[j.env_id, j.seed] for j in jobs if (j.env_id, j.seed) in log.done]
    todo = [j for j in jobs if (j.env_id, j.seed) not in log.done]
    # Ray actors build their own agents (a model on a GPU would load here too)
    with refusing():
        agent = None if runner == "ray" or not todo else build_agent(cfg)
    try:  # the agent built here is closed if what follows fails before the episodes
        log.start()  # only now: a refused agent leaves a stopped or finished log as it was
        _set_aside_results(out)  # an earlier run's table: this run's replaces it once it ends
        env_kwargs: dict[str, Any] = {
            "headless": bool(cfg.headless),
            **suite.env_kwargs,
            **OmegaConf.to_container(cfg.env_kwargs, resolve=True),
        }
        if cfg.get("modalities"):
            env_kwargs["modalities"] = tuple(cfg.modalities)
        if suite.max_episode_steps or cfg.get("max_steps"):
            env_kwargs["max_episode_steps"] = int(cfg.get("max_steps") or suite.max_episode_steps)
        info, source = recording_info(cfg, agent)  # info.name: the agent's name, built or not
        spec = RolloutSpec(
            env_kwargs=env_kwargs,
            record_dir=str(out / "episodes") if cfg.record else None,
            agent_info=info,
            source=source,
            episode_timeout_s=cfg.get("episode_timeout_s"),
            **ray_options,
        )
        if log.resumed:
            print(f"resuming {out}: {len(kept)} of {len(jobs)} episodes already played")
        _match_episode_dirs(out / "episodes", log)
        progress = tqdm(
            total=len(jobs), initial=len(kept), desc=suite.name, disable=not cfg.progress, unit="ep"
        )
    except BaseException:
        if agent is not None:
            agent.close()
        raise

    def done(result: EpisodeResult) -> None:
        log.append(result)  # on disk before the next: a stopped run resumes from here
        progress.set_postfix(task=_task_label(result.env_id), success=result.success)
        progress.update()
        if _TERMINATED.is_set():  # the handler's SystemExit was swallowed (see _sigterm_stops)
            raise SystemExit(143)

    try:
        results = kept + (
            run_rollouts(
                todo,
                spec,
                agent=agent,
                make_agent=functools.partial(build_agent, cfg),
                **options,
                on_result=done,
            )
            if todo
            else []
        )
    except BaseException:
        played = sum((j.env_id, j.seed) in log.done for j in jobs)  # what the log holds
        if played:
            print(
                f"\nstopped after {played} of {len(jobs)} episodes, kept in {log.path}; "
                f"play the rest with the same command and output_dir={out} resume=true",
                file=sys.stderr,
            )
        raise
    finally:
        progress.close()
        if agent is not None:
            agent.close()
    results.sort(key=result_key)
    data = write_results(
        out / "results.json",
        results,
        suite=suite.name,
        agent=info.name,
        config=_as_built(cfg),
        overrides=_overrides(),
    )
    log.finish()
    print(format_table(data["tasks"], data["overall"]))
    title = f"{_agent_label(info.name)} on {suite.name}"
    plot = plot_success(data["tasks"], out / "success.png", title=title)
    print(f"\nresults: {out / 'results.json'}" + (f"\nplot:    {plot}" if plot else ""))
    if cfg.record:
        print(f"episodes: {out / 'episodes'}  (python -m browser_env.view {out / 'episodes'})")
    if cfg.get("wandb"):
        from benchmarks.tracking import log_benchmark

        log_benchmark(data, out, project=cfg.wandb_project, name=cfg.get("run_name"))
    return data


@contextlib.contextmanager
def _holding(out: Path) -> Iterator[None]:
    """Hold ``out`` for the block (:func:`hold_dir`; another run's hold is a
    refusal naming ``output_dir``). The dirs made here for a run that is then
    refused, and left empty, are removed (``tidy``): a refusal writes nothing."""
    with contextlib.ExitStack() as held:
        with refusing():
            held.enter_context(hold_dir(out, "output_dir", tidy=True))
        yield


def _open_log(cfg: DictConfig, out: Path, jobs: list[Job], start: int) -> ResultLog:
    """``out``'s ``results.jsonl``, read (not yet started: :meth:`ResultLog.start`).

    ``resume=true`` with no log there is refused (a misspelt ``output_dir``
    has nothing to resume), except in a ``--multirun`` sweep, whose jobs that
    never started have none: such a job starts, saying so. A log holding
    episodes that ``jobs`` leave out (``episodes=`` smaller than the logged
    run's) is refused too: the table, ``results.jsonl`` and ``episodes/``
    stay one run's episodes."""
    resume = bool(cfg.get("resume"))
    path = out / "results.jsonl"
    if resume and not path.exists():
        if not _in_a_sweep():
            raise ValueError(
                f"resume=true but {path} does not exist: nothing to resume (is output_dir the "
                "stopped run's?); without resume=true a run starts there afresh"
            )
        print(
            f"resume=true: {path} does not exist yet (a job the sweep never started): starting it"
        )
    config = OmegaConf.to_container(cfg, resolve=True)
    log = ResultLog(path, fingerprint(config), resume=resume, start=False)
    asked = {(j.env_id, j.seed) for j in jobs}
    beyond = [key for key in log.done if key not in asked]
    if beyond:
        env_ids = {j.env_id for j in jobs}
        counts = [s - start + 1 for e, s in beyond if e in env_ids and isinstance(s, int)]
        hint = f"episodes={max(counts)}" if len(counts) == len(beyond) else "its episodes="
        raise ValueError(
            f"cannot resume with episodes={cfg.episodes}: {path} holds {len(beyond)} more "
            "episodes of the run there, which the table and episodes/ would leave out; resume "
            f"with {hint} (or more), or write a run of fewer episodes to another output_dir"
        )
    return log


#: what a finished run writes beside its log, and the names an earlier run's get
_RESULT_FILES = {"results.json": "results.stale.json", "success.png": "success.stale.png"}


def _set_aside_results(out: Path) -> None:
    """Rename an earlier finished run's ``results.json`` and ``success.png`` in
    ``out`` to ``results.stale.json`` and ``success.stale.png`` (replacing older
    stale ones) as a run starts there: were this run stopped, they would
    describe another run beside its log and episodes (``benchmarks.compare``
    read such a dir as the earlier run, whose episodes were gone). This run
    writes its own when it ends."""
    for name, stale in _RESULT_FILES.items():
        if (out / name).is_file():
            os.replace(out / name, out / stale)


def _match_episode_dirs(episodes: Path, log: ResultLog) -> None:
    """``episodes/`` holds exactly the logged episodes' dirs (:data:`ResultLog.done`,
    which are the table's): any of them set aside into ``episodes.stale/`` earlier
    comes back, every other one goes there."""
    kept = list(log.done.values())
    back = restore_logged(episodes, kept)
    if back:
        print(f"moved {len(back)} episode dirs with a logged result back into {episodes}")
    stale = set_aside_unlogged(episodes, kept)
    if stale:
        print(f"moved {len(stale)} episode dirs with no logged result to {stale[0].parent}")


def _as_built(cfg: DictConfig) -> dict[str, Any]:
    """``cfg`` resolved as it runs (:func:`agents.agent_config.with_model_overrides`: the
    top-level ``model`` and ``adapter`` in the agent's backend), even where this
    process builds no agent (Ray actors build theirs; a resumed run may have
    nothing left to play): what ``results.json`` records is the config that ran."""
    from agents.agent_config import with_model_overrides

    return OmegaConf.to_container(with_model_overrides(cfg), resolve=True)


def _overrides() -> list[str] | None:
    """This run's command-line overrides (Hydra's task overrides, as typed), or
    ``None`` outside ``@hydra.main``. ``results.json`` records them: a
    ``--multirun`` job with ``output_dir=`` has no ``.hydra/`` of its own (it
    stays in the sweep dir), and ``benchmarks.compare`` labels runs by them."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return [str(override) for override in HydraConfig.get().overrides.task]


def _task_label(env_id: str) -> str:
    """``browser_env/miniwob.click-button-sequence-v0`` -> ``click-button-sequence``
    (at most 32 characters: the progress bar's)."""
    return task_name(env_id).removeprefix("miniwob.")[:32]


def _agent_label(name: str) -> str:
    """``name`` (the agent's kind: ``llm``, ``expert``, ...), or the agent config
    chosen on the command line when it says more (``agent=tiny`` is an ``llm``)."""
    from hydra.core.hydra_config import HydraConfig

    choice = HydraConfig.get().runtime.choices.get("agent") if HydraConfig.initialized() else None
    return f"{choice} ({name})" if choice and choice != name else name


#: set by :func:`_sigterm_stops`' handler. Python runs a signal handler between
#: any two bytecodes, also inside a weakref callback or ``__del__``, where the
#: ``SystemExit`` it raises is printed and ignored ("Exception ignored in ...");
#: the run then stops at its next episode's end instead (seen in a test run).
_TERMINATED = threading.Event()


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """While the block runs, SIGTERM (``kill``, a scheduler's time limit)
    raises ``SystemExit(143)`` in the main thread, as Ctrl-C raises
    ``KeyboardInterrupt``: the run then stops as it does on Ctrl-C, saying
    what ``results.jsonl`` kept and how to resume (the default handler ends
    the process without a word). A second SIGTERM meets the handler there was
    before, as does any after the block. Only the main thread sets handlers:
    elsewhere the block runs as it is; a SIGTERM the process ignores
    (``SIG_IGN``, as ``nohup`` leaves SIGHUP) stays ignored. ``runner=ray``:
    ``ray.init`` puts in its own handler, which stops the run (with Ray's
    exit status); the one from before the block is put back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, previous)
        _TERMINATED.set()
        raise SystemExit(128 + signum)

    _TERMINATED.clear()
    previous = signal.getsignal(signal.SIGTERM)
    if previous is None or previous == signal.SIG_IGN:  # not Python's to put back, or ignored
        yield
        return
    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


register_resolvers()  # output_dir= is Hydra's run dir too (conf: hydra.run.dir)
register_config()  # conf/benchmark.yaml builds on benchmark_schema


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    with exit_on_refusal(), _sigterm_stops(), exit_on_interrupt():  # it says what it kept
        run(cfg)


if __name__ == "__main__":
    main()
