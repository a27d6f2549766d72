"""Launching Chromium: which binary, which flags, one browser per env.

The binary is, in order: the ``executable_path`` argument, the
``BROWSER_ENV_CHROMIUM`` environment variable, Playwright's own Chromium when
``playwright install chromium`` has put one on disk, then the system Chromium
(``chromium``/``chromium-browser``/``google-chrome`` on ``PATH``). A headed
browser (``headless=False``, ``render_mode="human"``) needs a display: on
Linux with none, :func:`launch_browser` refuses it in one line
(:class:`NoDisplayError`) before Chromium fails to start.

Each env launches its own browser (or opens a context of a shared one,
:class:`browser_env.vector.SharedBrowser`). The Playwright *driver* is shared per
thread and reference-counted (:func:`acquire_playwright`): Playwright's sync
API runs one event loop per thread, so a second ``sync_playwright().start()``
in the same thread fails, which would rule out two envs in one process (e.g.
a ``SyncVectorEnv``). The driver stops when the last owner of that thread
closes. Both owners launch through :func:`launch_on_driver`, which takes (or
revives) the reference and gives it back if the launch fails.

Death and leftovers. Every browser is launched with a tag on its command line,
so :func:`launch_browser` knows its process id; Playwright starts Chromium as
the leader of its own process group, so :func:`kill_browser_processes` can
remove whatever is left of a browser (zygotes, renderers) after its main
process died. A driver that died (OOM killer, ``kill``) is replaced by
:func:`revive_playwright` for every env of the thread; the reference count
carries over.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

__all__ = [
    "BrowserConfig",
    "NoDisplayError",
    "acquire_playwright",
    "check_display",
    "current_playwright",
    "driver_alive",
    "driver_processes",
    "find_chromium",
    "kill_browser_processes",
    "launch",
    "launch_browser",
    "launch_on_driver",
    "process_group",
    "process_running",
    "release_playwright",
    "revive_playwright",
    "switches",
]

_LOCAL = threading.local()
# each driver's process (driver_alive): the driver object -> psutil.Process
_DRIVER_PROCESSES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

# Flags that keep a headless browser quiet on a closed network and fast to
# capture: frame-rate limits and vsync otherwise pace screenshots to frames.
# Without partial raster a changed tile is drawn whole: re-drawing only the
# changed part of a tile left anti-aliased corners one level off, so the same
# page looked different after a different history (check_env caught it on
# jQuery UI tabs, accordions, spinners); measured no slower. WebRTC may send
# UDP only through a proxy, which no context has (the URL policy's refusing
# proxy takes no UDP): its STUN and ICE datagrams go to any host, where neither
# request interception nor that proxy sees them, so a page could trade data
# with a host that allowed_hosts refuses; WebRTC over TCP goes through the proxy.
BASE_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-partial-raster",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--disable-smooth-scrolling",
    "--disable-frame-rate-limit",
    "--disable-gpu-vsync",
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
)

SYSTEM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@dataclasses.dataclass(frozen=True)
class BrowserConfig:
    """How to start the browser.

    Attributes:
        headless: no window. ``render_mode="human"`` turns this off.
        executable_path: a Chromium binary; ``None`` finds one (see module doc).
        slow_mo_ms: delay Playwright adds between operations (for watching).
        extra_args: appended to the launch flags.
    """

    headless: bool = True
    executable_path: str | None = None
    slow_mo_ms: float = 0.0
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_args", switches(self.extra_args))


class NoDisplayError(ValueError):
    """A browser window is wanted (``headless=False``) where there is no display
    to show it on: a ``ValueError``, as the setting cannot work here."""


#: Where an X server on this machine listens for display ``:N`` (``X<N>``).
X11_SOCKET_DIR = "/tmp/.X11-unix"


def check_display(
    headless: bool,
    *,
    wanted: str = "a headed browser (headless=False, render_mode='human') shows a window",
    fix: str = "set DISPLAY to a running X server, run under xvfb-run, or run headless",
) -> None:
    """Raise :class:`NoDisplayError` when a window is wanted (``headless``
    False) but, on Linux, there is no display to show it on: ``$DISPLAY`` and
    ``$WAYLAND_DISPLAY`` unset, or ``$DISPLAY`` a display of this machine
    (``:N``) where no X server listens and no Wayland socket is there either.
    Chromium would fail to start, and Playwright would report it as a closed
    target with a few kB of launch log. The message is ``wanted``, why there
    is no display, then ``fix``. A display on another host (``host:N``, e.g.
    SSH's forwarding) is not probed."""
    if headless or not sys.platform.startswith("linux"):
        return
    display, wayland = os.environ.get("DISPLAY"), os.environ.get("WAYLAND_DISPLAY")
    if not (display or wayland):
        why = "there is no display here ($DISPLAY and $WAYLAND_DISPLAY are unset)"
    elif _wayland_socket(wayland) or not _dead_local_display(display):
        return
    else:
        why = f"no X server listens on DISPLAY={display} (nothing at {_x_socket(display)})"
        if wayland:
            why += f" and WAYLAND_DISPLAY={wayland} names no socket"
    raise NoDisplayError(f"{wanted}, and {why}: {fix}")


def _x_socket(display: str) -> str | None:
    """The socket of a display of this machine (``:N``, ``:N.S``, ``unix:N``);
    ``None`` for any other form (another host, or one this does not know)."""
    host, sep, rest = display.rpartition(":")
    number = rest.split(".", 1)[0]
    if not sep or host not in ("", "unix") or not number.isdigit():
        return None
    return f"{X11_SOCKET_DIR}/X{int(number)}"


def _dead_local_display(display: str | None) -> bool:
    """``display`` is a display of this machine with nothing listening on its
    socket (a connect that is refused or finds no file)."""
    import socket

    path = _x_socket(display) if display else None
    if path is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            return True
        except OSError:  # e.g. a permission or timeout: do not guess, let Chromium try
            return False
    return False


def _wayland_socket(name: str | None) -> bool:
    """``$WAYLAND_DISPLAY`` names a socket that exists (a relative name is
    under ``$XDG_RUNTIME_DIR``)."""
    if not name:
        return False
    path = Path(os.environ.get("XDG_RUNTIME_DIR", "/nonexistent"), name)  # absolute wins
    return path.exists()


def switches(args: Sequence[str]) -> tuple[str, ...]:
    """``args`` as a tuple of Chromium switches; a lone string (which would
    split into characters) or a non-string is refused with a TypeError."""
    if isinstance(args, str) or not all(isinstance(a, str) for a in args):
        raise TypeError(
            f"extra_args is a sequence of Chromium switches, e.g. ('--lang=de',), got {args!r}"
        )
    return tuple(args)


def find_chromium(
    executable_path: str | None = None, playwright: Playwright | None = None
) -> str | None:
    """The Chromium binary to use, or ``None`` to let Playwright use its own."""
    explicit = executable_path or os.environ.get("BROWSER_ENV_CHROMIUM")
    if explicit:
        if not Path(explicit).exists():
            raise FileNotFoundError(f"Chromium not found at {explicit!r}")
        return explicit
    if playwright is not None:
        try:
            if Path(playwright.chromium.executable_path).exists():
                return None
        except Exception:  # noqa: BLE001 - a broken Playwright install just means "look elsewhere"
            pass
    for name in SYSTEM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(
        "No Chromium found. Install one with `python -m playwright install chromium`, "
        "or your system's package (Debian: `apt-get install chromium`), "
        "or point BROWSER_ENV_CHROMIUM at a binary."
    )


def launch(playwright: Playwright, config: BrowserConfig) -> Browser:
    """A new browser (see :func:`launch_browser` for one whose process id is known)."""
    return launch_browser(playwright, config)[0]


def launch_browser(playwright: Playwright, config: BrowserConfig) -> tuple[Browser, int | None]:
    """A new browser and the process id of its main process (``None`` if not found).

    The id is found through a tag on the command line (Chromium ignores unknown
    switches), so two browsers launched at once in one process are told apart.
    A headed browser with no display to show it on is refused first
    (:func:`check_display`).
    """
    check_display(config.headless)
    tag = f"--browser-env-id={uuid.uuid4().hex}"
    kwargs: dict[str, Any] = {
        "headless": config.headless,
        "args": [*BASE_ARGS, *config.extra_args, tag],
        "slow_mo": config.slow_mo_ms or None,
    }
    path = find_chromium(config.executable_path, playwright)
    if path is not None:
        kwargs["executable_path"] = path
    browser = playwright.chromium.launch(**kwargs)
    pid = _find_tagged_process(tag)
    if pid is not None and (leftover := _singleton_dir(pid)) is not None:
        _SINGLETON_DIRS[pid] = leftover
    return browser, pid


def launch_on_driver(
    playwright: Playwright | None, config: BrowserConfig
) -> tuple[Playwright, Browser, int | None]:
    """Launch a browser on this thread's Playwright driver, for an owner of one
    browser: ``playwright`` is the driver the caller holds a reference on
    (revived first if it died since, see :func:`revive_playwright`), or
    ``None`` to take a reference (:func:`acquire_playwright`). Returns the
    driver, the browser and its main process id (:func:`launch_browser`). If the
    launch (or the driver's revival) raises, the caller's reference (held or
    just taken) is released before the error propagates: the caller then holds
    none."""
    if playwright is None:
        acquire_playwright()  # raises holding nothing
    try:
        playwright = revive_playwright()
        browser, pid = launch_browser(playwright, config)
    except BaseException:
        release_playwright()
        raise
    return playwright, browser, pid


def _find_tagged_process(tag: str) -> int | None:
    import psutil

    for proc in psutil.Process().children(recursive=True):
        try:
            if tag in proc.cmdline():
                return proc.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return None


# main process id of a browser launched here -> the temp dir of its process-singleton socket
_SINGLETON_DIRS: dict[int, Path] = {}


def _singleton_dir(pid: int) -> Path | None:
    """The temp dir of Chromium's process-singleton socket for the browser whose
    main process is ``pid`` (``/tmp/org.chromium.Chromium.XXXXXX``, linked from
    the profile's ``SingletonSocket``), or None. Chromium removes it when it
    exits cleanly only: each killed browser left one behind."""
    import psutil

    try:
        args = psutil.Process(pid).cmdline()
    except psutil.Error:
        return None
    profile = next((a.split("=", 1)[1] for a in args if a.startswith("--user-data-dir=")), None)
    if profile is None:
        return None
    try:
        target = Path(os.readlink(Path(profile) / "SingletonSocket")).parent
    except OSError:
        return None
    return target if target.name.startswith("org.chromium.Chromium.") else None


def process_group(pgid: int) -> list[Any]:
    """The live (not zombie) processes of process group ``pgid`` (``psutil.Process``
    objects, their ``info`` holding ``name`` and ``status``): what is left of the
    browser whose main process was ``pgid``."""
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def process_running(process: Any) -> bool:
    """Whether ``process`` (a ``psutil.Process`` or a pid) still runs: it exists,
    is the same process (not a reused pid) and is not a zombie."""
    import psutil

    try:
        if not isinstance(process, psutil.Process):
            process = psutil.Process(process)
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_browser_processes(pid: int | None) -> int:
    """SIGKILL what is left of the browser whose main process was ``pid``: every
    live Chromium process of its process group. Returns how many were signalled.
    Once the main process is gone, the temp dir of its singleton socket (which
    only a clean exit removes) goes too, for a browser :func:`launch_browser`
    launched.

    Safe to call when they are all gone; a process group reused by something
    that is not Chromium is left alone.
    """
    if pid is None:
        return 0
    killed = 0
    for proc in process_group(pid):
        if "chrom" not in (proc.info["name"] or "").lower():
            continue
        try:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        except (ProcessLookupError, PermissionError):
            continue
    leftover = _SINGLETON_DIRS.get(pid)
    if leftover is not None and _exited(pid, within_s=1.0 if killed else 0.0):
        _SINGLETON_DIRS.pop(pid, None)
        shutil.rmtree(leftover, ignore_errors=True)
    return killed


def _exited(pid: int, within_s: float) -> bool:
    """Whether process ``pid`` is gone (or a zombie) within ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while process_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def acquire_playwright() -> Playwright:
    """This thread's Playwright driver, started on first use; pair with :func:`release_playwright`."""
    if getattr(_LOCAL, "count", 0) == 0:
        _LOCAL.driver = _start_driver()
        _LOCAL.count = 0
    _LOCAL.count += 1
    try:
        return revive_playwright()
    except BaseException:  # a failed acquire holds nothing
        release_playwright()
        raise


def current_playwright() -> Playwright | None:
    """This thread's Playwright driver if one was acquired here, else ``None``."""
    return getattr(_LOCAL, "driver", None) if getattr(_LOCAL, "count", 0) else None


def _start_driver() -> Playwright:
    """A new sync Playwright driver, its process noted for :func:`driver_alive`
    (the one ``run-driver`` child process its start added; none noted if that
    is unclear, e.g. another thread started one at the same time)."""
    import psutil
    from playwright.sync_api import sync_playwright

    me = psutil.Process()
    before = {p.pid for p in me.children()}
    driver = sync_playwright().start()
    added = []
    for proc in me.children():
        try:
            if proc.pid not in before and "run-driver" in proc.cmdline():
                added.append(proc)
        except psutil.Error:
            continue
    if len(added) == 1:
        _DRIVER_PROCESSES[driver] = added[0]
    return driver


def driver_processes() -> list[Any]:
    """This process's Playwright driver processes (``psutil.Process``: its
    ``node`` children), one per thread that started a driver; a child that
    exits while they are read is passed over."""
    import psutil

    found = []
    for proc in psutil.Process().children():
        try:
            if "node" in proc.name().lower():
                found.append(proc)
        except psutil.Error:  # it exited between the listing and this read
            continue
    return found


def driver_alive(playwright: Playwright | None) -> bool:
    """False once the connection to this Playwright driver has ended or its
    process has died (e.g. was killed); every call through it would fail.

    The process is checked too: the connection's end is noticed only when the
    driver's event loop next runs (Chromium holds the pipe open a little longer)."""
    if playwright is None:
        return False
    # The sync API's dispatcher greenlet runs until the driver's pipe closes.
    fiber = getattr(playwright, "_dispatcher_fiber", None)
    if fiber is not None and fiber.dead:
        return False
    process = _DRIVER_PROCESSES.get(playwright)
    return process is None or process_running(process)


def revive_playwright() -> Playwright:
    """This thread's driver, replaced by a fresh one if it died; the reference
    count is kept (each env that held the dead one holds the new one)."""
    if getattr(_LOCAL, "count", 0) == 0:
        raise RuntimeError("revive_playwright() needs a driver acquired in this thread")
    if not driver_alive(_LOCAL.driver):
        dead, _LOCAL.driver = _LOCAL.driver, None
        loop = getattr(dead, "_loop", None)
        if loop is not None and not loop.is_closed():
            loop.set_exception_handler(_quiet_about_the_dead_driver)
        try:
            dead.stop()
        except Exception:  # noqa: BLE001 - the pipe is already gone
            pass
        _LOCAL.driver = _start_driver()
    return _LOCAL.driver


def _quiet_about_the_dead_driver(loop: Any, context: dict[str, Any]) -> None:
    # Calls that were in flight when the driver died end with "Connection closed";
    # asyncio would log each one as a never-retrieved exception.
    if "Connection closed" not in str(context.get("exception", "")):
        loop.default_exception_handler(context)


def release_playwright() -> None:
    """Drop one reference; the last one stops the driver."""
    count = getattr(_LOCAL, "count", 0)
    if count <= 0:
        return
    _LOCAL.count = count - 1
    if _LOCAL.count == 0:
        driver, _LOCAL.driver = _LOCAL.driver, None
        if driver is not None:
            driver.stop()
