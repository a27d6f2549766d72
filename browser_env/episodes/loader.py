"""Read and validate episode directories.

:func:`load_episode` returns a typed :class:`Episode` or raises
:class:`~browser_env.episodes.format.EpisodeFormatError` naming the file (and,
for ``steps.jsonl``, the line) that is wrong. :func:`iter_episodes` walks run
directories and yields every episode below them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from browser_env.episodes.format import (
    EPISODE_FILE,
    STEPS_FILE,
    EpisodeFile,
    EpisodeFormatError,
    EpisodeMeta,
    Outcome,
    StepRecord,
    observation_from_json,
)

__all__ = [
    "Episode",
    "LineTooLongError",
    "find_episode_dirs",
    "iter_episodes",
    "iter_steps",
    "load_episode",
]


@dataclasses.dataclass
class Episode:
    """A loaded episode: ``meta``, ``steps`` in order, ``outcome`` (``None`` when the
    episode never got past its first write) and the directory it came from."""

    path: Path
    meta: EpisodeMeta
    complete: bool
    outcome: Outcome | None
    steps: list[StepRecord]
    timings: dict[str, float]
    final_observation: dict[str, Any] | None

    @property
    def success(self) -> bool:
        return bool(self.outcome and self.outcome.success)

    @property
    def actions(self) -> list[dict[str, Any] | None]:
        return [s.action for s in self.steps]

    def screenshot(self, relative: str | None) -> np.ndarray | None:
        """The pixels of a stored screenshot path (as in ``observation["screenshot"]``)."""
        if not relative:
            return None
        from PIL import Image

        with Image.open(self.path / relative) as image:
            return np.asarray(image.convert("RGB"))

    def observation(self, index: int, *, screenshot: bool = False) -> dict[str, Any]:
        """The observation before step ``index`` in the env's form (``index ==
        len(steps)`` gives the final observation); pixels only if ``screenshot``."""
        stored = (
            self.final_observation if index == len(self.steps) else self.steps[index].observation
        )
        if stored is None:
            raise IndexError(f"{self.path} has no observation after its last step")
        obs = observation_from_json(stored)
        if screenshot:
            obs["screenshot"] = self.screenshot(stored.get("screenshot"))
        else:
            obs.pop("screenshot", None)
        return obs


def load_episode(path: str | os.PathLike[str], *, check_files: bool = True) -> Episode:
    """Load and validate the episode in directory ``path``.

    A final ``steps.jsonl`` line without its newline in an incomplete episode is a
    write cut off by a crash and is dropped; anywhere else a bad line is an error.
    ``check_files`` also checks that every referenced screenshot exists.
    """
    directory = Path(path)
    episode_path = directory / EPISODE_FILE
    if not episode_path.is_file():
        raise EpisodeFormatError(episode_path, "missing; not an episode directory")
    try:
        data = json.loads(episode_path.read_text(encoding="utf-8"))
        header = EpisodeFile.from_json(data)
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
        # as in iter_steps: RecursionError is json's answer to a deeply nested
        # document, OverflowError a number too large for a float
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise EpisodeFormatError(episode_path, reason) from None

    steps = _load_steps(directory / STEPS_FILE, complete=header.complete)
    episode = Episode(
        path=directory,
        meta=header.meta,
        complete=header.complete,
        outcome=header.outcome,
        steps=steps,
        timings=header.timings,
        final_observation=header.final_observation,
    )
    if header.complete and header.outcome is not None and header.outcome.steps != len(steps):
        raise EpisodeFormatError(
            episode_path,
            f"outcome.steps is {header.outcome.steps} but {STEPS_FILE} holds {len(steps)} steps",
        )
    if check_files:
        _check_screenshots(episode)
    return episode


class LineTooLongError(EpisodeFormatError):
    """A ``steps.jsonl`` line longer than :func:`iter_steps`' ``max_line_bytes``."""


