"""Re-run an episode's actions in a fresh env and report where it diverges.

``python -m browser_env.replay EPISODE_DIR`` rebuilds the env from
``episode.json`` (``gymnasium.make(env_id, **env_kwargs)``), resets it with the
recorded seed and options, executes every recorded action and compares, step
by step, what the recording saw with what the replay sees:

* before each step: the page ``url`` and the list of ``element_ids``;
* after each step: ``reward``, ``success``, ``terminated`` and the action
  ``error``;
* after the last step, against the recorded final page: ``url``,
  ``element_ids`` and the element ``values`` (live value and checked state of
  every element), i.e. the end state.

URLs are compared with the task server's base URL normalised. The bundled
task servers (MiniWoB++ pages, the local sites) listen on 127.0.0.1 at a port
chosen afresh in each process, so the recording and the replay see the same
page under two URLs. The rule: when the replayed env's task (rebuilt from
``env_id`` and ``env_kwargs``) is served by one of them, the replay's base URL
is that server's (:func:`browser_env.tasks.base.task_server_url`); the recording's base is the one
``episode.json`` records (``task_server``, written by
:class:`~browser_env.wrappers.RecordEpisode`), and it must differ from the
replay's base in the port only. A recorded URL under the recording's base is
then compared as the same URL under the replay's, and a recorded ``NAVIGATE``
to it is replayed on the replay's server. Every other difference (another
page, another host, another port than the task server's) is a divergence, as
is any URL difference for a task without a bundled server (e.g. ``open-v0`` on
a URL of yours).

An episode without ``task_server`` (written before the key existed, or by a
recorder that does not set it) falls back to the first page: the recording's
base is the one under which its first page (the page the task's setup opened:
the first step's observation, or the final one of an episode without steps)
is the replay's first page, again differing in the port only. That rule
cannot tie the servers together when the first pages differ, and then every
later URL diverges too; the recorded base has no such blind spot.

Exit status 0 when nothing diverged, 1 when something did, 2 on a bad episode
(one the loader refuses or cannot read), on ``--headed`` where there is no
display to show the window on, or on a directory that is no episode's (a run
directory is refused with a few of the episode directories under it, to pick
one from).
Tasks whose pages depend on the wall clock (e.g. MiniWoB++ date pickers,
``time_decayed`` rewards) can diverge legitimately; ``--reward-tol`` loosens
the reward check.

The command line stays on argparse, not Hydra: one positional episode path,
three flags, and an exit status that scripts test (Hydra apps exit 0 or 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gymnasium

from browser_env.browser import check_display
from browser_env.episodes.format import EPISODE_FILE, EpisodeFormatError, observation_to_json
from browser_env.episodes.loader import Episode, find_episode_dirs, load_episode
from browser_env.tasks.base import task_server_url

__all__ = [
    "Divergence",
    "ReplayReport",
    "compare_observations",
    "main",
    "replay_episode",
]


@dataclasses.dataclass(frozen=True)
class Divergence:
    """``field`` differs at ``step``: before the step for ``url``/``element_ids``,
    after it for ``reward``/``success``/``terminated``/``error``. ``step ==
    len(steps)`` with ``when="final"`` is the end state."""

    step: int
    when: str  # "before" | "after" | "final"
    field: str
    recorded: Any
    replayed: Any

    def __str__(self) -> str:
        return f"step {self.step} ({self.when}) {self.field}: recorded {_short(self.recorded)} != replayed {_short(self.replayed)}"


@dataclasses.dataclass
class ReplayReport:
    episode: Path
    steps_recorded: int
    steps_replayed: int
    divergences: list[Divergence]
    final_observation: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return not self.divergences

    def first(self) -> Divergence | None:
        return self.divergences[0] if self.divergences else None

    def summary(self) -> str:
        lines = [f"replayed {self.steps_replayed}/{self.steps_recorded} steps of {self.episode}"]
        if self.ok:
            lines.append("no divergence")
        else:
            lines.append(f"{len(self.divergences)} divergence(s):")
            lines.extend(f"  {d}" for d in self.divergences)
        return "\n".join(lines)


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _element_ids(obs: Mapping[str, Any]) -> list[str]:
    return [str(e["element_id"]) for e in obs.get("elements") or ()]


def _element_values(obs: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    return {
        str(e["element_id"]): (str(e.get("value", "")), int(e.get("checked", 0)))
        for e in obs.get("elements") or ()
    }


def compare_observations(
    recorded: Mapping[str, Any],
    replayed: Mapping[str, Any],
    *,
    step: int,
    when: str,
    values: bool = False,
    task_bases: tuple[str, str] | None = None,
) -> list[Divergence]:
    """Differences in ``url`` and element ids (and, with ``values``, element values)
    between two observations in JSON or env form. ``task_bases``: the task
    server's (recorded, replayed) base URLs, for a recorded URL under the first
    to equal the same URL under the second (module doc)."""
    out = []
    if _rebase(recorded.get("url"), task_bases) != replayed.get("url"):
        out.append(Divergence(step, when, "url", recorded.get("url"), replayed.get("url")))
    if "elements" in recorded and "elements" in replayed:
        a, b = _element_ids(recorded), _element_ids(replayed)
        if a != b:
            out.append(Divergence(step, when, "element_ids", a, b))
        if values:
            va, vb = _element_values(recorded), _element_values(replayed)
            changed = {k: (va[k], vb[k]) for k in va.keys() & vb.keys() if va[k] != vb[k]}
            if changed:
                out.append(
                    Divergence(
                        step,
                        when,
                        "values",
                        {k: v[0] for k, v in changed.items()},
                        {k: v[1] for k, v in changed.items()},
                    )
                )
    return out


def _rebase(url: Any, task_bases: tuple[str, str] | None) -> Any:
    """``url`` under the recorded task server's base, moved under the replay's."""
    if task_bases is None or not isinstance(url, str) or not url.startswith(task_bases[0]):
        return url
    return task_bases[1] + url[len(task_bases[0]) :]


def _task_bases(
    episode: Episode, first: Mapping[str, Any], env: gymnasium.Env
) -> tuple[str, str] | None:
    """The task server's (recorded, replayed) base URLs when they differ: the
    recorded one from ``episode.json``, or for an episode without it from the
    recording's and the replay's first pages (module doc); else ``None``."""
    server = task_server_url(env)
    recorded = episode.meta.task_server
    if recorded is not None:
        if not server or _all_but_port(recorded) != _all_but_port(server):
            return None  # another kind of server, or none: URLs compare as they are
        return None if recorded == server else (recorded, server)
    recorded_first = episode.steps[0].observation if episode.steps else episode.final_observation
    page, replayed_page = (recorded_first or {}).get("url"), first.get("url")
    if not (server and isinstance(page, str) and isinstance(replayed_page, str)):
        return None
    if not replayed_page.startswith(server):
        return None
    rest = replayed_page[len(server) :]
    if not page.endswith(rest):
        return None
    base = page[: len(page) - len(rest)]
    if _all_but_port(base) != _all_but_port(server):
        return None  # another host or another page: a divergence, not a port
    return None if base == server else (base, server)


def _all_but_port(url: str) -> tuple[str | None, ...]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.path, parts.query, parts.fragment


def _rebase_action(action: Any, task_bases: tuple[str, str] | None) -> Any:
    """A recorded ``NAVIGATE`` to the recorded task server goes to the replay's."""
    if task_bases is None or not isinstance(action, Mapping) or action.get("action") != "NAVIGATE":
        return action
    return {**action, "value": _rebase(action.get("value"), task_bases)}


