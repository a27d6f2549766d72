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
``dialogs``/``downloads``/``popups``/``blocked_requests`` when the step
caused any.

Failure contract (what a rollout fleet can rely on): ``step`` never raises
because of the page or the browser. A page that does not answer within
``ExecutorConfig.step_timeout_ms`` (an endless script) has its script stopped
and, if that is not enough, is replaced; the step reports it as an error. If
the browser's main process or the Playwright driver dies, the step returns an
empty observation with ``truncated=True`` and the cause in
``info["truncated_reason"]``; the next ``reset`` launches a fresh browser.
``close()`` is safe at any point, also after a crash, and leaves no Chromium
process behind. URLs follow a :class:`~browser_env.policy.UrlPolicy`.

This module holds the Gymnasium API (``reset``, ``step``, ``render``,
``close``) and the public helpers; the rest of the env is a mixin each:
where the page comes from (:mod:`browser_env.page_lifecycle`), what the env
hears from its pages (:mod:`browser_env.page_events`) and how a step acts on,
observes and judges the page (:mod:`browser_env.page_io`). ``make_task``
(from :mod:`browser_env.tasks`) and ``validate_safely`` (from
:mod:`browser_env.page_io`) are re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from browser_env.actions import Action, ActionError, ActionSpace, Verb, coerce_action
from browser_env.browser import (
    BrowserConfig,
    kill_browser_processes,
    release_playwright,
    switches,
)
from browser_env.executor import ExecutorConfig, first_line
from browser_env.observation import (
    MODALITIES,
    Observer,
    ObserverLimits,
    check_modalities,
    empty_observation,
    fit_text,
    observation_space,
)
from browser_env.page_events import PageEvents
from browser_env.page_io import UNREAD, PageIO, validate_safely
from browser_env.page_lifecycle import PageLifecycle
from browser_env.policy import UrlPolicy
from browser_env.screenshot import Screenshotter
from browser_env.tasks import Task, make_task
from browser_env.timing import Timings
from browser_env.watchdog import Watchdog

if TYPE_CHECKING:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        Download,
        Page,
    )

__all__ = ["BrowserEnv", "make_task", "validate_safely"]  # the last two: re-exported

#: the largest viewport side, in pixels (Chromium's usual maximum texture size)
MAX_VIEWPORT_SIDE = 16384


def check_viewport(viewport: Any) -> tuple[int, int]:
    """``viewport`` as ``(width, height)``: two whole numbers of pixels, each
    1..:data:`MAX_VIEWPORT_SIDE`; anything else is a ``ValueError`` (a zero
    side would leave every page call waiting out its time limit)."""
    try:
        width, height = viewport
        sides = (int(width), int(height))
        whole = all(not isinstance(v, bool) and float(v) == int(v) for v in (width, height))
    except (TypeError, ValueError):
        sides, whole = (0, 0), False
    if not whole or not all(1 <= v <= MAX_VIEWPORT_SIDE for v in sides):
        raise ValueError(
            f"viewport is (width, height) in pixels, each 1..{MAX_VIEWPORT_SIDE}, got {viewport!r}"
        )
    return sides


