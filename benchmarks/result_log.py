"""A benchmark run's results so far: ``results.jsonl``, appended as episodes end,
read back by ``resume=true``.

A long ``benchmarks.run`` that stops (Ctrl-C, a lost machine, a cluster job
that runs out of time) keeps every finished episode: :class:`ResultLog`
appends each result as one JSON line the moment the rollout engine hands it
back (written, flushed and fsynced before the next). ``results.json`` and the
table still come only from a complete run.

Format: the first line is ``{"run": {...}}``, the settings that decide what an
episode plays (the config without the keys in :data:`NOT_IN_FINGERPRINT`,
which change how or where a run plays, not what); every further line is
``{"episode": EpisodeResult.to_dict()}``. A fresh run replaces the file
atomically (header only), but never a stopped run's; ``resume`` keeps the
episodes of a file whose header matches (all but ``error`` ones) and refuses
one that does not, naming the keys that differ.
A complete run ends the file with ``{"finished": true}``. A last line cut
short by a crash is dropped; a bad line anywhere else is an error (the file
is not ours, or was edited).

Episode directories (``record=true``) follow the log: before a run plays,
:func:`set_aside_unlogged` moves every directory under ``episodes/`` that no
kept result names (an episode that ended in ``error`` and plays again, one
that ended while the run was stopping, before its result was logged, or a
replaced run's) into ``episodes.stale/``, and :func:`restore_logged` moves
back any there that a kept result names, so ``episodes/`` holds exactly the
episodes of the log, each once, and nothing is deleted. Episode readers
(``iter_episodes(run_dir)``, the learners' ``episodes=``) skip
``episodes.stale/`` unless it is passed itself.

Resuming plays the jobs with no result yet, so ``episodes=`` may grow on
resume (seeds are a prefix), and results are sorted by (env id, seed)
whichever run played them: for an agent whose episodes replay alike (the
scripted expert, seeded agents on a CPU; see docs/rollouts.md), a resumed
run's table equals an unstopped one. ``episodes=`` may not shrink:
``benchmarks.run`` refuses to resume a log holding episodes past the ones
asked for, so the table, the log and ``episodes/`` hold the same episodes.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from agents.rollout import EpisodeResult
from benchmarks.report import write_text_atomic
from browser_env.episodes.loader import SET_ASIDE_SUFFIX
from browser_env.episodes.writer import free_path

__all__ = [
    "NOT_IN_FINGERPRINT",
    "SPEED_ONLY",
    "ResultLog",
    "fingerprint",
    "restore_logged",
    "set_aside_unlogged",
]

NOT_IN_FINGERPRINT = frozenset(
    {
        "episodes",  # more on resume: the seeds are a prefix of the longer run's
        "headless",
        "record",
        "progress",
        "output_dir",
        "resume",
        "wandb",
        "wandb_project",
        "run_name",
        "runner",
        "workers",
        "envs_per_worker",
        "cpus_per_worker",
        "gpus_per_worker",
        "ship_episodes",
        "startup_timeout_s",  # a start-up given up on is an error, replayed on resume
    }
)
"""Config keys that change how or where a run plays, not what its episodes are."""


_SPEED_ONLY_BACKEND = (
    "prefix_cache",  # the same tokens, sooner (tested)
    "prefill",  # per-row or padded: the same greedy tokens (tested)
    "timeout",  # how a request is retried: a failure is an ``error``, replayed
    "max_retries",
    "backoff",
    "max_backoff",
)
SPEED_ONLY = frozenset(
    f"{where}.{key}"
    for where in ("agent.backend", "backend")  # agent=llm reads the top-level backend=
    for key in _SPEED_ONLY_BACKEND
)
"""Dotted keys inside the config that change how fast an agent decides, not what.

Settings that change numerics (``device``, ``dtype``, ``attn_implementation``)
stay in the fingerprint: a GPU's float rounding can change a greedy token."""


