"""Compare benchmark runs: ``python -m benchmarks.compare DIR...``.

::

    python -m benchmarks.run --multirun agent=random,expert,tiny suite=miniwob_tiny
    python -m benchmarks.compare multirun/benchmarks/2026-12-02/14-00-00     # a sweep dir
    python -m benchmarks.compare outputs/benchmarks/a outputs/benchmarks/b   # several runs
    python -m benchmarks.compare 'runs=[a,b]' output_dir=/tmp/cmp            # the Hydra spelling

Every ``DIR`` is a ``benchmarks.run`` output dir (it holds ``results.json``)
or any dir above several (a ``--multirun`` sweep dir). Prints one row per run
(success with a 95% Wilson interval, mean steps, tokens per episode, agent
and env milliseconds per step) and a task-by-run success table, and writes
into the output dir (Hydra's, ``outputs/compare/<date>/<time>``, or
``output_dir=``): ``compare.json``, ``tasks.png`` (per-task success bars),
``cost.png`` (success against tokens and latency) and ``report.html``, whose
cells link to each episode's page in the viewer (:mod:`browser_env.view`;
its pages are written next to the episodes).

Why Hydra with positional dirs: every entry point of the project is a Hydra
app (one override syntax, ``--cfg job``, config in the output dir), but a
list of directories reads best as plain arguments, as in ``browser_env.view
DIR``. :func:`main` therefore turns the plain arguments into the override
``runs=[...]`` before Hydra parses the command line; both spellings work.
:func:`compare` is the plain function that tests call. The config is
``conf/compare.yaml`` over :class:`CompareConfig` (every key's default and
help), so ``view=maybe`` or a misspelt key is Hydra's error naming the key;
``python -m benchmarks.compare --cfg job`` prints the whole config.

Runs are labelled by the command-line overrides that differ between them
(e.g. ``agent=random``), leaving out those that do not change what was
measured (:data:`UNMEASURED`: ``resume=true``, ``output_dir=``, ...). A run
records its overrides in its ``results.json`` (a ``--multirun`` job with
``output_dir=`` has no ``.hydra/`` of its own); for runs written before it
did, they are read from ``.hydra/overrides.yaml``; without either, runs are
labelled by agent and suite.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from agents.schema import help_field
from benchmarks.compare_stats import Cell, Run, wilson
from benchmarks.report import write_json_atomic
from browser_env.rundir import register_resolvers

__all__ = [
    "Cell",
    "CompareConfig",
    "Run",
    "UNMEASURED",
    "compare",
    "find_runs",
    "load_runs",
    "main",
    "register_config",
    "run",
    "wilson",
]

RESULTS_FILE = "results.json"

UNMEASURED = frozenset(
    {"output_dir", "resume", "progress", "wandb", "wandb_project", "run_name", "hydra"}
)
"""Override keys (``hydra`` for ``hydra.*``) that change where or how visibly a
run played, not what it measured: never part of a run's label."""


@dataclasses.dataclass
class CompareConfig:
    """``python -m benchmarks.compare``: several benchmark runs in one report."""

    runs: list[str] = help_field(
        [],
        "Run dirs (each holds results.json) or sweep dirs above several; plain arguments "
        "(python -m benchmarks.compare DIR...) are added here.",
    )
    view: bool = help_field(True, "Write the viewer's episode pages so the report can link them.")
    output_dir: str | None = help_field(
        None,
        "null: Hydra's run dir (outputs/compare/<date>/<time>); set: Hydra's run dir too "
        "(.hydra/, the log).",
    )


def register_config() -> None:
    """Store :class:`CompareConfig` in Hydra's ConfigStore as ``compare_schema``
    (``conf/compare.yaml``'s base); call before Hydra composes it. Registers the ``--help``
    resolver too (:mod:`browser_env.cli_help`). Safe to repeat."""
    from hydra.core.config_store import ConfigStore

    from browser_env import cli_help

    ConfigStore.instance().store(name="compare_schema", node=CompareConfig)
    cli_help.register()  # --help (conf/hydra/help/browser_rl.yaml)


def _sort_key(path: Path) -> tuple:
    # multirun subdirs are 0, 1, ..., 10: compare numbers as numbers
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts)


def find_runs(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The run dirs (holding ``results.json``) at or under each of ``paths``."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise ValueError(f"not a directory: {path}")
        if (path / RESULTS_FILE).is_file():
            runs = [path]
        else:
            runs = sorted((p.parent for p in path.rglob(RESULTS_FILE)), key=_sort_key)
        if not runs:
            raise ValueError(f"no {RESULTS_FILE} at or under {path}: is it a benchmarks.run dir?")
        found += [r for r in runs if r not in found]
    return found


def _overrides(run_dir: Path, results: dict[str, Any]) -> tuple[str, ...]:
    """The run's overrides: those ``results.json`` records, else those of its
    ``.hydra/overrides.yaml`` (runs from before they were recorded), else none."""
    recorded = results.get("overrides")
    if recorded is not None:
        return tuple(str(o) for o in recorded)
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return ()
    from omegaconf import OmegaConf

    return tuple(str(o) for o in OmegaConf.load(path))


def _measured(override: str) -> bool:
    """Whether ``override`` (``key=value``, ``+key=value``, ...) may change what a
    run measured (its key is none of :data:`UNMEASURED`)."""
    key = override.split("=", 1)[0].lstrip("+~")
    return key.split(".", 1)[0] not in UNMEASURED


def load_runs(paths: Sequence[str | os.PathLike[str]]) -> list[Run]:
    """Load every run at or under ``paths`` and give each a distinct label."""
    runs = []
    for run_dir in find_runs(paths):
        results = json.loads((run_dir / RESULTS_FILE).read_text())
        if not results.get("episodes"):
            raise ValueError(f"{run_dir / RESULTS_FILE} holds no episodes")
        runs.append(Run(run_dir, "", results, _overrides(run_dir, results)))
    shared = set.intersection(*(set(r.overrides) for r in runs)) if runs else set()
    for r in runs:
        differing = [o for o in r.overrides if o not in shared and _measured(o)]
        r.label = " ".join(differing) or f"{r.results['agent']} / {r.results['suite']}"
    labels = [r.label for r in runs]
    for r in runs:
        if labels.count(r.label) > 1:
            r.label = f"{r.label} ({r.path.name})"
    return runs


def _pct(cell: Cell) -> str:
    low, high = cell.ci
    return f"{cell.success_rate:.0%} [{low:.0%}-{high:.0%}]"


def _tokens(cell: Cell) -> str:
    return "-" if cell.tokens is None else f"{cell.tokens:.0f}"


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, lines)])


