"""The env survives what a long rollout meets: a killed browser or driver, pages
that never answer or never load, oversized actions, URLs it must not load."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import os
import socket
import threading
import time

import psutil
import pytest

from browser_env.browser import driver_alive, driver_processes, process_group
from browser_env.env import BrowserEnv
from browser_env.episodes.format import observation_to_json
from browser_env.policy import UrlPolicy

pytestmark = pytest.mark.browser

FAST = {"step_timeout_ms": 3_000, "navigation_timeout_ms": 2_000, "popup_timeout_ms": 2_000}


def chromium_of(pid):
    """The live (non-zombie) processes of the browser whose main process is ``pid``."""
    return [proc.pid for proc in process_group(pid)]


@pytest.fixture(scope="module")
def env():
    env = BrowserEnv("open", modalities=("elements", "text"), executor=FAST)
    yield env
    env.close()


@contextlib.contextmanager
def configured(env, policy=None, **executor):
    """The module's env with other limits for one test (a policy applies from the next reset)."""
    saved = env.executor_config, env.url_policy
    env.executor_config = dataclasses.replace(env.executor_config, **executor)
    env.url_policy = policy or env.url_policy
    try:
        yield env
    finally:
        env.executor_config, env.url_policy = saved


def start(env, url):
    obs, _ = env.reset(options={"url": url, "goal": "test"})
    return obs


def box(obs):
    return next(e["element_id"] for e in obs["elements"] if e["placeholder"] == "type here")


def by_text(obs, text):
    return next(e["element_id"] for e in obs["elements"] if e["text"] == text)