class BrowserEnv(PageLifecycle, PageEvents, PageIO, gym.Env[dict[str, Any], Action]):
    """A real Chromium browser as a Gymnasium environment.

    ``reset`` keeps the page when the task allows it (MiniWoB++: one page for
    all episodes, but a few tasks' widgets keep state, so those reload) and
    moves the mouse off it first, so that a hover the last episode left does
    not show in the next (MiniWoB++'s setup blurs the focused field): the same
    seed gives the same observation whatever came before.

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
        headless, executable_path, slow_mo_ms, extra_args: see
            :class:`BrowserConfig` (``extra_args``: Chromium switches after the
            env's own; the last value of a switch wins, e.g.
            ``("--webrtc-ip-handling-policy=default",)`` lets WebRTC send UDP
            again, which the env's own flags turn off for ``allowed_hosts``).
        executor: limits for actions (:class:`ExecutorConfig` or a dict).
        allowed_url_schemes: URL schemes ``reset`` and ``NAVIGATE`` accept;
            ``file``, ``chrome``, ``javascript`` and ``data`` only when listed.
        allowed_hosts: the only hosts the browser may send requests to (request
            interception); ``None``: the task's own ``allowed_hosts`` (MiniWoB++:
            loopback), else any host; ``["*"]``: any host.
        max_download_bytes: larger downloads are cancelled.
        observer: caps on one observation's work on a huge page
            (:class:`ObserverLimits` or a dict); what applied is in ``obs["capped"]``.
        browser: a shared browser owned by the caller (e.g.
            :class:`~browser_env.vector.SharedBrowser`): a zero-argument callable
            returning a live Playwright ``Browser`` of this thread's driver. The
            env then opens only its own context in it (isolated cookies and
            storage), never launches, relaunches or closes a browser or the
            driver, and ``close()`` closes only its context. ``headless``,
            ``executable_path``, ``slow_mo_ms`` and ``extra_args`` are then the
            owner's.
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
        extra_args: Sequence[str] = (),
        executor: ExecutorConfig | dict[str, Any] | None = None,
        allowed_url_schemes: Sequence[str] = ("http", "https"),
        allowed_hosts: Sequence[str] | None = None,
        max_download_bytes: int = 50 * 2**20,
        observer: ObserverLimits | dict[str, Any] | None = None,
        browser: Callable[[], Browser] | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None")
        self.task = make_task(task, **(task_kwargs or {}))
        self.render_mode = render_mode
        self.modalities = check_modalities(modalities)
        self.viewport = check_viewport(self.task.viewport or viewport)
        self.browser_config = BrowserConfig(
            headless=headless and render_mode != "human",
            executable_path=executable_path,
            slow_mo_ms=slow_mo_ms,
            extra_args=switches(extra_args),
        )
        self.executor_config = (
            executor if isinstance(executor, ExecutorConfig) else ExecutorConfig(**(executor or {}))
        )
        hosts = (
            allowed_hosts
            if allowed_hosts is not None
            else getattr(self.task, "allowed_hosts", None)
        )
        self.url_policy = UrlPolicy(
            allowed_url_schemes=allowed_url_schemes,  # UrlPolicy refuses a lone string
            allowed_hosts=None if hosts is None or _any_host(hosts) else hosts,
            max_download_bytes=int(max_download_bytes),
        )
        region = self.task.screenshot_region
        self.screenshot_region = tuple(int(v) for v in region) if region else (0, 0, *self.viewport)
        self._screenshotter = Screenshotter(self.screenshot_region)
        self.observation_space = observation_space(self.modalities, self.screenshot_region[2:])
        self.action_space = ActionSpace()

        self._shared_browser = browser
        self._playwright: Any = None
        self._browser: Any = None
        self._browser_pid: int | None = None
        self._context_hosts: tuple[str, ...] | None = None  # allowed_hosts its context has
        self._context: BrowserContext | None = None
        self._page: Page | None = None
        self._cdp: Any = None
        self._closed = False
        self._goal = ""
        self._navigations = 0
        self._main_navigations = 0
        self._popups = 0
        self._refused_navigation = ""
        self._watchdog = Watchdog()
        self._dead: str | None = None  # why the episode was cut short (reset clears it)
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._downloads: list[Download] = []
        self._bound: list[Page] = []
        state_js = self.task.state_js
        self._fused = state_js is not None
        self.observer = Observer(
            self.modalities,
            root=self.task.observation_root,
            exclude=getattr(self.task, "observation_exclude", None),
            state_js=state_js,
            limits=observer
            if isinstance(observer, ObserverLimits)
            else ObserverLimits(**(observer or {})),
        )
        self._state: Any = UNREAD
        self._pointer_used = False  # a CLICK, TYPE or SCROLL moved the mouse over the page

    # --- Gymnasium API ---------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        if self._closed:
            raise RuntimeError("this env is closed; make a new one")
        options = dict(options or {})
        if isinstance(options.get("url"), str):
            self._check_url(options["url"])
        t0 = time.perf_counter()
        episode_seed = seed if seed is not None else int(self.np_random.integers(2**31 - 1))
        limit = self.executor_config.navigation_timeout_ms + self.executor_config.step_timeout_ms
        for attempt in range(2):  # a browser that died is relaunched once
            try:
                kept = self._page
                self._ensure_page(
                    fresh=self.task.fresh_context or self._dead is not None, at_reset=True
                )
                self._pointer_used &= self._page is kept  # a new page has no hover
                self._guard_session()
                self._dead = None
                self._events = {}
                self._refused_navigation = ""
                self._downloads = []
                with self._watchdog.armed(self._page, self._guarded, limit):
                    if self._pointer_used:  # a reused page still shows the hover it left
                        self.page.mouse.move(-1, -1)
                        self._pointer_used = False
                    self._goal = self.task.setup(self.page, episode_seed, options)
                    self._check_url(self.page.url, landed=True)
                    t1 = time.perf_counter()
                    obs, obs_timings = self._observe(error="", reset=True)
                    if self._watchdog.fired == "stopped":  # as in step: see Watchdog.probe
                        self._watchdog.probe(self.page)
                if self._watchdog.fired == "closed":
                    raise RuntimeError(self._hung_error(""))
                break
            except ValueError:
                raise  # the caller's options are wrong: retrying cannot help
            except Exception as exc:
                self._before_retry(exc, attempt, hung=self._watchdog.fired == "closed")
        t2 = time.perf_counter()
        events, self._events = self._events, {}  # what the start page did: reset's
        info = {
            "env_id": self.spec.id if self.spec is not None else None,
            "task": self.task.name,
            "seed": episode_seed,
            "browser_version": self._browser.version,
            "timings": Timings({"setup": (t1 - t0) * 1e3, **obs_timings, "total": (t2 - t0) * 1e3}),
            **events,
        }
        return obs, info

    def step(
        self, action: Action | dict[str, Any] | str
    ) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self._closed:
            raise RuntimeError("this env is closed; make a new one")
        if self._page is None and self._dead is None:
            raise RuntimeError("call reset() before step()")
        t0 = time.perf_counter()
        if self._dead is None:
            try:
                self._guard_session()
                with self._watchdog.armed(
                    self._page, self._guarded, self.executor_config.step_timeout_ms
                ):
                    return self._step(action, t0)
            except _PageLost as exc:
                self._dead = str(exc)
                self._page = None  # reset starts a fresh context and page
            except Exception as exc:  # noqa: BLE001 - the env must never take its caller down
                self._dead = self._cause(exc)
        return self._truncated_step(action, t0)

    def _step(
        self, action: Action | dict[str, Any] | str, t0: float
    ) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        notes: dict[str, Any] = {}
        error = ""
        parsed: Action | None = None
        taken: tuple[dict[str, Any], float] | None = None
        try:
            parsed = coerce_action(action)
            notes, taken = self._run(parsed)
        except ActionError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a policy must not be able to crash the env
            error = f"browser error during {parsed.action.value if parsed else 'action'}: {first_line(exc)}"
            self._recover_page(cause=exc)
        refused = self._leave_refused_page()  # e.g. redirected to a refused host
        if refused:
            error, taken = (f"{error}; {refused}" if error else refused), None
        t1 = time.perf_counter()
        # A read _follow took is of this page: a popup that arrives while validating
        # then counts as arriving while observing (the check below shows it).
        page = self._page
        answer = parsed.value or "" if parsed is not None and parsed.action is Verb.FINISH else None
        fused = self._fused
        if not fused:
            reward, done, judged = self._validate(answer)
        t2 = time.perf_counter()
        if taken is None:
            page = self._page
        try:
            obs, obs_timings = self._observe(error=error, taken=taken)
        except Exception as exc:  # noqa: BLE001 - e.g. the renderer crashed: start a fresh page
            error = error or f"the page could not be observed: {first_line(exc)}"
            self._recover_page(force=True, cause=exc)
            obs, obs_timings = self._observe(error=error)
        if self._page is not page:  # a popup arrived while observing: show the new page
            self._settle()
            obs, obs_timings = self._observe(error=error)
        if self._watchdog.fired == "stopped":
            self._watchdog.probe(self.page)
        if self._watchdog.fired == "closed":  # the task's page is gone: end the episode
            raise _PageLost(self._hung_error(error))
        if self._watchdog.fired:
            error = self._hung_error(error)
            obs["last_action_error"] = error
        if self._downloads:
            self._cap_downloads()
        if fused:
            reward, done, judged = self._judge(answer)
        if error and not done:
            reward = 0.0
        t3 = time.perf_counter()
        terminated = bool(done) or answer is not None
        events, self._events = self._events, {}  # since the last observation, this one's
        info: dict[str, Any] = {
            **judged,
            "answer": answer,
            "action": parsed.to_dict() if parsed is not None else None,
            "action_error": error or None,
            "timings": Timings(
                {
                    # the read _follow took is the observation's time
                    "action": (t1 - t0) * 1e3 - (taken[1] if taken is not None else 0.0),
                    "validate": (t2 - t1) * 1e3,  # ~0 when fused with the observation
                    **obs_timings,
                    "total": (t3 - t0) * 1e3,
                }
            ),
            **notes,
            **events,
        }
        return obs, float(reward), terminated, False, info

    def _truncated_step(
        self, action: Any, t0: float
    ) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """The step of an episode that cannot go on (``self._dead`` says why): an
        empty observation, no reward, ``truncated=True``."""
        reason = self._dead or "the episode cannot go on"
        try:
            parsed = coerce_action(action).to_dict()
        except Exception:  # noqa: BLE001 - any junk may arrive here
            parsed = None
        obs = empty_observation(self.observation_space)
        obs["goal"] = fit_text(self._goal)
        obs["last_action_error"] = reason
        info = {
            "raw_reward": 0.0,
            "success": False,
            "reason": reason,
            "answer": None,
            "action": parsed,
            "action_error": reason,
            "truncated_reason": reason,
            "timings": Timings({"total": (time.perf_counter() - t0) * 1e3}),
        }
        return obs, 0.0, False, True, info

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            width, height = self.screenshot_region[2:]
            if self._page is None or self._dead is not None:
                return np.zeros((height, width, 3), dtype=np.uint8)
            try:
                return self._screenshot()
            except Exception:  # noqa: BLE001 - a dead page renders blank; step reports why
                return np.zeros((height, width, 3), dtype=np.uint8)
        return None

    def close(self) -> None:
        """Release the page, context, browser and driver, in that order. Safe twice,
        and after the browser or the driver died; no Chromium process outlives it."""
        if self._closed:
            return
        self._closed = True
        for release in (
            self.task.teardown,
            lambda: self._context and self._context.close(),
            lambda: self._shared_browser is None and self._browser and self._browser.close(),
            lambda: self._shared_browser is None and kill_browser_processes(self._browser_pid),
            lambda: self._shared_browser is None and self._playwright and release_playwright(),
        ):
            try:
                release()
            except Exception:  # noqa: BLE001 - closing must not fail half-way
                pass
        self._page = self._context = self._browser = self._playwright = self._cdp = None
        self._browser_pid = None

    # --- public helpers ----------------------------------------------------------
    @property
    def page(self) -> Page:
        """The page the agent currently acts on (popups are followed)."""
        if self._page is None:
            raise RuntimeError(
                "this env is closed; make a new one"
                if self._closed
                else "no page yet: call reset() first"
            )
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

    # --- watchdog and URL policy -----------------------------------------------
    def _hung_error(self, error: str) -> str:
        limit = f"{self._watchdog.limit_ms / 1e3:g} s"
        what = (
            f"the page did not respond within {limit}; its running script was stopped"
            if self._watchdog.fired == "stopped"
            else f"the page did not respond within {limit} and was closed; the episode is truncated"
        )
        return f"{error}; {what}" if error and what not in error else what

    def _check_url(self, url: str, landed: bool = False) -> None:
        problem = self.url_policy.url_error(url)
        if problem is None:
            return
        if landed:  # the task loaded it by itself: leave nothing of it in the browser
            try:
                self.page.goto("about:blank")
            except Exception:  # noqa: BLE001 - the reset fails either way
                pass
        raise ValueError(f"refused to load {url!r}: {problem}")


class _PageLost(Exception):
    """The watchdog had to close the episode's page: the episode cannot go on."""


def _any_host(hosts: Sequence[str]) -> bool:
    """``allowed_hosts`` lists ``"*"`` (a lone string is UrlPolicy's to refuse)."""
    return not isinstance(hosts, str) and "*" in hosts
