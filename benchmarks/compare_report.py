"""The plots and the HTML page of :mod:`benchmarks.compare`.

``tasks.png``: success per task, one bar per run, with 95% Wilson intervals.
``cost.png``: each run's success against its cost (tokens per episode, and
milliseconds per step, agent + env), with the same intervals.
``report.html``: the run table and a task-by-run table whose cells link to
the viewer (:mod:`browser_env.view`): the rate links to the run's episode
index, and one mark per episode (``+`` success, ``x`` failure, titled with
the seed) links to that episode's page. Links are relative, so the report
keeps working when the tree is copied as a whole. Like the viewer, the page
escapes every string and forbids scripts.
"""

from __future__ import annotations

import contextlib
import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from benchmarks.compare_stats import Cell, Run

__all__ = ["plot_cost", "plot_tasks", "write_html"]

_CSP = "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'"
_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin-bottom: 16px; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
.ci { color: #666; font-size: 12px; } .eps a { text-decoration: none; font-family: monospace; }
.ok { color: #0a7d22; } .fail { color: #b00020; } img { max-width: 100%; }
"""


def _figure(**kwargs: Any) -> Any | None:
    """A bare matplotlib Figure (no pyplot: the caller's backend is left alone),
    or None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(**kwargs)


def _errors(cells: Sequence[Cell]) -> list[list[float]]:
    """Asymmetric error bars (in %) from each cell's interval."""
    return [
        [100 * (c.success_rate - c.ci[0]) for c in cells],
        [100 * (c.ci[1] - c.success_rate) for c in cells],
    ]


def plot_tasks(runs: Sequence[Run], tasks: Sequence[str], path: Path) -> Path | None:
    """Grouped horizontal bars: success per task, one colour per run."""
    empty = Cell(0, 0, (0.0, 0.0), 0.0, None, 0.0, 0.0, ())
    height = 0.8 / max(1, len(runs))
    fig = _figure(figsize=(8, 0.45 * len(tasks) * max(1, len(runs)) ** 0.5 + 1.6))
    if fig is None:
        return None
    ax = fig.subplots()
    for i, r in enumerate(runs):
        per_task = r.tasks()
        cells = [per_task.get(t, empty) for t in tasks]
        ys = [y + i * height for y in range(len(tasks))]
        ax.barh(ys, [100 * c.success_rate for c in cells], height, label=r.label)
        ax.errorbar(
            [100 * c.success_rate for c in cells],
            ys,
            xerr=_errors(cells),
            fmt="none",
            ecolor="#333",
            capsize=2,
            lw=0.8,
        )
    ax.set_yticks([y + 0.4 - height / 2 for y in range(len(tasks))], tasks)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("success rate (%), 95% Wilson interval")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=min(3, len(runs)))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_cost(runs: Sequence[Run], path: Path) -> Path | None:
    """Success against tokens per episode (left) and ms per step (right)."""
    fig = _figure(figsize=(10, 4))
    if fig is None:
        return None
    cells = [r.overall for r in runs]
    axes = fig.subplots(1, 2, sharey=True)
    costs = (
        ("tokens per episode", [c.tokens or 0.0 for c in cells]),
        ("ms per step (agent + env)", [c.agent_ms + c.env_ms for c in cells]),
    )
    for ax, (name, xs) in zip(axes, costs, strict=True):
        for r, c, x in zip(runs, cells, xs, strict=True):
            ax.errorbar(
                [x], [100 * c.success_rate], yerr=_errors([c]), fmt="o", capsize=3, label=r.label
            )
            ax.annotate(
                r.label,
                (x, 100 * c.success_rate),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
        ax.set_xlabel(name)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("success rate (%)")
    fig.suptitle("success against cost")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _link(target: Path, base: Path) -> str:
    return quote(os.path.relpath(target, base).replace(os.sep, "/"))


def _episode_dir(run: Run, recorded: str | None) -> Path | None:
    """Where an episode is now: as recorded, or under the run's episodes/ when
    the tree has been moved."""
    if not recorded:
        return None
    for candidate in (Path(recorded), run.path / "episodes" / Path(recorded).name):
        if (candidate / "episode.json").is_file():
            return candidate
    return None


def _write_viewer(runs: Sequence[Run]) -> None:
    from browser_env.view import write_reports

    for r in runs:
        if (r.path / "episodes").is_dir():
            with contextlib.suppress(FileNotFoundError):  # an episodes dir holding none
                write_reports(r.path / "episodes")


def _cell_html(run: Run, cell: Cell, base: Path) -> str:
    from browser_env.view import INDEX_FILE, REPORT_FILE

    rate = f"{cell.success_rate:.0%}"
    index = run.path / "episodes" / INDEX_FILE
    head = f"<a href='{_link(index, base)}'>{rate}</a>" if index.is_file() else rate
    marks = []
    for recorded, seed, success in cell.episode_dirs:
        mark = "+" if success else "x"
        css = "ok" if success else "fail"
        where = _episode_dir(run, recorded)
        page = where / REPORT_FILE if where is not None else None
        if page is not None and page.is_file():
            marks.append(
                f"<a class='{css}' title='seed {_e(seed)}' href='{_link(page, base)}'>{mark}</a>"
            )
        else:
            marks.append(f"<span class='{css}' title='seed {_e(seed)}'>{mark}</span>")
    low, high = cell.ci
    return (
        f"<td>{head} <span class='ci'>{cell.successes}/{cell.episodes}, [{low:.0%}-{high:.0%}]</span>"
        f"<div class='eps'>{''.join(marks)}</div></td>"
    )


def write_html(
    runs: Sequence[Run],
    tasks: Sequence[str],
    path: Path,
    *,
    plots: Sequence[Path | None] = (),
    view: bool = True,
) -> Path:
    """Write the comparison page; with ``view`` first write the viewer's pages."""
    from benchmarks.report import write_text_atomic

    if view:
        _write_viewer(runs)
    base = path.parent
    head = "<tr><th>run</th><th>suite</th><th>success</th><th>steps</th><th>tokens/ep</th><th>agent ms/step</th><th>env ms/step</th><th>dir</th></tr>"
    rows = []
    for r in runs:
        c = r.overall
        tokens = "-" if c.tokens is None else f"{c.tokens:.0f}"
        rows.append(
            f"<tr class='run'><td>{_e(r.label)}</td><td>{_e(r.results['suite'])}</td>{_cell_html(r, c, base)}"
            f"<td>{c.mean_steps:.1f}</td><td>{tokens}</td><td>{c.agent_ms:.1f}</td><td>{c.env_ms:.1f}</td>"
            f"<td><code>{_e(r.path)}</code></td></tr>"
        )
    task_head = "<tr><th>task</th>" + "".join(f"<th>{_e(r.label)}</th>" for r in runs) + "</tr>"
    per_run = [r.tasks() for r in runs]
    task_rows = []
    for task in tasks:
        cells = "".join(
            _cell_html(r, t[task], base) if task in t else "<td>-</td>"
            for r, t in zip(runs, per_run, strict=True)
        )
        task_rows.append(f"<tr class='task'><td>{_e(task)}</td>{cells}</tr>")
    images = "".join(
        f"<p><img src='{_link(p, base)}' alt='{_e(p.stem)}'></p>" for p in plots if p is not None
    )
    body = (
        f"<h1>Comparison of {len(runs)} runs</h1>"
        "<p>Success with its 95% Wilson interval; click a rate for the run's episodes, "
        "a mark (+ success, x failure) for one episode.</p>"
        f"<h2>Runs</h2><table id='runs'>{head}{''.join(rows)}</table>"
        f"<h2>Success per task</h2><table id='tasks'>{task_head}{''.join(task_rows)}</table>"
        f"<h2>Plots</h2>{images}"
    )
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">"
        f"<title>Comparison</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
    return write_text_atomic(path, page)
