"""The statistics of benchmark runs that :mod:`benchmarks.compare` reports:
a run (:class:`Run`), the statistics of a set of its episodes (:class:`Cell`)
and the Wilson interval of a success rate. Its own module so that the report
writer (:mod:`benchmarks.compare_report`) and the command share them without
importing each other."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from browser_env.registration import task_name

__all__ = ["Cell", "Run", "wilson"]


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% for ``z=1.96``).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at
    0/n or n/n, which small benchmark samples hit all the time. (Five lines;
    not worth a statsmodels dependency.)"""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclasses.dataclass(frozen=True)
class Cell:
    """Statistics of a set of episodes (one task of a run, or all of it).

    ``tokens`` is prompt + completion tokens per episode, ``None`` when the
    results predate token counting; ``agent_ms`` / ``env_ms`` are per step."""

    episodes: int
    successes: int
    ci: tuple[float, float]
    mean_steps: float
    tokens: float | None
    agent_ms: float
    env_ms: float
    episode_dirs: tuple[tuple[str | None, int | None, bool], ...]  # (dir, seed, success)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    @classmethod
    def of(cls, episodes: Sequence[dict[str, Any]]) -> Cell:
        n = len(episodes)
        wins = sum(bool(e["success"]) for e in episodes)
        steps = sum(int(e["steps"]) for e in episodes)
        counted = all("prompt_tokens" in e for e in episodes)
        tokens = (
            sum(int(e["prompt_tokens"]) + int(e["completion_tokens"]) for e in episodes) / n
            if counted and n
            else None
        )
        per_step = max(1, steps)
        return cls(
            episodes=n,
            successes=wins,
            ci=wilson(wins, n),
            mean_steps=steps / n if n else 0.0,
            tokens=tokens,
            agent_ms=sum(sum(e["agent_ms"]) for e in episodes) / per_step,
            env_ms=sum(sum(e["env_step_ms"]) for e in episodes) / per_step,
            episode_dirs=tuple(
                (e.get("episode_dir"), e.get("seed"), bool(e["success"])) for e in episodes
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["success_rate"] = self.success_rate
        del data["episode_dirs"]
        return data


@dataclasses.dataclass
class Run:
    """One ``benchmarks.run`` output: where it is, its label, its results."""

    path: Path
    label: str
    results: dict[str, Any]
    overrides: tuple[str, ...] = ()

    @property
    def overall(self) -> Cell:
        return Cell.of(self.results["episodes"])

    def tasks(self) -> dict[str, Cell]:
        """Per-task statistics, in the run's task order."""
        by_task: dict[str, list[dict[str, Any]]] = {}
        for episode in self.results["episodes"]:
            by_task.setdefault(task_name(episode["env_id"]), []).append(episode)
        return {task: Cell.of(eps) for task, eps in by_task.items()}
