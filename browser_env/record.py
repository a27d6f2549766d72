"""Record a person's demonstration as an episode (``source: human``).

``python -m browser_env.record url=https://example.com goal="Find the price"``
opens a visible browser on the page (``env=miniwob.<task>
seed=3`` records a MiniWoB++ task instead). The person's input becomes
seven-verb actions, each paired with the observation taken BEFORE the input
had any effect:

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
stop (Enter in the terminal, or     ``FINISH`` with the answer asked for in the
closing the window)                 terminal
==================================  ===========================================

A click into a text field that is followed by typing into it is folded into
the ``TYPE`` (whose observation is then the one before the click), since the
executor's ``TYPE`` clicks the field itself. Pixels come from the latest
screenshot taken while the page was idle before the event. MiniWoB++ episodes
end by themselves when the task reports done.

How: a capture-phase listener script (``js/record.js``, an init script in
every frame) runs the env's own observer synchronously inside the event
handler, so element ids are the env's ids, and reports through
``page.expose_binding``; :class:`DemoRecorder` turns the reports into steps
and writes them with :class:`~browser_env.episodes.EpisodeWriter`.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from browser_env.actions import Action, ActionError, Verb
from browser_env.env import validate_safely
from browser_env.episodes.format import AgentInfo, EpisodeMeta
from browser_env.episodes.writer import EpisodeWriter
from browser_env.observation import well_formed
from browser_env.registration import env_id, resolve_env_id
from browser_env.rundir import run_dir
from browser_env.tasks.base import task_server_url
from browser_env.tasks.open import check_start_url

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from playwright.sync_api import Page

__all__ = ["DemoRecorder", "RecordConfig", "main", "record", "register_config", "run"]

RECORD_JS = (Path(__file__).with_name("js") / "record.js").read_text()
_BINDING = "__brlRecord"
# A navigation this soon after a recorded page event is that event's effect.
_CAUSED_NAV_S = 2.0
_SCREENSHOT_IDLE_S = 0.15
# Env kwargs that only concern this session's window, not the task.
_SESSION_KWARGS = ("headless", "render_mode", "slow_mo_ms", "executable_path")


@dataclasses.dataclass
class RecordConfig:
    """What ``python -m browser_env.record`` takes (``key=value`` overrides): the
    one place of its defaults, registered as the structured config
    ``record_schema`` that ``conf/record.yaml`` builds on (:func:`register_config`),
    so a misspelt key or a value of the wrong kind is Hydra's error naming it."""

    url: str | None = None  # the page to start on (open-v0)
    goal: str = ""  # the instruction the demo fulfils
    answer: str | None = None  # optional expected FINISH answer (open-v0 checks it)
    env: str | None = (
        None  # instead of url: an env, e.g. miniwob.click-button (any resolve_env_id spelling)
    )
    seed: int = 0
    episodes_dir: str | None = None  # default: <hydra run dir>/episodes
    headless: bool = False  # a person needs a window; tests set true
    executable_path: str | None = None
    # extra BrowserEnv kwargs, e.g. {viewport: [1024, 768]}
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


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


# --- command line ---------------------------------------------------------------------------


