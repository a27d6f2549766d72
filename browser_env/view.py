"""Static HTML reports of episodes and runs.

``python -m browser_env.view DIR`` writes ``DIR/report.html`` when ``DIR`` is an
episode directory, and when it is a run directory, one ``report.html`` per
episode plus ``DIR/index.html``: success per task, a table of episodes and a
list of those that could not be read. An episode directory that cannot be read
is refused in one line (status 2).

A report shows every step: the screenshot with the acted element outlined
(from its ``bbox``, where it has one; a screenshot file that is no readable
image is named instead), the action, reward, error, guard notes, prompt and raw
model output, and the element list the policy saw. Every piece of page or
model text is HTML-escaped and the page carries a Content-Security-Policy that
forbids scripts, so a hostile page title or model output cannot run code in
the report.

The command line stays on argparse, not Hydra: it takes one positional path
and has no config tree to compose (nor a run directory of its own to make).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from browser_env.atomic import write_text_atomic
from browser_env.episodes.format import EPISODE_FILE, StepRecord
from browser_env.episodes.loader import Episode, EpisodeFormatError, find_episode_dirs, load_episode
from browser_env.observation import render_element

__all__ = ["main", "render_episode", "render_index", "write_reports"]

REPORT_FILE = "report.html"
INDEX_FILE = "index.html"

_CSP = "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'"
_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin: 0 0 8px; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
.ok { color: #0a7d22; font-weight: 600; } .fail { color: #b00020; font-weight: 600; }
.step { border: 1px solid #ddd; border-radius: 6px; padding: 12px; margin: 16px 0; display: flex; gap: 16px; }
.shot { position: relative; display: inline-block; flex: 0 0 auto; width: 640px; max-width: 55vw; }
.shot img { width: 100%; display: block; border: 1px solid #999; }
.bbox { position: absolute; outline: 3px solid #ff1744; background: rgba(255, 23, 68, .12); }
.info { flex: 1 1 auto; min-width: 0; }
pre { background: #f5f5f5; padding: 6px; white-space: pre-wrap; word-break: break-word; max-height: 320px; overflow: auto; }
.error { color: #b00020; } code { background: #f0f0f0; padding: 0 3px; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def _src(relative: str) -> str | None:
    """A safe relative URL for a stored file, or None for anything that leaves the dir."""
    parts = Path(relative).parts
    if not parts or Path(relative).is_absolute() or ".." in parts or ":" in relative:
        return None
    return quote(relative)


def _verdict(success: bool | None, complete: bool = True) -> str:
    if not complete:
        return "<span class='fail'>incomplete</span>"
    if success is None:
        return "<span>not judged</span>"
    return "<span class='ok'>success</span>" if success else "<span class='fail'>failure</span>"


def _pre(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "<em>none</em>"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=1)
    return f"<pre>{_e(text)}</pre>"


def _acted_element(step: StepRecord) -> dict[str, Any] | None:
    action = step.action or {}
    elements = step.observation.get("elements") or []
    target = action.get("element_id")
    if target is None and action.get("action") in ("TYPE", "PRESS_ENTER"):
        return next((e for e in elements if e.get("focused")), None)
    return next((e for e in elements if e.get("element_id") == target), None)


def _image_size(path: Path) -> tuple[int, int] | None:
    """The width and height of the image at ``path``; ``None`` for a file that
    is no image one can read (empty, cut off, corrupt), or one with no pixels."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError):  # UnidentifiedImageError is one
        return None
    return (width, height) if width and height else None


def _screenshot(episode: Episode, obs: dict[str, Any], element: dict[str, Any] | None) -> str:
    """The screenshot, with ``element`` outlined at its ``bbox``; an element
    without one (the format's default is no box) is not outlined."""
    relative = obs.get("screenshot")
    src = _src(relative) if relative else None
    if src is None or not (episode.path / relative).is_file():
        return "<div class='shot'><em>no screenshot</em></div>"
    size = _image_size(episode.path / relative)
    if size is None:
        return f"<div class='shot'><em>unreadable screenshot {_e(relative)}</em></div>"
    overlay = ""
    if element is not None and element.get("bbox"):
        width, height = size
        scale = float(episode.meta.extra.get("device_scale_factor", 1) or 1)
        x, y, w, h = (float(v) * scale for v in element["bbox"])
        box = (100 * x / width, 100 * y / height, 100 * w / width, 100 * h / height)
        overlay = (
            f"<div class='bbox' data-element-id='{_e(element['element_id'])}' "
            f"style='left:{box[0]:.3f}%;top:{box[1]:.3f}%;width:{box[2]:.3f}%;height:{box[3]:.3f}%'></div>"
        )
    return f"<div class='shot'><img src='{src}' alt='screenshot'>{overlay}</div>"


