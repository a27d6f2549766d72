"""Where an env's page comes from: the browser, context and page lifecycle of
:class:`~browser_env.env.BrowserEnv`, a mixin of its own.

``_ensure_page`` gives the env a live page: it launches the browser (or takes
the shared one from its owner), opens a context with the env's viewport,
limits, URL interception and init scripts, and a page in it; a fresh context
on each ``reset``. A browser that died is discarded with whatever is left of
its processes, and the next ``reset`` launches a new one; mid-episode only the
page is replaced (``_recover_page``), never the browser. A shared browser is
its owner's: an env never launches, relaunches or closes it, only its own
context. The URL policy's ``allowed_hosts`` are a setting of the context
(its interception route and its refusing proxy, :mod:`browser_env.policy`):
a ``reset`` after they changed opens a fresh context.

The env owns the state used here, set in its ``__init__``: ``_shared_browser``,
``_playwright``, ``_browser``, ``_browser_pid``, ``_context``,
``_context_hosts``, ``_page``, ``_cdp``, ``_bound``, ``_events``,
``_refused_navigation``, ``viewport``, ``browser_config``, ``executor_config``
and ``url_policy``; ``_set_page`` and ``_on_popup`` come
from :class:`~browser_env.page_events.PageEvents`, ``_hung_error`` from the env.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from browser_env.browser import (
    driver_alive,
    kill_browser_processes,
    launch_on_driver,
)
from browser_env.executor import INIT_JS, INTENTS_JS, first_line

if TYPE_CHECKING:
    from collections.abc import Callable

    from playwright.sync_api import Browser, BrowserContext, Page, Route

    from browser_env.browser import BrowserConfig
    from browser_env.executor import ExecutorConfig
    from browser_env.policy import UrlPolicy

__all__ = ["PageLifecycle"]

_ERROR_PAGE = "chrome-error://chromewebdata/"  # what a tab shows for a failed navigation


class PageLifecycle:
    """The browser/context/page lifecycle of :class:`~browser_env.env.BrowserEnv`
    (module doc)."""

    _shared_browser: Callable[[], Browser] | None
    _playwright: Any
    _browser: Any
    _browser_pid: int | None
    _context: BrowserContext | None
    _context_hosts: tuple[str, ...] | None
    _page: Page | None
    _cdp: Any
    _bound: list[Page]
    _events: dict[str, list[Any]]
    _refused_navigation: str
    viewport: tuple[int, int]
    browser_config: BrowserConfig
    executor_config: ExecutorConfig
    url_policy: UrlPolicy
    _hung_error: Callable[[str], str]

    def _ensure_page(self, fresh: bool, at_reset: bool = False) -> None:
        """A live page; a fresh context if ``fresh``, or ``at_reset`` if the URL
        policy's hosts changed since the context was opened."""
        fresh = fresh or (at_reset and self._context_hosts != self.url_policy.allowed_hosts)
        if self._shared_browser is not None:  # the owner relaunches a dead browser
            browser = self._shared_browser()
            if browser is not self._browser:  # a context of a dead browser is gone with it
                self._context = self._page = self._cdp = None
                self._bound = []
                self._browser = browser
        else:
            if self._browser is not None and not self._browser_alive():
                self._discard_browser()
            if self._browser is None:
                self._launch()
        if self._context is not None and (fresh or self._page is None or self._page.is_closed()):
            self._context.close()
            self._context = None
        if self._context is None:
            width, height = self.viewport
            proxy = self.url_policy.context_proxy()
            self._context = self._browser.new_context(
                viewport={"width": width, "height": height},
                device_scale_factor=1,
                accept_downloads=True,
                service_workers="block",
                **({"proxy": proxy} if proxy else {}),
            )
            self._context_hosts = self.url_policy.allowed_hosts
            self._context.set_default_timeout(self.executor_config.action_timeout_ms)
            self._context.set_default_navigation_timeout(self.executor_config.navigation_timeout_ms)
            if self.url_policy.allowed_hosts is not None:
                self._context.route(lambda url: not self.url_policy.host_allowed(url), self._block)
            self._context.add_init_script(INIT_JS)
            self._context.add_init_script(INTENTS_JS)
            self._context.on("page", self._on_popup)  # type: ignore[attr-defined]
            self._context.on("requestfailed", self._on_context_request_failed)  # type: ignore[attr-defined]
            self._bound = []
            self._set_page(self._context.new_page())  # type: ignore[attr-defined]

    def _launch(self) -> None:
        held, self._playwright = self._playwright, None  # a failed launch releases it
        self._playwright, self._browser, self._browser_pid = launch_on_driver(
            held, self.browser_config
        )

    def _browser_alive(self) -> bool:
        if self._shared_browser is not None:  # the owner watches its driver
            return self._browser.is_connected()
        return driver_alive(self._playwright) and self._browser.is_connected()

    def _broken(self) -> bool:
        """Whether the browser, its driver or the current page is gone."""
        return (
            self._browser is None
            or not self._browser_alive()
            or self._page is None
            or self._page.is_closed()
        )

    def _discard_browser(self) -> None:
        """Drop a dead (or dying) browser and whatever is left of its processes; a
        shared browser is its owner's: only this env's context is dropped."""
        for release in (
            lambda: self._context and self._context.close(),
            lambda: self._shared_browser is None and self._browser and self._browser.close(),
        ):
            try:
                release()
            except Exception:  # noqa: BLE001 - it is already gone
                pass
        if self._shared_browser is None:
            kill_browser_processes(self._browser_pid)
        self._page = self._context = self._browser = self._cdp = None
        self._browser_pid = None
        self._bound = []

    def _before_retry(self, exc: Exception, attempt: int, *, hung: bool) -> None:
        """After reset attempt ``attempt`` raised ``exc``: ready the env for one
        more attempt, or raise. A reset is tried again once, and only when the
        browser, its driver or the page died, or the watchdog closed a ``hung``
        page: a live browser then gets a fresh context and page, a dead one is
        discarded (the next attempt launches another)."""
        if attempt or not (self._broken() or hung):
            if hung and not isinstance(exc, RuntimeError):  # e.g. a read of the closed page
                raise RuntimeError(self._hung_error("")) from exc
            raise exc
        if self._browser is not None and self._browser_alive():
            self._page = None  # a fresh context and page
        else:
            self._discard_browser()

    def _recover_page(self, force: bool = False, cause: BaseException | None = None) -> None:
        """A fresh page in place of a crashed or closed one. Never a fresh browser
        mid-episode: if the browser is gone, this raises and the step truncates."""
        if self._browser is None or not self._browser_alive():
            raise RuntimeError(first_line(cause) if cause else "the browser is gone")
        if force or self._page is None or self._page.is_closed():
            self._page = None
            self._ensure_page(fresh=False)

    def _cause(self, exc: BaseException) -> str:
        """Why a step failed past recovery, for ``info["truncated_reason"]``."""
        if self._browser is None or not self._browser_alive():
            if self._shared_browser is not None:  # its owner relaunches it at a reset
                who = "shared browser"
            elif not driver_alive(self._playwright):
                who = "Playwright driver"
            else:
                who = "browser"
            return f"the {who} died: {first_line(exc)}; reset() starts a new one"
        return f"the page could not be recovered: {first_line(exc)}"

    def _guard_session(self) -> Any:
        """The page's CDP session, which the watchdog uses to stop a runaway script."""
        if self._cdp is None and self._page is not None:
            self._cdp = self._page.context.new_cdp_session(self._page)
        return self._cdp

    def _guarded(self) -> tuple[Page | None, Any]:
        return self._page, self._cdp

    def _leave_refused_page(self) -> str:
        """After an action: if the page landed on a host the URL policy refuses, go
        back (or to ``about:blank``) and return the action's error, else ``""``.

        Request interception sees only the first request of a redirect chain
        (Playwright's ``route``); the context's refusing proxy stops a refused
        hop (the tab shows an error page, ``_refused_navigation`` names the
        hop, or the chain's last allowed URL when Chromium did not report the
        hop) and the tab goes back; a popup with no page to go back to is
        closed, and the env is on its opener again. A page on a refused host
        by any other way is left too."""
        redirected, self._refused_navigation = self._refused_navigation, ""
        if self.url_policy.allowed_hosts is None or self._page is None:
            return ""
        url = self._page.url
        if redirected:  # stopped by the refusing proxy: the tab shows an error page
            url = redirected
        elif urlsplit(url).scheme not in ("http", "https") or self.url_policy.host_allowed(url):
            return ""
        try:
            timeout = self.executor_config.navigation_timeout_ms
            if redirected:  # go back from the error page, not before it commits
                try:
                    self._page.wait_for_url(_ERROR_PAGE, timeout=timeout)
                except Exception:  # noqa: BLE001 - no error page: leave what is there
                    pass
            page = self._page
            try:
                back = page.go_back(wait_until="domcontentloaded", timeout=timeout) is not None
            except Exception:  # noqa: BLE001 - no history to go back to: blank it below
                back = False
            opener = page.opener()
            if not back and opener is not None:  # a popup with nowhere to go back to
                page.close()  # the env is on its opener again (PageEvents._on_close)
                self._set_page(opener)
            elif not self.url_policy.host_allowed(page.url):
                page.goto("about:blank", timeout=timeout)
        except Exception:  # noqa: BLE001 - a crashed page is observed (and recovered) next
            pass
        if redirected and self.url_policy.host_allowed(url):  # the hop went unreported
            return f"{url} redirected to a host that allowed_hosts refuses; it was not loaded"
        how = "a redirect to" if redirected else "the page went to"
        return f"{how} {url} was refused: {self.url_policy.url_error(url)}"

    def _block(self, route: Route) -> None:
        """A request to a host the URL policy refuses: aborted, and noted in ``info``."""
        self._events.setdefault("blocked_requests", []).append(route.request.url)
        try:
            route.abort("blockedbyclient")
        except Exception:  # noqa: BLE001 - the page went away meanwhile
            pass
