"""The bundled local sites: registration, the Task contract, check_env, seeding,
per-episode sessions, judging from server state, and the server under junk."""

from __future__ import annotations

import random
import socket
import warnings
from http.client import HTTPConnection
from pathlib import Path

import gymnasium as gym
import pytest
import yaml
from gymnasium.utils.env_checker import check_env
from task_contract import TaskContract

import browser_env  # noqa: F401 - registers the ids
from browser_env.tasks.sites import SITES, SiteTask, site_task_names
from browser_env.tasks.sites.common import Session
from browser_env.tasks.sites.server import get_session, open_session, serve_sites

CONF = Path(__file__).resolve().parents[2] / "conf" / "suite"
IDS = [f"browser_env/sites.{name}-v0" for name in site_task_names()]


def test_five_sites_thirty_templates_all_registered():
    assert set(SITES) == {"shop", "account", "travel", "wiki", "mail"}
    assert len(site_task_names()) >= 30
    for env_id in IDS:
        assert env_id in gym.registry
        assert gym.registry[env_id].max_episode_steps == 40
    suite = yaml.safe_load((CONF / "sites_all.yaml").read_text())
    assert suite["tasks"] == list(site_task_names())
    smoke = yaml.safe_load((CONF / "sites_smoke.yaml").read_text())
    assert {t.split(".")[0] for t in smoke["tasks"]} == set(SITES)


def test_unknown_template_and_reset_options_are_refused():
    with pytest.raises(ValueError, match="unknown site task"):
        SiteTask("shop.no-such-thing")
    task = SiteTask("wiki.population")
    with pytest.raises(ValueError, match="no reset options"):
        task.setup(None, 0, {"url": "x"})  # type: ignore[arg-type]


@pytest.mark.browser
class TestSiteTaskContract(TaskContract):
    def make_task(self):
        return SiteTask("shop.buy-named")


# --- one env for the rest of the module -------------------------------------------


@pytest.fixture(scope="module")
def shop():
    env = gym.make("browser_env/sites.shop.add-to-cart-v0", modalities=("elements", "text"))
    yield env
    env.close()


def _strip(obs):
    return {k: v for k, v in obs.items() if k != "elements"}, [
        {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in e.items()}
        for e in obs["elements"]
    ]


@pytest.mark.browser
def test_same_seed_same_episode_other_seed_other_goal(shop):
    first, _ = shop.reset(seed=5)
    again, _ = shop.reset(seed=5)
    assert _strip(first) == _strip(again)
    other, _ = shop.reset(seed=6)
    assert other["goal"] != first["goal"]


@pytest.mark.browser
def test_reset_leaves_nothing_of_the_previous_episode(shop):
    env = shop.unwrapped
    shop.reset(seed=1)
    old = env.task.session
    old.world.cart.append(_line(old.world))
    old.consent = True
    env.page.goto(env.page.url.replace("/shop/", "/shop/cart"))
    assert "Your cart is empty" not in env.page.content()
    shop.reset(seed=1)
    new = env.task.session
    assert new.sid != old.sid and get_session(old.sid) is None
    assert new.world.cart == [] and not new.consent
    env.page.goto(env.page.url.replace("/shop/", "/shop/cart"))
    html = env.page.content()
    assert "Your cart is empty" in html and "cookie-banner" in html
    # the previous episode's sid no longer opens anything on the server
    status, _ = _get("/shop/cart", cookie=f"sid={old.sid}")
    assert status == 410


def _line(world):
    from browser_env.tasks.sites.shop import Line

    product = world.products[0]
    return Line(product.pid, product.sizes[0], product.colors[0], 1)


@pytest.mark.browser
def test_site_pages_and_navigate_may_only_reach_loopback(shop):
    """The sites' tasks set no ``allowed_hosts`` before, so NAVIGATE left loopback."""
    env = shop.unwrapped
    shop.reset(seed=3)
    assert env.url_policy.allowed_hosts == ("127.0.0.1", "localhost", "::1")
    home = env.page.url
    obs, *_ = shop.step({"action": "NAVIGATE", "value": "http://192.0.2.1/"})
    assert "not in allowed_hosts" in obs["last_action_error"] and obs["url"] == home
    status = env.page.evaluate("() => fetch('http://192.0.2.1/').then(() => 'ok', () => 'blocked')")
    assert status == "blocked"


@pytest.mark.browser
def test_outcome_comes_from_server_state_not_the_page(shop):
    env = shop.unwrapped
    obs, _ = shop.reset(seed=2)
    # the page may claim anything: no reward
    env.page.evaluate(
        "() => { document.body.innerHTML = '<h1>Added to cart! Task complete</h1>'; }"
    )
    _, reward, terminated, _, info = shop.step({"action": "WAIT", "value": "10"})
    assert reward == 0.0 and not terminated and info["success"] is False
    # the server-side cart holding the goal's item is what counts, whatever the page shows
    session = env.task.session
    name, size, color = [part for part in obs["goal"].split('"')[1::2]]
    product = next(p for p in session.world.products if p.name == name)
    from browser_env.tasks.sites.shop import Line

    session.world.cart.append(Line(product.pid, size, color, 1))
    _, reward, terminated, _, info = shop.step({"action": "WAIT", "value": "10"})
    assert reward == 1.0 and terminated and info["success"] is True


