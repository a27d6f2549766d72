"""A deadline for everything the env asks of a page in one step or reset.

Why our own code: Playwright bounds navigations and locator waits, but not
``page.evaluate``, ``page.mouse`` or ``page.keyboard``; on a page whose script
never yields (``while (true) {}``) those calls wait forever, and the sync API
blocks the calling thread while they do. The sync API runs Playwright's event
loop inside every call it blocks in, so a timer put on that loop fires during
the blocked call, in the same thread, without signals (which only reach the
main thread) and without touching Playwright from a second thread.

At the deadline the watchdog asks Chromium to stop the page's running script
(``Runtime.terminateExecution``, which interrupts even an endless loop); the
blocked call then completes and the page lives on. If the call is still
blocked ``grace_ms`` later, it closes the page: the call fails with a
"target closed" error that the env turns into a fresh page. Either way the
env reports what happened in ``last_action_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import CDPSession, Page

__all__ = ["Watchdog"]


class Watchdog:
    """Arms a deadline around a block of sync Playwright calls on one page.

    ``fired`` says what the last armed block needed: ``None`` (nothing),
    ``"stopped"`` (the page's script was terminated) or ``"closed"`` (the page
    was closed because it still did not answer).
    """

    def __init__(self, grace_ms: float = 2_000) -> None:
        self.grace_ms = grace_ms
        self.fired: str | None = None
        self.limit_ms: float = 0.0

    @contextlib.contextmanager
    def armed(
        self,
        page: Page | None,
        target: Callable[[], tuple[Page | None, CDPSession | None]],
        limit_ms: float,
    ) -> Iterator[Watchdog]:
        """Within the block, the page that ``target()`` names when the deadline comes
        (the env's current page: a popup or a replacement counts) is stopped if the
        block takes longer than ``limit_ms``, and closed ``grace_ms`` after that.
        ``page`` only lends its event loop; ``limit_ms <= 0`` disarms."""
        self.fired = None
        self.limit_ms = limit_ms
        loop = getattr(page, "_loop", None)
        if loop is None or limit_ms <= 0 or loop.is_closed():
            yield self
            return
        handles: list[asyncio.Handle] = []

        def close_page() -> None:
            current, _ = target()
            if current is not None:
                self.fired = "closed"
                _spawn(current._impl_obj.close(False, "the page did not respond"))  # type: ignore[attr-defined]

        def stop_script() -> None:
            self.fired = "stopped"
            _, cdp = target()
            if cdp is not None:
                _spawn(cdp._impl_obj.send("Runtime.terminateExecution", None, None))  # type: ignore[attr-defined]
            handles.append(loop.call_later(self.grace_ms / 1e3, close_page))

        handles.append(loop.call_later(limit_ms / 1e3, stop_script))
        try:
            yield self
        finally:
            for handle in handles:
                handle.cancel()

    @staticmethod
    def probe(page: Page) -> None:
        """Ask a page whose script was stopped to run its timers once more (50 ms),
        inside the armed block. A page whose timers start the endless script again
        (``setInterval``) blocks this call until the grace runs out and the page is
        closed; without it, whether such a page was closed would depend on whether
        the block's last call landed in the gap after the stop. A healthy page
        answers in ~50 ms."""
        try:
            page.evaluate("() => new Promise((done) => setTimeout(done, 50))")
        except Exception:  # noqa: BLE001 - closed here: the caller sees ``fired``
            pass


def _spawn(coro: Any) -> None:
    """Run ``coro`` on the running loop; its failure (the page is already gone) is not ours."""
    task = asyncio.ensure_future(coro)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
