"""The demo recorder: a person's input on an env's page, as an episode
(``source: human``).

:class:`DemoRecorder` turns the person's input into seven-verb actions, each
paired with the observation taken BEFORE the input had any effect:

==================================  ===========================================
person                              action
==================================  ===========================================
click (mouse button 1)              ``CLICK`` the indexed element: the target, a
                                    label's control, the nearest listed
                                    ancestor, or the smallest listed element
                                    under the pointer (never dropped; a click
                                    that maps to nothing is kept in the next
                                    step's ``extras["unmapped"]``)
typing into a field                 one ``TYPE`` per field with its final value
choosing a ``<select>`` option      ``TYPE`` with the option's label
Enter (not in a multi-line field)   ``PRESS_ENTER``, with the page before submit
mouse wheel                         ``SCROLL up/down`` (one per 0.8 viewport)
navigation not caused by the page   ``NAVIGATE`` to the new URL (address bar,
                                    back/forward)
stop (``finish(answer)``)           ``FINISH`` with that answer
==================================  ===========================================

A click into a text field that is followed by typing into it is folded into
the ``TYPE`` (whose observation is then the one before the click), since the
executor's ``TYPE`` clicks the field itself. Pixels come from the latest
screenshot taken while the page was idle before the event. MiniWoB++ episodes
end by themselves when the task reports done.

How: a capture-phase listener script (``js/record.js``, an init script in
every frame) runs the env's own observer synchronously inside the event
handler, so element ids are the env's ids, and reports through
``page.expose_binding``; the recorder turns the reports into steps and writes
them with :class:`~browser_env.episodes.EpisodeWriter`. The recorder resets
the env and never steps it. ``python -m browser_env.record``
(:mod:`browser_env.record`) drives it from a terminal.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from browser_env.actions import Action, ActionError, Verb
from browser_env.episodes.format import AgentInfo, EpisodeMeta
from browser_env.episodes.writer import EpisodeWriter
from browser_env.observation import well_formed
from browser_env.page_io import validate_safely
from browser_env.registration import env_id
from browser_env.tasks.base import task_server_url

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["DemoRecorder"]

RECORD_JS = (Path(__file__).with_name("js") / "record.js").read_text()
_BINDING = "__brlRecord"
# A navigation this soon after a recorded page event is that event's effect.
_CAUSED_NAV_S = 2.0
_SCREENSHOT_IDLE_S = 0.15
# Env kwargs that only concern this session's window, not the task.
_SESSION_KWARGS = ("headless", "render_mode", "slow_mo_ms", "executable_path")


@dataclasses.dataclass
class _Pending:
    observation: dict[str, Any]
    action: Action
    event: dict[str, Any]
    reward: float
    info: dict[str, Any]
    terminated: bool


class DemoRecorder:
    """Turns a person's input on ``env``'s page into an episode under ``root``.

    Drive it with :meth:`start`, then :meth:`poll` repeatedly (it pumps browser
    events and writes finished steps), then :meth:`finish` with the answer.
    ``env`` is a :class:`~browser_env.env.BrowserEnv` (or a wrapper of one);
    the recorder resets it and never steps it. A main-frame navigation less
    than ``caused_navigation_s`` after a recorded event is taken as that
    event's effect; later ones become ``NAVIGATE``.
    """

    def __init__(
        self,
        env: Any,
        root: str | Path,
        *,
        seed: int = 0,
        options: Mapping[str, Any] | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        log: Callable[[str], None] | None = None,
        caused_navigation_s: float = _CAUSED_NAV_S,
    ) -> None:
        self.env = env
        self.caused_navigation_s = caused_navigation_s
        self.base = env.unwrapped
        self.root = Path(root)
        self.seed = seed
        self.options = dict(options) if options is not None else None
        self.env_kwargs = dict(env_kwargs or {})
        self.log = log or (lambda message: None)
        self.writer: EpisodeWriter | None = None
        self.done = False
        self.window_closed = False
        self._queue: list[dict[str, Any]] = []
        self._held: _Pending | None = None
        self._unmapped: list[dict[str, Any]] = []
        self._url = ""
        self._last_obs: dict[str, Any] | None = None
        self._shot: np.ndarray | None = None
        self._shot_time = 0.0
        self._last_event_time = 0.0
        self._needs_init = False
        self._steps = 0

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> Path:
        """Reset the env, install the listeners and open the episode; returns its dir."""
        obs, info = self.env.reset(seed=self.seed, options=self.options)
        page = self.page
        context = page.context
        context.expose_binding(_BINDING, self._on_binding)
        observer = self.base.observer
        scope = json.dumps(observer.root), json.dumps(observer.exclude)
        script = f"({RECORD_JS})({observer.page_function()}, {scope[0]}, {scope[1]});"
        context.add_init_script(script)
        page.evaluate(script)  # the current document loaded before the init script existed
        page.on("framenavigated", self._on_navigated)
        page.on("close", self._on_close)
        self._url = obs.get("url", page.url)
        self._last_obs = dict(obs)
        self._shot = obs.get("screenshot")
        spec = getattr(self.env, "spec", None) or getattr(self.base, "spec", None)
        kwargs = dict(spec.kwargs) if spec is not None and spec.kwargs else {}
        kwargs.update(self.env_kwargs)
        meta = EpisodeMeta(
            env_id=spec.id if spec is not None else env_id("open", family=None),
            task=str(info.get("task", "")),
            seed=info.get("seed", self.seed),
            goal=str(obs.get("goal", "")),
            source="human",
            agent=AgentInfo(name="human"),
            env_kwargs={k: v for k, v in kwargs.items() if k not in _SESSION_KWARGS},
            reset_options=self.options,
            task_server=task_server_url(self.env),
        )
        self.writer = EpisodeWriter(self.root, meta)
        return self.writer.path

    @property
    def page(self) -> Page:
        return self.base.page

    @property
    def has_page(self) -> bool:
        try:
            return not self.page.is_closed()
        except RuntimeError:
            return False

    def poll(self, wait_ms: float = 50) -> None:
        """Let the browser run for ``wait_ms``, then turn queued input into steps."""
        if self.has_page and not self.window_closed:
            try:
                self.page.wait_for_timeout(wait_ms)
            except Exception:  # noqa: BLE001 - the window was closed meanwhile
                self.window_closed = True
        self._process()
        if not self._queue and not self.done:
            self._refresh_screenshot()

    def finish(self, answer: str | None = None) -> Path:
        """Flush pending typing, add ``FINISH(answer)`` unless the task already
        ended, and close the episode. ``answer=None`` finishes without a FINISH
        step when the task ended by itself, and with an empty answer otherwise."""
        writer = self._require_writer()
        if self.has_page and not self.window_closed:
            try:
                self.page.evaluate("() => window.__brlRec && window.__brlRec.flushType()")
                self.page.wait_for_timeout(50)
            except Exception:  # noqa: BLE001 - closed or navigating: nothing pending then
                pass
        self._process()
        self._flush_held()
        if not self.done:
            observation = self._observe() if self._alive() else self._last_obs
            action = Action(Verb.FINISH, value=answer or "")
            reward, terminated, info = self._validate(answer or "")
            self._write(_Pending(observation, action, {"kind": "FINISH"}, reward, info, True))
        final = self._observe() if self._alive() else self._last_obs
        return writer.close(final_observation=final)

    def abort(self, reason: str = "interrupted") -> Path:
        return self._require_writer().abort(reason)

    # --- browser callbacks (keep light: they run inside Playwright's dispatch) ---
    def _on_binding(self, source: Any, payload: dict[str, Any]) -> None:
        self._queue.append(dict(payload))

    def _on_navigated(self, frame: Any) -> None:
        if frame.parent_frame is None:
            self._queue.append({"kind": "NAVIGATED", "url": frame.url, "t_py": time.time()})

    def _on_close(self, page: Any) -> None:
        self.window_closed = True

    # --- turning events into steps ----------------------------------------------------
    def _process(self) -> None:
        while self._queue and not self.done:
            event = self._queue.pop(0)
            kind = event.get("kind")
            if kind == "NAVIGATED":
                self._navigated(event)
                continue
            self._last_event_time = float(event.get("t", time.time() * 1000)) / 1000
            observation = self._observation_from(event)
            action = self._action_from(event)
            if action is None:
                continue
            reward, terminated, info = self._validate(None)
            self._add(_Pending(observation, action, _event_notes(event), reward, info, terminated))

    def _navigated(self, event: dict[str, Any]) -> None:
        url = event["url"]
        previous, self._url = self._url, url
        self._needs_init = True
        if url == previous or url.split("#")[0] == previous.split("#")[0]:
            return
        if event["t_py"] - self._last_event_time < self.caused_navigation_s:
            return  # the effect of a click, Enter or script the page ran for it
        if not url.startswith(("http://", "https://")):
            return
        self._flush_held()
        observation = self._last_obs or {}
        self._last_event_time = time.time()
        reward, terminated, info = self._validate(None)
        self._add(
            _Pending(
                observation,
                Action(Verb.NAVIGATE, value=url),
                {"kind": "NAVIGATE", "from": previous},
                reward,
                info,
                terminated,
            )
        )

    def _observation_from(self, event: dict[str, Any]) -> dict[str, Any]:
        raw = event.get("raw")
        if raw is None:  # an event before the new document was initialised: observe now
            event["late"] = True
            return self._observe()
        obs = self._to_observation(raw)
        self._last_obs = obs
        return obs

    def _action_from(self, event: dict[str, Any]) -> Action | None:
        kind, element_id = event["kind"], event.get("element_id")
        try:
            if kind == "CLICK":
                if element_id is None:
                    self._unmapped.append(_event_notes(event))
                    self.log(
                        f"click on {event.get('target')} maps to no listed element; kept as a note"
                    )
                    return None
                return Action(Verb.CLICK, element_id)
            if kind == "TYPE":
                if not event.get("value"):
                    self._unmapped.append(_event_notes(event))
                    self.log(f"field {element_id} was left empty; TYPE needs text, kept as a note")
                    return None
                return Action(Verb.TYPE, element_id, event["value"])
            if kind == "PRESS_ENTER":
                return Action(Verb.PRESS_ENTER, element_id)
            if kind == "SCROLL":
                return Action(Verb.SCROLL, None, event.get("value") or "down")
        except ActionError as exc:
            self.log(f"could not record {kind}: {exc}")
            self._unmapped.append({**_event_notes(event), "error": str(exc)})
        return None

    def _add(self, step: _Pending) -> None:
        held = self._held
        self._held = None
        if held is not None:
            if step.action.action is Verb.TYPE and step.action.element_id == held.action.element_id:
                # The click only focused the field that TYPE clicks anyway: one step, seen before the click.
                step.observation = held.observation
                step.event = {**step.event, "folded_click": held.event}
            else:
                self._write(held)
        if step.action.action is Verb.CLICK and step.event.get("editable") and not step.terminated:
            self._held = step
            return
        self._write(step)

    def _flush_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._write(held)

    def _write(self, step: _Pending) -> None:
        writer = self._require_writer()
        extras: dict[str, Any] = {"event": step.event}
        if self._unmapped:
            extras["unmapped"], self._unmapped = self._unmapped, []
        writer.write_step(
            step.observation,
            step.action,
            step.reward,
            step.terminated,
            False,
            step.info,
            extras=extras,
        )
        self._steps += 1
        self.log(f"step {self._steps - 1}: {step.action.to_json()}")
        if step.terminated:
            self.done = True

    # --- observing and judging ------------------------------------------------------------
    def _alive(self) -> bool:
        return self.has_page and not self.window_closed

    def _modalities(self) -> tuple[str, ...]:
        return self.base.observer.modalities

    def _to_observation(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return self.base.observer.to_observation(  # (the binding's strings, as read() makes them)
            well_formed(dict(raw)), goal=self.base.goal, url=self._url, screenshot=self._shot
        )

    def _observe(self) -> dict[str, Any]:
        """A fresh observation from Python (after the fact: used for the final page),
        through the env's own :class:`~browser_env.observation.Observer`."""
        try:
            raw = self.base.observer.read(self.page, settle=lambda: self.page.wait_for_timeout(100))
        except Exception:  # noqa: BLE001 - closed or crashed: keep the last observation
            raw = None
        if raw is None:
            return self._last_obs or {}
        if "screenshot" in self._modalities():
            self._shot = self._screenshot()
        obs = self._to_observation(raw)
        self._last_obs = obs
        self._needs_init = False
        return obs

    def _refresh_screenshot(self) -> None:
        """Keep a current screenshot (and, after a navigation, ids and the last
        observation) while the page is idle, to pair with the next event."""
        if not self._alive():
            return
        try:
            if self._needs_init:
                self.page.wait_for_load_state("domcontentloaded", timeout=5_000)
                self._observe()
                return
            if (
                "screenshot" not in self._modalities()
                or time.time() - self._shot_time < _SCREENSHOT_IDLE_S
            ):
                return
            if not self.page.evaluate("() => !!window.__brlRec && window.__brlRec.takeDirty()"):
                return
            shot = self._screenshot()
        except Exception:  # noqa: BLE001 - navigating or closed: try on the next poll
            return
        if not self._queue:  # an event arrived while capturing: the picture may show its effect
            self._shot, self._shot_time = shot, time.time()

    def _screenshot(self) -> np.ndarray | None:
        return self.base.screenshot()  # the env's own capture: same region and shape

    def _validate(self, answer: str | None) -> tuple[float, bool, dict[str, Any]]:
        reward, done, judged = validate_safely(
            self.base.task, self.page if self.has_page else None, answer
        )
        info = {**judged, "answer": answer, "action_error": ""}
        return float(reward), bool(done) or answer is not None, info

    def _require_writer(self) -> EpisodeWriter:
        if self.writer is None:
            raise RuntimeError("call start() first")
        return self.writer


def _event_notes(event: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in ("raw",)}