def _make_env(episode: Episode, env_overrides: Mapping[str, Any]) -> gymnasium.Env:
    import browser_env  # noqa: F401 - registers the ids

    meta = episode.meta
    kwargs = {**meta.env_kwargs, **env_overrides}
    try:
        spec = gymnasium.spec(meta.env_id)
    except gymnasium.error.Error as exc:
        raise ValueError(f"cannot rebuild env {meta.env_id!r} of {episode.path}: {exc}") from None
    limit = spec.max_episode_steps
    if limit is not None and len(episode.steps) > limit:  # e.g. a long human demo
        kwargs.setdefault("max_episode_steps", len(episode.steps))
    return gymnasium.make(meta.env_id, **kwargs)


def replay_episode(
    episode: Episode | str | os.PathLike[str],
    *,
    env: gymnasium.Env | None = None,
    env_overrides: Mapping[str, Any] | None = None,
    reward_tol: float = 1e-6,
    stop_at_first: bool = False,
) -> ReplayReport:
    """Replay ``episode`` (a loaded episode or its directory) and report divergence.

    ``env`` replays in an env you built (it is reset, not closed); otherwise one
    is made from the episode's ``env_id`` and ``env_kwargs`` updated with
    ``env_overrides`` (e.g. ``{"headless": False}``) and closed afterwards.
    An invalid recorded action (``action`` null) is replayed from its
    ``action_input`` so that its error can be compared too. ``reward_tol``: the
    reward difference allowed, a finite number >= 0 (else a ``ValueError``).
    """
    reward_tol = _check_tolerance(reward_tol)
    if not isinstance(episode, Episode):
        episode = load_episode(episode)
    owned = env is None
    if env is None:
        env = _make_env(episode, env_overrides or {})
    divergences: list[Divergence] = []
    replayed = 0
    obs: Mapping[str, Any] | None = None
    try:
        obs, _info = env.reset(seed=episode.meta.seed, options=episode.meta.reset_options)
        bases = _task_bases(episode, obs, env)
        for step in episode.steps:
            divergences += compare_observations(
                step.observation, obs, step=step.index, when="before", task_bases=bases
            )
            if stop_at_first and divergences:
                break
            action = step.action if step.action is not None else step.action_input
            action = _rebase_action(action, bases)
            obs, reward, terminated, _truncated, info = env.step(action)
            replayed += 1
            error = str(info.get("action_error") or "")
            success = info.get("success", False)
            checks = [
                (
                    "reward",
                    step.reward,
                    float(reward),
                    _close(step.reward, float(reward), reward_tol),
                ),
                ("success", step.success, success, _same_success(step.success, success)),
                (
                    "terminated",
                    step.terminated,
                    bool(terminated),
                    step.terminated == bool(terminated),
                ),
                ("error", step.error, error, step.error == error),
            ]
            divergences += [
                Divergence(step.index, "after", f, a, b) for f, a, b, same in checks if not same
            ]
            if stop_at_first and divergences:
                break
            if terminated and step.index < len(episode.steps) - 1:
                divergences.append(Divergence(step.index, "after", "ended_early", False, True))
                break
        else:
            if episode.final_observation is not None:
                divergences += compare_observations(
                    episode.final_observation,
                    obs,
                    step=len(episode.steps),
                    when="final",
                    values=True,
                    task_bases=bases,
                )
    finally:
        if owned:
            env.close()
    final = None if obs is None else observation_to_json(obs)
    return ReplayReport(episode.path, len(episode.steps), replayed, divergences, final)