def _elements(obs: dict[str, Any]) -> str:
    elements = obs.get("elements") or []
    lines = []
    for element in elements:
        try:
            lines.append(render_element(element))
        except (KeyError, TypeError):
            lines.append(json.dumps(element, ensure_ascii=False))
    return (
        f"<details><summary>{len(elements)} elements</summary>{_pre(chr(10).join(lines))}</details>"
    )


def _step_html(episode: Episode, step: StepRecord) -> str:
    element = _acted_element(step)
    action = json.dumps(step.action, ensure_ascii=False) if step.action is not None else None
    rows = [
        ("action", f"<code>{_e(action)}</code>" if action else "<em>invalid action</em>"),
        ("reward", _e(f"{step.reward:g}") + (" " + _verdict(True) if step.success else "")),
        ("url", _e(step.observation.get("url", ""))),
    ]
    if step.error:
        rows.append(("error", f"<span class='error'>{_e(step.error)}</span>"))
    if step.action is None and step.action_input is not None:
        rows.append(("policy output", _e(step.action_input)))
    if step.guards:
        rows.append(("guards", _e("; ".join(map(str, step.guards)))))
    if step.reason:
        rows.append(("reason", _e(step.reason)))
    if step.timings:
        rows.append(
            (
                "timings",
                _e(
                    ", ".join(
                        f"{k} {v:.1f}"
                        for k, v in step.timings.items()
                        if isinstance(v, int | float)
                    )
                ),
            )
        )
    table = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return (
        f"<section class='step' id='step-{step.index}'>{_screenshot(episode, step.observation, element)}"
        f"<div class='info'><h2>Step {step.index}</h2><table>{table}</table>"
        f"<h3>Prompt</h3>{_pre(step.prompt)}<h3>Raw output</h3>{_pre(step.raw_output)}"
        f"{_elements(step.observation)}"
        + (
            f"<details><summary>extras</summary>{_pre(step.extras)}</details>"
            if step.extras
            else ""
        )
        + "</div></section>"
    )


def render_episode(episode: Episode) -> str:
    """The HTML report of one episode; image paths are relative to its directory."""
    meta, outcome = episode.meta, episode.outcome
    agent = {k: v for k, v in meta.agent.to_json().items() if v not in (None, {}, "")}
    rows = [
        ("task", _e(meta.task)),
        ("env", _e(meta.env_id)),
        ("seed", _e(meta.seed)),
        ("goal", _e(meta.goal)),
        ("source", _e(meta.source)),
        ("agent", _e(json.dumps(agent, ensure_ascii=False)) if agent else "<em>unknown</em>"),
        ("outcome", _verdict(outcome.success if outcome else False, episode.complete)),
    ]
    if outcome is not None:
        rows += [
            ("return", _e(f"{outcome.return_:g}")),
            ("steps", _e(outcome.steps)),
            ("reason", _e(outcome.reason)),
        ]
        if outcome.answer is not None:
            rows.append(("answer", _e(outcome.answer)))
    header = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    steps = "\n".join(_step_html(episode, s) for s in episode.steps)
    final = ""
    if episode.final_observation is not None:
        obs = episode.final_observation
        final = (
            "<section class='step' id='final'>"
            f"{_screenshot(episode, obs, None)}<div class='info'><h2>Final page</h2>"
            f"<table><tr><th>url</th><td>{_e(obs.get('url', ''))}</td></tr></table>{_elements(obs)}</div></section>"
        )
    body = (
        f"<h1>Episode {_e(meta.episode_id or episode.path.name)}</h1><table class='meta'>{header}</table>"
        f"\n{steps}\n{final}"
    )
    return _page(f"{meta.task} seed {meta.seed}", body)


