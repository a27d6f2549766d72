"""Write one episode directory, crash-safely.

``episode.json`` and every screenshot are written to a temporary name in the
same directory, fsynced and renamed over the final name, so a reader never sees
half a file. ``steps.jsonl`` is appended one complete line per step, flushed and
fsynced before :meth:`EpisodeWriter.write_step` returns: a crash or Ctrl+C
leaves every earlier step readable and ``episode.json`` saying
``"complete": false``.

With ``background=True`` (what :class:`~browser_env.wrappers.RecordEpisode`
uses) the same writes happen in the same order on one thread of the writer's
own, so a step costs the env loop only building its record (the PNG encoding
and the fsyncs, ~25 ms a step with screenshots, move off it). The atomicity is
unchanged: each file still appears whole or not at all and lines still land in
step order. :meth:`EpisodeWriter.close`/:meth:`~EpisodeWriter.abort` wait for
every queued write; so does the interpreter's exit after an uncaught exception
or Ctrl+C (the worker is a ``concurrent.futures`` thread, which Python joins at
exit). Only a hard kill (SIGKILL, ``os._exit``, or a SIGTERM the process
leaves at Python's default action) can lose the steps still queued; the ones
already written stay readable. A write that fails in the
background is raised by the next ``write_step`` or by ``close``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import json
import os
import platform
import re
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from browser_env.atomic import write_bytes_atomic
from browser_env.episodes.format import (
    EPISODE_FILE,
    SCREENSHOT_DIR,
    STEPS_FILE,
    EpisodeFile,
    EpisodeMeta,
    Outcome,
    StepRecord,
    observation_to_json,
    to_jsonable,
)

__all__ = ["EpisodeWriter", "package_versions"]

_VERSIONED_PACKAGES = ("browser-rl", "gymnasium", "playwright", "numpy", "pillow", "miniwob")


def package_versions() -> dict[str, str]:
    """Python, platform and the versions of the packages an episode depends on."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def free_path(folder: Path, name: str, suffix: str = "") -> Path:
    """``folder/<name><suffix>``, or with ``-1``, ``-2``, ... after ``name``: the
    first that does not exist (for one writer of ``folder``; not a lock)."""
    target, n = folder / f"{name}{suffix}", 0
    while target.exists():
        n += 1
        target = folder / f"{name}-{n}{suffix}"
    return target


def _check_pixels(pixels: Any) -> np.ndarray:
    array = np.asarray(pixels)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"a screenshot must be (H, W, 3) uint8, got {array.shape} {array.dtype}")
    return array


def _encode_png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    array = _check_pixels(pixels)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "episode"


