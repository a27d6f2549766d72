"""``learners.demo export=DIR``: the demo's best student as a plain model directory.

What is exported (:func:`export_stage`): the SFT model, or it with the SDFT
adapter merged when SDFT raised held-out student success over SFT; and
nothing at all when that student does no better on the held-out seeds than
the untrained model did. Such a run learned nothing, and an earlier export in
``DIR`` (the embedded policy, say) is better kept than replaced by it: the
demo says so on stderr and in ``results.json`` (``export``), and its models
stay in ``out/sft`` and ``out/sdft``.

What may be replaced (:func:`check_export_dest`): ``DIR`` is written only
when it is new, an empty directory, or an earlier export of this demo
(:func:`is_export`: its ``training.json`` is one :func:`export_policy`
writes, and it holds files only). Anything else is refused before the demo
records or trains anything, and again just before writing (the directory
may have changed during the run); nothing else is ever deleted. The new
export is written whole into a hidden sibling directory, then swapped in by
renames; the earlier export is removed only once the new one is in place.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from browser_env.atomic import fsync_dir, fsync_tree
from learners.tracking import METRICS_FILE

__all__ = ["DEMO_ENTRIES", "check_export_dest", "export_policy", "export_stage", "is_export"]

#: how every export's ``produced_by`` starts (:func:`learners.demo.command_line`)
_PRODUCED_BY = "python -m learners.demo"
#: what the demo writes into its ``out``: an export there would replace or be mixed with it
DEMO_ENTRIES = ("episodes", "sft", "sdft", "results.json", "learning_curve.png")


def export_stage(report: dict[str, Any]) -> str | None:
    """The stage of ``report`` (the demo's) to export: ``"sdft"`` when SDFT raised
    held-out student success over SFT, else ``"sft"``; ``None`` when that
    stage's held-out student success is no higher than before training."""
    rate = {stage: report[stage]["student"]["success_rate"] for stage in ("before", "sft", "sdft")}
    stage = "sdft" if rate["sdft"] > rate["sft"] else "sft"
    return stage if rate[stage] > rate["before"] else None


def is_export(path: str | os.PathLike[str]) -> bool:
    """``path`` is a directory an earlier :func:`export_policy` wrote: files only
    (an export writes no subdirectory), and a ``training.json`` with the
    fields an export records (``produced_by`` naming this demo, ``stage``,
    ``sft_training``)."""
    directory = Path(path)
    if directory.is_symlink() or not directory.is_dir():
        return False
    if any(p.is_symlink() or not p.is_file() for p in directory.iterdir()):
        return False
    try:
        meta = json.loads((directory / "training.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(meta, dict)
        and str(meta.get("produced_by", "")).startswith(_PRODUCED_BY)
        and meta.get("stage") in ("sft", "sdft")
        and "sft_training" in meta
    )


def check_export_dest(
    dest: str | os.PathLike[str], out: str | os.PathLike[str] | None = None
) -> None:
    """Raise ``ValueError`` (one line naming ``export``) unless an export may be
    written to ``dest``: a path not there yet (below directories, not files),
    an empty directory, or an earlier export (:func:`is_export`), which it
    replaces whole. ``out``: the demo's run directory, which the export must
    neither be nor hold, nor be one of the demo's own entries in."""
    dest = Path(dest)
    fix = "set export to a new or empty directory, or to an earlier export of learners.demo"
    if dest.is_symlink():
        raise ValueError(f"export={dest} is a symbolic link: name the directory itself")
    if out is not None:
        here, run = dest.resolve(), Path(out).resolve()
        if here == run or here in run.parents:
            raise ValueError(
                f"export={dest} is or holds out={out}, which the export would replace: "
                "set export outside out"
            )
        if here.parent == run and here.name in DEMO_ENTRIES:
            raise ValueError(f"export={dest} is the demo's own {here.name} in out={out}: {fix}")
    first = next((p for p in (dest, *dest.parents) if p.exists()), None)
    if first is not None and not first.is_dir():
        what = "is a file" if first == dest else f"is below {first}, a file"
        raise ValueError(f"export={dest} {what}, not a directory: {fix}")
    if not dest.is_dir() or is_export(dest):
        return
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in dest.iterdir())
    if names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise ValueError(
            f"export={dest} holds files that are no export of learners.demo ({shown}): "
            f"exporting would replace them; {fix}"
        )


def export_policy(out: Path, dest: Path, report: dict[str, Any], command: str) -> Path:
    """Write the best student of the demo run in ``out`` (:func:`export_stage`)
    to ``dest``, replacing an earlier export there (see the module doc).

    ``dest/training.json`` holds the command, the stage, the SFT
    ``training.json`` and the measured figures. Raises ``ValueError`` when the
    run learned nothing (:func:`export_stage` is ``None``) or ``dest`` may not
    be written (:func:`check_export_dest`), writing nothing."""
    stage = export_stage(report)
    if stage is None:
        raise ValueError(
            "nothing to export: the student did no better on the held-out seeds than the "
            "untrained model"
        )
    dest = Path(dest)
    check_export_dest(dest, out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    staging = dest.with_name(f".{dest.name}.export-{token}.tmp")
    try:
        staging.mkdir()
        _write_export(out, staging, stage, report, command)
        fsync_tree(staging)  # whole on disk before the rename makes it the export
        _swap_in(staging, dest, dest.with_name(f".{dest.name}.export-{token}.old"))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _write_export(out: Path, dest: Path, stage: str, report: dict[str, Any], command: str) -> None:
    if stage == "sft":
        for f in (out / "sft").iterdir():
            if f.is_file() and f.name not in (METRICS_FILE, "training.json"):
                shutil.copy2(f, dest / f.name)
    else:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        base = AutoModelForCausalLM.from_pretrained(out / "sft")
        merged = PeftModel.from_pretrained(base, out / "sdft").merge_and_unload()
        merged.save_pretrained(dest)
        AutoTokenizer.from_pretrained(out / "sft").save_pretrained(dest)
    meta = {
        "produced_by": command,
        "stage": stage,
        "tasks": report["tasks"],
        "args": report["args"],
        "held_out_seeds": report["held_out_seeds"],
        "success": {s: report[s] for s in ("before", "sft", "sdft")},
        "expert_success": report.get("expert_success"),
        "sft_training": json.loads((out / "sft" / "training.json").read_text()),
    }
    if stage == "sdft":
        meta["sdft_training"] = json.loads((out / "sdft" / "training.json").read_text())
    (dest / "training.json").write_text(json.dumps(meta, indent=2) + "\n")


def _swap_in(staging: Path, dest: Path, old: Path) -> None:
    """Make ``staging`` ``dest``: an earlier export (or empty directory) there is
    renamed aside first, and removed once ``staging`` is in its place (put
    back if that rename fails)."""
    if not dest.exists():
        os.replace(staging, dest)
        fsync_dir(dest.parent)
        return
    os.replace(dest, old)
    try:
        os.replace(staging, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    fsync_dir(dest.parent)
    shutil.rmtree(old)
