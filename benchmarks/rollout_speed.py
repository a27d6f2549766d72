"""Rollout throughput of the runners, measured in one run.

::

    python -m benchmarks.rollout_speed                     # N = 1, 2, 4, 8; 160 env steps a run
    python -m benchmarks.rollout_speed --sizes 1,4 --steps 320 --json speed.json
    python -m benchmarks.rollout_speed --skip ray,policy --vector-rounds 5

For each N it steps N envs of one MiniWoB++ task (click-checkboxes, full
observation: elements, text and screenshot) with seeded random clicks,
``NextStep`` autoreset, in these ways:

* ``separate``: ``gymnasium.make_vec(..., vectorization_mode="async")``: one
  process and one Chromium per env (what one gets without this project's
  vector env);
* ``shared``: ``gymnasium.make_vec(...)``: N contexts of one Chromium
  (:class:`browser_env.vector.SharedBrowserVectorEnv`), stepped concurrently;
* ``shared-seq`` (largest N only): the same, ``concurrent=False`` (stepped
  one after another, as Gymnasium's ``SyncVectorEnv`` does);
* ``ray``: :class:`browser_env.ray_vector.RayVectorEnv`, one actor per env.

and reports env steps/s and episodes/s (wall clock), CPU-ms per env step
(user + system time of every process involved: this one, its children, the
browsers and, for ``ray``, the actors' process trees) and memory: PSS of the
same process trees, and PSS per extra env ``(PSS(N) - PSS(1)) / (N - 1)``.
Each browser row is measured ``--vector-rounds`` times, the rows taking turns
(round 1 of every row, then round 2, ...), and the table shows the median:
on a shared or virtual machine one run's CPU figures drift by 10-20%, and
taking turns lets a drift weigh on every row alike. The summary line under
the table gives the issue's ratios: shared N=max against one env.

``runners`` then measures the rollout engine itself (:mod:`agents.runners`)
on the same task with seeded random clicks (at most 8 steps an episode):
the steady-state time per episode of ``runner=local`` and of ``runner=ray
workers=1``, measured in interleaved rounds so a drifting load weighs on
both alike (the Ray overhead per episode), then, for the largest N, N actors
of one env each and 2 actors owning N/2 contexts of one browser each
(``envs_per_worker``). Actors and browsers are started by a warm-up run
first (their start-up time is its own column). CPU-ms per step there counts
every process under this one, Ray's own included.

``policy`` plays the tiny LLM policy (``agent=tiny``) on the same task with
``runner=vector``: episodes/s at N = 1 and at the largest N, with the policy
batched (one ``generate_batch`` per step) and unbatched (one ``generate`` per
env), every row on the same episodes, after a warm-up (start-up is its own
column) and an uncounted round, in interleaved rounds; and the model's time
per decision (:mod:`benchmarks.rollout_speed_policy`).

Order: the browser rows, the policy rows, then Ray starts (once) for the
``runners`` and ``ray`` rows, so its idle processes do not compete with the
rows before.

CPU-ms per step and memory per env carry over to other machines; wall-clock
figures depend on the cores free while measuring (say so when reporting them).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks.arguments import refuse_below, refuse_unwritable, unknown_tasks
from benchmarks.rollout_speed_policy import measure_policy
from benchmarks.rollout_speed_report import report

__all__ = ["main", "measure_policy", "measure_runners", "measure_vector"]

TASK = "click-checkboxes"
MODES = ("separate", "shared", "shared-seq", "ray")
PARTS = (*MODES, "runners", "policy")


def _tree(pids: Sequence[int], *, without_ray: bool = False) -> list[Any]:
    """The processes under ``pids`` (themselves included); ``without_ray``
    leaves out Ray's own processes and everything under them (a local
    runner's share of a tree that also holds a running Ray)."""
    import psutil

    procs: dict[int, Any] = {}
    stack = []
    for pid in pids:
        try:
            stack.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    while stack:
        proc = stack.pop()
        if proc.pid in procs or (without_ray and _is_ray(proc)):
            continue
        procs[proc.pid] = proc
        try:
            stack.extend(proc.children())
        except Exception:  # noqa: BLE001 - a process may end while we look
            continue
    return list(procs.values())


def _is_ray(proc: Any) -> bool:
    try:
        name = proc.name()
        head = " ".join(proc.cmdline()[:3])
    except Exception:  # noqa: BLE001
        return False
    return name in ("raylet", "gcs_server") or name.startswith("ray::") or "/ray/" in head


