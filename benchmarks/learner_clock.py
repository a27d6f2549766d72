"""Timing optimiser steps and their peak memory from outside a trainer.

:class:`StepClock` registers torch's global optimiser step hook
(``torch.optim.optimizer.register_optimizer_step_post_hook``), so it times
any trainer -- our ``TrainLoop``, a ``transformers.Trainer`` -- without a
hook in its code: a step's time is the wall clock from the end of one
optimiser step to the end of the next, i.e. everything the trainer does for
a step (data, forward, backward, clipping, the update, its own bookkeeping).
Beside it the clock keeps the process's CPU time over the same interval
(user + system, all threads): on a machine shared with other jobs the wall
clock measures the scheduler as much as the code, the CPU time much less.
The first ``warmup`` steps are not timed.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` with the peak reset when
the warm-up ends. On CPU, the resident set's high-water mark (``VmHWM``),
reset when the warm-up ends by writing 5 to ``/proc/self/clear_refs`` (Linux);
``step_mib`` is that peak minus the resident set at the reset, i.e. what the
timed steps added on top of the weights, optimiser state and everything
loaded before. Where the reset is not possible the peak is the process's
lifetime peak (``peak_reset`` is false).

:func:`measure` runs one arm of :mod:`benchmarks.learner_arms` under a clock;
it is the unit :mod:`benchmarks.learner_speed` runs, in a fresh process when
isolated.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

__all__ = ["StepClock", "measure"]

_MIB = 2**20


def _status_kib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / _MIB


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm / 1024
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (_MIB if sys.platform == "darwin" else 1024)


class StepClock:
    """Per-step wall time and peak memory of the optimiser steps taken while entered.

    ``times`` holds the durations of steps ``warmup + 1 .. warmup + steps``;
    steps past that are counted but not timed.
    """

    def __init__(self, warmup: int, steps: int, *, cuda: bool = False) -> None:
        if warmup < 1:
            raise ValueError("warmup must be >= 1: a step is timed from the end of the one before")
        if steps < 1:
            raise ValueError("steps must be >= 1")
        self.warmup, self.steps, self.cuda = warmup, steps, cuda
        self.count = 0
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.base_mib = 0.0
        self.peak_mib = 0.0
        self.peak_reset = False
        self._last = 0.0
        self._last_cpu = 0.0
        self._handle: Any = None

    def __enter__(self) -> StepClock:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self._handle = register_optimizer_step_post_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()

    def _memory_mib(self) -> float:
        if self.cuda:
            import torch

            return torch.cuda.memory_allocated() / _MIB
        return _rss_mib()

    def _hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        now, cpu = time.perf_counter(), time.process_time()
        self.count += 1
        timed = self.warmup < self.count <= self.warmup + self.steps
        if timed:
            self.times.append(now - self._last)
            self.cpu_times.append(cpu - self._last_cpu)
            self.peak_mib = max(self.peak_mib, self._peak_mib())
        if self.count == self.warmup:
            self._reset_peak()
            self.base_mib = self._memory_mib()
        self._last, self._last_cpu = time.perf_counter(), time.process_time()  # not a step's

    def _reset_peak(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            self.peak_reset = True
        else:
            self.peak_reset = _reset_peak_rss()

    def _peak_mib(self) -> float:
        if self.cuda:
            import torch

            return torch.cuda.max_memory_allocated() / _MIB
        return _peak_rss_mib()


def measure(algorithm: str, implementation: str, setup: dict[str, Any]) -> dict[str, Any]:
    """Run one arm (``learner_arms.ARMS[(algorithm, implementation)]``) under a
    :class:`StepClock`; returns its row of the results table."""
    import torch

    from benchmarks.learner_arms import ARMS, Setup

    s = Setup(**setup)
    if s.threads:
        torch.set_num_threads(int(s.threads))
    arm, compares = ARMS[(algorithm, implementation)]
    clock = StepClock(s.warmup_steps, s.steps, cuda=s.device.startswith("cuda"))
    with clock:
        extra = arm(s)
    if clock.count != s.total_steps:
        raise RuntimeError(
            f"{algorithm}/{implementation}: the optimiser stepped {clock.count} times, "
            f"expected {s.total_steps}"
        )
    return {
        "algorithm": algorithm,
        "implementation": implementation,
        "compares": compares,
        "step_s": clock.times,
        "median_s": statistics.median(clock.times),
        "mean_s": statistics.fmean(clock.times),
        "cpu_s": clock.cpu_times,
        "median_cpu_s": statistics.median(clock.cpu_times),
        "peak_mib": clock.peak_mib,
        "step_mib": clock.peak_mib - clock.base_mib,
        "peak_reset": clock.peak_reset,
        "torch_threads": torch.get_num_threads(),
        **extra,
        "setup": dataclasses.asdict(s),
    }
