"""Launching Chromium: which binary, which flags, one browser per env.

The binary is, in order: the ``executable_path`` argument, the
``BROWSER_ENV_CHROMIUM`` environment variable, Playwright's own Chromium when
``playwright install chromium`` has put one on disk, then the system Chromium
(``chromium``/``chromium-browser``/``google-chrome`` on ``PATH``).

Each env launches its own browser. The Playwright *driver* is shared per
thread and reference-counted (:func:`acquire_playwright`): Playwright's sync
API runs one event loop per thread, so a second ``sync_playwright().start()``
in the same thread fails, which would rule out two envs in one process (e.g.
a ``SyncVectorEnv``). The driver stops when the last env of that thread closes.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

__all__ = ["BrowserConfig", "acquire_playwright", "find_chromium", "launch", "release_playwright"]

_LOCAL = threading.local()

# Flags that keep a headless browser quiet on a closed network and fast to
# capture: frame-rate limits and vsync otherwise pace screenshots to frames.
BASE_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
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
    kwargs: dict[str, Any] = {
        "headless": config.headless,
        "args": [*BASE_ARGS, *config.extra_args],
        "slow_mo": config.slow_mo_ms or None,
    }
    path = find_chromium(config.executable_path, playwright)
    if path is not None:
        kwargs["executable_path"] = path
    return playwright.chromium.launch(**kwargs)


def acquire_playwright() -> Playwright:
    """This thread's Playwright driver, started on first use; pair with :func:`release_playwright`."""
    if getattr(_LOCAL, "count", 0) == 0:
        from playwright.sync_api import sync_playwright

        _LOCAL.driver = sync_playwright().start()
        _LOCAL.count = 0
    _LOCAL.count += 1
    return _LOCAL.driver


def release_playwright() -> None:
    """Drop one reference; the last one stops the driver."""
    count = getattr(_LOCAL, "count", 0)
    if count <= 0:
        return
    _LOCAL.count = count - 1
    if _LOCAL.count == 0:
        driver, _LOCAL.driver = _LOCAL.driver, None
        driver.stop()