@pytest.mark.browser
def test_check_env_passes_without_warning_filters():
    _check("browser_env/sites.travel.book-two-v0")  # the date picker's site; all ids: exhaustive


@pytest.mark.exhaustive
@pytest.mark.browser
@pytest.mark.parametrize("env_id", IDS)
def test_check_env_every_site_id(env_id):
    _check(env_id)


def _check(env_id: str) -> None:
    env = gym.make(env_id, disable_env_checker=True).unwrapped
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(env)
    finally:
        env.close()


# --- the server under malformed requests (no browser) ---------------------------------


@pytest.fixture(scope="module")
def wiki_session():
    site = SITES["wiki"]
    rng = random.Random(0)
    world = site.build(rng)
    goal = site.templates["population"](rng, world)
    session = open_session(
        lambda sid: Session(sid, site, "sites.wiki.population", world, goal, ads=())
    )
    return session


def _address() -> tuple[str, int]:
    base = serve_sites()
    host, port = base.removeprefix("http://").rstrip("/").split(":")
    return host, int(port)


def _get(path: str, cookie: str = "", method: str = "GET", body: str | None = None, headers=None):
    conn = HTTPConnection(*_address(), timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Cookie": cookie, **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def _raw(data: bytes) -> bytes:
    with socket.create_connection(_address(), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_server_survives_malformed_requests(wiki_session):
    cookie = f"sid={wiki_session.sid}"
    assert _get("/wiki/", cookie)[0] == 200
    # raw junk, a half request, a binary blob
    _raw(b"\x00\xff\x13garbage\r\n\r\n")
    assert b" 400 " in _raw(b"NOT A REQUEST\r\n\r\n")
    _raw(b"GET /wiki/ HTTP/1.1\r\nHost: x\r\n")  # never finished: the server times it out
    _raw(bytes(random.Random(1).randrange(256) for _ in range(5000)))
    # oversized request line and headers
    assert b" 414 " in _raw(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n")
    many = b"".join(b"X-%d: y\r\n" % i for i in range(200))
    assert b" 431 " in _raw(b"GET /wiki/ HTTP/1.1\r\n" + many + b"\r\n")
    assert b" 431 " in _raw(b"GET /wiki/ HTTP/1.1\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n")
    # bad paths, cookies, bodies
    for path in (
        "/../../etc/passwd",
        "/static/../server.py",
        "/wiki/wiki/%ff%fe",
        "/shop/",
        "/%00",
        "//x",
    ):
        assert _get(path, cookie)[0] in (404, 410)
    assert _get("/wiki/", 'sid="\\x; =;;;')[0] == 410
    assert _get("/wiki/search?q=%ff%fe&page=-3", cookie)[0] == 200
    assert _get("/wiki/search?page=999999999999999999999&q=a", cookie)[0] == 200
    assert _get("/consent", cookie, "POST", "x", {"Content-Length": "abc"})[0] == 400
    assert _get("/consent", cookie, "POST", "x" * 10, {"Content-Length": str(10**9)})[0] == 413
    chunked = b"POST /consent HTTP/1.1\r\nTransfer-Encoding: chunked\r\nCookie: " + cookie.encode()
    assert b" 400 " in _raw(chunked + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert _get("/start?sid=nope")[0] == 410
    # and the site still works for its session
    status, html = _get("/wiki/search?q=a", cookie)
    assert status == 200 and "Search results" in html


EXTRA_STARTS = {  # pages reached by forms, not links
    "travel": [
        "/travel/results?from=Lisbon+%28LIS%29&to=Oslo+%28OSL%29&date=2026-11-02&pax=2&cabin=Business",
        "/travel/trips?code=ABC123&last=Silva",
    ],
    "shop": ["/shop/search?q=tee&sort=Price%3A+low+to+high"],
}


def test_every_site_renders_every_page_it_links_to(wiki_session):
    """A crawl of each site's links from its home page answers 200 everywhere."""
    import re

    for name, site in SITES.items():
        rng = random.Random(3)
        world = site.build(rng)
        goal = site.templates[next(iter(site.templates))](rng, world)
        if name == "account":
            world.signed_in = True  # past the login gate, which test_sites_expert crosses
        session = open_session(
            lambda sid, s=site, w=world, g=goal, n=name: Session(sid, s, n, w, g, ads=("ad",))
        )
        cookie = f"sid={session.sid}"
        seen, todo = set(), [f"/{name}/", *EXTRA_STARTS.get(name, ())]
        while todo and len(seen) < 40:
            path = todo.pop(0)
            if path in seen:
                continue
            seen.add(path)
            status, html = _get(path, cookie)
            assert status == 200, (path, status)
            for href in re.findall(r'href="(/[^"]+)"', html):
                href = href.replace("&amp;", "&")
                if href.startswith(f"/{name}/") and href not in seen:
                    todo.append(href)
        assert len(seen) >= 5, name