def fingerprint(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` (a resolved, JSON-ready dict) without :data:`NOT_IN_FINGERPRINT`
    and :data:`SPEED_ONLY`. Idempotent: a fingerprint's fingerprint is itself."""
    kept = {k: v for k, v in config.items() if k not in NOT_IN_FINGERPRINT and k != "hydra"}
    return _without(kept, SPEED_ONLY)


def _without(config: dict[str, Any], dotted: Iterable[str]) -> dict[str, Any]:
    """A copy of ``config`` without the ``dotted`` keys that it has."""
    out = copy.deepcopy(config)
    for key in dotted:
        *parents, leaf = key.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def _key(result: EpisodeResult) -> tuple[str, int | None]:
    return result.env_id, result.seed


class ResultLog:
    """``path`` (a ``results.jsonl``) for a run of ``run`` settings (:func:`fingerprint`).

    ``resume=True`` keeps the results already in the file (``done``, by (env
    id, seed)) when its header equals ``run`` (a ``ValueError`` naming what
    differs when it does not), except episodes that ended in ``error``,
    which play again: an error may be the stop's own doing (a browser that
    got the Ctrl-C too). ``resume=False`` starts the file afresh, unless it
    holds a stopped run's episodes (no :meth:`finish` line): that is refused,
    so a forgotten ``resume=true`` never wipes them. With nothing at
    ``path`` both start afresh (``resumed`` is then 0).

    The file is rewritten (its header and the kept episodes) by :meth:`start`,
    which the constructor calls unless ``start=False``: a caller that may still
    refuse to run (its agent fails to build) reads and checks the log first and
    starts it only once it will play, so a refused run leaves the file as it was.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        run: Mapping[str, Any],
        *,
        resume: bool,
        start: bool = True,
    ) -> None:
        self.path = Path(path)
        self.run = json.loads(json.dumps(dict(run)))  # as it reads back: tuples are lists
        self.done: dict[tuple[str, int | None], EpisodeResult] = {}
        if self.path.exists():
            header, results, finished = self._read()
            if resume and fingerprint(header) != self.run:  # an older header may hold more
                raise ValueError(self._mismatch(header))
            if not resume and results and not finished:
                raise ValueError(
                    f"{self.path} holds {len(results)} episodes of a stopped run: "
                    "resume=true plays the rest; to start afresh, delete the file"
                )
            if resume:
                self.done = {_key(r): r for r in results if r.status != "error"}
        self.resumed = len(self.done)
        if start:
            self.start()

    def start(self) -> None:
        """Write the header and the kept episodes, replacing the file atomically
        (its directory made): the log the run appends to from here."""
        self._rewrite(self.done.values())

    def append(self, result: EpisodeResult) -> None:
        """Adds ``result``; on disk when this returns. It counts in ``done`` from
        the moment its line is in the file (flushed, before the fsync): a stop
        raised while the line is fsynced (SIGTERM's ``SystemExit``, Ctrl-C)
        still finds it counted, as a reader of the file finds it."""
        self._append(
            {"episode": result.to_dict()}, lambda: self.done.update({_key(result): result})
        )

    def finish(self) -> None:
        """Marks the run complete: a fresh run may then start the file again."""
        self._append({"finished": True})

    def _append(self, record: dict[str, Any], written: Callable[[], None] | None = None) -> None:
        """Append ``record`` as a line; ``written`` is called once the line is in
        the file, before it is fsynced."""
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            if written is not None:
                written()
            os.fsync(f.fileno())

    def _read(self) -> tuple[Any, list[EpisodeResult], bool]:
        """The header, the episodes and whether a finish line came last."""
        lines = self.path.read_text(encoding="utf-8").split("\n")
        complete = lines[:-1]  # the last piece is "" unless a crash cut the last write
        records = []
        for number, line in enumerate(complete, 1):
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"{self.path}:{number} is not a JSON line ({exc})") from None
        if (
            not records
            or not isinstance(records[0], dict)
            or not isinstance(records[0].get("run"), dict)
        ):
            raise ValueError(f"{self.path} has no run header: not a benchmarks.run results log")
        finished = records[-1] == {"finished": True}
        try:
            results = [EpisodeResult(**r["episode"]) for r in records[1:] if "episode" in r]
        except TypeError as exc:
            raise ValueError(f"{self.path}: an episode line does not parse ({exc})") from None
        return records[0]["run"], results, finished

    def _mismatch(self, header: Any) -> str:
        there, now = _leaves(fingerprint(header)), _leaves(self.run)
        keys = sorted(k for k in there.keys() | now.keys() if there.get(k) != now.get(k))
        shown = ", ".join(
            f"{k}: {json.dumps(there.get(k))} there, {json.dumps(now.get(k))} now" for k in keys[:5]
        )
        return (
            f"cannot resume: {self.path} holds episodes of other settings ({shown}"
            f"{', ...' if len(keys) > 5 else ''}); use another output_dir or the same settings"
        )

    def _rewrite(self, results: Iterable[EpisodeResult]) -> None:
        """The header and ``results``, replacing the file atomically."""
        lines = [{"run": self.run}, *({"episode": r.to_dict()} for r in results)]
        write_text_atomic(self.path, "".join(json.dumps(line) + "\n" for line in lines))


def set_aside_unlogged(
    episodes: str | os.PathLike[str], kept: Iterable[EpisodeResult]
) -> list[Path]:
    """Moves the directories under ``episodes`` that no ``kept`` result names (by
    ``episode_dir``'s last part) into the sibling ``<episodes>.stale/``; returns
    where they went. A name taken there gets a ``-N`` suffix; nothing is deleted.
    """
    root = Path(episodes)
    if not root.is_dir():
        return []
    named = _named(kept)
    stale = _set_aside_dir(root)
    moved = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name in named:
            continue
        stale.mkdir(exist_ok=True)
        target = free_path(stale, entry.name)
        os.replace(entry, target)  # one rename: the episode is in one place or the other
        moved.append(target)
    return moved


def restore_logged(episodes: str | os.PathLike[str], kept: Iterable[EpisodeResult]) -> list[Path]:
    """Moves back into ``episodes`` the directories of ``<episodes>.stale/`` that a
    ``kept`` result names (by ``episode_dir``'s last part) and ``episodes`` lacks
    (set aside by an earlier run that did not count them); returns where they went.
    Episode dir names are unique (a time and a random part): the name is the episode."""
    root = Path(episodes)
    stale = _set_aside_dir(root)
    if not stale.is_dir():
        return []
    moved = []
    for name in sorted(_named(kept)):
        source, target = stale / name, root / name
        if source.is_dir() and not target.exists():
            root.mkdir(exist_ok=True)
            os.replace(source, target)
            moved.append(target)
    return moved


def _named(results: Iterable[EpisodeResult]) -> set[str]:
    return {Path(r.episode_dir).name for r in results if r.episode_dir}


def _set_aside_dir(episodes: Path) -> Path:
    return episodes.with_name(episodes.name + SET_ASIDE_SUFFIX)  # which episode readers skip


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"agent.backend.device": "cpu", ...}``."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_leaves(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}
