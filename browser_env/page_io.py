"""How a step touches the page: act, follow what the action set off, observe
and judge. The page round trips of :class:`~browser_env.env.BrowserEnv`'s
``reset`` and ``step``, a mixin of their own.

``_run`` executes an action (:func:`~browser_env.executor.execute`) and, for
one that can open a page (``CLICK``, ``PRESS_ENTER``, ``TYPE``), ``_follow``
waits, at most ``ExecutorConfig.popup_timeout_ms``, for the window or the
navigation the page says it asked for, then for the new document to load
(``_settle``). ``_observe`` turns a read of the page (a fresh one, or the one
``_follow`` already took when nothing was asked for) into the observation and
its timings in ms, and keeps the task state that read carried (the task's
``state_js``) for ``_judge``: ``task.judge(state, answer)`` without another
browser round trip, or ``_validate`` when the read could not run its script
(:data:`UNREAD`) or the task has no ``state_js``. :func:`validate_safely` is
``task.validate`` that never raises, for the env and the demo recorder alike.

This is the step's hot path: each piece is a plain method of the env, with no
state of its own. The env owns the state used here, set in its ``__init__``:
``task``, ``modalities``, ``executor_config``, ``url_policy``, ``observer``,
``_screenshotter``, ``_page``, ``_cdp``, ``_goal``, ``_state``,
``_pointer_used``, ``_downloads``; ``page`` is the env's, and the counts
``_follow`` waits on (``_navigations``, ``_main_navigations``, ``_popups``)
are kept by :class:`~browser_env.page_events.PageEvents`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from browser_env.actions import Action, Verb
from browser_env.executor import execute, first_line

if TYPE_CHECKING:
    import numpy as np
    from playwright.sync_api import Download, Page

    from browser_env.executor import ExecutorConfig
    from browser_env.observation import Observer
    from browser_env.policy import UrlPolicy
    from browser_env.screenshot import Screenshotter
    from browser_env.tasks import Task

__all__ = ["UNREAD", "PageIO", "validate_safely"]

#: ``_state`` when the last read could not run the observer's script: no task state to judge.
UNREAD = object()


class PageIO:
    """Acting on, observing and judging the page of
    :class:`~browser_env.env.BrowserEnv` (module doc)."""

    task: Task
    modalities: tuple[str, ...]
    executor_config: ExecutorConfig
    url_policy: UrlPolicy
    observer: Observer
    page: Page
    _screenshotter: Screenshotter
    _page: Page | None
    _cdp: Any
    _goal: str
    _state: Any
    _pointer_used: bool
    _downloads: list[Download]
    _navigations: int
    _main_navigations: int
    _popups: int

    def _run(self, action: Action) -> tuple[dict[str, Any], tuple[dict[str, Any], float] | None]:
        """The executor's notes, and what :meth:`_follow` read for an action that can
        open a page (``None`` for the others)."""
        before = (self._navigations, self._main_navigations, self._popups, len(self._downloads))
        self._pointer_used |= action.action in (Verb.CLICK, Verb.TYPE, Verb.SCROLL)
        notes = execute(self.page, action, self.executor_config, self.url_policy)
        if action.action in (Verb.CLICK, Verb.PRESS_ENTER, Verb.TYPE):  # what can open a page
            return notes, self._follow(*before)
        return notes, None

    def _follow(
        self, requests: int, navigations: int, popups: int, downloads: int
    ) -> tuple[dict[str, Any], float] | None:
        """Wait, at most ``popup_timeout_ms``, for the window or the navigation that
        the last action asked for (the page notes it, js/intents.js), then for the
        new document to load. Browsers report both asynchronously: under load they
        would otherwise arrive after the observation was taken.

        The notes are taken by the observer's own call (one page call instead of
        two: ~3 CPU-ms a step on this machine). When nothing was asked for and
        nothing arrived, that read is the step's observation: returned with its
        time in ms; otherwise ``None``, and the env reads the page again (the
        script does not walk a page that asked for something, a document it
        never observed or one still loading, so ids go to loaded documents only).
        What the page did not ask for during the action (a window a timer opens
        later, a link in a frame: js/intents.js notes the top frame) is shown
        only if the browser reports it before the observation is read, as
        before; one call less makes that window a little shorter."""
        page = self._page
        t0 = time.perf_counter()
        try:
            raw = self.observer.read(self.page, settle=self._settle, intents=True)
        except Exception:  # noqa: BLE001 - e.g. a crashed page: observed (and recovered) next
            raw = None
        read_ms = (time.perf_counter() - t0) * 1e3
        # a page that never ran the script is navigating away
        intents = (raw.get("intents") or {}) if raw is not None else {"navigate": "?"}
        want_popups = int(intents.get("popups") or 0)
        want_navigation = bool(intents.get("navigate"))
        deadline = time.monotonic() + self.executor_config.popup_timeout_ms / 1e3
        while time.monotonic() < deadline:
            popups_ok = self._popups - popups >= want_popups
            navigation_ok = (
                not want_navigation
                or self._main_navigations > navigations
                or len(self._downloads) > downloads
            )
            if popups_ok and navigation_ok:
                break
            self._pump(20)
        if want_popups or want_navigation or self._navigations != requests:
            self._settle()
        elif (
            raw is not None
            and not raw.get("skipped")
            and self._page is page
            and self._popups == popups
        ):
            return raw, read_ms
        return None

    def _pump(self, ms: float) -> None:
        """Let Playwright deliver events for ``ms`` (its loop runs only inside calls)."""
        try:
            self.page.wait_for_timeout(ms)
        except Exception:  # noqa: BLE001 - the page closed: its opener takes over
            time.sleep(ms / 1e3)

    def _settle(self) -> None:
        try:
            self.page.wait_for_load_state(
                "domcontentloaded", timeout=self.executor_config.navigation_timeout_ms
            )
        except Exception:  # noqa: BLE001 - a slow page is observed as it is
            pass

    def _validate(self, answer: str | None) -> tuple[float, bool, dict[str, Any]]:
        return validate_safely(self.task, self.page, answer)

    def _judge(self, answer: str | None) -> tuple[float, bool, dict[str, Any]]:
        if self._state is UNREAD:  # the observation could not run its script
            return self._validate(answer)
        return self.task.judge(self._state, answer)

    def _observe(
        self,
        error: str,
        reset: bool = False,
        taken: tuple[dict[str, Any], float] | None = None,
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """The observation, from a fresh read or from ``taken`` (a read of this page
        and its time in ms, see :meth:`_follow`), and its timings in ms."""
        t0 = time.perf_counter()
        if taken is None:
            raw = self.observer.read(self.page, reset=reset, settle=self._settle)
            read_ms = 0.0
        else:
            raw, read_ms = taken
        self._state = raw.get("state", UNREAD) if raw is not None else UNREAD
        t1 = time.perf_counter()
        timings = {"observation": (t1 - t0) * 1e3 + read_ms}
        shot = None
        if "screenshot" in self.modalities:
            shot = self._screenshot()
            t2 = time.perf_counter()
            timings["screenshot"] = (t2 - t1) * 1e3
            timings["observation"] = (t2 - t0) * 1e3 + read_ms
        obs = self.observer.to_observation(
            raw, goal=self._goal, url=self.page.url, error=error, screenshot=shot
        )
        return obs, timings

    def _screenshot(self) -> np.ndarray:
        if self._cdp is None:
            self._cdp = self.page.context.new_cdp_session(self.page)
        return self._screenshotter.capture(self._cdp)


def validate_safely(
    task: Task, page: Page | None, answer: str | None
) -> tuple[float, bool, dict[str, Any]]:
    """``task.validate(page, answer)``, for the env and the demo recorder alike; a
    check that raises (the page navigated mid-check, or is closed) judges
    nothing: reward 0, not done, ``success`` None and the reason in ``reason``."""
    try:
        return task.validate(page, answer)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - a page can fail to be judged in many ways
        reason = f"validate failed: {first_line(exc)}"
        return 0.0, False, {"raw_reward": 0.0, "success": None, "reason": reason}
