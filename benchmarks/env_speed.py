"""Env latency next to the raw-Playwright floor, measured in one run.

::

    python -m benchmarks.env_speed                       # default tasks, 40 steps and 20 resets each
    python -m benchmarks.env_speed --tasks click-test,login-user --steps 100 --json speed.json

For each MiniWoB++ task it measures, on the same machine and the same
system Chromium:

* ``ours full``: ``env.step(CLICK)`` through ``gymnasium.make`` with the full
  observation (elements, text, screenshot as an array);
* ``ours text``: the same with ``modalities=(elements, text)``;
* ``floor full``: raw Playwright doing the same work by hand: a mouse click
  at an element's centre, one DOM walk in one ``evaluate`` (tag, text, box of
  every element in the task area), one ``page.screenshot()`` decoded to an
  array; ``floor text`` is the click and the walk;
* resets: ``env.reset(seed)`` (observation included) next to the floor's
  JS episode re-init + walk + screenshot.

The floor browser is launched with the env's own flags (``floor full``) and,
for reference, with Playwright's defaults (``floor default``). Steps that end
an episode are followed by an untimed reset. Prints medians and p95 in ms and
the ratios ours/floor.

Like the other measurement scripts here (``rollout_speed``, ``soak``,
``serve_load``), it takes plain ``--flags``: a few numbers, no config tree
to compose.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks.arguments import refuse_unwritable, unknown_tasks

__all__ = ["main", "measure"]

DEFAULT_TASKS = ("click-test", "click-button", "enter-text", "login-user", "click-checkboxes")

_FLOOR_WALK = """() => Array.from(document.querySelectorAll('#wrap *')).map((e) => {
  const r = e.getBoundingClientRect();
  return [e.tagName, (e.innerText || '').slice(0, 100), r.x, r.y, r.width, r.height];
})"""
_FLOOR_PICK = """(k) => {
  const c = Array.from(document.querySelectorAll('#area *')).filter((e) => {
    const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0 && r.bottom <= innerHeight;
  });
  if (!c.length) return null;
  const r = c[k % c.length].getBoundingClientRect();
  return [r.x + r.width / 2, r.y + r.height / 2];
}"""
_FLOOR_RESET = "(s) => { Math.seedrandom(s); core.startEpisodeReal(); clearTimeout(core.EP_TIMER); core.EP_TIMER = 0; }"


def _stats(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "n": len(ordered),
    }


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def _ours(
    task: str, modalities: tuple[str, ...], steps: int, resets: int, seed: int
) -> dict[str, Any]:
    import gymnasium as gym

    import browser_env  # noqa: F401
    from browser_env.registration import env_id

    env = gym.make(env_id(task), modalities=modalities, max_episode_steps=10_000)
    rng = np.random.default_rng(seed)
    step_ms: list[float] = []
    reset_ms: list[float] = []
    try:
        obs, _ = env.reset(seed=seed)  # warm-up: page load
        for i in range(resets):
            reset_ms.append(_timed(lambda i=i: env.reset(seed=seed + i)))
        obs, _ = env.reset(seed=seed)
        episode = 0
        while len(step_ms) < steps:
            candidates = [e for e in obs["elements"] if e["visible"]]
            if not candidates:
                episode += 1
                obs, _ = env.reset(seed=seed + episode)
                continue
            target = candidates[int(rng.integers(len(candidates)))]
            action = {"action": "CLICK", "element_id": target["element_id"]}
            t0 = time.perf_counter()
            obs, _, terminated, truncated, _ = env.step(action)
            step_ms.append((time.perf_counter() - t0) * 1e3)
            if terminated or truncated:
                episode += 1
                obs, _ = env.reset(seed=seed + episode)
    finally:
        env.close()
    return {"step": _stats(step_ms), "reset": _stats(reset_ms)}


def _floor(task: str, steps: int, resets: int, seed: int, own_flags: bool) -> dict[str, Any]:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from browser_env.browser import BASE_ARGS, find_chromium
    from browser_env.tasks.miniwob import MiniWoBTask

    url = MiniWoBTask(task).url
    results: dict[str, list[float]] = {
        k: [] for k in ("full", "text", "click", "walk", "screenshot", "reset")
    }
    with sync_playwright() as p:
        args = list(BASE_ARGS) if own_flags else ["--no-sandbox", "--disable-gpu"]
        browser = p.chromium.launch(executable_path=find_chromium(None, p), args=args)
        page = browser.new_page(viewport={"width": 160, "height": 210})
        page.goto(url, wait_until="load")
        shot = lambda: np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
        walk = lambda: page.evaluate(_FLOOR_WALK)
        for i in range(resets):
            results["reset"].append(
                _timed(lambda i=i: (page.evaluate(_FLOOR_RESET, seed + i), walk(), shot()))
            )
        page.evaluate(_FLOOR_RESET, seed)
        episode = 0
        for k in range(steps):
            point = page.evaluate(_FLOOR_PICK, k)
            if point is None:
                episode += 1
                page.evaluate(_FLOOR_RESET, seed + episode)
                continue
            click = _timed(lambda point=point: page.mouse.click(*point))
            w = _timed(walk)
            s = _timed(shot)
            results["click"].append(click)
            results["walk"].append(w)
            results["screenshot"].append(s)
            results["text"].append(click + w)
            results["full"].append(click + w + s)
            if page.evaluate("WOB_DONE_GLOBAL"):
                episode += 1
                page.evaluate(_FLOOR_RESET, seed + episode)
        browser.close()
    return {name: _stats(values) for name, values in results.items()}


def measure(tasks: Sequence[str], steps: int, resets: int, seed: int = 0) -> list[dict[str, Any]]:
    rows = []
    for task in tasks:
        full = _ours(task, ("elements", "text", "screenshot"), steps, resets, seed)
        text = _ours(task, ("elements", "text"), steps, resets, seed)
        floor = _floor(task, steps, resets, seed, own_flags=True)
        default = _floor(task, steps, resets, seed, own_flags=False)
        rows.append(
            {
                "task": task,
                "ours_full": full,
                "ours_text": text,
                "floor": floor,
                "floor_default": default,
            }
        )
    return rows


def _fmt(stats: dict[str, float]) -> str:
    return f"{stats['median']:6.1f} /{stats['p95']:6.1f}"


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    header = (
        f"{'task':18} {'ours full':>14} {'floor full':>14} {'ratio':>6} {'ours text':>14} "
        f"{'floor text':>14} {'ratio':>6} {'ours reset':>14} {'floor reset':>14} {'floor dflt full':>16}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        full_ratio = r["ours_full"]["step"]["median"] / r["floor"]["full"]["median"]
        text_ratio = r["ours_text"]["step"]["median"] / r["floor"]["text"]["median"]
        lines.append(
            f"{r['task']:18} {_fmt(r['ours_full']['step'])} {_fmt(r['floor']['full'])} {full_ratio:6.2f} "
            f"{_fmt(r['ours_text']['step'])} {_fmt(r['floor']['text'])} {text_ratio:6.2f} "
            f"{_fmt(r['ours_full']['reset'])} {_fmt(r['floor']['reset'])} {_fmt(r['floor_default']['full']):>16}"
        )
    med = lambda key, sub, stat="median": statistics.median(r[key][sub][stat] for r in rows)
    lines.append("-" * len(header))
    lines.append(
        f"{'median of tasks':18} full step {med('ours_full', 'step'):.1f} ms vs floor {med('floor', 'full'):.1f} ms "
        f"({med('ours_full', 'step') / med('floor', 'full'):.2f}x); text step {med('ours_text', 'step'):.1f} ms; "
        f"reset {med('ours_full', 'reset'):.1f} ms; floor parts: click {med('floor', 'click'):.1f}, "
        f"walk {med('floor', 'walk'):.1f}, screenshot {med('floor', 'screenshot'):.1f} "
        f"(default flags: {med('floor_default', 'screenshot'):.1f}) ms"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.env_speed", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--tasks", default=",".join(DEFAULT_TASKS), help="comma-separated MiniWoB++ task names"
    )
    parser.add_argument("--steps", type=int, default=40, help="timed steps per task and mode")
    parser.add_argument("--resets", type=int, default=20, help="timed resets per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the measurements here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.resets < 1:
        parser.error("--steps and --resets must be >= 1")
    tasks = [t for t in args.tasks.split(",") if t]
    if not tasks:
        parser.error("--tasks names no task")
    unknown = unknown_tasks(tasks)
    if unknown:
        parser.error(f"--tasks: no such MiniWoB++ task: {', '.join(unknown)}")
    refuse_unwritable(parser, args.json, "--json")
    rows = measure(tasks, args.steps, args.resets, args.seed)
    print(format_rows(rows))
    if args.json:
        from benchmarks.report import write_json_atomic

        write_json_atomic(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
