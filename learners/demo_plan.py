"""What a run of :mod:`learners.demo` records and trains, given what its ``out`` holds.

A demo's ``out`` is its own (:func:`check_out`); a rerun into it records only
the expert episodes that are missing (:func:`plan_recording`) and reuses the
SFT and SDFT stages that finished with the same settings on the same episodes
(:func:`plan_training`). Whatever a rerun would have to train on top of, or
would mix with another run's files, is refused here, before anything is
recorded or trained; nothing is deleted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from browser_env.registration import env_id
from learners.demo_export import DEMO_ENTRIES, is_export

__all__ = ["check_out", "check_tasks", "plan_recording", "plan_training", "scan_episodes"]


def check_out(out: Path, export: str | None = None) -> None:
    """Raise ``ValueError`` (one line naming ``out``) unless the demo may write
    into ``out``: a path not there yet, or a directory holding nothing but
    what a demo writes there (:data:`learners.demo_export.DEMO_ENTRIES`, the
    ``export`` when it lies directly in ``out``, an earlier export there:
    :func:`learners.demo_export.is_export`) and hidden entries (an atomic
    write's or an export swap's leftovers after a crash, ``.DS_Store``), as
    :func:`learners.checkpoint.check_output_dir` ignores them. The demo would put its episodes,
    models, ``results.json`` and plot among anything else, overwriting files
    of those names."""
    fix = "set out to a new or empty directory, or to an earlier demo's out"
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ValueError(f"out={out} is not a directory: {fix}")
    if not out.is_dir():
        return
    ours = set(DEMO_ENTRIES)
    if export is not None and Path(export).resolve().parent == out.resolve():
        ours.add(Path(export).name)
    stray = sorted(
        p.name + ("/" if p.is_dir() else "")
        for p in out.iterdir()
        if p.name not in ours and not p.name.startswith(".") and not is_export(p)
    )
    if stray:
        shown = ", ".join(stray[:3]) + (", ..." if len(stray) > 3 else "")
        raise ValueError(
            f"out={out} holds files the demo does not write ({shown}): it would put its "
            f"episodes, models and results among them; {fix}"
        )


def check_tasks(tasks: list[str]) -> None:
    """Raise ``ValueError`` (naming ``tasks``) for no task, a task that is no
    registered MiniWoB++ env (with Gymnasium's suggestion), or one the
    scripted expert has no policy for: before anything is recorded."""
    import gymnasium as gym

    import browser_env  # noqa: F401 - registers the browser_env/* ids
    from agents.experts import expert_task, unsupported_env_ids

    if not tasks:
        raise ValueError("tasks is empty: name MiniWoB++ tasks, e.g. tasks=[click-test]")
    for task in tasks:
        try:
            gym.spec(env_id(task))
        except gym.error.Error as exc:
            raise ValueError(f"tasks: {task!r} is no MiniWoB++ task: {exc}") from None
    unsupported = [expert_task(e) for e in unsupported_env_ids(env_id(t) for t in tasks)]
    if unsupported:
        raise ValueError(
            f"tasks: the scripted expert has no policy for {', '.join(unsupported)}, so it "
            "records no episodes of it: pick tasks it solves (agents.experts.SUPPORTED_TASKS, "
            "suite=miniwob_expert)"
        )


def plan_recording(root: Path, tasks: list[str], seeds: range) -> dict[str, list[int]]:
    """The seeds of each task to record under ``root``: those with no complete
    scripted-expert episode there yet (none, on a new ``root``; a crashed
    run's seeds, whose episodes are incomplete, on a rerun).

    Raise ``ValueError`` when ``root`` holds complete episodes this run would
    not train on -- of other tasks, of seeds outside ``seeds``, or not the
    scripted expert's: the learners read every episode under ``root``, so
    they would train on them. Incomplete episodes are let be (no learner
    reads one)."""
    recorded, stray = scan_episodes(root, tasks, seeds)
    if stray:
        raise ValueError(
            f"{root} holds complete episodes this run would not train on "
            f"({'; '.join(stray)}), and the learners read every episode there: set out to a "
            "new directory, or tasks and train_seeds to cover them"
        )
    return {task: [s for s in seeds if s not in recorded[task]] for task in tasks}


def scan_episodes(
    root: Path, tasks: list[str], seeds: range
) -> tuple[dict[str, dict[int, bool]], list[str]]:
    """The complete scripted-expert episodes under ``root`` of ``tasks`` x ``seeds``
    (task -> seed -> success), and a line for each kind of complete episode
    there that is none of them."""
    from browser_env.episodes import iter_episodes

    wanted = {env_id(task): task for task in tasks}
    recorded: dict[str, dict[int, bool]] = {task: {} for task in tasks}
    other_tasks: dict[str, list[int]] = {}
    other_seeds: dict[str, list[int]] = {}
    not_expert = 0
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} is a file, where the demo records its episodes")
    if root.is_dir():
        for episode in iter_episodes(root, check_files=False):  # complete ones only
            meta = episode.meta
            task = wanted.get(meta.env_id)
            if meta.source != "scripted" or meta.agent.name != "expert":
                not_expert += 1
            elif task is None:
                other_tasks.setdefault(meta.task or meta.env_id, []).append(meta.seed)
            elif meta.seed not in seeds:
                other_seeds.setdefault(task, []).append(meta.seed)
            else:
                recorded[task][meta.seed] = episode.success
    stray = [f"{t} seeds {_spans(s)}: not in tasks" for t, s in sorted(other_tasks.items())]
    stray += [
        f"{t} seeds {_spans(s)}: outside train_seeds={len(seeds)} (seeds {_spans(seeds)})"
        for t, s in sorted(other_seeds.items())
    ]
    if not_expert:
        stray.append(f"{not_expert} not recorded by the scripted expert")
    return recorded, stray


def _spans(seeds: Iterable[int | None]) -> str:
    """``0-3, 7, 9-10`` for seeds 0, 1, 2, 3, 7, 9, 10 (``None`` shown as such)."""
    seeds = list(seeds)
    known = sorted({s for s in seeds if s is not None})
    spans: list[list[int]] = []
    for seed in known:
        if spans and seed == spans[-1][1] + 1:
            spans[-1][1] = seed
        else:
            spans.append([seed, seed])
    shown = [str(a) if a == b else f"{a}-{b}" for a, b in spans]
    if None in seeds:
        shown.append("None")
    return ", ".join(shown)


#: learner settings that change where or how visibly a stage runs, not what it learns
_NOT_COMPARED = ("episodes", "output_dir", "wandb", "progress")


def plan_training(
    stages: Mapping[str, Mapping[str, Any]], *, new_episodes: bool, episodes: Path | None = None
) -> dict[str, list[dict[str, Any]] | None]:
    """For each stage in order (``"sft"``, then ``"sdft"``: the learner settings
    the demo passes, its ``output_dir`` included), the metrics history of a
    finished run there to reuse, or ``None`` to train it.

    A stage's ``output_dir`` whose ``training.json`` says ``complete`` is reused
    when it was trained once, from its starting model, with these settings, on
    these episodes (none to record in this run: ``new_episodes`` False, and no
    episode under ``episodes`` written after the stage finished) and after the
    stages before it were reused: a rerun of a finished or crashed demo trains
    only what is missing. Any other finished run there raises ``ValueError``
    (the learner would train on top of it: more steps than asked, on another
    base), naming what differs and the directories to delete; nothing is
    deleted here. An unfinished one (a crash) is trained again."""
    from learners.tracking import logged_rows

    plan: dict[str, list[dict[str, Any]] | None] = {}
    names = list(stages)
    for number, (stage, values) in enumerate(stages.items()):
        where = Path(values["output_dir"])
        try:
            meta = json.loads((where / "training.json").read_text())
        except (OSError, ValueError):
            meta = None
        if not isinstance(meta, dict) or meta.get("status") != "complete":
            plan[stage] = None
            continue
        newer = new_episodes or _episodes_since(episodes, where / "training.json")
        why = _not_reusable(meta, values, newer, names[:number], plan)
        if why:
            later = " and ".join(str(Path(stages[s]["output_dir"])) for s in names[number:])
            raise ValueError(
                f"{where} holds a finished {stage} run that this demo would train on top "
                f"of ({why}): set out to a new directory, or delete {later} to train again "
                "(the recorded episodes are kept and reused)"
            )
        plan[stage] = logged_rows(where, start=meta.get("metrics_start") or 0)
    return plan


def _episodes_since(episodes: Path | None, finished: Path) -> bool:
    """An episode under ``episodes`` was written after ``finished`` (a stage's
    ``training.json``) was: the stage did not train on it."""
    if episodes is None or not episodes.is_dir():
        return False
    done = finished.stat().st_mtime
    return any(p.stat().st_mtime > done for p in episodes.glob("*/episode.json"))


def _not_reusable(
    meta: dict[str, Any],
    values: Mapping[str, Any],
    new_episodes: bool,
    earlier: list[str],
    plan: Mapping[str, Any],
) -> str:
    """Why the finished run ``meta`` (its ``training.json``) is not this stage's; '' when it is."""
    retrained = [s for s in earlier if plan[s] is None]
    if retrained:
        return f"trained after an earlier {retrained[0]}, which this run trains again"
    if meta.get("runs") or meta.get("init_from"):
        return "trained on top of an earlier run"
    if new_episodes:
        return "trained before episodes it did not see were recorded"
    recorded = meta.get("hyperparameters") or {}
    differ = [
        f"{key} {recorded.get(key)!r} -> {value!r}"
        for key, value in values.items()
        if key not in _NOT_COMPARED and recorded.get(key) != value
    ]
    return "other settings: " + ", ".join(differ[:3]) if differ else ""