def render_index(
    run_dir: Path, episodes: Sequence[Episode], errors: Sequence[tuple[Path, str]] = ()
) -> str:
    """The run page: success per task and one row per episode, linking its report."""
    by_task: dict[str, list[Episode]] = {}
    for episode in episodes:
        by_task.setdefault(episode.meta.task, []).append(episode)
    task_rows = []
    for task, eps in sorted(by_task.items()):
        done = [e for e in eps if e.complete and e.outcome is not None]
        wins = sum(e.success for e in done)
        rate = f"{wins / len(done):.0%}" if done else "-"
        mean_steps = f"{sum(e.outcome.steps for e in done) / len(done):.1f}" if done else "-"
        mean_return = f"{sum(e.outcome.return_ for e in done) / len(done):.2f}" if done else "-"
        task_rows.append(
            f"<tr class='task'><td>{_e(task)}</td><td>{len(eps)}</td><td>{wins}</td>"
            f"<td class='rate'>{_e(rate)}</td><td>{mean_steps}</td><td>{mean_return}</td></tr>"
        )
    episode_rows = []
    for episode in episodes:
        link = _src(os.path.relpath(episode.path / REPORT_FILE, run_dir).replace(os.sep, "/"))
        name = _e(episode.meta.episode_id or episode.path.name)
        cell = f"<a href='{link}'>{name}</a>" if link else name
        outcome = episode.outcome
        episode_rows.append(
            f"<tr class='episode'><td>{cell}</td><td>{_e(episode.meta.task)}</td><td>{_e(episode.meta.seed)}</td>"
            f"<td>{_e(episode.meta.source)}</td><td>{_verdict(outcome.success if outcome else False, episode.complete)}</td>"
            f"<td>{_e(outcome.steps if outcome else len(episode.steps))}</td>"
            f"<td>{_e(f'{outcome.return_:g}' if outcome else '-')}</td></tr>"
        )
    error_rows = "".join(
        f"<li class='error'>{_e(os.path.relpath(path, run_dir))}: {_e(message)}</li>"
        for path, message in errors
    )
    total = sum(e.success for e in episodes)
    body = (
        f"<h1>Run {_e(run_dir.name)}</h1><p>{len(episodes)} episodes, {total} successful.</p>"
        "<h2>Success per task</h2><table id='tasks'><tr><th>task</th><th>episodes</th><th>successes</th>"
        f"<th>success rate</th><th>mean steps</th><th>mean return</th></tr>{''.join(task_rows)}</table>"
        "<h2>Episodes</h2><table id='episodes'><tr><th>episode</th><th>task</th><th>seed</th><th>source</th>"
        f"<th>outcome</th><th>steps</th><th>return</th></tr>{''.join(episode_rows)}</table>"
        + (f"<h2>Unreadable episodes</h2><ul>{error_rows}</ul>" if error_rows else "")
    )
    return _page(f"Run {run_dir.name}", body)


def write_reports(path: str | os.PathLike[str]) -> Path:
    """Write the report(s) for an episode or run directory; returns the page to open
    (the episode's ``report.html`` or the run's ``index.html``). FileNotFoundError
    for a path that is neither (a directory with no episode under it included).
    In a run directory an episode that cannot be loaded or read (an
    :class:`EpisodeFormatError` or an ``OSError``, e.g. a ``steps.jsonl`` that is
    a directory) is listed on the index as unreadable; for an episode
    directory that is the error raised."""
    root = Path(path)
    if (root / EPISODE_FILE).is_file():
        episode = load_episode(root, check_files=False)
        target = root / REPORT_FILE
        write_text_atomic(target, render_episode(episode))
        return target
    episodes, errors = [], []
    for directory in find_episode_dirs(root):
        try:  # one episode that cannot be read (or its report written) is listed, not fatal
            episode = load_episode(directory, check_files=False)
            write_text_atomic(directory / REPORT_FILE, render_episode(episode))
        except (EpisodeFormatError, OSError) as exc:
            errors.append((directory, str(exc)))
            continue
        episodes.append(episode)
    if not episodes and not errors:  # not a run dir: no index.html of nothing in, say, /tmp
        raise FileNotFoundError(
            f"no episodes in {root}: give an episode directory (with {EPISODE_FILE}) "
            "or a run directory holding episodes"
        )
    target = root / INDEX_FILE
    write_text_atomic(target, render_index(root, episodes, errors))
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m browser_env.view", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("path", help="an episode directory or a run directory holding episodes")
    args = parser.parse_args(argv)
    try:
        target = write_reports(args.path)
    except (OSError, EpisodeFormatError) as exc:  # a refusal: status 2, as replay's
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