class _TerminalLines:
    """The one reader of stdin: a daemon thread reads a line only when one is
    asked for, so nothing is read ahead of the code that wants it.

    :meth:`next_line` is the next line no one has taken (:meth:`take`; ``""``
    at the end of stdin): until its line is taken every call returns the same
    future, read or still being read, so the line the person types after the
    window closed goes to whoever asks next (the answer), not to a reader
    that was waiting for the stop line and gave up.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: Future[str] | None = None
        self._taken = False
        self._requests: queue.SimpleQueue[Future[str]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def next_line(self) -> Future[str]:
        with self._lock:
            if self._pending is None or self._taken:
                self._pending, self._taken = Future(), False
                self._requests.put(self._pending)
            if self._thread is None:
                self._thread = threading.Thread(target=self._read, name="stdin", daemon=True)
                self._thread.start()
            return self._pending

    def _read(self) -> None:
        while True:
            future = self._requests.get()
            try:
                line = sys.stdin.readline()
            except BaseException as exc:  # noqa: BLE001 - e.g. no stdin: handed to the asker
                future.set_exception(exc)
            else:
                future.set_result(line)

    def take(self, line: Future[str]) -> str:
        """``line``'s text, which is then no one else's: the next
        :meth:`next_line` is a new read."""
        text = line.result()
        with self._lock:
            if line is self._pending:
                self._taken = True
        return text

    def ask(self, prompt: str) -> str:
        """``input(prompt)`` through this reader (``EOFError`` at the end of stdin)."""
        print(prompt, end="", flush=True)
        line = self.take(self.next_line())
        if not line:
            raise EOFError("EOF when reading a line")
        return line.rstrip("\r\n")


# Per process, as stdin is: a second reader would take lines meant for this one.
_TERMINAL = _TerminalLines()


def _env_and_options(cfg: RecordConfig) -> tuple[str, dict[str, Any] | None]:
    """The Gymnasium id to record on and its reset options: ``env`` in any
    spelling :func:`resolve_env_id` takes, else ``open-v0`` on ``url``."""
    if cfg.env:
        return resolve_env_id(cfg.env), None
    if not cfg.url:
        raise ValueError("give url=... goal=... (or env=miniwob.<task>)")
    check_start_url(cfg.url)  # before the browser starts, not ~2 s into its first page
    options: dict[str, Any] = {"url": cfg.url, "goal": cfg.goal}
    if cfg.answer is not None:
        options["answer"] = cfg.answer
    return env_id("open", family=None), options


def record(
    cfg: RecordConfig | Mapping[str, Any],
    root: str | Path,
    *,
    ask: Callable[[str], str] | None = None,
) -> Path:
    """Open a browser, record until Enter in the terminal, the window closes or
    the task ends, ask for the answer, write the episode; returns its directory.

    The terminal is read by one reader only (:class:`_TerminalLines`): the first
    line stops the recording whatever it says; when the window closed first,
    the read that waited for that line is the answer's, so the person types the
    answer once, on a TTY as through a pipe. When the task ended by itself no
    answer is asked, and the read still waiting is the next recording's stop
    line. The answer is asked for with ``ask`` (default: that reader; pass e.g.
    a GUI prompt, never ``input``, which would compete with the reader for the
    line). The end of stdin stops the recording and, where an answer is needed,
    aborts the episode.
    """
    import gymnasium

    import browser_env  # noqa: F401 - registers the env ids

    if not isinstance(cfg, RecordConfig):
        cfg = RecordConfig(**dict(cfg))
    kwargs: dict[str, Any] = {
        "render_mode": "rgb_array",
        "headless": cfg.headless,
        **cfg.env_kwargs,
    }
    if cfg.executable_path:
        kwargs["executable_path"] = cfg.executable_path
    gym_id, options = _env_and_options(cfg)
    env = gymnasium.make(gym_id, **kwargs)
    recorder = DemoRecorder(
        env, root, seed=cfg.seed, options=options, env_kwargs=cfg.env_kwargs, log=print
    )
    try:
        path = recorder.start()
        print(
            f"recording to {path}\ngoal: {recorder.base.goal}\nact in the browser; press Enter here (or close the window) to stop"
        )
        stop = _TERMINAL.next_line()
        while not stop.done() and not recorder.window_closed and not recorder.done:
            recorder.poll(100)
        if stop.done():  # the person pressed Enter: that line was the stop
            _TERMINAL.take(stop)
        answer = None
        if not recorder.done:
            answer = (ask or _TERMINAL.ask)("final answer (empty for none): ").strip()
        recorder.finish(answer)
    except BaseException:
        if recorder.writer is not None:
            recorder.abort("interrupted")
        raise
    finally:
        env.close()
    print(f"episode written to {path}")
    return path


def run(cfg: DictConfig | Mapping[str, Any]) -> Path:
    """The Hydra entry point's body: ``cfg`` has :class:`RecordConfig`'s keys."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, Mapping) else dict(cfg)
    root = data.get("episodes_dir")
    if root is None:
        root = run_dir() / "episodes"
    return record(
        RecordConfig(**{k: v for k, v in data.items() if k in RecordConfig.__dataclass_fields__}),
        root,
    )


def register_config() -> None:
    """Store :class:`RecordConfig` in Hydra's ConfigStore as ``record_schema``
    (``conf/record.yaml``'s base); call before Hydra composes it. Safe to repeat."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="record_schema", node=RecordConfig)


def main() -> None:
    import hydra

    register_config()
    hydra.main(version_base="1.3", config_path="../conf", config_name="record")(run)()


if __name__ == "__main__":
    main()