def _load_steps(path: Path, *, complete: bool) -> list[StepRecord]:
    if not path.exists():
        if complete:
            raise EpisodeFormatError(path, "missing")
        return []
    return [record for _, record in iter_steps(path, complete=complete)]


def iter_steps(
    path: Path, *, complete: bool, max_line_bytes: int | None = None
) -> Iterator[tuple[int, StepRecord]]:
    """``(line number, step)`` for each step of the ``steps.jsonl`` at ``path``,
    read one line at a time, with :func:`load_episode`'s rules: blank lines are
    skipped, steps must come in index order, and a last line without its newline
    in an incomplete episode (``complete`` False) is a write cut off by a crash
    and is dropped. Raises :class:`EpisodeFormatError` (with the line) for a bad
    line, or one longer than ``max_line_bytes`` (read no further than that)."""
    expected = 0
    with path.open("rb") as lines:
        number = 0
        while line := lines.readline(-1 if max_line_bytes is None else max_line_bytes + 1):
            number += 1
            if max_line_bytes is not None and len(line) > max_line_bytes:
                raise LineTooLongError(path, f"longer than {max_line_bytes} bytes", line=number)
            if not line.strip():
                continue
            try:
                record = StepRecord.from_json(json.loads(line.decode("utf-8")))
            except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
                if not line.endswith(b"\n") and not complete:
                    break
                # RecursionError: json's answer to a deeply nested document
                reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                raise EpisodeFormatError(path, reason, line=number) from None
            if record.index != expected:
                raise EpisodeFormatError(
                    path,
                    f"step index {record.index} out of order (expected {expected})",
                    line=number,
                )
            yield number, record
            expected += 1


def _check_screenshots(episode: Episode) -> None:
    observations = [(s.observation, f"{STEPS_FILE} step {s.index}") for s in episode.steps]
    if episode.final_observation is not None:
        observations.append((episode.final_observation, "final_observation"))
    for obs, where in observations:
        shot = obs.get("screenshot")
        if shot and not (episode.path / shot).is_file():
            raise EpisodeFormatError(episode.path / shot, f"missing screenshot ({where})")


SET_ASIDE_SUFFIX = ".stale"
"""A directory named ``<name>.stale`` holds episodes set aside, not the run's
(e.g. ``benchmarks.run``'s ``episodes.stale/`` after a resume)."""


def _skipped(part: str) -> bool:
    return part.startswith(".") or part.endswith(SET_ASIDE_SUFFIX)


def find_episode_dirs(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> list[Path]:
    """Every episode directory at or below ``paths`` (episode or run dirs), sorted.

    Below a run dir, directories whose names start with ``.`` are not searched
    (they hold work in progress, e.g. a shipped episode being unpacked,
    :mod:`agents.runners.shipping`, or a tool's own state), nor those ending in
    ``.stale`` (episodes set aside, :data:`SET_ASIDE_SUFFIX`: a resumed
    benchmark's replaced or unlogged ones, which would repeat seeds). Either
    is read when passed itself. A leading ``~`` is the home directory, as where
    a shell does not expand it (``learner.episodes=[~/runs]``)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    found: set[Path] = set()
    for root in (Path(p).expanduser() for p in paths):
        if (root / EPISODE_FILE).is_file():
            found.add(root)
            continue
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such episode or run directory")
        found.update(
            p.parent
            for p in root.rglob(EPISODE_FILE)
            if not any(_skipped(part) for part in p.relative_to(root).parts[:-1])
        )
    return sorted(found)


def iter_episodes(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    include_incomplete: bool = False,
    check_files: bool = True,
) -> Iterator[Episode]:
    """Yield every episode below ``paths``, in path order.

    Incomplete episodes (crashed or interrupted) are skipped unless
    ``include_incomplete``. A corrupt episode raises; it is never skipped silently.
    """
    for directory in find_episode_dirs(paths):
        episode = load_episode(directory, check_files=check_files)
        if episode.complete or include_incomplete:
            yield episode
