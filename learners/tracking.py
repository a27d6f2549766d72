"""Metric logging for learners: wandb (offline unless a key is set), a
``metrics.jsonl`` file and an in-memory history for ``training.json``."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from learners.config import LearnerConfig

__all__ = ["Tracker", "wandb_mode"]


def wandb_mode() -> str:
    """``WANDB_MODE`` when set, else online with an API key, else offline."""
    return os.environ.get("WANDB_MODE") or (
        "online" if os.environ.get("WANDB_API_KEY") else "offline"
    )


class Tracker:
    def __init__(
        self, cfg: LearnerConfig, learner: str, output_dir: str | os.PathLike[str]
    ) -> None:
        self.history: list[dict[str, Any]] = []
        self.out = Path(output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self._file = (self.out / "metrics.jsonl").open("a")
        self.run = None
        if cfg.wandb and wandb_mode() != "disabled":
            try:
                import wandb
            except ModuleNotFoundError as exc:
                raise ModuleNotFoundError(
                    'wandb logging needs: pip install "browser-rl[train]"'
                ) from exc
            self.run = wandb.init(
                project=cfg.wandb_project,
                name=cfg.run_name or f"{learner}-{self.out.name}",
                dir=str(self.out),
                config={"learner": learner, **dataclasses.asdict(cfg)},
                mode=wandb_mode(),
                reinit="finish_previous",
            )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        self.history.append(row)
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self.run is not None:
            self.run.log(metrics, step=step)

    def summary(self) -> dict[str, Any]:
        """Last value of every metric, plus the first loss for before/after comparison."""
        last: dict[str, Any] = {}
        for row in self.history:
            last.update({k: v for k, v in row.items() if k != "step"})
        return last

    def finish(self) -> None:
        self._file.close()
        if self.run is not None:
            self.run.finish()
            self.run = None
