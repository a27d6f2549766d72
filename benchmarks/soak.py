"""Soak: many resets in one env, and the memory of the whole process tree.

::

    python -m benchmarks.soak                          # 1,000 resets of click-test, one step each
    python -m benchmarks.soak --resets 200 --task miniwob.enter-text --json soak.json

Each round is a ``reset(seed)`` and one step (a CLICK on the first element, so
pages do work). The resident memory (RSS) of this process, the Playwright
driver and every Chromium process is summed after a warm-up (the first 5% of
resets, at least 10) and again at the end; the run passes when it grew by
less than ``--max-growth`` (10%). RSS counts shared pages once per process, so
the absolute figure is an overestimate; the growth is what matters.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.arguments import refuse_unwritable, unknown_tasks
from browser_env.atomic import write_json_atomic

__all__ = ["main", "process_tree_rss", "soak", "warmup_resets"]


def process_tree_rss() -> int:
    """Bytes resident in this process and all its descendants (driver, browsers)."""
    import psutil

    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total


def warmup_resets(resets: int) -> int:
    """The resets before the first memory sample: 5% of ``resets``, at least 10."""
    return max(10, resets // 20)


def soak(
    resets: int = 1_000,
    task: str = "miniwob.click-test",
    max_growth: float = 0.10,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``resets`` reset+step rounds; return the figures (see module doc).
    ValueError, before a browser starts, unless ``resets`` is more than the
    warm-up (at least 10): growth is measured from the warm-up's end."""
    import gymnasium as gym
    from tqdm import tqdm

    import browser_env  # noqa: F401 - registers the ids

    warmup = warmup_resets(resets)
    if resets <= warmup:
        raise ValueError(f"resets must be more than the warm-up of {warmup}, got {resets}")
    if not (math.isfinite(max_growth) and max_growth > 0):  # else the soak can only FAIL
        raise ValueError(f"max_growth must be a finite number > 0, got {max_growth}")
    env = gym.make(f"browser_env/{task}-v0", modalities=("elements", "text"))
    samples: list[tuple[int, int]] = []
    errors = 0
    t0 = time.perf_counter()
    try:
        for i in tqdm(range(resets), desc="soak", disable=not progress):
            obs, _ = env.reset(seed=i)
            if obs["elements"]:
                first = obs["elements"][0]["element_id"]
                _, _, _, truncated, info = env.step({"action": "CLICK", "element_id": first})
                errors += bool(truncated)
            if i + 1 == warmup or (i + 1) % max(1, resets // 20) == 0 or i + 1 == resets:
                samples.append((i + 1, process_tree_rss()))
    finally:
        env.close()
    seconds = time.perf_counter() - t0
    start = next(rss for n, rss in samples if n >= warmup)
    end = samples[-1][1]
    growth = (end - start) / start
    return {
        "task": task,
        "resets": resets,
        "warmup_resets": warmup,
        "rss_start_mib": start / 2**20,
        "rss_end_mib": end / 2**20,
        "rss_growth": growth,
        "max_growth": max_growth,
        "truncated_steps": errors,
        "seconds": seconds,
        "resets_per_s": resets / seconds,
        "samples": [{"resets": n, "rss_mib": rss / 2**20} for n, rss in samples],
        "passed": growth < max_growth and errors == 0,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--resets", type=int, default=1_000)
    parser.add_argument("--task", default="miniwob.click-test")
    parser.add_argument("--max-growth", type=float, default=0.10)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if args.resets <= warmup_resets(args.resets):
        parser.error(
            f"--resets must be more than the warm-up of {warmup_resets(args.resets)}, "
            f"got {args.resets}"
        )
    if not (math.isfinite(args.max_growth) and args.max_growth > 0):
        parser.error(f"--max-growth must be a finite number > 0, got {args.max_growth}")
    if unknown_tasks([args.task], prefix="browser_env/"):
        parser.error(f"--task: no such env: {args.task} (e.g. miniwob.click-test)")
    refuse_unwritable(parser, args.json, "--json")
    result = soak(args.resets, args.task, args.max_growth)
    print(
        f"soak {result['task']}: {result['resets']} resets in {result['seconds']:.0f} s "
        f"({result['resets_per_s']:.1f}/s); process-tree RSS {result['rss_start_mib']:.0f} MiB "
        f"after {result['warmup_resets']} -> {result['rss_end_mib']:.0f} MiB at the end "
        f"({result['rss_growth']:+.1%}, limit {result['max_growth']:.0%}); "
        f"truncated steps {result['truncated_steps']}: {'PASS' if result['passed'] else 'FAIL'}"
    )
    if args.json is not None:
        _write_json(args.json, result)
    return result


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_json_atomic(path, data)


if __name__ == "__main__":
    raise SystemExit(0 if main()["passed"] else 1)
