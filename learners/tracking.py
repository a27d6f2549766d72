"""Metric logging for learners: wandb (offline unless a key is set), a
``metrics.jsonl`` file and an in-memory history for ``training.json``.

:func:`init_run` and :func:`finish_run` are how every wandb run here starts
and ends (the learners' and ``benchmarks.run``'s): an offline run is silent
(wandb's banner, its integration notices and its sync hints would bury a
run's own table) and ends with one line saying where it is and how to upload
it; an online run keeps wandb's output, which names the run's URL.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from browser_env.atomic import write_text_atomic

if TYPE_CHECKING:
    from learners.config import LearnerConfig

__all__ = [
    "METRICS_FILE",
    "Tracker",
    "finish_run",
    "init_run",
    "logged_rows",
    "rewind_metrics",
    "wandb_mode",
]

METRICS_FILE = "metrics.jsonl"
"""One JSON line per logged step, in the learner's output directory."""


def wandb_mode() -> str:
    """``WANDB_MODE`` when set, else online with an API key, else offline."""
    return os.environ.get("WANDB_MODE") or (
        "online" if os.environ.get("WANDB_API_KEY") else "offline"
    )


def init_run(**kwargs: Any) -> Any:
    """``wandb.init(**kwargs)`` in :func:`wandb_mode`, a run replacing any
    unfinished one, silent when offline."""
    try:
        import wandb
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError('wandb logging needs: pip install "browser-rl[train]"') from exc
    if "weave" not in sys.modules:
        # wandb takes our package `agents` for OpenAI's Agents SDK and suggests
        # installing Weave; with weave not imported, this only turns that off
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
    mode = wandb_mode()
    settings = wandb.Settings(silent=True) if mode == "offline" else None
    return wandb.init(mode=mode, reinit="finish_previous", settings=settings, **kwargs)


def finish_run(run: Any) -> Path:
    """Finish ``run``; return its local directory (``.../wandb/offline-run-...``).
    An offline run says, on stderr, where it is and how to upload it."""
    directory = Path(run.dir).parent
    run.finish()
    if wandb_mode() == "offline":
        print(
            f"wandb: offline run in {directory} (upload: wandb sync {directory})", file=sys.stderr
        )
    return directory


def _lines(path: Path) -> list[str]:
    """``path``'s lines, each with its newline (a last line cut off by a crash without)."""
    return path.read_text().splitlines(keepends=True) if path.is_file() else []


def logged_rows(output_dir: str | os.PathLike[str], start: int = 0) -> list[dict[str, Any]]:
    """The rows ``metrics.jsonl`` in ``output_dir`` holds from line ``start`` on
    (a finished run's: ``training.json``'s ``metrics_start``); none without it."""
    return [json.loads(line) for line in _lines(Path(output_dir) / METRICS_FILE)[start:]]


def _logged_step(line: str) -> float:
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")  # a line cut off by a crash: after any step


def rewind_metrics(
    output_dir: str | os.PathLike[str],
    *,
    resume_step: int | None = None,
    checkpoint_lines: int | None = None,
) -> int | None:
    """Before a run's first step: drop, atomically, the lines of ``metrics.jsonl``
    that an earlier attempt of this run logged past where this one starts, since
    it logs those steps again. Returns the number of lines logged before this
    run began (``training.json``'s ``metrics_start``; ``None`` when unknown).

    ``resume_step``: the step of the checkpoint the run resumes, and
    ``checkpoint_lines`` the line count that checkpoint recorded: the lines
    past it go (for a checkpoint that recorded none, the trailing lines past
    ``resume_step``). With no checkpoint to resume, a run that was
    interrupted (``training.json`` not ``complete``) starts over, and the lines
    past the ``metrics_start`` it recorded go. A finished run's lines stay."""
    out = Path(output_dir)
    path = out / METRICS_FILE
    lines = _lines(path)
    try:
        meta = json.loads((out / "training.json").read_text())
    except (OSError, ValueError):
        meta = {}
    interrupted = isinstance(meta, dict) and meta.get("status") not in (None, "complete")
    start = meta.get("metrics_start") if interrupted else None
    if resume_step is not None and checkpoint_lines is not None:
        keep = checkpoint_lines
    elif resume_step is not None:
        keep = len(lines)
        while keep and _logged_step(lines[keep - 1]) > resume_step:
            keep -= 1
    elif start is not None:
        keep = start
    else:
        keep = len(lines)
    keep = max(min(int(keep), len(lines)), 0)
    if keep < len(lines):
        write_text_atomic(path, "".join(lines[:keep]))
    if start is not None:
        return min(int(start), keep)
    return keep if resume_step is None else None


class Tracker:
    """Logs a learner's metrics: ``metrics.jsonl`` (appended: ``lines`` counts
    its lines, what a checkpoint records for :func:`rewind_metrics`), wandb,
    and ``history`` (this run's rows)."""

    def __init__(
        self, cfg: LearnerConfig, learner: str, output_dir: str | os.PathLike[str]
    ) -> None:
        self.history: list[dict[str, Any]] = []
        self.out = Path(output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.lines = len(_lines(self.out / METRICS_FILE))
        self._file = (self.out / METRICS_FILE).open("a")
        self.run = None
        if cfg.wandb and wandb_mode() != "disabled":
            self.run = init_run(
                project=cfg.wandb_project,
                name=cfg.run_name or f"{learner}-{self.out.name}",
                dir=str(self.out),
                config={"learner": learner, **dataclasses.asdict(cfg)},
            )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        self.history.append(row)
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        self.lines += 1
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
            finish_run(self.run)
            self.run = None