def _cpu_s(procs: Sequence[Any]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except Exception:  # noqa: BLE001 - a process may end while we look
            continue
    return total


def _pss_mib(procs: Sequence[Any]) -> float:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except Exception:  # noqa: BLE001
            continue
    return total / 2**20


def _make(
    mode: str, n: int, env_id: str, env_kwargs: dict[str, Any]
) -> tuple[Any, Callable[[], list[int]]]:
    """The vector env and a function giving the root pids whose trees it uses."""
    import gymnasium as gym

    import browser_env  # noqa: F401 - registers the ids

    if mode == "separate":
        vec = gym.make_vec(
            env_id,
            num_envs=n,
            vectorization_mode="async",
            vector_kwargs={"shared_memory": False},
            **env_kwargs,
        )
        return vec, lambda: [os.getpid(), *(p.pid for p in vec.processes)]
    if mode in ("shared", "shared-seq"):
        vec = gym.make_vec(env_id, num_envs=n, concurrent=mode == "shared", **env_kwargs)
        return vec, lambda: [os.getpid()]
    from browser_env.ray_vector import RayVectorEnv

    vec = RayVectorEnv(env_id, n, **env_kwargs)
    import ray

    pids = ray.get([actor.pid.remote() for actor in vec.actors])
    return vec, lambda: [os.getpid(), *pids]


def measure_vector(
    mode: str, n: int, steps: int, task: str = TASK, env_kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Step ``n`` envs ``steps`` times each with seeded random clicks; one row of figures."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    from agents.random_agent import RandomAgent

    env_id = f"browser_env/miniwob.{task}-v0"
    vec, roots = _make(mode, n, env_id, dict(env_kwargs or {}))
    agents = [RandomAgent(seed=i, weights={"CLICK": 1.0, "FINISH": 0.0}) for i in range(n)]
    try:
        obs, _ = vec.reset(seed=0)
        vec.step(_actions(agents, obs, n))  # warm: every browser has rendered a step
        own = mode != "ray"  # separate, shared: not a Ray started for other rows
        procs = _tree(roots(), without_ray=own)
        cpu0, t0 = _cpu_s(procs), time.perf_counter()
        episodes = 0
        for _ in range(steps):
            obs, _, terminated, truncated, _ = vec.step(_actions(agents, obs, n))
            episodes += int(np.sum(terminated | truncated))
        wall = time.perf_counter() - t0
        procs = _tree(roots(), without_ray=own)
        cpu = _cpu_s(procs) - cpu0
        pss = _pss_mib(procs)
    finally:
        vec.close()
    return {
        "mode": mode,
        "n": n,
        "steps_per_s": n * steps / wall,
        "episodes_per_s": episodes / wall,
        "cpu_ms_per_step": cpu * 1e3 / (n * steps),
        "pss_mib": pss,
        "processes": len(procs),
    }


def _actions(agents: Sequence[Any], obs: dict[str, Any], n: int) -> tuple[Any, ...]:
    return tuple(agents[i].act({k: v[i] for k, v in obs.items()})[0] for i in range(n))


def measure_runners(
    configs: Sequence[tuple[str, int, int]],
    episodes: int,
    *,
    rounds: int = 1,
    steps: int = 8,
    task: str = TASK,
    env_kwargs: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Time random-click episodes of ``steps`` steps through the rollout engine,
    one row per ``(runner, workers, envs_per_worker)`` config.

    The configs' engines are open together; after a warm-up run of one episode
    per env (actors, browsers and pages started), ``rounds`` rounds each play
    ``episodes / rounds`` episodes on every engine in turn, so a load that
    drifts while measuring weighs on every config alike (what the Ray
    overhead figure needs on a shared machine). CPU time counts every process
    under this one (Ray's own included), PSS likewise at the end.
    """
    import contextlib
    import functools

    from agents.random_agent import RandomAgent
    from agents.runners import Job, RolloutEngine, RolloutSpec

    env_id = f"browser_env/miniwob.{task}-v0"
    spec = RolloutSpec(
        env_kwargs={**(env_kwargs or {}), "max_episode_steps": steps + 1}, max_steps=steps
    )
    make_agent = functools.partial(RandomAgent, weights={"CLICK": 1.0, "FINISH": 0.0})
    per_round = max(episodes // rounds, 1)
    stats = [{"wall": 0.0, "cpu": 0.0, "steps": 0, "episodes": 0, "ok": 0} for _ in configs]
    with contextlib.ExitStack() as stack:
        engines, startup = [], []
        for runner, workers, m in configs:
            t0 = time.perf_counter()
            engine = stack.enter_context(
                RolloutEngine(
                    spec,
                    make_agent=make_agent,
                    runner=runner,
                    workers=workers,
                    envs_per_worker=m,
                    keep_envs=True,
                )
            )
            engine.run([Job(env_id, 10_000 + i) for i in range(workers * m)])  # warm-up
            engines.append(engine)
            startup.append(time.perf_counter() - t0)
        for r in range(rounds):
            jobs = [Job(env_id, r * per_round + i) for i in range(per_round)]
            for engine, row, config in zip(engines, stats, configs, strict=True):
                local = config[0] != "ray"  # its own processes: not the other engine's Ray
                procs = _tree([os.getpid()], without_ray=local)
                cpu0, t0 = _cpu_s(procs), time.perf_counter()
                results = engine.run(jobs)
                row["wall"] += time.perf_counter() - t0
                row["cpu"] += _cpu_s(_tree([os.getpid()], without_ray=local)) - cpu0
                row["steps"] += sum(res.steps for res in results)
                row["episodes"] += len(results)
                row["ok"] += sum(res.status == "ok" for res in results)
        pss = _pss_mib(_tree([os.getpid()]))
    return [
        {
            "runner": runner,
            "workers": workers,
            "envs_per_worker": m,
            "episodes": row["episodes"],
            "ms_per_episode": row["wall"] * 1e3 / row["episodes"],
            "episodes_per_s": row["episodes"] / row["wall"],
            "steps_per_s": row["steps"] / row["wall"],
            "cpu_ms_per_step": row["cpu"] * 1e3 / max(row["steps"], 1),
            "pss_mib": pss,  # of all the configs' engines together
            "startup_s": start,
            "ok": row["ok"],
        }
        for (runner, workers, m), row, start in zip(configs, stats, startup, strict=True)
    ]


def _runner_plan(sizes: Sequence[int]) -> list[list[tuple[str, int, int]]]:
    """Groups of (runner, workers, envs per worker) measured together: local and
    ray at one worker (the overhead, interleaved), then for the largest N, N
    actors of one env and 2 actors of N/2 browser contexts each."""
    plan = [[("local", 1, 1), ("ray", 1, 1)]]
    n = max(sizes)
    if n > 1:
        plan.append([("ray", n, 1)])
    if n > 2:
        plan.append([("ray", 2, n // 2)])
    return plan


def _vector_steps(env_steps: int, n: int) -> int:
    return max(1, round(env_steps / n))


def _median_row(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One row from several runs of it: the median of each figure, and the runs'
    CPU-ms per step (their spread says how steady the machine was)."""
    row = dict(runs[0])
    for key in ("steps_per_s", "episodes_per_s", "cpu_ms_per_step", "pss_mib"):
        row[key] = float(np.median([r[key] for r in runs]))
    row["rounds"] = len(runs)
    row["cpu_ms_per_step_runs"] = [round(r["cpu_ms_per_step"], 1) for r in runs]
    return row


def _attempt(
    failures: list[dict[str, str]], row: str, measure: Callable[..., Any], *args: Any, **kwargs: Any
) -> list[Any]:
    """``[measure(...)]`` (or its list of rows); on an error, that row is
    recorded in ``failures`` and the run goes on (on a loaded machine a page
    load can time out; the other rows are still worth having)."""
    try:
        result = measure(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported, not swallowed
        failures.append({"row": row, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"})
        return []
    return result if isinstance(result, list) else [result]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.rollout_speed",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sizes", default="1,2,4,8", help="numbers of envs, comma-separated")
    parser.add_argument(
        "--steps",
        type=int,
        default=160,
        help="env steps per browser-row run (N envs: steps/N each)",
    )
    parser.add_argument(
        "--vector-rounds", type=int, default=3, help="runs per browser row (median shown)"
    )
    parser.add_argument(
        "--episodes", type=int, default=4, help="policy episodes per env of the largest N"
    )
    parser.add_argument(
        "--policy-rounds", type=int, default=3, help="runs per policy row (median shown)"
    )
    parser.add_argument("--task", default=TASK, help="MiniWoB++ task")
    parser.add_argument("--skip", default="", help="any of " + ",".join(PARTS))
    parser.add_argument(
        "--runner-episodes", type=int, default=16, help="episodes per runner row (runners)"
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="interleaved rounds of the local-vs-ray rows"
    )
    parser.add_argument(
        "--timeout-scale",
        type=float,
        default=1.0,
        help="multiply the envs' page-load, action and step time limits (a loaded machine)",
    )
    parser.add_argument(
        "--json",
        default=None,
        help="also write the figures here (docs/rollout_speed.json holds the committed ones)",
    )
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        parser.error(f"--sizes must be positive integers, got {args.sizes!r}")
    counts = ("steps", "vector_rounds", "episodes", "policy_rounds", "runner_episodes", "rounds")
    refuse_below(parser, args, 1, *counts)
    if not args.timeout_scale > 0:
        parser.error(f"--timeout-scale must be > 0, got {args.timeout_scale}")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(PARTS)
    if unknown:
        parser.error(f"--skip takes {', '.join(PARTS)}, got {', '.join(sorted(unknown))}")
    if unknown_tasks([args.task]):
        parser.error(f"--task: no such MiniWoB++ task: {args.task}")
    refuse_unwritable(parser, args.json, "--json")
    from tqdm.auto import tqdm

    env_kwargs: dict[str, Any] = {}
    if args.timeout_scale != 1.0:
        from browser_env.executor import ExecutorConfig

        base = ExecutorConfig()
        env_kwargs["executor"] = {
            name: getattr(base, name) * args.timeout_scale
            for name in ("navigation_timeout_ms", "action_timeout_ms", "step_timeout_ms")
        }
    load_start = os.getloadavg()
    rows: list[dict[str, Any]] = []
    runners: list[dict[str, Any]] = []
    policy: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    out: dict[str, Any] = {}

    def save() -> None:
        """The figures so far (written after every row: a long run that is
        stopped keeps what it measured)."""
        out.update(
            task=args.task,
            steps=args.steps,
            load_average={"start": load_start, "now": os.getloadavg()},
            vector=rows,
            runners=runners,
            policy=policy,
            failures=failures,
        )
        if args.json:
            from benchmarks.report import write_json_atomic

            write_json_atomic(args.json, out)

    ray_started = False
    try:
        # the browser rows first (taking turns, see the module doc), then the
        # policy, then the rows that need Ray
        plan = [(m, n) for m in ("separate", "shared") if m not in skip for n in sizes]
        if {"shared", "shared-seq"}.isdisjoint(skip) and max(sizes) > 1:
            plan.append(("shared-seq", max(sizes)))
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {key: [] for key in plan}
        turns = [key for _ in range(args.vector_rounds) for key in plan]
        for mode, n in tqdm(turns, desc="vector envs", unit="run"):
            runs[(mode, n)] += _attempt(
                failures,
                f"{mode} N={n}",
                measure_vector,
                mode,
                n,
                _vector_steps(args.steps, n),
                args.task,
                env_kwargs,
            )
            rows[:] = [_median_row(runs[key]) for key in plan if runs[key]]
            save()
        if "policy" not in skip:
            policy += _attempt(
                failures,
                "policy",
                measure_policy,
                sizes,
                args.episodes,
                args.task,
                env_kwargs,
                args.policy_rounds,
            )
            save()
        # Ray starts once for every Ray row (a start costs tens of seconds on a
        # loaded machine), after the rows above: its idle processes would
        # compete with them for the cores
        if {"ray", "runners"} - skip:
            from browser_env.ray_local import init_ray

            ray_started = init_ray(num_cpus=max(os.cpu_count() or 1, *sizes))
        if "runners" not in skip:
            for group in tqdm(_runner_plan(sizes), desc="runners", unit="run"):
                runners += _attempt(
                    failures,
                    f"runners {group}",
                    measure_runners,
                    group,
                    args.runner_episodes,
                    rounds=args.rounds if len(group) > 1 else 1,
                    task=args.task,
                    env_kwargs=env_kwargs,
                )
                save()
        if "ray" not in skip:
            for n in tqdm(sizes, desc="ray actors", unit="run"):
                rows += _attempt(
                    failures,
                    f"ray N={n}",
                    measure_vector,
                    "ray",
                    n,
                    _vector_steps(args.steps, n),
                    args.task,
                    env_kwargs,
                )
                save()
    finally:
        if ray_started:
            from browser_env.ray_local import shutdown_ray

            shutdown_ray()
    print(report(rows, runners, policy))
    save()
    for failure in failures:
        print(f"\nnot measured: {failure['row']}: {failure['error']}")
    print(
        "\nload average (1, 5, 15 min) at the start: "
        + " ".join(f"{x:.2f}" for x in load_start)
        + ", at the end: "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    return out


if __name__ == "__main__":
    main()
