"""Results: per-task rows, the printed table, ``results.json`` and a plot.

``results.json`` (schema 1)::

    {"schema": 1, "suite": ..., "agent": ..., "config": {...}, "overrides": [...] | null,
     "tasks": [{"task", "env_id", "episodes", "success_rate", "errors", "timeouts",
                "first_error", "mean_steps", "mean_reward", "mean_tokens",
                "step_latency_ms": {"median", "p95"}, "reset_latency_ms": {"median"},
                "agent_latency_ms": {"median"}}],
     "overall": {...same keys over all episodes...},
     "episodes": [EpisodeResult.to_dict(), ...]}

``errors`` and ``timeouts`` count the episodes a runner could not play to
their end (``EpisodeResult.status``; they count as failures in
``success_rate``); ``first_error`` is ``"seed S: Type: message"`` of the
first, or null. ``overrides`` are the run's command-line overrides as typed
(``["agent=random", "episodes=30"]``), null for a run not started by Hydra.
Files written before these keys existed lack them.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.rollout import EpisodeResult
from browser_env.atomic import write_json_atomic, write_text_atomic
from browser_env.registration import task_name

__all__ = [
    "format_table",
    "plot_success",
    "summarize",
    "write_json_atomic",
    "write_results",
    "write_text_atomic",
]


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _row(task: str, env_id: str, episodes: Sequence[EpisodeResult]) -> dict[str, Any]:
    steps_ms = [ms for e in episodes for ms in e.env_step_ms]
    agent_ms = [ms for e in episodes for ms in e.agent_ms]
    return {
        "task": task,
        "env_id": env_id,
        "episodes": len(episodes),
        "success_rate": sum(e.success for e in episodes) / len(episodes),
        # episodes not played to their end (counted as failures in success_rate)
        "errors": sum(e.status == "error" for e in episodes),
        "timeouts": sum(e.status == "timeout" for e in episodes),
        "first_error": next(
            (f"seed {e.seed}: {e.error}" for e in episodes if e.status == "error"), None
        ),
        "mean_steps": statistics.fmean(e.steps for e in episodes),
        "mean_reward": statistics.fmean(e.episode_return for e in episodes),
        # prompt + completion tokens per episode, as the backend counted them
        "mean_tokens": statistics.fmean(e.prompt_tokens + e.completion_tokens for e in episodes),
        "step_latency_ms": {
            "median": statistics.median(steps_ms) if steps_ms else 0.0,
            "p95": _percentile(steps_ms, 95),
        },
        "reset_latency_ms": {"median": statistics.median(e.reset_ms for e in episodes)},
        "agent_latency_ms": {"median": statistics.median(agent_ms) if agent_ms else 0.0},
    }


def summarize(results: Sequence[EpisodeResult]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-task rows (in first-seen order) and the overall row."""
    if not results:
        raise ValueError("no episodes to summarize")
    by_task: dict[str, list[EpisodeResult]] = {}
    for result in results:
        by_task.setdefault(result.env_id, []).append(result)
    rows = [_row(task_name(env_id), env_id, eps) for env_id, eps in by_task.items()]
    overall = _row("overall", "", results)
    return rows, overall


def format_table(rows: Sequence[dict[str, Any]], overall: dict[str, Any]) -> str:
    """The rows and the overall row as a text table; with an ``errors`` and a
    ``timeouts`` column when some episode was not played to its end (its
    failure is then the runner's, not the agent's), and under the table the
    first error of each task that had one."""
    header = ("task", "episodes", "success", "mean steps", "mean reward", "step ms (p50/p95)")
    unfinished = bool(overall.get("errors") or overall.get("timeouts"))
    if unfinished:
        header += ("errors", "timeouts")
    lines = []
    for row in [*rows, overall]:
        cells = (
            row["task"],
            str(row["episodes"]),
            f"{row['success_rate']:.0%}",
            f"{row['mean_steps']:.1f}",
            f"{row['mean_reward']:+.2f}",
            f"{row['step_latency_ms']['median']:.1f} / {row['step_latency_ms']['p95']:.1f}",
        )
        if unfinished:
            cells += (str(row.get("errors", 0)), str(row.get("timeouts", 0)))
        lines.append(cells)
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def fmt(cells):
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    body = [fmt(line) for line in lines]
    notes = [f"{row['task']}: {row['first_error']}" for row in rows if row.get("first_error")]
    return "\n".join([fmt(header), rule, *body[:-1], rule, body[-1], *notes])


def write_results(
    path: str | os.PathLike[str],
    results: Sequence[EpisodeResult],
    *,
    suite: str,
    agent: str,
    config: dict[str, Any] | None = None,
    overrides: Sequence[str] | None = None,
) -> dict[str, Any]:
    rows, overall = summarize(results)
    data = {
        "schema": 1,
        "suite": suite,
        "agent": agent,
        "config": config or {},
        "overrides": None if overrides is None else list(overrides),
        "tasks": rows,
        "overall": overall,
        "episodes": [r.to_dict() for r in results],
    }
    write_json_atomic(path, data)
    return data


def plot_success(
    rows: Sequence[dict[str, Any]], path: str | os.PathLike[str], title: str = ""
) -> Path | None:
    """A horizontal bar chart of success rate per task; ``None`` without matplotlib."""
    try:  # a bare Figure, not pyplot: leaves the caller's backend (e.g. a notebook's) alone
        from matplotlib.figure import Figure
    except ImportError:
        return None
    names = [r["task"] for r in rows]
    rates = [100 * r["success_rate"] for r in rows]
    fig = Figure(figsize=(7, 0.3 * len(rows) + 1.2))
    ax = fig.subplots()
    ax.barh(names, rates, color="#4C72B0")
    ax.set_xlim(0, 100)
    ax.set_xlabel("success rate (%)")
    ax.invert_yaxis()
    ax.set_title(title)
    for y, rate in enumerate(rates):
        ax.text(min(rate + 1, 92), y, f"{rate:.0f}%", va="center", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
