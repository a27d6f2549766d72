"""The learning study's report (:mod:`learners.study`): ``results.json``
(atomic, after every phase), the ``results.md`` table and ``curves.png``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from browser_env.atomic import write_json_atomic

__all__ = ["save_results", "validation_curve", "write_report"]


def _table(results: dict[str, Any]) -> str:
    def cell(score: Mapping[str, Any]) -> str:
        low, high = score["ci95"]
        return f"{score['accuracy']:.2f} [{low:.2f}, {high:.2f}] (n={score['n']})"

    a = results["stages"]["stage_a"]
    base = results["stages"]["base_model"]
    pre = results["precondition"]
    lines = [
        "| model | new tasks, test | base tasks, test | perplexity | s/step | CPU s/step | peak MiB |",
        "|---|---|---|---|---|---|---|",
        f"| base model | {cell(base['new_test'])} | {cell(base['base_test'])} | "
        f"{base['perplexity']:.1f} | - | - | - |",
        f"| stage A (SFT, base tasks) | {cell(a['new_test'])} | {cell(a['base_test'])} | "
        f"{a['perplexity']:.1f} | {a['seconds_per_step']:.1f} | "
        f"{a['cpu_seconds_per_step']:.1f} | {a['peak_memory_mib']:.0f} |",
    ]
    for name, r in results["stage_b"].items():
        lines.append(
            f"| stage B: {name} | {cell(r['new_test'])} | {cell(r['base_test'])} | "
            f"{r['perplexity']:.1f} | {r['seconds_per_step']:.1f} | "
            f"{r['cpu_seconds_per_step']:.1f} | {r['peak_memory_mib']:.0f} |"
        )
    lines += [
        "",
        f"SDFT precondition (stage-A model on new tasks, test): teacher "
        f"{cell(pre['teacher_new_test'])} vs student {cell(pre['student_new_test'])}.",
    ]
    return "\n".join(lines) + "\n"


def save_results(out: Path, results: dict[str, Any]) -> None:
    """``results.json``, atomically: written after every phase, so a crash
    loses at most the phase it happened in."""
    write_json_atomic(out / "results.json", results)


def write_report(out: Path, results: dict[str, Any]) -> None:
    save_results(out, results)
    (out / "results.md").write_text(_table(results))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        return
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
    first_steps = max(int(results["config"]["stage_b_steps"]) // 2, 1)  # sft+sdft's SFT half
    for name, r in results["stage_b"].items():
        losses = [row["loss"] for row in r["history"] if "loss" in row]
        (line,) = loss_ax.plot(range(1, len(losses) + 1), losses, label=name)
        curve = validation_curve(r, out, first_steps)
        val_ax.plot(*zip(*curve, strict=True), marker="o", color=line.get_color(), label=name)
    loss_ax.set(title="stage B training loss (each arm's own objective)", xlabel="optimiser step")
    val_ax.set(
        title="new tasks, validation accuracy of checkpoints",
        xlabel="optimiser step",
        ylim=(-0.02, 1.02),
    )
    val_ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)


def validation_curve(
    record: Mapping[str, Any], out: Path, first_steps: int
) -> list[tuple[int, float]]:
    """``(optimiser step, validation accuracy)`` of a stage-B arm's checkpoints,
    by step. A checkpoint dir ``step-N`` is step N of its run; a run's final
    adapter is its last step; the second run of ``sft+sdft`` starts where the
    first (``first_steps`` long, as :func:`run` splits the budget) ended."""
    import re

    roots = [os.path.relpath(r, out) for r in record.get("checkpoint_roots") or [record["adapter"]]]
    second = roots[-1] if len(roots) > 1 else None
    points = []
    for path, accuracy in record["validation"].items():
        root = max((r for r in roots if path == r or path.startswith(r + os.sep)), key=len)
        match = re.search(r"step-0*(\d+)$", path)
        if match:
            step = (first_steps if root == second else 0) + int(match.group(1))
        elif second is not None and root == roots[0]:
            step = first_steps
        else:
            step = len(record["history"])
        points.append((step, accuracy))
    return sorted(set(points))