def _close(a: float, b: float, tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol


def _same_success(recorded: bool | None, replayed: Any) -> bool:
    return (recorded is None and replayed is None) or (
        recorded is not None and replayed is not None and bool(recorded) == bool(replayed)
    )


#: episode directories a refused run directory's message names
_SHOWN = 3


def _episode_dir(path: Path) -> Path:
    """``path`` when it is an episode directory; else a ``ValueError`` saying
    that replay takes one, naming a few of the episodes under ``path`` (a run
    directory) and how many there are, or that there are none."""
    if (path / EPISODE_FILE).is_file():
        return path
    try:
        found = find_episode_dirs(path)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    if not found:
        raise ValueError(
            f"{path}: no {EPISODE_FILE} in it nor in any directory below it: "
            "give an episode directory"
        )
    if len(found) == 1:
        raise ValueError(
            f"{path} is a run directory holding 1 episode; replay takes one episode directory: "
            f"{found[0]}"
        )
    shown = ", ".join(map(str, found[:_SHOWN]))
    more = f" and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
    raise ValueError(
        f"{path} is a run directory holding {len(found)} episodes; replay takes one "
        f"episode directory, e.g. {shown}{more}"
    )


def _check_tolerance(value: float) -> float:
    """``value`` as a float when it is a finite number >= 0; else a ``ValueError``
    (NaN would make every reward a divergence, as would a negative one)."""
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"reward_tol must be a finite number >= 0, got {value!r}")
    return value


def _tolerance(text: str) -> float:
    """``--reward-tol``'s value, as :func:`_check_tolerance` takes it."""
    try:
        return _check_tolerance(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}") from None


def _load(path: Path) -> Episode:
    """The episode in ``path``; a ``ValueError`` for files it cannot read
    (e.g. a ``steps.jsonl`` that is a directory), as for a malformed one."""
    try:
        return load_episode(path)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the episode: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m browser_env.replay", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("episode", help="an episode directory")
    parser.add_argument("--headed", action="store_true", help="show the browser window")
    parser.add_argument(
        "--reward-tol", type=_tolerance, default=1e-6, help="allowed reward difference (>= 0)"
    )
    parser.add_argument("--stop-at-first", action="store_true", help="stop at the first divergence")
    args = parser.parse_args(argv)
    try:
        check_display(
            not args.headed,
            wanted="--headed shows the browser window",
            fix="set DISPLAY to a running X server, run under xvfb-run, or leave out --headed",
        )
        episode = _load(_episode_dir(Path(args.episode)))
        report = replay_episode(
            episode,
            env_overrides={"headless": False} if args.headed else {},
            reward_tol=args.reward_tol,
            stop_at_first=args.stop_at_first,
        )
    except (EpisodeFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