@pytest.mark.parametrize("victim", ["browser", "driver"])
def test_a_killed_browser_or_driver_truncates_the_episode_and_reset_recovers(env, site_url, victim):
    start(env, site_url + "links.html")
    old_pid = env._browser_pid
    assert old_pid is not None and chromium_of(old_pid)
    if victim == "browser":  # what the OOM killer does
        browser = psutil.Process(old_pid)
        browser.kill()
        browser.wait(10)
    else:
        [driver, *_] = driver_processes()
        driver.kill()
        driver.wait(10)
    obs, reward, terminated, truncated, info = env.step({"action": "WAIT", "value": "0"})
    assert (reward, terminated, truncated) == (0.0, False, True)
    assert (
        f"the {'Playwright driver' if victim == 'driver' else 'browser'} died"
        in (info["truncated_reason"])
    )
    assert obs["last_action_error"] == info["truncated_reason"] and obs["elements"] == ()
    assert env.observation_space.contains(obs)
    # Another step of the dead episode says the same; it does not raise.
    assert env.step({"action": "CLICK", "element_id": "e1"})[3] is True
    obs = start(env, site_url + "links.html")
    assert "Go to result" in obs["text"] and env._browser_pid != old_pid
    assert driver_alive(env._playwright)
    deadline = time.monotonic() + 10
    while chromium_of(old_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert chromium_of(old_pid) == []


def test_close_after_a_crash_is_safe_and_leaves_no_chromium(site_url):
    env = BrowserEnv("open", modalities=("text",))
    start(env, site_url + "links.html")
    pid = env._browser_pid
    psutil.Process(pid).kill()
    env.close()
    env.close()
    deadline = time.monotonic() + 10
    while chromium_of(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert chromium_of(pid) == []


def test_a_goal_longer_than_the_space_allows_is_cut_to_fit(env, site_url):
    """The observation space bounds ``goal`` as every string field (1 MiB); a
    longer goal is cut as a long ``url`` or field value is, and every
    observation stays in the space."""
    from browser_env.observation import MAX_FIELD_CHARS

    goal = "g" * (MAX_FIELD_CHARS + 5)
    obs, _ = env.reset(options={"url": site_url + "links.html", "goal": goal})
    assert env.observation_space.contains(obs)
    assert len(obs["goal"]) == MAX_FIELD_CHARS and obs["goal"].startswith("ggg")
    obs = env.step({"action": "WAIT", "value": "0"})[0]
    assert env.observation_space.contains(obs)


@pytest.mark.parametrize(
    ("control", "fate"),
    [("Spin forever", "script was stopped"), ("Spin again and again", "episode is truncated")],
)
def test_a_page_that_never_yields_is_stopped_within_the_step_bound(env, site_url, control, fate):
    obs = start(env, site_url + "spin.html")
    t0 = time.monotonic()
    with configured(env, step_timeout_ms=1_500, navigation_timeout_ms=1_000):
        obs, reward, terminated, truncated, info = env.step(
            {"action": "CLICK", "element_id": by_text(obs, control)}
        )
    elapsed = time.monotonic() - t0
    assert "did not respond within 1.5 s" in obs["last_action_error"]
    assert fate in obs["last_action_error"]
    # A stopped script leaves the page usable; a page that had to be closed ends the episode.
    assert (terminated, truncated) == (False, fate == "episode is truncated")
    # Bounded: the limit and 2 s of grace; generous for a loaded machine.
    assert elapsed < 1.5 + 2 + 20
    if not truncated:
        obs, *_ = env.step({"action": "TYPE", "element_id": box(obs), "value": "ok"})
        assert obs["last_action_error"] == "" and env.page.input_value("#box") == "ok"
    obs = start(env, site_url + "links.html")
    assert "Go to result" in obs["text"]


@pytest.mark.exhaustive  # ~10 s of clocks; the watchdog on a spinning page: the step-bound test
def test_a_page_that_spins_again_and_again_from_the_start_fails_reset(env, site_url):
    # The watchdog stops the script during reset; the timers spin again, so the
    # page is closed (and, on the retry, the fresh page too). Reset says so, rather
    # than passing on Playwright's error from a read of the closed page.
    closed = "did not respond within 1.5 s and was closed"
    with (
        configured(env, step_timeout_ms=1_000, navigation_timeout_ms=500),
        pytest.raises(RuntimeError, match=closed),
    ):
        start(env, site_url + "spin.html#respin")
    obs = start(env, site_url + "links.html")
    assert "Go to result" in obs["text"]


@pytest.fixture(scope="module")
def stalling_server():
    """http://127.0.0.1:<port>/: sends headers and a first chunk, then never finishes."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        held = []
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n"
                b"<html><body><p>loading forever"
            )
            held.append(conn)
        for conn in held:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/"
    stop.set()
    thread.join(5)
    server.close()


def test_navigate_to_a_page_that_never_finishes_loading_is_bounded(env, site_url, stalling_server):
    start(env, site_url + "links.html")
    t0 = time.monotonic()
    obs, *_ = env.step({"action": "NAVIGATE", "value": stalling_server})
    assert time.monotonic() - t0 < 2 + 3 + 2 + 20
    assert "NAVIGATE to" in obs["last_action_error"] and "Timeout" in obs["last_action_error"]
    obs, *_ = env.step({"action": "NAVIGATE", "value": site_url + "links.html"})
    assert obs["last_action_error"] == "" and "Go to result" in obs["text"]


def test_type_over_the_cap_is_an_error_and_types_nothing(env, site_url):
    with configured(env, max_type_chars=20):
        obs = start(env, site_url + "form.html")
        name = next(e["element_id"] for e in obs["elements"] if e["placeholder"] == "Your name")
        obs, *_ = env.step({"action": "TYPE", "element_id": name, "value": "x" * 21})
        assert "21 characters; the limit is 20" in obs["last_action_error"]
        assert env.page.input_value("#name") == ""
        obs, *_ = env.step({"action": "TYPE", "element_id": name, "value": "y" * 20})
        assert obs["last_action_error"] == "" and env.page.input_value("#name") == "y" * 20


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "chrome://version", "javascript:alert(1)", "data:text/html,hi"]
)
def test_local_and_script_urls_are_refused_at_reset_and_navigate(env, site_url, url):
    with pytest.raises(ValueError, match="not allowed"):
        env.reset(options={"url": url, "goal": "read it"})
    start(env, site_url + "links.html")
    obs, *_ = env.step({"action": "NAVIGATE", "value": url})
    assert "refused" in obs["last_action_error"] and "not allowed" in obs["last_action_error"]
    assert obs["url"] == site_url + "links.html"


def test_file_urls_load_when_explicitly_allowed(env, tmp_path):
    page = tmp_path / "local.html"
    page.write_text("<p>local page</p>")
    with configured(env, UrlPolicy(allowed_url_schemes=("http", "file"))):
        obs, _ = env.reset(options={"url": page.as_uri()})
        assert "local page" in obs["text"]


def test_host_allowlist_blocks_requests_to_other_hosts(env, site_url):
    with configured(env, UrlPolicy(allowed_hosts=("127.0.0.1",))):
        start(env, site_url + "links.html")
        obs, _, _, _, info = env.step({"action": "NAVIGATE", "value": "http://localhost:9/x"})
        assert "not in allowed_hosts" in obs["last_action_error"]
        # A request the page makes by itself is aborted by interception.
        status = env.page.evaluate(
            "() => fetch('http://localhost:9/data').then(() => 'ok', () => 'blocked')"
        )
        assert status == "blocked"
        # heard between steps (while the caller used the page): the next step's
        _, _, _, _, info = env.step({"action": "WAIT", "value": 0})
        assert info["blocked_requests"] == ["http://localhost:9/data"]
        _, _, _, _, info = env.step({"action": "WAIT", "value": 0})
        assert "blocked_requests" not in info  # and that step's alone


def test_downloads_over_the_cap_are_cancelled(env, site_url):
    with configured(env, UrlPolicy(max_download_bytes=5)):
        obs = start(env, site_url + "links.html")
        link = next(e["element_id"] for e in obs["elements"] if e["text"] == "Download data")
        obs, _, _, _, info = env.step({"action": "CLICK", "element_id": link})
        for _ in range(20):  # the file lands asynchronously
            if any("cancelled" in d for d in info.get("downloads", [])):
                break
            obs, _, _, _, info = env.step({"action": "WAIT", "value": "100"})
        assert any("too large" in d.get("cancelled", "") for d in info["downloads"])
        assert env.downloads == []


@pytest.fixture
def busy_cores():
    """Every core kept busy by a spinning process, as when rollouts share a machine."""
    import subprocess
    import sys

    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    yield
    for proc in spinners:
        proc.kill()
        proc.wait()


def test_popups_and_navigations_are_waited_for_under_load(env, site_url, busy_cores):
    # No WAIT step to catch up: the step that caused the new page observes it.
    # Generous limits, not FAST's: on a machine this busy a page may take seconds
    # to arrive, and each wait ends as soon as it has.
    generous = {"popup_timeout_ms": 15_000, "navigation_timeout_ms": 15_000}
    with configured(env, **generous, step_timeout_ms=30_000):
        for control, landed in [
            ("Open in new tab", "from=popup"),
            ("window.open", "from=window-open"),
            ("Go to result", "from=links"),
        ]:
            obs = start(env, site_url + "links.html")
            obs, _, _, _, info = env.step({"action": "CLICK", "element_id": by_text(obs, control)})
            assert landed in obs["url"] and "Got: " + landed in obs["text"], (control, obs["url"])
            assert len(info.get("popups", [])) == (control != "Go to result")


@pytest.fixture()
def streamed_page():
    """http://127.0.0.1:<port>/start links to /next, which arrives in two parts
    half a second apart: button A, then a script putting button B before it,
    then button C."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            if self.path.startswith("/start"):
                self.wfile.write(b"<!DOCTYPE html><body><a href='/next'>Next</a></body>")
                return
            self.wfile.write(b"<!DOCTYPE html><body><button>A</button>" + b" " * 4096)
            self.wfile.flush()
            time.sleep(0.5)
            self.wfile.write(
                b"<script>document.body.prepend(Object.assign("
                b"document.createElement('button'), {textContent: 'B'}))</script>"
                b"<button>C</button></body>"
            )

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_a_document_still_loading_after_a_click_is_not_given_ids_early(env, streamed_page):
    # The click's navigation commits before the document has loaded; ids go to the
    # loaded document in its order, never to the part that had arrived (A first).
    obs = start(env, streamed_page + "start")
    obs, *_ = env.step({"action": "CLICK", "element_id": by_text(obs, "Next")})
    assert [(e["element_id"], e["text"]) for e in obs["elements"]] == [
        ("e2", "B"),
        ("e3", "A"),
        ("e4", "C"),
    ]


def test_a_window_arriving_while_the_task_validates_is_what_the_step_shows(env, site_url):
    # The step's read comes before a validate that talks to the page (as a site
    # task's does); the window a timer opened after the click arrives meanwhile.
    # The observation must be of the page the env acts on next.
    original = env.task.validate

    def talkative(page, answer):
        page.evaluate("1")
        deadline = time.monotonic() + 10
        while len(page.context.pages) < 2 and time.monotonic() < deadline:
            page.wait_for_timeout(50)  # until the timer's window has arrived
        return original(page, answer)

    env.task.validate = talkative
    try:
        obs = start(env, site_url + "timer_open.html")
        obs, _, _, _, info = env.step({"action": "CLICK", "element_id": by_text(obs, "Open later")})
    finally:
        del env.task.validate
    assert "from=timer" in env.page.url
    assert obs["url"] == env.page.url and "Got: from=timer" in obs["text"]
    assert len(info["popups"]) == 1


def test_a_click_to_a_blocked_host_does_not_wait_for_the_navigation(env, site_url):
    with configured(env, UrlPolicy(allowed_hosts=("127.0.0.1",)), popup_timeout_ms=30_000):
        obs = start(env, site_url + "links.html")
        env.page.evaluate(
            "() => { const a = document.querySelector('#to-result');"
            " a.href = 'http://localhost:9/elsewhere'; }"
        )
        obs, _, _, _, info = env.step(
            {"action": "CLICK", "element_id": by_text(obs, "Go to result")}
        )
        assert info["blocked_requests"] == ["http://localhost:9/elsewhere"]
        assert info["timings"]["action"] < 30_000  # the failed request ended the wait


PAGES = {
    "/secret": b"<p>secret</p>",
    "/popup": b"<button onclick=\"window.open('/redirect')\">open</button>",
    "/image": b"<p>an image through the redirect</p><img src='/redirect'>",
    "/fetch": b"""<button onclick="fetch('/redirect').then(r => r.text()).then(
        t => { out.textContent = 'read: ' + t; }, e => { out.textContent = 'failed: ' + e; })"
        >fetch</button><p id="out"></p>""",
}


@pytest.fixture(scope="module")
def redirecting_server():
    """http://127.0.0.1:<port>/: ``/redirect`` answers 302 to ``localhost`` on the same
    port, whose ``/secret`` page must not load under a 127.0.0.1-only policy."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{port}/secret")
                self.end_headers()
                return
            body = PAGES.get(self.path, b"<a href='/redirect'>go</a>")
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header(
                "Access-Control-Allow-Origin", "*"
            )  # a page may read it if it can reach it
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("how", ["NAVIGATE", "CLICK"])
def test_a_redirect_to_a_refused_host_is_not_loaded(env, redirecting_server, how):
    # Request interception never sees a redirect's target; the step must still
    # refuse the page it lands on.
    with configured(env, UrlPolicy(allowed_hosts=("127.0.0.1",))):
        obs = start(env, redirecting_server)
        if how == "NAVIGATE":
            action = {"action": "NAVIGATE", "value": redirecting_server + "redirect"}
        else:
            action = {"action": "CLICK", "element_id": by_text(obs, "go")}
        obs, *_ = env.step(action)
        assert "secret" not in obs["text"]
        assert obs["url"] == redirecting_server
        assert "localhost" in obs["last_action_error"]
        assert "not in allowed_hosts" in obs["last_action_error"]


def fetch_through_redirect(env, server):
    """Click the page's button that fetches ``/redirect`` (-> localhost); the step's
    ``info["blocked_requests"]`` and what the page read."""
    obs = start(env, server + "fetch")
    _, _, _, _, info = env.step({"action": "CLICK", "element_id": by_text(obs, "fetch")})
    blocked = info.get("blocked_requests", [])
    for _ in range(50):  # until the page has read the answer (however loaded the machine)
        read = env.page.text_content("#out")
        _, _, _, _, info = env.step({"action": "WAIT", "value": 0 if read else 100})
        blocked += info.get("blocked_requests", [])  # (one heard while reading included)
        if read:
            return blocked, read
    raise AssertionError("the page's fetch never ended")


def test_a_page_cannot_fetch_through_a_redirect_to_a_refused_host(env, redirecting_server):
    # The interception route never sees a redirect's later hops: the context's
    # refusing proxy must stop them (the hole: a page at 127.0.0.1 read localhost).
    secret = redirecting_server.replace("127.0.0.1", "localhost") + "secret"
    with configured(env, UrlPolicy(allowed_hosts=("127.0.0.1",))):
        blocked, read = fetch_through_redirect(env, redirecting_server)
        assert read.startswith("failed")
        # the hop, or, when Chromium ended the chain before reporting it, the chain's
        # request that met the refusing proxy (both seen, about 2:1)
        assert blocked in ([secret], [redirecting_server + "redirect"])
    with configured(env, UrlPolicy(allowed_hosts=("127.0.0.1", "localhost"))):
        # the policy changed: the next reset opened a context with it
        assert fetch_through_redirect(env, redirecting_server) == ([], "read: <p>secret</p>")


def test_a_popup_that_a_redirect_took_to_a_refused_host_is_reported(env, redirecting_server):
    secret = redirecting_server.replace("127.0.0.1", "localhost") + "secret"
    with configured(env, UrlPolicy(allowed_hosts=("127.0.0.1",))):
        obs = start(env, redirecting_server + "popup")
        obs, _, _, _, info = env.step({"action": "CLICK", "element_id": by_text(obs, "open")})
        assert len(info["popups"]) == 1 and "secret" not in obs["text"]
        assert info["blocked_requests"] in ([secret], [redirecting_server + "redirect"])
        assert "refuses" in obs["last_action_error"] or "refused" in obs["last_action_error"]
        # the popup, with no page to go back to, is closed: the env is on its opener again
        assert obs["url"] == redirecting_server + "popup"
        assert len(env.page.context.pages) == 1


def test_what_the_start_page_had_refused_is_in_resets_info(env, redirecting_server):
    secret = redirecting_server.replace("127.0.0.1", "localhost") + "secret"
    with configured(env, UrlPolicy(allowed_hosts=("127.0.0.1",))):
        _, info = env.reset(options={"url": redirecting_server + "image", "goal": "test"})
        _, _, _, _, stepped = env.step({"action": "WAIT", "value": 0})
        assert info.get("blocked_requests", []) + stepped.get("blocked_requests", []) == [secret]
        assert "blocked_requests" in info  # the image loads with the page: reset's


def test_webrtc_sends_no_udp_to_a_refused_host(env, site_url):
    """STUN and ICE are UDP, which neither interception nor the proxy sees; the
    browser sends WebRTC UDP only through a proxy (BASE_ARGS)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stun:
        stun.bind(("127.0.0.2", 0))  # a refused host (127/8 is loopback)
        stun.settimeout(0.5)
        with configured(env, UrlPolicy(allowed_hosts=("127.0.0.1",))):
            start(env, site_url + "links.html")
            state = env.page.evaluate(
                """async (port) => {
                    const pc = new RTCPeerConnection({iceServers: [{urls: `stun:127.0.0.2:${port}`}]});
                    const found = [];
                    pc.onicecandidate = (e) => e.candidate && found.push(e.candidate.candidate);
                    pc.createDataChannel("x");
                    await pc.setLocalDescription(await pc.createOffer());
                    for (let i = 0; i < 50 && pc.iceGatheringState !== "complete"; i++)
                        await new Promise((r) => setTimeout(r, 100));
                    pc.close();
                    return {state: pc.iceGatheringState, found};
                }""",
                stun.getsockname()[1],
            )
        with pytest.raises(TimeoutError):
            stun.recvfrom(2048)  # no binding request came
    assert state["found"] == [] or all(" udp " not in c.lower() for c in state["found"])


def test_extra_args_can_give_webrtc_its_udp_back(site_url):
    """The last value of a switch wins: ``extra_args`` after BASE_ARGS turns
    WebRTC's UDP back on (with no ``allowed_hosts``), and a STUN binding
    request arrives; a lone string is refused before anything launches."""
    import socket

    with pytest.raises(TypeError, match="sequence of Chromium switches"):
        BrowserEnv("open", extra_args="--webrtc-ip-handling-policy=default")
    loose = BrowserEnv("open", extra_args=("--webrtc-ip-handling-policy=default",))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stun:
            stun.bind(("127.0.0.2", 0))
            stun.settimeout(10)
            start(loose, site_url + "links.html")
            loose.page.evaluate(
                """(port) => {
                    window.pc = new RTCPeerConnection({iceServers: [{urls: `stun:127.0.0.2:${port}`}]});
                    window.pc.createDataChannel("x");
                    window.pc.createOffer().then((o) => window.pc.setLocalDescription(o));
                }""",
                stun.getsockname()[1],
            )
            request, _ = stun.recvfrom(2048)
        assert request[:2] == b"\x00\x01"  # a STUN Binding Request
    finally:
        loose.close()


def test_envs_sharing_a_browser_keep_their_own_hosts(redirecting_server):
    from browser_env.vector import SharedBrowser

    with SharedBrowser() as shared:
        strict, loose = (
            BrowserEnv("open", allowed_hosts=hosts, browser=shared)
            for hosts in (["127.0.0.1"], ["127.0.0.1", "localhost"])
        )
        try:
            assert fetch_through_redirect(loose, redirecting_server)[1] == "read: <p>secret</p>"
            assert fetch_through_redirect(strict, redirecting_server)[1].startswith("failed")
            assert fetch_through_redirect(loose, redirecting_server)[1] == "read: <p>secret</p>"
        finally:
            strict.close()
            loose.close()


def test_a_websocket_to_a_refused_host_opens_no_connection(env, redirecting_server):
    # WebSockets pass no interception route: the refusing proxy must stop them.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    connect = (
        "port => new Promise(done => { const ws = new WebSocket(`ws://localhost:${port}/`);"
        " ws.onerror = () => done('error'); ws.onopen = () => done('open'); })"
    )
    with listener:
        for hosts, reached in ((("127.0.0.1",), False), (("127.0.0.1", "localhost"), True)):
            with configured(env, UrlPolicy(allowed_hosts=hosts)):
                start(env, redirecting_server)
                # long where Chromium must connect (a loaded machine is slow to),
                # short where none may: a refused one would come at once
                listener.settimeout(10 if reached else 0.5)
                env.page.evaluate(f"() => {{ ({connect})({port}); }}")
                try:
                    listener.accept()[0].close()
                    connected = True
                except TimeoutError:
                    connected = False
                assert connected is reached, hosts


def test_lone_surrogates_on_a_page_are_observed_as_replacement_characters(env, site_url):
    # found by fuzzing: JSON.stringify hands a JS string's lone surrogate over as
    # one, which fits the space but no UTF-8 file: the episode writer failed on it
    obs = start(env, site_url + "surrogates.html")
    obs, *_ = env.step({"action": "WAIT", "value": "0"})
    for observed in (obs, env.observe()):
        record = observation_to_json(observed)
        json.dumps(record, ensure_ascii=False).encode("utf-8")  # what the writer writes
        assert "lone \ufffd here" in observed["text"]
        button = next(e for e in observed["elements"] if e["tag"] == "button")
        assert (button["text"], button["name"]) == ("half \ufffd", "cut \ufffd label")
        assert next(e for e in observed["elements"] if e["tag"] == "input")["value"] == "v\ufffd"


@pytest.mark.parametrize("viewport", [(0, 0), (1280,), (1280.5, 720), (-1, 720), (1280, 20_000)])
def test_a_viewport_that_is_not_two_pixel_sides_is_refused_before_a_browser_starts(viewport):
    # (0, 0) used to be accepted: every page call then waited out its time limit
    with pytest.raises(ValueError, match=r"viewport is \(width, height\) in pixels"):
        BrowserEnv(task="open", viewport=viewport)
