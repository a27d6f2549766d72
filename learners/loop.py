"""The optimiser loop SFT, SDFT and GRPO share: resume, step, log, checkpoint, gate, save.

A learner supplies ``loss_step(step) -> metrics`` (which calls ``backward``)
and, optionally, ``after_step(step)`` (e.g. the EMA teacher update), and
registers with :meth:`TrainLoop.keep_state` what a checkpoint must carry
beyond weights and optimiser (SDFT's teacher, GRPO's reference); what it
registers as rolling back also moves back with the weights when the
evaluation gate rolls back. The algorithms stay in their own modules.

One run writes into an output directory at a time: a :class:`TrainLoop`
holds its directory (:func:`browser_env.dirlock.hold_dir`) from the moment
it is made, and a second run into it is refused at once, naming
``learner.output_dir``. The loop lets go when it is closed (:meth:`TrainLoop.close`),
however the run ends: a learner makes it, then does the rest of its run in
``with loop:``; used without ``with``, :meth:`TrainLoop.fit` closes it as it
ends.

A rerun resumes the newest checkpoint of the run it finds there only when it
is the same learner with the same settings, run-control ones aside; anything
else is refused before the model loads (:func:`learners.checkpoint.run_start`
states the rule).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.hub_progress import hub_progress
from browser_env.atomic import fsync_dir, fsync_tree
from browser_env.dirlock import hold_dir
from learners.checkpoint import (
    CheckpointManager,
    Checkpoints,
    EvalGate,
    check_output_dir,
    run_start,
    write_training_json,
)
from learners.tracking import Tracker, rewind_metrics
from learners.trainable import TrainableModel, load_trainable

if TYPE_CHECKING:
    from agents.backends.transformers import TransformersBackend
    from learners.config import LearnerConfig

__all__ = ["TrainLoop", "default_output_dir"]


def default_output_dir(learner: str) -> str:
    """``<hydra run dir>/adapter`` under ``@hydra.main``, else ``outputs/<learner>/adapter``."""
    from browser_env.rundir import run_dir

    return str(run_dir(Path("outputs") / learner) / "adapter")


#: what a checkpoint records of ``metrics.jsonl`` (in its learner state)
METRICS_LINES = "metrics_lines"


def begin_metrics(
    learner: str,
    out: Path,
    resumed_from: Path | None,
    start_step: int,
    max_steps: int,
    checkpoint_lines: int | None,
) -> int:
    """Before a run's first step (every loop: :class:`TrainLoop`, MLX SDFT):
    drop the lines of ``metrics.jsonl`` that the run logs again
    (:func:`learners.tracking.rewind_metrics`), and say on stderr which
    checkpoint a resumed run (``resumed_from``) goes on from. Returns the
    lines kept: ``training.json``'s ``metrics_start``."""
    metrics_start = rewind_metrics(
        out,
        resume_step=None if resumed_from is None else start_step,
        checkpoint_lines=checkpoint_lines,
    )
    if resumed_from is not None:
        print(
            f"{learner}: resumed from checkpoint {resumed_from.name} "
            f"(step {start_step} of {max_steps}) in {out}",
            file=sys.stderr,
            flush=True,
        )
    return metrics_start


def newest_step(checkpoints: Checkpoints, saved: int) -> int:
    """The step a rerun resumes from after a stop: ``saved``, or the newest
    checkpoint's step when a save the stop cut short had already renamed it
    into place."""
    newest = checkpoints.latest()
    return saved if newest is None else max(saved, int(checkpoints.read_step(newest)["step"]))


def say_interrupted(learner: str, out: Path, saved: int, *, continues: bool = False) -> None:
    """The one line a Ctrl-C'd run prints: where the same command resumes
    (``continues``: this run trained on from the finished output in ``out``)."""
    if saved:
        where = f"resumes from step {saved}"
    elif continues:
        where = "trains on from the finished run again"
    else:
        where = "starts again from the start"
    print(f"{learner}: interrupted; the same command {where} in {out}", file=sys.stderr, flush=True)


