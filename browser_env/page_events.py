"""What an env hears from its pages between its own calls: the event handlers
of :class:`~browser_env.env.BrowserEnv`, a mixin of their own.

Playwright delivers page events (a dialog, a download, a popup, a navigation
request, a page closing) while one of the env's calls runs; the handlers here
answer the page (accept the dialog), keep the counts that ``step`` waits on
(navigations, main-frame navigations, popups) and note what happened in the
next step's ``info`` (``self._events``, taken when that info is built, so an
event heard between steps, e.g. while the caller read ``env.page``, is the
next step's too; what the start page did is in ``reset``'s ``info``). A popup becomes the page the env acts on;
a closed page hands over to the last one still open.

The env owns the state these handlers use, set in its ``__init__`` and reset
with each episode: ``_page``, ``_cdp``, ``_context``, ``_bound`` (the pages
whose events are wired), ``_events``, ``_downloads``, ``_navigations``,
``_main_navigations``, ``_popups``, ``_refused_navigation`` (where a
navigation of the tab, or of a new popup, met the refusing proxy: the refused
hop's URL, or the chain's last allowed one when Chromium did not report the
hop; the step then goes back) and ``url_policy``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Dialog, Download, Frame, Page, Request

    from browser_env.policy import UrlPolicy

__all__ = ["PageEvents"]


class PageEvents:
    """The page-event handlers of :class:`~browser_env.env.BrowserEnv` (module doc)."""

    _page: Page | None
    _cdp: Any
    _context: BrowserContext | None
    _bound: list[Page]
    _events: dict[str, list[dict[str, Any]]]
    _downloads: list[Download]
    _navigations: int
    _main_navigations: int
    _popups: int
    _refused_navigation: str
    url_policy: UrlPolicy

    def _set_page(self, page: Page) -> None:
        if page not in self._bound:  # a page may reach us twice (new_page and the "page" event)
            self._bound.append(page)
            page.on("dialog", self._on_dialog)
            page.on("download", self._on_download)
            page.on("request", self._on_request)
            page.on("framenavigated", self._on_navigated)
            page.on("requestfailed", self._on_request_failed)
            page.on("close", self._on_close)
        previous, self._page = self._page, page
        if page is not previous:
            self._detach_cdp()

    def _detach_cdp(self) -> None:
        """Detach the CDP session of the page the env left, if any: that page may
        stay open (the opener of a popup), and a session dropped undetached
        would stay with it, one more each time the env came back to it. The
        state is updated first: in an event handler the detach lets the env's
        own call go on meanwhile."""
        cdp, self._cdp = self._cdp, None
        if cdp is not None:
            try:
                cdp.detach()
            except Exception:  # noqa: BLE001 - its page is already closed
                pass

    def _on_popup(self, page: Page) -> None:
        if page is self._page or page.opener() is None:  # a page the env made itself
            return
        self._popups += 1
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

    def _cap_downloads(self) -> None:
        """Cancel downloads past ``max_download_bytes``. Checked when a step or reset
        ends: a download keeps going between steps, so the overshoot is what
        arrives in one step plus the time the policy takes to decide."""
        cap = self.url_policy.max_download_bytes
        for download in list(self._downloads):
            size = _download_size(download)
            if size is None or size <= cap:
                continue
            try:
                download.cancel()
                download.delete()
            except Exception:  # noqa: BLE001 - it finished or failed meanwhile
                pass
            self._downloads.remove(download)
            self._events.setdefault("downloads", []).append(
                {
                    "url": download.url,
                    "filename": download.suggested_filename,
                    "cancelled": f"too large: over {cap} bytes (max_download_bytes)",
                }
            )

    def _on_request(self, request: Request) -> None:
        if request.is_navigation_request():
            self._navigations += 1

    def _on_navigated(self, frame: Frame) -> None:
        if frame.parent_frame is None:
            self._main_navigations += 1

    def _on_request_failed(self, request: Request) -> None:
        # A navigation that fails (blocked host, refused connection) never commits:
        # count it as done, so that _follow does not wait for it.
        try:
            if request.is_navigation_request() and request.frame.parent_frame is None:
                self._main_navigations += 1
        except Exception:  # noqa: BLE001 - the frame is already gone
            pass

    def _on_context_request_failed(self, request: Request) -> None:
        """Any page's failed request (the context's event: a popup's first
        requests come before its page is ours): one the refusing proxy stopped."""
        if not _refused_by_proxy(request, self.url_policy):
            return
        # a redirect's hop, which interception never sees (policy.py)
        self._events.setdefault("blocked_requests", []).append(request.url)
        if not request.is_navigation_request():
            return
        try:
            frame = request.frame
        except Exception:  # noqa: BLE001 - sent before its frame was made: a popup's first
            self._refused_navigation = request.url
            return
        if frame.parent_frame is None and (
            frame.page is self._page or frame.page not in self._bound
        ):
            self._refused_navigation = request.url  # the tab's, or a new popup's


def _refused_by_proxy(request: Request, policy: UrlPolicy) -> bool:
    """Whether the context's refusing proxy stopped ``request``: a redirect's hop
    to a refused host, or a request that failed to connect to that proxy. The
    second is the same stop when Chromium ends the chain before reporting the hop
    (seen for ``fetch()`` through a redirect): then the request reported is the
    chain's last one on an allowed host, and only the failure tells (the allowed
    hosts bypass the proxy, so only a refused one meets it)."""
    if policy.allowed_hosts is None:
        return False
    if request.redirected_from is not None and not policy.host_allowed(request.url):
        return True
    return "ERR_PROXY_CONNECTION_FAILED" in (request.failure or "")


def _download_size(download: Download) -> int | None:
    """Bytes on disk so far (Playwright's artifact file), or None if unknown."""
    artifact = getattr(getattr(download, "_impl_obj", None), "_artifact", None)
    path = getattr(artifact, "_initializer", {}).get("absolutePath")
    try:
        return os.path.getsize(path) if path else None
    except OSError:
        return None