def format_tables(runs: Sequence[Run]) -> str:
    """The run table and the task-by-run success table, as printed."""
    header = (
        "run",
        "suite",
        "episodes",
        "success [95% CI]",
        "steps",
        "tokens/ep",
        "agent ms/step",
        "env ms/step",
    )
    lines = []
    for r in runs:
        cell = r.overall
        lines.append(
            (
                r.label,
                str(r.results["suite"]),
                str(cell.episodes),
                _pct(cell),
                f"{cell.mean_steps:.1f}",
                _tokens(cell),
                f"{cell.agent_ms:.1f}",
                f"{cell.env_ms:.1f}",
            )
        )
    tasks = _all_tasks(runs)
    per_run = [r.tasks() for r in runs]
    task_lines = [(task, *(_pct(t[task]) if task in t else "-" for t in per_run)) for task in tasks]
    columns = [f"[{i}]" for i in range(len(runs))]
    legend = "\n".join(f"[{i}] {r.label}" for i, r in enumerate(runs))
    return (
        _table(header, lines)
        + "\n\nsuccess per task [95% CI]\n"
        + _table(("task", *columns), task_lines)
        + "\n"
        + legend
    )


def _all_tasks(runs: Sequence[Run]) -> list[str]:
    tasks: list[str] = []
    for r in runs:
        tasks += [t for t in r.tasks() if t not in tasks]
    return tasks


def compare(
    paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *, view: bool = True
) -> dict[str, Any]:
    """Compare the runs at or under ``paths``; write ``compare.json``, the plots
    and ``report.html`` into ``out`` and return the ``compare.json`` content.
    With ``view``, the viewer's episode pages are (re)written for every run
    so the report can link them."""
    from benchmarks.compare_report import plot_cost, plot_tasks, write_html

    if not paths:
        raise ValueError("no runs given: python -m benchmarks.compare DIR [DIR...]")
    runs = load_runs(paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    print(format_tables(runs))
    tasks = _all_tasks(runs)
    data = {
        "schema": 1,
        "runs": [
            {
                "label": r.label,
                "path": str(r.path),
                "agent": r.results["agent"],
                "suite": r.results["suite"],
                "overrides": list(r.overrides),
                "overall": r.overall.to_dict(),
                "tasks": {task: cell.to_dict() for task, cell in r.tasks().items()},
            }
            for r in runs
        ],
    }
    write_json_atomic(out / "compare.json", data)
    plots = [plot_tasks(runs, tasks, out / "tasks.png"), plot_cost(runs, out / "cost.png")]
    report = write_html(runs, tasks, out / "report.html", plots=plots, view=view)
    print(f"\nreport: {report}\njson:   {out / 'compare.json'}")
    return data


def _output_dir(cfg: DictConfig) -> Path:
    if cfg.get("output_dir"):
        return Path(cfg.output_dir)
    from browser_env.rundir import run_dir

    return run_dir(Path("outputs") / "compare")


def run(cfg: DictConfig) -> dict[str, Any]:
    """The Hydra job: :func:`compare` over ``cfg.runs``."""
    return compare(list(cfg.runs or []), _output_dir(cfg), view=bool(cfg.view))


# Hydra's own flags that take their value as the next argument.
_VALUE_FLAGS = {
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--info",
    "-i",
    "--experimental-rerun",
}


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def plain_dirs_to_overrides(argv: Sequence[str]) -> list[str]:
    """``["a", "b", "view=false", "--cfg", "job"]`` -> ``["--cfg", "job",
    "view=false", "runs=['a','b']"]``: every argument that is neither a flag, a
    flag's value nor an override is a run dir. The flags come first and the
    overrides after them, together: Hydra's command line takes its overrides as
    one run of positional arguments, which a flag between them would split."""
    flags, overrides, dirs = [], [], []
    for i, arg in enumerate(argv):
        if arg.startswith("-") or (i > 0 and argv[i - 1] in _VALUE_FLAGS):
            flags.append(arg)
        elif "=" in arg:
            overrides.append(arg)
        else:
            dirs.append(arg)
    if dirs:
        overrides.append("runs=[" + ",".join(_quote(d) for d in dirs) + "]")
    return flags + overrides


register_resolvers()  # output_dir= is Hydra's run dir too (conf: hydra.run.dir)


@hydra.main(version_base="1.3", config_path="../conf", config_name="compare")
def _hydra_main(cfg: DictConfig) -> None:
    from browser_env.refusal import exit_on_refusal, refusing

    with exit_on_refusal(), refusing():  # a bad run dir or option: its message, no traceback
        run(cfg)


def main() -> None:
    register_config()  # conf/compare.yaml builds on compare_schema
    sys.argv = [sys.argv[0], *plain_dirs_to_overrides(sys.argv[1:])]
    _hydra_main()


if __name__ == "__main__":
    main()