class TrainLoop:
    """A learner's model, optimiser and checkpoints in ``cfg.output_dir``, held
    (see the module doc) until :meth:`close`: ``with loop:`` or :meth:`fit`."""

    def __init__(self, cfg: LearnerConfig, learner: str) -> None:
        import torch

        if cfg.output_dir is None:
            cfg = dataclasses.replace(cfg, output_dir=default_output_dir(learner))
        self.cfg = cfg
        self.learner = learner
        self.out = Path(cfg.output_dir)
        self.closers: list[Callable[[], None]] = []  # run when the loop closes (eval envs)
        self._held = contextlib.ExitStack()
        self._in_with = False
        try:
            check_output_dir(self.out)  # a file, another tool's dir: refused before it is made
            # tidy: a run refused before it wrote anything leaves no empty dirs behind
            self._held.enter_context(hold_dir(self.out, "learner.output_dir", tidy=True))
            # an interrupted run resumes only as the same learner with the same settings
            origin = run_start(self.out, learner=learner, config=cfg)
            # progress=false: no "Loading weights" bar for any load while the loop is
            # open (the model, a checkpoint, the gate's rollback, GRPO's reference)
            self._held.enter_context(hub_progress(cfg.progress))
            self.trainable: TrainableModel = load_trainable(cfg, origin)
            params = [p for _, p in self.trainable.trainable_parameters()]
            self.optimizer = torch.optim.AdamW(
                params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay
            )
            self.checkpoints = CheckpointManager(
                self.out, self.trainable, keep=cfg.save_total_limit
            )
            # a finished run's checkpoints: never to be resumed, nor pruned against ours;
            # cleared by fit, so a run refused before it (no samples) leaves them
            self._stale_checkpoints = origin.stale
            self.gate: EvalGate | None = None
            self.start_step = 0
            self.resume_state: dict[str, Any] = {}
            self.resumed_from: Path | None = origin.resume
            self.continues = origin.continues is not None  # trains on from a finished output
            if origin.resume is not None:
                state = self.checkpoints.restore(origin.resume, self.optimizer)
                self.start_step = int(state["step"])
                self.resume_state = dict(state.get("extra") or {})
        except BaseException:
            self.close()
            raise
        self.data_info: dict[str, Any] = {}
        # name -> (get, put or None): learner state carried in checkpoints
        self._state: dict[str, tuple[Callable[[], Any], Callable[[Any], None] | None]] = {}

    def __enter__(self) -> TrainLoop:
        self._in_with = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Run the closers (eval envs), then let go of the output dir; safe twice."""
        closers, self.closers = self.closers, []
        try:
            for close in closers:
                close()
        finally:
            self._held.close()

    @property
    def backend(self) -> TransformersBackend:
        return self.trainable.backend

    def keep_state(
        self, name: str, get: Callable[[], Any], put: Callable[[Any], None] | None = None
    ) -> None:
        """Carry ``get()`` in every checkpoint under ``name`` (resume finds it in
        ``resume_state[name]``); with ``put``, an evaluation-gate rollback also
        restores it from the best checkpoint."""
        self._state[name] = (get, put)

    def learner_state(self) -> dict[str, Any]:
        return {name: get() for name, (get, _) in self._state.items()}

    def _restore_learner_state(self, state: dict[str, Any]) -> None:
        for name, (_, put) in self._state.items():
            if put is not None and name in state:
                put(state[name])

    def set_gate(self, evaluate: Callable[[], float]) -> None:
        self.gate = EvalGate(
            self.checkpoints,
            evaluate,
            self.cfg.rollback_tolerance,
            learner_state=self.learner_state,
            restore_learner_state=self._restore_learner_state,
        )
        if "gate" in self.resume_state:
            self.gate.load_state(self.resume_state["gate"])

    def _save_final(self) -> None:
        """The trained weights into the output dir, each file whole: written to
        a staging dir first, then each renamed into place. A crash while the
        weights are written leaves the files there as they were (an adapter
        continued from, say), and ``training.json`` still says ``running``."""
        staging = self.out / ".final.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        self.checkpoints.save_weights(staging)
        fsync_tree(staging)  # the data on disk before the renames are
        for item in sorted(staging.iterdir()):
            os.replace(item, self.out / item.name)
        staging.rmdir()
        fsync_dir(self.out)

    def _write_meta(
        self, status: str, metrics: dict[str, Any], step: int, metrics_start: int | None
    ) -> None:
        write_training_json(
            self.out,
            learner=self.learner,
            base_model=self.trainable.base_model,
            config=self.cfg,
            data=self.data_info,
            metrics=metrics,
            status=status,
            init_from=self.trainable.init_from,
            steps=step,
            metrics_start=metrics_start,
        )

    def fit(
        self,
        loss_step: Callable[[int], dict[str, float]],
        *,
        after_step: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Run steps ``start_step .. max_steps - 1``; returns the final metrics summary.

        Ctrl+C leaves ``training.json`` ``interrupted`` (the same command
        resumes from the newest checkpoint). Unless a ``with`` block holds the
        loop, it is closed (:meth:`close`) as fit ends, however it ends."""
        import torch
        from tqdm.auto import tqdm

        cfg = self.cfg
        model = self.trainable.model
        params = [p for _, p in self.trainable.trainable_parameters()]
        tracker: Tracker | None = None

        def extra() -> dict[str, Any]:
            state = self.learner_state()
            if self.gate is not None:
                state["gate"] = self.gate.state()
            if tracker is not None:  # what the metrics.jsonl of this checkpoint holds
                state[METRICS_LINES] = tracker.lines
            return state

        step = saved = self.start_step
        metrics_start: int | None = None
        started = False
        bar = tqdm(
            range(self.start_step, cfg.max_steps),
            desc=self.learner,
            disable=not cfg.progress,
            initial=self.start_step,
            total=cfg.max_steps,
        )
        if self._stale_checkpoints:  # before training.json says running: see run_start
            self.checkpoints.clear()
            self._stale_checkpoints = False
        try:
            metrics_start = begin_metrics(
                self.learner,
                self.out,
                self.resumed_from,
                self.start_step,
                cfg.max_steps,
                self.resume_state.get(METRICS_LINES),
            )
            # training.json first: a dir with anything of ours in it (metrics.jsonl,
            # wandb/) is then a learner's output that the same command resumes
            self._write_meta("running", {}, self.start_step, metrics_start)
            started = True  # from here training.json is this run's, to mark interrupted
            tracker = Tracker(cfg, self.learner, self.out)
            for step in bar:
                model.train()
                self.optimizer.zero_grad(set_to_none=True)
                metrics = dict(loss_step(step))
                if cfg.max_grad_norm:
                    metrics["grad_norm"] = float(
                        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                    )
                self.optimizer.step()
                if after_step is not None:
                    after_step(step)
                done = step + 1
                if self.gate is not None and cfg.eval_steps and done % cfg.eval_steps == 0:
                    metrics.update(self.gate(done))
                if cfg.logging_steps and (done % cfg.logging_steps == 0 or done == cfg.max_steps):
                    tracker.log(metrics, done)
                    bar.set_postfix(
                        {
                            k: f"{v:.3g}"
                            for k, v in metrics.items()
                            if k in ("loss", "reward_mean", "kl")
                        }
                    )
                if cfg.save_steps and done % cfg.save_steps == 0 and done < cfg.max_steps:
                    self.checkpoints.save(done, self.optimizer, extra())
                    saved = done
                    self._write_meta("running", tracker.summary(), done, metrics_start)
            step = max(cfg.max_steps, self.start_step)
            self._save_final()
            summary = tracker.summary()
            if self.gate is not None:
                summary.update({f"gate/{k}": v for k, v in self.gate.state().items()})
            self._write_meta("complete", summary, step, metrics_start)
            return {
                "output_dir": os.fspath(self.out),
                "metrics": summary,
                "history": tracker.history,
            }
        except KeyboardInterrupt:
            saved = newest_step(self.checkpoints, saved)
            if started:  # not an earlier run's training.json, as it was before this one
                summary = tracker.summary() if tracker is not None else {}
                self._write_meta("interrupted", summary, saved, metrics_start)
            say_interrupted(self.learner, self.out, saved, continues=self.continues)
            raise
        finally:
            bar.close()
            try:
                if tracker is not None:
                    tracker.finish()
            finally:
                if not self._in_with:
                    self.close()