class EpisodeWriter:
    """Writes the episode described by ``meta`` into a new directory under ``root``.

    The directory is ``root/<meta.episode_id>`` (an id is made up from the task,
    seed, time and a random suffix when ``meta.episode_id`` is empty) and must
    not exist yet. ``episode.json`` is written at once with ``complete: false``.

    Call :meth:`write_step` once per env step with the observation the policy
    saw before acting, then :meth:`close` (or :meth:`abort` on failure). Used as
    a context manager, an exception aborts and a clean exit closes.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        meta: EpisodeMeta,
        *,
        screenshots: bool = True,
        background: bool = False,
    ):
        self.meta = meta
        self.screenshots = screenshots
        if not meta.created_at:
            meta.created_at = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
        if not meta.episode_id:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            seed = "none" if meta.seed is None else meta.seed
            meta.episode_id = f"{_slug(meta.task)}_s{seed}_{stamp}_{uuid.uuid4().hex[:6]}"
        if not meta.versions:
            meta.versions = package_versions()
        self.path = Path(root) / meta.episode_id
        self.path.mkdir(parents=True, exist_ok=False)
        try:
            self._start(meta, background)
        except BaseException:  # e.g. Ctrl+C: no directory that is no episode stays behind
            worker = getattr(self, "_worker", None)
            if worker is not None:
                worker.shutdown(wait=True)
            if not (self.path / EPISODE_FILE).exists():
                shutil.rmtree(self.path, ignore_errors=True)
            raise

    def _start(self, meta: EpisodeMeta, background: bool) -> None:
        self._file = EpisodeFile(meta=meta)
        self._steps = 0
        self._return = 0.0
        self._last: StepRecord | None = None
        self._step_ms: list[float] = []
        self._timing_sums: dict[str, float] = {}
        self._started = time.time()
        self._closed = False
        self._worker = (
            ThreadPoolExecutor(1, thread_name_prefix=f"episode-{meta.episode_id[:24]}")
            if background
            else None
        )
        self._pending: list[Future[None]] = []
        self._failed: BaseException | None = None  # a background write that failed
        self._write_episode_json()
        self._steps_fh = open(self.path / STEPS_FILE, "ab")  # noqa: SIM115 - UTF-8 lines

    def _submit(self, work: Callable[..., None], *args: Any) -> None:
        """Run ``work`` now, or queued in order on the writer's thread."""
        if self._worker is None:
            work(*args)
            return
        self._raise_failed()
        self._pending.append(self._worker.submit(work, *args))

    def _raise_failed(self) -> None:
        """Re-raise the first background failure; forget the writes that are done.
        A failure is raised once, and remembered: the episode is not complete."""
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        failed = next((f.exception() for f in done if f.exception() is not None), None)
        if failed is not None:
            self._failed = self._failed or failed
            raise failed

    def flush(self) -> None:
        """Wait until every queued write is on disk (a no-op when not in the background);
        then raise the first that failed, if any."""
        pending, self._pending = self._pending, []
        failed = None
        for future in pending:
            exc = future.exception()
            failed = failed or exc
        if failed is not None:
            self._failed = self._failed or failed
            raise failed

    # --- writing ----------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return self._steps

    @property
    def closed(self) -> bool:
        return self._closed

    def write_step(
        self,
        observation: Mapping[str, Any],
        action: Any,
        reward: float,
        terminated: bool,
        truncated: bool,
        info: Mapping[str, Any],
        *,
        prompt: Any = None,
        raw_output: str | None = None,
        guards: list[Any] | tuple[Any, ...] = (),
        action_input: Any = None,
        timings: Mapping[str, float] | None = None,
        extras: Mapping[str, Any] | None = None,
        started_at: float | None = None,
    ) -> StepRecord:
        """Append one step; returns the record as written.

        ``action`` is what the env executed (``info["action"]`` of
        :class:`~browser_env.env.BrowserEnv`: a dict, an ``Action`` or ``None``
        when the policy's output was invalid). ``info`` supplies ``success``
        (missing or ``None``: unknown, stored as ``None``), ``reason``,
        ``raw_reward``, ``answer``, ``action_error`` and ``timings``;
        ``timings`` here is merged over ``info["timings"]``.

        The whole record (line and pixels) is checked, and the line encoded as
        UTF-8, before anything is written or queued: a step that raises here
        (e.g. a ``ValueError`` for a lone surrogate in ``prompt``,
        ``raw_output`` or ``extras``, which no UTF-8 file can hold) leaves no
        file behind and does not count, so the next call writes the same index.
        """
        if self._closed:
            raise RuntimeError(f"episode {self.path} is already closed")
        index = self._steps
        name = f"step_{index:05d}.png"
        pixels = observation.get("screenshot") if self.screenshots else None
        if pixels is not None:
            pixels = _check_pixels(pixels)
        shot = None if pixels is None else f"{SCREENSHOT_DIR}/{name}"
        step_timings = {**dict(info.get("timings") or {}), **dict(timings or {})}
        success = info.get("success")
        record = StepRecord(
            index=index,
            observation=observation_to_json(observation, shot),
            action=None if action is None else _action_dict(action),
            reward=float(reward),
            terminated=bool(terminated),
            truncated=bool(truncated),
            success=None if success is None else bool(success),
            error=str(info.get("action_error") or ""),
            reason=str(info.get("reason") or ""),
            raw_reward=None if info.get("raw_reward") is None else float(info["raw_reward"]),
            answer=None if info.get("answer") is None else str(info["answer"]),
            action_input=to_jsonable(action_input),
            prompt=to_jsonable(prompt),
            raw_output=raw_output,
            guards=to_jsonable(list(guards)),
            timings=to_jsonable(step_timings),
            time=time.time() if started_at is None else started_at,
            extras=to_jsonable(dict(extras or {})),
        )
        line = _utf8_line(record.to_json(), index)
        # One unit of work: the PNG, then its line (a later failure cannot split them).
        self._submit(self._store_step, line, name, pixels)
        self._steps += 1
        self._return += record.reward
        self._last = record
        for key, value in record.timings.items():
            if isinstance(value, int | float):
                self._timing_sums[key] = self._timing_sums.get(key, 0.0) + float(value)
        return record

    def _store_step(self, line: bytes, name: str, pixels: np.ndarray | None) -> None:
        if pixels is not None:
            self._store_png(name, pixels)
        self._append_line(line)

    def _append_line(self, line: bytes) -> None:
        # One write of one whole line, then flush + fsync: the line is either all there or not.
        self._steps_fh.write(line + b"\n")
        self._steps_fh.flush()
        os.fsync(self._steps_fh.fileno())

    def _write_screenshot(self, name: str, pixels: Any) -> str:
        """Queue the PNG (the env hands out a fresh array per observation, so
        ``pixels`` is not changed under the writer) and return its relative path."""
        self._submit(self._store_png, name, _check_pixels(pixels))
        return f"{SCREENSHOT_DIR}/{name}"

    def _store_png(self, name: str, pixels: np.ndarray) -> None:
        directory = self.path / SCREENSHOT_DIR
        directory.mkdir(exist_ok=True)
        write_bytes_atomic(directory / name, _encode_png(pixels))

    def outcome_so_far(self, reason: str | None = None) -> Outcome:
        """The outcome implied by the steps written so far."""
        last = self._last
        return Outcome(
            success=None
            if last is not None and last.success is None
            else bool(last and last.success),
            return_=self._return,
            steps=self._steps,
            answer=None if last is None else last.answer,
            terminated=bool(last and last.terminated),
            truncated=bool(last and last.truncated),
            reason=reason if reason is not None else ("" if last is None else last.reason),
        )

    # --- finishing --------------------------------------------------------------
    def close(
        self,
        outcome: Outcome | None = None,
        *,
        final_observation: Mapping[str, Any] | None = None,
        reason: str | None = None,
    ) -> Path:
        """Finish the episode: store ``outcome`` (default: derived from the steps,
        with ``reason`` overriding the last step's), the observation after the
        last step, and mark the episode complete. Safe to call twice."""
        if self._closed:
            return self.path
        self._finish(outcome or self.outcome_so_far(reason), final_observation, complete=True)
        return self.path

    def abort(self, reason: str = "interrupted") -> Path:
        """Stop writing; the episode stays ``complete: false`` with the outcome so far."""
        if not self._closed:
            self._finish(self.outcome_so_far(reason), None, complete=False)
        return self.path

    def _finish(
        self, outcome: Outcome, final_observation: Mapping[str, Any] | None, *, complete: bool
    ) -> None:
        self._closed = True
        self._file.outcome = outcome
        ended = time.time()
        timings = {"started_at": self._started, "ended_at": ended, "wall_s": ended - self._started}
        if self._steps:
            for key, total in self._timing_sums.items():
                timings[f"mean_{key}"] = total / self._steps
        self._file.timings = timings
        interrupted: str | None = None  # an interrupt's type, before episode.json was queued
        written = False
        try:
            # Whatever fails from here is raised at the end, once the files are
            # finished, the thread stopped and the episode left not complete.
            failed: BaseException | None = None
            if final_observation is not None:
                shot = None
                if self.screenshots and final_observation.get("screenshot") is not None:
                    try:
                        shot = self._write_screenshot("final.png", final_observation["screenshot"])
                    except Exception as exc:  # noqa: BLE001 - e.g. an earlier step's write
                        failed = exc
                self._file.final_observation = observation_to_json(final_observation, shot)
            if self._worker is not None:  # the steps' writes first: did every one land?
                try:
                    self.flush()
                except Exception as exc:  # noqa: BLE001 - raised below, after episode.json
                    failed = failed or exc
            self._file.complete = complete and failed is None and self._failed is None
            self._write_episode_json()
            written = True  # (queued: the shutdown below waits for it)
            self._submit(self._steps_fh.close)
            if self._worker is not None:
                self.flush()
            if failed is not None:
                raise failed
        except BaseException as exc:
            if isinstance(exc, Exception) or written:
                raise
            # Ctrl+C while the steps' writes were awaited: they finish below,
            # then the episode is left not complete with its outcome so far
            interrupted = type(exc).__name__
            raise
        finally:
            if self._worker is not None:
                self._worker.shutdown(wait=True)
            if not self._steps_fh.closed:
                self._steps_fh.close()
            if interrupted is not None:
                self._file.complete = False
                self._file.outcome = dataclasses.replace(
                    outcome, reason=f"interrupted: {interrupted}"
                )
                write_bytes_atomic(self.path / EPISODE_FILE, self._episode_json())

    def _write_episode_json(self) -> None:
        # Serialised now (the meta may change later), written in order after the queued steps.
        self._submit(write_bytes_atomic, self.path / EPISODE_FILE, self._episode_json())

    def _episode_json(self) -> bytes:
        data = json.dumps(self._file.to_json(), ensure_ascii=False, indent=1, allow_nan=False)
        return data.encode("utf-8")

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """A clean exit closes; an exception aborts, and it is that exception
        that propagates: a failure of the abort itself (an earlier background
        write's) is added to it as a note, not raised in its place."""
        if exc_type is None:
            self.close()
            return
        try:
            self.abort(f"interrupted: {exc_type.__name__}")
        except Exception as secondary:  # noqa: BLE001 - the exception that ended the block wins
            if exc is not None:
                exc.add_note(f"and aborting episode {self.path} failed: {secondary!r}")

    def __del__(self) -> None:
        fh = getattr(self, "_steps_fh", None)
        if fh is not None and not fh.closed:
            fh.close()


def _utf8_line(data: dict[str, Any], index: int) -> bytes:
    """Step ``index``'s JSON line as UTF-8; a ``ValueError`` naming the field
    that cannot be encoded (a lone surrogate) instead."""
    line = json.dumps(data, ensure_ascii=False, allow_nan=False)
    try:
        return line.encode("utf-8")
    except UnicodeEncodeError as exc:
        surrogate = line[exc.start]
        field = next(
            (
                key
                for key, value in data.items()
                if surrogate in json.dumps(value, ensure_ascii=False)
            ),
            "?",
        )
        raise ValueError(
            f"step {index} cannot be written: its {field!r} holds a lone surrogate "
            f"{surrogate!r}, which UTF-8 cannot encode"
        ) from None


def _action_dict(action: Any) -> dict[str, Any]:
    if isinstance(action, Mapping):
        return {k: v for k, v in to_jsonable(dict(action)).items() if v is not None}
    if hasattr(action, "to_dict"):
        return action.to_dict()
    from browser_env.actions import coerce_action

    return coerce_action(action).to_dict()
