"""Kill the browser again and again mid-episode; every kill must be survived.

::

    python -m benchmarks.browser_kills                 # 100 kills, every 10th one the driver
    python -m benchmarks.browser_kills --kills 20 --json kills.json

Each round: ``reset``, one step, then SIGKILL to the browser's main process
(what the OOM killer does) or, every ``--driver-every`` rounds, to the
Playwright driver; then one more step. A round counts as recovered when that
step returned normally with ``truncated=True`` and the reason in
``info["truncated_reason"]``, and the next ``reset`` gave a working page. A
round that takes longer than ``--hang-s`` ends the run with a traceback (a
hang). At the end the env is closed and no process of any killed browser, and
no Chromium under this process, may be left.
"""

from __future__ import annotations

import argparse
import faulthandler
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.arguments import refuse_below, refuse_unwritable, unknown_tasks
from benchmarks.soak import _write_json
from browser_env.browser import driver_processes, process_group

__all__ = ["kill_rounds", "main"]


def _chromium_descendants() -> list[int]:
    import psutil

    from browser_env.browser import process_running

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:  # a process may exit between the listing and these reads
            if "chrom" in proc.name().lower() and process_running(proc):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def kill_rounds(
    kills: int = 100,
    task: str = "miniwob.click-test",
    driver_every: int = 10,
    hang_s: float = 120.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``kills`` kill-and-recover rounds; return the figures (see module doc)."""
    import gymnasium as gym
    import psutil
    from tqdm import tqdm

    import browser_env  # noqa: F401 - registers the ids

    env = gym.make(f"browser_env/{task}-v0", modalities=("elements", "text"))
    inner = env.unwrapped
    recovered, killed_groups, failures, seconds = 0, [], [], []
    driver_kills = 0
    try:
        obs, _ = env.reset(seed=0)
        for i in tqdm(range(kills), desc="kills", disable=not progress):
            faulthandler.dump_traceback_later(hang_s, exit=True)
            t0 = time.perf_counter()
            env.step({"action": "WAIT", "value": "0"})
            if driver_every and (i + 1) % driver_every == 0:
                [victim, *_] = driver_processes()
                driver_kills += 1
            else:
                victim = psutil.Process(inner._browser_pid)
            killed_groups.append(inner._browser_pid)
            victim.kill()
            victim.wait(30)
            _, reward, terminated, truncated, info = env.step({"action": "WAIT", "value": "0"})
            obs, _ = env.reset(seed=i + 1)
            ok = (
                truncated
                and not terminated
                and "died" in (info.get("truncated_reason") or "")
                and bool(obs["goal"])
                and inner._browser_pid not in killed_groups
            )
            recovered += ok
            if not ok:
                failures.append({"round": i, "truncated": truncated, "info": str(info)[:300]})
            seconds.append(time.perf_counter() - t0)
            faulthandler.cancel_dump_traceback_later()
    finally:
        faulthandler.cancel_dump_traceback_later()
        env.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        leftover = sorted({pid for g in killed_groups for pid in (p.pid for p in process_group(g))})
        stray = _chromium_descendants()
        if not leftover and not stray:
            break
        time.sleep(0.2)
    return {
        "task": task,
        "kills": kills,
        "driver_kills": driver_kills,
        "recovered": recovered,
        "failures": failures,
        "leftover_processes_of_killed_browsers": leftover,
        "chromium_left_after_close": stray,
        "round_s_median": sorted(seconds)[len(seconds) // 2] if seconds else None,
        "round_s_max": max(seconds) if seconds else None,
        "passed": recovered == kills and not leftover and not stray,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.browser_kills", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--task", default="miniwob.click-test")
    parser.add_argument("--driver-every", type=int, default=10, help="0: never kill the driver")
    parser.add_argument("--hang-s", type=float, default=120.0, help="a round this long is a hang")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    refuse_below(parser, args, 1, "kills")
    if args.driver_every < 0:
        parser.error(f"--driver-every must be >= 0 (0: never), got {args.driver_every}")
    if not args.hang_s > 0:
        parser.error(f"--hang-s must be > 0, got {args.hang_s}")
    if unknown_tasks([args.task], prefix="browser_env/"):
        parser.error(f"--task: no such env: {args.task} (e.g. miniwob.click-test)")
    refuse_unwritable(parser, args.json, "--json")
    result = kill_rounds(args.kills, args.task, args.driver_every, args.hang_s)
    print(
        f"browser kills on {result['task']}: {result['recovered']}/{result['kills']} recovered "
        f"({result['driver_kills']} of them driver kills); round median "
        f"{result['round_s_median']:.1f} s, max {result['round_s_max']:.1f} s; leftover processes "
        f"of killed browsers: {len(result['leftover_processes_of_killed_browsers'])}; Chromium "
        f"left after close: {len(result['chromium_left_after_close'])}: "
        f"{'PASS' if result['passed'] else 'FAIL'}"
    )
    if args.json is not None:
        _write_json(args.json, result)
    return result


if __name__ == "__main__":
    raise SystemExit(0 if main()["passed"] else 1)
