"""Several envs' sync Playwright calls in flight at once, on one thread.

::

    results = run_concurrently([lambda: env.step(a) for env, a in zip(envs, actions)])

Playwright's sync API is bound to the thread that started its driver: every
call creates a task on that thread's event loop and switches (greenlet) to the
dispatcher fiber, which runs the loop until the task is done. Event handlers
already run this way, each in a greenlet of its own, blocking in sync calls
while the loop goes on. :func:`run_concurrently` does the same for ordinary
code: each callable runs in its own greenlet on the caller's thread; when one
blocks in a Playwright call, the next one runs, so the envs' round trips to
the browser overlap instead of queueing one after another. Each callable's own
calls still run in its order, so an env's results are those it would have had
alone (the sub-envs of :class:`~browser_env.vector.SharedBrowserVectorEnv`
are separate envs that share nothing but the browser).

Why this and not Playwright's async API, or threads: the envs stay the one
sync :class:`~browser_env.env.BrowserEnv` (no second, async implementation to
keep identical), and one driver serves all of them (a thread per env would need
a driver per thread). Measured with ``python -m benchmarks.rollout_speed`` on
2 cores, eight sub-envs of one browser stepped this way use less CPU per step
than one env (wake-ups, pipe reads and event-loop turns are shared by the calls
that are in flight together) and keep both cores busy, where stepping them one
after another used as much CPU per step as one env and left a core idle.

One call's work that the others need too (e.g. launching the browser they
share) is done once: the call that starts it opens a :class:`Latch` when it
is done, and a call that needs it meanwhile waits on the latch, its greenlet
parked on the event loop while the others go on.

It reads two attributes that Playwright's sync objects carry (``_loop`` and
``_dispatcher_fiber``, the ones its own event handlers use); if a Playwright
release drops them, the calls run one after another, with the same results.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["Latch", "run_concurrently"]

T = TypeVar("T")


def run_concurrently(calls: Sequence[Callable[[], T]], playwright: Any = None) -> list[T]:
    """Run ``calls`` with their Playwright calls interleaved; their results in order.

    ``playwright`` is the sync Playwright (or any sync API object) whose driver
    the calls use; default: this thread's driver from
    :func:`browser_env.browser.acquire_playwright`. Every call runs to the end
    even when another raises; then the first exception (in the order of
    ``calls``) is raised. With fewer than two calls, or no driver on this
    thread, the calls run one after another.
    """
    calls = list(calls)
    hooks = _hooks(playwright)
    if len(calls) < 2 or hooks is None:
        return [call() for call in calls]
    import greenlet

    loop, fiber = hooks
    outcomes: list[tuple[bool, Any]] = [(False, None)] * len(calls)
    started: list[Any] = []  # the calls' greenlets

    async def gather() -> None:
        futures = []
        for i, call in enumerate(calls):
            done = loop.create_future()

            def body(i: int = i, call: Callable[[], T] = call, done: Any = done) -> None:
                try:
                    outcomes[i] = (True, call())
                except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                    outcomes[i] = (False, exc)
                if not done.done():  # (cancelled when the wait below was interrupted)
                    done.set_result(None)

            # Runs until its first blocking Playwright call, then comes back here.
            started.append(greenlet.greenlet(body))
            started[-1].switch()
            futures.append(done)
        await asyncio.gather(*futures)

    from playwright._impl._greenlets import wait_for_future

    task = loop.create_task(gather())
    try:
        wait_for_future(loop, fiber, task)
    except BaseException as exc:
        _interrupt(started, exc)
        raise
    task.result()
    results = []
    for ok, value in outcomes:
        if not ok:
            raise value
        results.append(value)
    return results


def _interrupt(started: Sequence[Any], exc: BaseException) -> None:
    """Raise ``exc`` (a copy) in every call still parked in a Playwright call, and
    let each unwind to its end here, as the one call in flight would unwind
    when run alone. Left parked, a call would resume whenever the driver
    next answers it, in the middle of whatever the caller does next (say,
    closing the env that call was resetting, which it would then go on using)."""
    import copy

    import greenlet

    here = greenlet.getcurrent()
    for parked in started:
        if parked.dead:
            continue
        try:
            thrown = copy.copy(exc)
        except Exception:  # noqa: BLE001 - an exception that cannot be rebuilt
            thrown = greenlet.GreenletExit()
        parked.parent = here  # its end comes back here, not to the dispatcher fiber
        try:
            parked.throw(thrown)
        except BaseException:  # noqa: BLE001 - e.g. a second Ctrl+C: the first one is raised
            return


class Latch:
    """A one-shot gate for the calls of :func:`run_concurrently`: :meth:`wait`
    parks the calling greenlet on the event loop of ``playwright``'s driver
    (default: this thread's), so the other calls run on, until :meth:`open`;
    once open, :meth:`wait` returns at once. Use it on that driver's thread."""

    def __init__(self, playwright: Any = None) -> None:
        self._hooks = _hooks(playwright)
        self._waiters: list[asyncio.Future[None]] = []
        self.is_open = False

    def open(self) -> None:
        """Let every waiting call go on; safe twice."""
        self.is_open = True
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():  # (one whose wait was interrupted is cancelled)
                future.set_result(None)

    def wait(self) -> None:
        """Return once the latch is open.

        Raises:
            RuntimeError: it is closed and there is no driver's event loop to
                wait on (then no concurrent call can be the one to open it).
        """
        if self.is_open:
            return
        if self._hooks is None:
            raise RuntimeError("a Latch waits on a Playwright driver's event loop: it has none")
        from playwright._impl._greenlets import wait_for_future

        loop, fiber = self._hooks
        future = loop.create_future()  # one per wait: an interrupted wait cancels only its own
        self._waiters.append(future)
        wait_for_future(loop, fiber, future)


def _hooks(playwright: Any) -> tuple[asyncio.AbstractEventLoop, Any] | None:
    """The event loop and dispatcher fiber of the driver, or None (run sequentially)."""
    if playwright is None:
        from browser_env.browser import current_playwright

        playwright = current_playwright()
    loop = getattr(playwright, "_loop", None)
    fiber = getattr(playwright, "_dispatcher_fiber", None)
    if loop is None or fiber is None or fiber.dead or loop.is_closed():
        return None
    try:
        from playwright._impl._greenlets import wait_for_future  # noqa: F401
    except ImportError:
        return None
    return loop, fiber
