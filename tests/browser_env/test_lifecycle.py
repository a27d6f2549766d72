"""Browser lifecycle: reuse across resets, idempotent close, finding Chromium, two envs per thread."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest

from browser_env.browser import BrowserConfig, find_chromium
from browser_env.env import BrowserEnv

pytestmark = pytest.mark.browser


def test_browser_is_reused_across_resets_and_close_is_idempotent(site_url):
    env = BrowserEnv("open", modalities=("text",))
    env.reset(options={"url": site_url + "links.html"})
    browser = env._browser
    for _ in range(3):
        env.reset(options={"url": site_url + "form.html"})
    assert env._browser is browser and browser.is_connected()
    env.close()
    env.close()
    assert not browser.is_connected()
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()
    for after_close in (lambda: env.step({"action": "WAIT", "value": "0"}), lambda: env.page):
        with pytest.raises(RuntimeError, match="this env is closed"):
            after_close()


def test_context_manager_closes(site_url):
    with BrowserEnv("open", modalities=("text",)) as env:
        env.reset(options={"url": site_url + "links.html"})
        browser = env._browser
    assert not browser.is_connected()


def test_step_before_reset_is_a_clear_error():
    with BrowserEnv("open") as env, pytest.raises(RuntimeError, match="reset"):
        env.step({"action": "WAIT", "value": "0"})


def test_chromium_path_override(monkeypatch, tmp_path):
    monkeypatch.setenv("BROWSER_ENV_CHROMIUM", str(tmp_path / "no-such-chrome"))
    with pytest.raises(FileNotFoundError, match="no-such-chrome"):
        find_chromium()
    monkeypatch.delenv("BROWSER_ENV_CHROMIUM")
    assert find_chromium() is not None  # the system Chromium on this machine


def test_a_headed_browser_with_no_display_is_refused_in_one_line(monkeypatch):
    """``render_mode="human"`` on a Linux box with no display: Chromium failed
    to start and Playwright raised TargetClosedError with kBs of launch log."""
    from browser_env.browser import NoDisplayError, current_playwright

    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    env = gym.make("browser_env/open-v0", render_mode="human")
    with env, pytest.raises(NoDisplayError) as raised:
        env.reset()
    message = str(raised.value)
    assert "\n" not in message and len(message) < 300, message
    assert "no display here" in message and "xvfb-run" in message and "headless" in message
    assert current_playwright() is None  # the driver taken for the launch is given back


def test_a_display_of_this_machine_with_no_x_server_is_no_display(monkeypatch):
    """``DISPLAY=:N`` where no X server runs (e.g. a stale export after Xvfb
    exited) ended in TargetClosedError, as an unset DISPLAY did."""
    import socket
    import tempfile

    from browser_env import browser
    from browser_env.browser import NoDisplayError, check_display

    sockets = tempfile.mkdtemp(dir="/tmp")  # short: a unix socket's path has ~100 bytes
    monkeypatch.setattr(browser, "X11_SOCKET_DIR", sockets)
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":7.0")
    with pytest.raises(
        NoDisplayError, match=rf"no X server listens on DISPLAY=:7.0 \(nothing at {sockets}/X7\)"
    ):
        check_display(False)
    check_display(True)  # headless needs none
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(f"{sockets}/X7")
        server.listen()
        check_display(False)  # something listens: a display
    # the socket file is left with nothing listening: refused, as after a crash
    with pytest.raises(NoDisplayError, match="no X server listens"):
        check_display(False)
    wayland = tempfile.mkdtemp(dir="/tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", wayland)
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    with pytest.raises(NoDisplayError, match="and WAYLAND_DISPLAY=wayland-0 names no socket"):
        check_display(False)
    Path(wayland, "wayland-0").touch()
    check_display(False)  # a Wayland compositor's socket is there
    for elsewhere in ("otherhost:7", "localhost:10.0", "/private/tmp/launchd/org:0"):
        monkeypatch.setenv("DISPLAY", elsewhere)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        check_display(False)  # not a display of this machine: not probed


def test_bad_constructor_arguments_are_clear():
    with pytest.raises(ValueError, match="render_mode"):
        BrowserEnv("open", render_mode="video")
    with pytest.raises(ValueError, match="modalities"):
        BrowserEnv("open", modalities=("smell",))
    with pytest.raises(ValueError, match="unknown MiniWoB"):
        BrowserEnv("miniwob.no-such-task")
    with pytest.raises(ValueError, match="unknown task"):
        BrowserEnv("webshop")


def test_two_envs_in_one_thread_and_a_sync_vector_env():
    ids = ["browser_env/miniwob.click-test-v0"] * 2
    envs = gym.vector.SyncVectorEnv(
        [lambda i=i: gym.make(i, modalities=("elements", "text")) for i in ids]
    )
    try:
        obs, info = envs.reset(seed=[1, 2])
        assert len(obs["goal"]) == 2 and all(g == "Click the button." for g in obs["goal"])
        buttons = [els[0]["element_id"] for els in obs["elements"]]
        _, rewards, terminated, _, _ = envs.step(
            [{"action": "CLICK", "element_id": b} for b in buttons]
        )
        assert terminated.tolist() == [True, True] and (rewards > 0).all()
    finally:
        envs.close()


def test_open_task_rejects_bad_options(open_env, site_url):
    with pytest.raises(ValueError, match="unknown reset option"):
        open_env.reset(options={"url": site_url + "links.html", "colour": "red"})
    with pytest.raises(ValueError, match="http"):
        open_env.reset(options={"url": "javascript:alert(1)"})


def test_observe_without_acting_continues_ids(site_url):
    with BrowserEnv(
        "open", modalities=("elements", "text", "screenshot"), viewport=(640, 480)
    ) as env:
        obs, _ = env.reset(options={"url": site_url + "dynamic.html"})
        env.page.click("#add")  # driven by hand, outside env.step
        again = env.observe()
        old = {e["element_id"] for e in obs["elements"]}
        new = {e["element_id"] for e in again["elements"]} - old
        assert len(new) == 1 and "Item 1" in again["text"]
        assert env.screenshot().shape == (480, 640, 3) == again["screenshot"].shape


def test_a_crashed_page_is_replaced_and_the_episode_goes_on(open_env, site_url):
    env = open_env
    env.reset(options={"url": site_url + "links.html"})
    crashed = env.page
    try:
        crashed.goto("chrome://crash", timeout=5_000)  # kills the renderer
    except Exception:  # noqa: BLE001 - the navigation itself is aborted
        pass
    obs, reward, terminated, truncated, info = env.step({"action": "WAIT", "value": "0"})
    error = obs["last_action_error"]
    # the crash is seen by the observation, or (when its event came first) by the WAIT
    assert "crashed" in error, error
    assert "could not be observed" in error or error.startswith("browser error during WAIT")
    assert env.page is not crashed and (reward, terminated, truncated) == (0.0, False, False)
    obs, *_ = env.step({"action": "NAVIGATE", "value": site_url + "links.html"})
    assert obs["url"] == site_url + "links.html" and obs["elements"]


def test_a_failed_launch_leaves_no_driver_reference(tmp_path, site_url):
    """Both browser owners (an env, a SharedBrowser) release their thread's driver
    when Chromium fails to start, and launch once it can (on a thread of its own:
    this one's driver is held by other tests' fixtures)."""
    from concurrent.futures import ThreadPoolExecutor

    from browser_env.browser import current_playwright
    from browser_env.vector import SharedBrowser

    broken = tmp_path / "not-chrome"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)

    def body() -> None:
        assert current_playwright() is None
        env = BrowserEnv("open", modalities=("text",), executable_path=str(broken))
        with pytest.raises(Exception, match="not-chrome|exit|closed"):
            env.reset(options={"url": site_url + "links.html"})
        assert current_playwright() is None  # the driver it started is stopped again
        env.close()
        shared = SharedBrowser(BrowserConfig(executable_path=str(broken)))
        with pytest.raises(Exception, match="not-chrome|exit|closed"):
            shared()
        assert current_playwright() is None and shared.playwright is None
        shared.config = BrowserConfig()
        try:
            assert shared().is_connected() and current_playwright() is shared.playwright
        finally:
            shared.close()
        assert current_playwright() is None

    with ThreadPoolExecutor(1) as pool:
        pool.submit(body).result()


def test_process_running_is_false_for_exited_zombie_and_unknown_processes():
    """``process_running`` answers instead of raising when a process goes away
    while it is looked at: the process-gone checks of the tests and of
    ``kill_browser_processes`` rely on that."""
    import subprocess
    import sys
    import time

    import psutil

    from browser_env.browser import process_running

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    handle = psutil.Process(child.pid)
    try:
        assert process_running(child.pid) and process_running(handle)
        child.kill()
        deadline = time.monotonic() + 10
        while handle.status() != psutil.STATUS_ZOMBIE:  # exited, not yet reaped
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not process_running(child.pid) and not process_running(handle)
    finally:
        child.kill()
        child.wait()
    # reaped: the pid is gone (psutil raises NoSuchProcess for it)
    assert not process_running(handle) and not process_running(child.pid)


def _singleton_dir(pid: int) -> Path:
    """Where Chromium put its singleton socket: a temp dir linked from the profile."""
    import os

    import psutil

    [profile] = [a.split("=", 1)[1] for a in psutil.Process(pid).cmdline() if "user-data-dir" in a]
    target = Path(os.readlink(Path(profile) / "SingletonSocket")).parent
    assert target.is_dir() and target.name.startswith("org.chromium.Chromium."), target
    return target


def test_a_killed_browser_leaves_no_temp_dir_behind(site_url):
    """Chromium removes its singleton socket's temp dir on a clean exit only:
    each killed browser (the watchdog's kill, a crash, a test's) left one in
    /tmp. The env removes it once it has dropped the dead browser; a shared
    browser's owner does the same when it closes; a clean close leaves none."""
    import os
    import signal

    from browser_env.vector import SharedBrowser

    env = BrowserEnv("open", modalities=("text",))
    try:
        env.reset(options={"url": site_url + "links.html"})
        killed = _singleton_dir(env._browser_pid)
        os.kill(env._browser_pid, signal.SIGKILL)
        env.reset(options={"url": site_url + "links.html"})  # a new browser
        assert not killed.exists()
        closed = _singleton_dir(env._browser_pid)
    finally:
        env.close()
    assert not closed.exists()

    shared = SharedBrowser()
    try:
        shared()
        dir_of_shared = _singleton_dir(shared._pid)
        os.kill(shared._pid, signal.SIGKILL)
    finally:
        shared.close()
    assert not dir_of_shared.exists()
