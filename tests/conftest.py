"""Shared fixtures. Tests run offline: no model hub, no wandb server, no Ray telemetry."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def site_url() -> str:
    """Base URL (ending in /) of tests/fixtures/site served on 127.0.0.1."""
    from browser_env.tasks.server import serve_directory

    return serve_directory(FIXTURES / "site")


@pytest.fixture(scope="module")
def open_env():
    """One text+elements open-v0 env per test module (the browser is reused across resets)."""
    from browser_env.env import BrowserEnv

    env = BrowserEnv("open", modalities=("elements", "text"), viewport=(800, 600))
    yield env
    env.close()


@pytest.fixture(scope="session", autouse=True)
def virtual_display():
    """A headed browser (render_mode="human", check_env's render check, the demo
    recorder) needs an X display: start Xvfb when there is none."""
    import shutil
    import subprocess
    import time

    if os.environ.get("DISPLAY") or not shutil.which("Xvfb"):
        yield os.environ.get("DISPLAY")
        return
    display = f":{90 + os.getpid() % 500}"
    proc = subprocess.Popen(
        ["Xvfb", display, "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    os.environ["DISPLAY"] = display
    yield display
    proc.terminate()
    proc.wait(timeout=10)
    os.environ.pop("DISPLAY", None)
