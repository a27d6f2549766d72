"""What every bundled site shares: sessions, requests, responses, the page layout.

A site is a plain Python module with a :class:`Site` object: ``build(rng)``
makes the seeded world (its server-side state), ``route(session, request)``
renders a page or changes the world, and ``templates`` maps a task template's
name to a function ``(rng, world) -> Goal``. A :class:`Goal` holds the
instruction and ``check(world, answer) -> Verdict``: judging reads only the
server-side world and the FINISH answer, never the page.

Pages are server-rendered HTML (f-strings over escaped data) with a little
vanilla JS from ``static/``. Every page carries the same noise: a cookie
banner until the session consents, and a "Sponsored" box whose links lead to
dead-end ad pages.
"""

from __future__ import annotations

import dataclasses
import html
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

__all__ = [
    "Goal",
    "Request",
    "Response",
    "Session",
    "Site",
    "Verdict",
    "esc",
    "layout",
    "normalise",
    "not_found",
    "redirect",
]


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def normalise(text: str | None) -> str:
    """Case-, space- and trailing-punctuation-insensitive form of an answer."""
    return " ".join(str(text or "").casefold().replace("$", "").split()).strip(" .")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A judgement: ``done`` ends the episode; ``success`` is the outcome."""

    success: bool
    done: bool
    reason: str


@dataclasses.dataclass
class Goal:
    """An instruction and how to judge it. ``answer``: the expected FINISH value
    (None for goals judged from state alone); ``check`` judges state."""

    text: str
    check: Callable[[Any, str | None], Verdict]


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    path: str  # inside the site, e.g. "/search"
    query: Mapping[str, str]
    form: Mapping[str, str]

    def arg(self, name: str, default: str = "") -> str:
        return self.form.get(name) or self.query.get(name) or default


@dataclasses.dataclass
class Response:
    status: int = 200
    body: str = ""
    location: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def redirect(location: str) -> Response:
    """A 303 See Other (a POST's result is then fetched with GET)."""
    return Response(status=303, location=location)


def not_found(session: Session, what: str = "page") -> Response:
    body = f"<h1>Not found</h1><p>No such {esc(what)}.</p>"
    return Response(404, layout(session, "Not found", body))


@dataclasses.dataclass
class Site:
    """One bundled web app. ``templates``: name -> ``(rng, world) -> Goal``."""

    name: str
    title: str
    build: Callable[[random.Random], Any]
    route: Callable[[Session, Request], Response]
    templates: dict[str, Callable[[random.Random, Any], Goal]]
    nav: tuple[tuple[str, str], ...] = ()  # (label, path) links in the header
    ads: tuple[str, ...] = ()  # sponsored lines: near-misses of real content


@dataclasses.dataclass
class Session:
    """One episode's server-side state, keyed by the ``sid`` cookie."""

    sid: str
    site: Site
    task: str
    world: Any
    goal: Goal
    ads: tuple[str, ...]
    consent: bool = False
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)

    def url(self, path: str = "/", **query: Any) -> str:
        query = {k: v for k, v in query.items() if v not in (None, "")}
        return f"/{self.site.name}{path}" + (f"?{urlencode(query)}" if query else "")

    def judge(self, answer: str | None) -> Verdict:
        with self.lock:
            return self.goal.check(self.world, answer)


# Marks the page as leaving, synchronously inside the click or submit that starts a
# navigation, so the task can wait for the next document (see SiteTask.validate)
# instead of judging, and the env observing, the page that is about to go away.
LEAVING_JS = (
    "<script>addEventListener('submit',()=>{window.__sitesLeaving=true});"
    "addEventListener('click',(e)=>{const a=e.target.closest&&e.target.closest('a[href]');"
    "if(a&&!e.defaultPrevented)window.__sitesLeaving=true});</script>"
)


def layout(session: Session, title: str, body: str, *, scripts: tuple[str, ...] = ()) -> str:
    """A full page: header with the site's nav, the body, a sponsored box and,
    until the session consents, the cookie banner (fixed over the bottom)."""
    site = session.site
    nav = " ".join(
        f'<a href="{esc(session.url(path))}">{esc(label)}</a>' for label, path in site.nav
    )
    ads = "".join(
        f'<li><a href="{esc(session.url("/ad", n=i))}">{esc(line)}</a></li>'
        for i, line in enumerate(session.ads)
    )
    banner = (
        ""
        if session.consent
        else (
            '<div id="cookie-banner" role="dialog" aria-label="Cookie consent">'
            "<p>We use cookies to improve your experience and to show you relevant offers.</p>"
            '<form method="post" action="/consent">'
            '<button name="choice" value="all">Accept all cookies</button> '
            '<button name="choice" value="essential">Only essential</button></form></div>'
        )
    )
    js = LEAVING_JS + "".join(f'<script src="/static/{esc(s)}"></script>' for s in scripts)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)} - {esc(site.title)}</title>"
        '<link rel="stylesheet" href="/static/sites.css"></head><body>'
        f'<header><strong class="brand">{esc(site.title)}</strong> <nav>{nav}</nav></header>'
        f'<div class="page"><main>{body}</main>'
        f'<aside class="ads"><h4>Sponsored</h4><ul>{ads}</ul></aside></div>'
        f"{banner}{js}</body></html>"
    )


def ad_page(session: Session, request: Request) -> Response:
    """Where every sponsored link leads: nothing the goal needs."""
    body = (
        "<h1>Limited-time offer!</h1><p>This offer is not available in your region.</p>"
        f'<p><a href="{esc(session.url("/"))}">Back to {esc(session.site.title)}</a></p>'
    )
    return Response(200, layout(session, "Offer", body))


def answer_check(expected: str, what: str) -> Callable[[Any, str | None], Verdict]:
    """A check for goals answered with FINISH: done on FINISH, right when the
    answer equals ``expected`` (see :func:`normalise`)."""

    def check(world: Any, answer: str | None) -> Verdict:
        if answer is None:
            return Verdict(False, False, "")
        ok = normalise(answer) == normalise(expected)
        return Verdict(ok, True, f"{what} is correct" if ok else f"expected {expected!r}")

    return check
