"""``BrowserEnv``: a Gymnasium environment around one Chromium page.

The env owns the Playwright driver, the browser, a context and the current
page; a :class:`~browser_env.tasks.Task` sets the page up and judges it. The
browser is started on the first ``reset`` and reused across resets.

Step contract: ``env.step(action)`` accepts an :class:`Action`, a dict or a
JSON string. An invalid or impossible action is never an exception: the step
returns normally with reward 0 and the problem in ``last_action_error`` (and
``info["action_error"]``). ``terminated`` is True when the task says it is
done or on FINISH; ``truncated`` comes from ``max_episode_steps`` (Gymnasium's
``TimeLimit``, applied by ``gymnasium.make``).

``info`` after a step: ``raw_reward``, ``success`` (bool, or None when the
task cannot judge), ``reason``, ``answer`` (the FINISH value or None),
``action`` (canonical dict or None), ``action_error``, ``timings`` (ms:
``action``, ``validate``, ``observation``, ``screenshot``, ``total``; a
:class:`~browser_env.timing.Timings` mapping, ``dict()`` it for JSON), and
``dialogs``/``downloads``/``popups`` when the step caused any.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from browser_env.actions import Action, ActionError, ActionSpace, Verb, coerce_action
from browser_env.browser import BrowserConfig, acquire_playwright, launch, release_playwright
from browser_env.executor import INIT_JS, OBSERVE_JS, ExecutorConfig, execute
from browser_env.observation import MODALITIES, element_from_row, observation_space
from browser_env.tasks import MiniWoBTask, OpenTask, Task
from browser_env.timing import Timings

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Dialog, Download, Page, Request

__all__ = ["BrowserEnv", "make_task"]

_RETRYABLE = ("Execution context was destroyed", "navigat", "Cannot find context", "Target page")


def make_task(task: Task | str, **kwargs: Any) -> Task:
    """A task from a name: ``"miniwob.click-test"``, ``"open"``; a Task passes through."""
    if not isinstance(task, str):
        return task
    if task.startswith("miniwob."):
        return MiniWoBTask(task.removeprefix("miniwob."), **kwargs)
    if task == "open":
        return OpenTask(**kwargs)
    raise ValueError(f"unknown task {task!r}; use 'miniwob.<name>', 'open' or a Task object")


class BrowserEnv(gym.Env[dict[str, Any], Action]):
    """A real Chromium browser as a Gymnasium environment.

    Args:
        task: a Task or a name (``"miniwob.click-button"``, ``"open"``).
        task_kwargs: passed to the task's constructor when ``task`` is a name.
        render_mode: ``None``, ``"rgb_array"`` (``render()`` returns the
            screenshot) or ``"human"`` (a visible browser window).
        modalities: which of ``elements``, ``text``, ``screenshot`` to observe;
            what is off is neither computed nor in the observation space.
        viewport: (width, height) when the task does not set one. The screenshot
            is the task's ``screenshot_region`` (x, y, width, height) of it,
            or all of it.
        headless, executable_path, slow_mo_ms: see :class:`BrowserConfig`.
        executor: limits for actions (:class:`ExecutorConfig` or a dict).
        browser: a shared browser owned by the caller (e.g.
            :class:`~browser_env.vector.SharedBrowser`): a zero-argument callable
            returning a live Playwright ``Browser`` of this thread's driver. The
            env then opens only its own context in it (isolated cookies and
            storage), never launches, relaunches or closes a browser or the
            driver, and ``close()`` closes only its context. ``headless``,
            ``executable_path`` and ``slow_mo_ms`` are then the owner's.
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        task: Task | str = "open",
        task_kwargs: dict[str, Any] | None = None,
        render_mode: str | None = None,
        modalities: Sequence[str] = MODALITIES,
        viewport: Sequence[int] = (1280, 720),
        headless: bool = True,
        executable_path: str | None = None,
        slow_mo_ms: float = 0.0,
        executor: ExecutorConfig | dict[str, Any] | None = None,
        browser: Callable[[], Browser] | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None")
        self.task = make_task(task, **(task_kwargs or {}))
        self.render_mode = render_mode
        self.modalities = tuple(modalities)
        width, height = self.task.viewport or tuple(viewport)
        self.viewport = (int(width), int(height))
        self.browser_config = BrowserConfig(
            headless=headless and render_mode != "human",
            executable_path=executable_path,
            slow_mo_ms=slow_mo_ms,
        )
        self.executor_config = (
            executor if isinstance(executor, ExecutorConfig) else ExecutorConfig(**(executor or {}))
        )
        region = getattr(self.task, "screenshot_region", None)
        self.screenshot_region = tuple(int(v) for v in region) if region else (0, 0, *self.viewport)
        self.observation_space = observation_space(self.modalities, self.screenshot_region[2:])
        self.action_space = ActionSpace()

        self._shared_browser = browser
        self._playwright: Any = None
        self._browser: Any = None
        self._context: BrowserContext | None = None
        self._page: Page | None = None
        self._cdp: Any = None
        self._closed = False
        self._goal = ""
        self._next_id = 1
        self._navigations = 0
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._downloads: list[Download] = []
        self._bound: list[Page] = []
        state_js = getattr(self.task, "state_js", None)
        self._fused = bool(state_js) and hasattr(self.task, "judge")
        self._observe_js = _observer_script(state_js if self._fused else None)
        self._state: Any = _UNREAD

    # --- Gymnasium API ---------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        if self._closed:
            raise RuntimeError("this env is closed; make a new one")
        t0 = time.perf_counter()
        episode_seed = seed if seed is not None else int(self.np_random.integers(2**31 - 1))
        self._ensure_page(fresh=self.task.fresh_context)
        self._events = {}
        self._downloads = []
        self._goal = self.task.setup(self.page, episode_seed, dict(options or {}))
        t1 = time.perf_counter()
        obs, obs_timings = self._observe(error="", reset=True)
        t2 = time.perf_counter()
        info = {
            "env_id": self.spec.id if self.spec is not None else None,
            "task": self.task.name,
            "seed": episode_seed,
            "browser_version": self._browser.version,
            "timings": Timings({"setup": (t1 - t0) * 1e3, **obs_timings, "total": (t2 - t0) * 1e3}),
        }
        return obs, info

    def step(
        self, action: Action | dict[str, Any] | str
    ) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self._page is None:
            raise RuntimeError("call reset() before step()")
        t0 = time.perf_counter()
        self._events = {}
        notes: dict[str, Any] = {}
        error = ""
        parsed: Action | None = None
        try:
            parsed = coerce_action(action)
            notes = self._run(parsed)
        except ActionError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a policy must not be able to crash the env
            error = f"browser error during {parsed.action.value if parsed else 'action'}: {_first_line(exc)}"
            self._recover_page()
        t1 = time.perf_counter()
        answer = parsed.value or "" if parsed is not None and parsed.action is Verb.FINISH else None
        fused = self._fused
        if not fused:
            reward, done, judged = self._validate(answer)
        t2 = time.perf_counter()
        page = self._page
        try:
            obs, obs_timings = self._observe(error=error)
        except Exception as exc:  # noqa: BLE001 - e.g. the renderer crashed: start a fresh page
            error = error or f"the page could not be observed: {_first_line(exc)}"
            self._recover_page(force=True)
            obs, obs_timings = self._observe(error=error)
        if self._page is not page:  # a popup arrived while observing: show the new page
            self._settle()
            obs, obs_timings = self._observe(error=error)
        if fused:
            reward, done, judged = self._judge(answer)
        if error and not done:
            reward = 0.0
        t3 = time.perf_counter()
        terminated = bool(done) or answer is not None
        info: dict[str, Any] = {
            **judged,
            "answer": answer,
            "action": parsed.to_dict() if parsed is not None else None,
            "action_error": error or None,
            "timings": Timings(
                {
                    "action": (t1 - t0) * 1e3,
                    "validate": (t2 - t1) * 1e3,  # ~0 when fused with the observation
                    **obs_timings,
                    "total": (t3 - t0) * 1e3,
                }
            ),
            **notes,
            **self._events,
        }
        return obs, float(reward), terminated, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            if self._page is None:
                width, height = self.screenshot_region[2:]
                return np.zeros((height, width, 3), dtype=np.uint8)
            return self._screenshot()
        return None

    def close(self) -> None:
        """Release the page, context, browser and driver, in that order. Safe twice."""
        if self._closed:
            return
        self._closed = True
        for release in (
            self.task.teardown,
            lambda: self._context and self._context.close(),
            lambda: self._shared_browser is None and self._browser and self._browser.close(),
            lambda: self._shared_browser is None and self._playwright and release_playwright(),
        ):
            try:
                release()
            except Exception:  # noqa: BLE001 - closing must not fail half-way
                pass
        self._page = self._context = self._browser = self._playwright = self._cdp = None

    # --- public helpers ----------------------------------------------------------
    @property
    def page(self) -> Page:
        """The page the agent currently acts on (popups are followed)."""
        if self._page is None:
            raise RuntimeError("no page yet: call reset() first")
        return self._page

    @property
    def goal(self) -> str:
        return self._goal

    def observe(self) -> dict[str, Any]:
        """The current page as an observation, without acting (e.g. after driving
        ``env.page`` yourself). Element ids continue the episode's numbering."""
        return self._observe(error="")[0]

    def screenshot(self) -> np.ndarray:
        """The current page as the observation's screenshot (the task's region)."""
        return self._screenshot()

    @property
    def downloads(self) -> list[Download]:
        """Playwright Download objects captured this episode (``save_as`` to keep one)."""
        return list(self._downloads)

    # --- browser lifecycle -------------------------------------------------------
    def _ensure_page(self, fresh: bool) -> None:
        if self._shared_browser is not None:  # the owner relaunches a dead browser
            browser = self._shared_browser()
            if browser is not self._browser:  # a context of a dead browser is gone with it
                self._context = self._page = None
                self._browser = browser
        elif self._browser is None:
            self._playwright = acquire_playwright()
            try:
                self._browser = launch(self._playwright, self.browser_config)
            except Exception:
                self._playwright = None
                release_playwright()
                raise
        if self._context is not None and (fresh or self._page is None or self._page.is_closed()):
            self._context.close()
            self._context = None
        if self._context is None:
            width, height = self.viewport
            self._context = self._browser.new_context(
                viewport={"width": width, "height": height},
                device_scale_factor=1,
                accept_downloads=True,
                service_workers="block",
            )
            self._context.add_init_script(INIT_JS)
            self._context.on("page", self._on_popup)
            self._bound = []
            self._set_page(self._context.new_page())

    def _set_page(self, page: Page) -> None:
        if page not in self._bound:  # a page may reach us twice (new_page and the "page" event)
            self._bound.append(page)
            page.on("dialog", self._on_dialog)
            page.on("download", self._on_download)
            page.on("request", self._on_request)
            page.on("close", self._on_close)
        self._page = page
        self._cdp = None

    def _on_popup(self, page: Page) -> None:
        if page is self._page or page.opener is None:
            return
        self._events.setdefault("popups", []).append({"url": page.url})
        self._set_page(page)

    def _on_close(self, page: Page) -> None:
        if page is self._page and self._context is not None:
            alive = [p for p in self._context.pages if not p.is_closed() and p is not page]
            if alive:
                self._page = alive[-1]
                self._cdp = None

    def _on_dialog(self, dialog: Dialog) -> None:
        self._events.setdefault("dialogs", []).append(
            {"type": dialog.type, "message": dialog.message}
        )
        try:
            dialog.accept(dialog.default_value) if dialog.type == "prompt" else dialog.accept()
        except Exception:  # noqa: BLE001 - the page may already have moved on
            pass

    def _on_download(self, download: Download) -> None:
        self._downloads.append(download)
        self._events.setdefault("downloads", []).append(
            {"url": download.url, "filename": download.suggested_filename}
        )

    def _on_request(self, request: Request) -> None:
        if request.is_navigation_request():
            self._navigations += 1

    def _recover_page(self, force: bool = False) -> None:
        if force or self._page is None or self._page.is_closed():
            self._page = None
            self._ensure_page(fresh=False)

    # --- acting and observing ----------------------------------------------------
    def _run(self, action: Action) -> dict[str, Any]:
        before = self._navigations
        notes = execute(self.page, action, self.executor_config)
        if self._navigations != before and action.action is not Verb.NAVIGATE:
            self._settle()
        return notes

    def _settle(self) -> None:
        try:
            self.page.wait_for_load_state(
                "domcontentloaded", timeout=self.executor_config.navigation_timeout_ms
            )
        except Exception:  # noqa: BLE001 - a slow page is observed as it is
            pass

    def _validate(self, answer: str | None) -> tuple[float, bool, dict[str, Any]]:
        try:
            return self.task.validate(self.page, answer)
        except Exception as exc:  # noqa: BLE001 - e.g. the page navigated mid-check
            reason = f"validate failed: {_first_line(exc)}"
            return 0.0, False, {"raw_reward": 0.0, "success": False, "reason": reason}

    def _judge(self, answer: str | None) -> tuple[float, bool, dict[str, Any]]:
        if self._state is _UNREAD:  # the observation could not run its script
            return self._validate(answer)
        return self.task.judge(self._state, answer)

    def _observe(self, error: str, reset: bool = False) -> tuple[dict[str, Any], dict[str, float]]:
        t0 = time.perf_counter()
        obs: dict[str, Any] = {"goal": self._goal, "last_action_error": error}
        want_elements = "elements" in self.modalities
        want_text = "text" in self.modalities
        if reset:
            self._next_id = 1
        args = {
            "reset": reset,
            "next": self._next_id,
            "root": self.task.observation_root,
            "exclude": getattr(self.task, "observation_exclude", None),
            "elements": want_elements,
            "text": want_text,
        }
        raw = None
        for _ in range(5):
            try:
                raw = json.loads(self.page.evaluate(self._observe_js, args))
                break
            except Exception as exc:  # noqa: BLE001
                if not any(marker in str(exc) for marker in _RETRYABLE):
                    raise
                self._settle()
        if raw is None:
            raw = {"elements": [], "text": "", "next": self._next_id, "url": self.page.url}
        self._state = raw.get("state", _UNREAD)
        self._next_id = raw["next"]
        obs["url"] = raw["url"]
        if want_elements:
            obs["elements"] = tuple(element_from_row(row) for row in raw["elements"])
        if want_text:
            obs["text"] = raw["text"]
        t1 = time.perf_counter()
        timings = {"observation": (t1 - t0) * 1e3}
        if "screenshot" in self.modalities:
            obs["screenshot"] = self._screenshot()
            t2 = time.perf_counter()
            timings["screenshot"] = (t2 - t1) * 1e3
            timings["observation"] = (t2 - t0) * 1e3
        return obs, timings

    def _screenshot(self) -> np.ndarray:
        from PIL import Image

        if self._cdp is None:
            self._cdp = self.page.context.new_cdp_session(self.page)
        x, y, width, height = self.screenshot_region
        clip = {"x": x, "y": y, "width": width, "height": height, "scale": 1}
        shot = self._cdp.send(
            "Page.captureScreenshot", {"format": "png", "optimizeForSpeed": True, "clip": clip}
        )
        image = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
        if image.size != (width, height):  # e.g. a popup with another viewport
            image = (
                image.crop((0, 0, width, height))
                if image.width >= width and image.height >= height
                else image.resize((width, height))
            )
        return np.asarray(image, dtype=np.uint8).copy()


_UNREAD = object()


def _observer_script(state_js: str | None) -> str:
    """The observation script, optionally reading the task state in the same call
    (``{...observation, state}``). It returns a JSON string: one string crosses
    the Playwright protocol far faster than a nested structure (~1 ms a step)."""
    if state_js is None:
        return f"(args) => JSON.stringify(({OBSERVE_JS})(args))"
    return (
        f"(args) => {{ const state = ({state_js})(); "
        f"return JSON.stringify({{ ...({OBSERVE_JS})(args), state }}); }}"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
