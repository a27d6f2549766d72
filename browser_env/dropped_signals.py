"""A signal's exception that Python dropped, raised again in the main thread.

A signal handler runs in the main thread between bytecodes, and so possibly
inside a ``__del__`` or a weakref callback. An exception it raises there is
dropped: Python reports it to ``sys.unraisablehook`` ("Exception ignored
in ...") and goes on, so a Ctrl-C or a ``ray job stop`` would be lost.
:func:`raising_dropped` watches the hook for that exception and sends the
signal again (``_thread.interrupt_main``) from a timer, so the handler runs
once the main thread has left the hook, whose own exceptions Python drops
too. The report is not printed.

Used by :func:`browser_env.refusal.exit_on_interrupt` (SIGINT, a command's
Ctrl-C) and :func:`serve.job_entry.stop_on_sigterm` (SIGTERM, a training job
stopped).
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Resend", "raising_dropped"]

#: how long the timer waits before sending the signal again
RESEND_AFTER_S = 0.01


class Resend:
    """The timer that will send a dropped exception's signal again, if one is set."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self._timer: threading.Timer | None = None

    def schedule(self) -> None:
        self.cancel()
        self._timer = threading.Timer(RESEND_AFTER_S, _thread.interrupt_main, (self.signum,))
        self._timer.start()

    def cancel(self) -> None:
        """Send nothing (a real signal came first, or the block is unwinding)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@contextlib.contextmanager
def raising_dropped(
    kind: type[BaseException],
    signum: int,
    handler: Callable[[int, Any], Any],
    *,
    ours: Callable[[], bool],
    on_drop: Callable[[], None] | None = None,
    then: Any = None,
) -> Iterator[Resend]:
    """While the block runs, ``handler`` handles ``signum`` (main thread only),
    and a dropped ``kind`` (e.g. ``KeyboardInterrupt``) is raised again by
    sending ``signum`` to the main thread, when ``ours()`` says ``handler``
    raised it (else the report goes to the hook before, as for any other
    dropped exception). ``on_drop`` runs in the hook first (e.g. to note that
    the exception is no longer on its way up). A real ``signum`` before the
    resend takes its place: the resend is cancelled. Yields the
    :class:`Resend`, for the caller to cancel where the signal must not come
    again (the block is unwinding). On exit a pending resend is cancelled
    before the handler goes (it would reach the one after), then the handler
    before comes back (or ``then``, e.g. ``signal.SIG_IGN``), then the hook."""
    resend = Resend(signum)
    previous_hook = sys.unraisablehook

    def on_unraisable(unraisable: Any) -> None:
        if not (isinstance(unraisable.exc_value, kind) and ours()):
            previous_hook(unraisable)
            return
        if on_drop is not None:
            on_drop()
        resend.schedule()

    def on_signal(number: int, frame: Any) -> Any:
        resend.cancel()  # a real signal (or the resend itself): handled once
        return handler(number, frame)

    sys.unraisablehook = on_unraisable
    previous = signal.signal(signum, on_signal)
    try:
        yield resend
    finally:
        resend.cancel()
        signal.signal(signum, previous if then is None else then)
        sys.unraisablehook = previous_hook
