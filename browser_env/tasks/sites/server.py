"""The one local server behind every bundled site.

One :class:`~http.server.ThreadingHTTPServer` per process, on 127.0.0.1 and a
free port, started on first use in a daemon thread (like the MiniWoB++ file
server, :mod:`browser_env.tasks.server`). It serves::

    GET  /start?sid=S        set the ``sid`` cookie, redirect to the session's site
    POST /consent            dismiss the cookie banner for this session
    GET  /static/<file>      sites.css, sites.js
    *    /<site>/<path>      the session's site (``sid`` cookie) renders or acts

Sessions are created in-process by the task (:func:`open_session`), never over
HTTP, so a page cannot make or read another episode's state; a request with an
unknown ``sid`` gets a 410 page. The server is defensive: every handler error
becomes a 500 page (logged nowhere, the thread lives on), bodies are capped at
64 KiB, sockets time out after 10 s, and the stdlib already answers malformed
request lines and oversized headers with 400/414/431.

Why stdlib and not a web framework: a dozen routes per site, no dependency,
and the task can read a session's state directly, in the same process.
"""

from __future__ import annotations

import secrets
import threading
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from browser_env.tasks.sites.common import Request, Response, Session, ad_page, esc

__all__ = ["close_session", "get_session", "open_session", "serve_sites"]

MAX_BODY = 64 * 1024
STATIC = {"sites.css": "text/css; charset=utf-8", "sites.js": "text/javascript; charset=utf-8"}

_LOCK = threading.Lock()
_SESSIONS: dict[str, Session] = {}
_SERVER: dict[int, ThreadingHTTPServer] = {}  # by pid: a forked child starts its own


def open_session(make: Any) -> Session:
    """Register ``make(sid) -> Session`` under a fresh unguessable sid."""
    sid = secrets.token_urlsafe(12)
    session = make(sid)
    with _LOCK:
        _SESSIONS[sid] = session
    return session


def close_session(sid: str) -> None:
    with _LOCK:
        _SESSIONS.pop(sid, None)


def get_session(sid: str) -> Session | None:
    with _LOCK:
        return _SESSIONS.get(sid)


def session_count() -> int:
    with _LOCK:
        return len(_SESSIONS)


class _Handler(BaseHTTPRequestHandler):
    timeout = 10  # a client that sends half a request is dropped, not waited on forever
    protocol_version = "HTTP/1.1"
    server_version = "browser-rl-sites"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def _serve(self, method: str) -> None:
        try:
            response = self._respond(method)
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the server down
            response = Response(500, f"<h1>Server error</h1><p>{esc(type(exc).__name__)}</p>")
        self._send(response, head=method == "HEAD")

    def _respond(self, method: str) -> Response:
        url = urlsplit(self.path)
        path = url.path
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        form: dict[str, str] = {}
        if method == "POST":
            length = self.headers.get("Content-Length", "0")
            if not length.isdecimal() or "Transfer-Encoding" in self.headers:
                self.close_connection = True  # what follows on the socket cannot be framed
                return Response(400, "<h1>Bad request</h1><p>Content-Length</p>")
            if int(length) > MAX_BODY:
                self.close_connection = True
                return Response(413, "<h1>Request body too large</h1>")
            raw = self.rfile.read(int(length)).decode("utf-8", "replace")
            form = dict(parse_qsl(raw, keep_blank_values=True))
        if path.startswith("/static/"):
            return self._static(path.removeprefix("/static/"))
        sid = self._cookie("sid")
        if path == "/start":
            target = get_session(query.get("sid", ""))
            if target is None:
                return Response(410, "<h1>Unknown session</h1>")
            response = Response(303, location=target.url("/"))
            response.headers["Set-Cookie"] = f"sid={target.sid}; Path=/; HttpOnly; SameSite=Lax"
            return response
        session = get_session(sid) if sid else None
        if session is None:
            return Response(410, "<h1>Session expired</h1><p>Start a new episode.</p>")
        if path == "/consent" and method == "POST":
            with session.lock:
                session.consent = True
            back = self.headers.get("Referer") or session.url("/")
            return Response(303, location=urlsplit(back)._replace(scheme="", netloc="").geturl())
        prefix = f"/{session.site.name}"
        if path != prefix and not path.startswith(prefix + "/"):
            return Response(404, "<h1>Not found</h1><p>That page is not part of this site.</p>")
        request = Request(method, path.removeprefix(prefix) or "/", query, form)
        with session.lock:
            if request.path == "/ad":
                return ad_page(session, request)
            return session.site.route(session, request)

    def _static(self, name: str) -> Response:
        if name not in STATIC:
            return Response(404, "<h1>Not found</h1>")
        text = resources.files("browser_env.tasks.sites").joinpath("static", name).read_text()
        return Response(200, text, headers={"Content-Type": STATIC[name]})

    def _cookie(self, name: str) -> str:
        try:
            jar = SimpleCookie(self.headers.get("Cookie") or "")
        except CookieError:
            return ""
        morsel = jar.get(name)
        return morsel.value if morsel else ""

    def _send(self, response: Response, head: bool = False) -> None:
        data = response.body.encode("utf-8")
        try:
            self.send_response(response.status)
            headers = {
                "Content-Type": "text/html; charset=utf-8",
                "Content-Length": str(len(data)),
                "Cache-Control": "no-store",
                **response.headers,
            }
            if response.location:
                headers["Location"] = response.location
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if not head:
                self.wfile.write(data)
        except OSError:  # the client went away
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # e.g. a reset connection: nothing to report, the server goes on


def serve_sites(host: str = "127.0.0.1") -> str:
    """Start (once per process) the sites server; return its base URL ending in ``/``."""
    import os

    with _LOCK:
        server = _SERVER.get(os.getpid())
        if server is None:
            server = _Server((host, 0), _Handler)
            threading.Thread(target=server.serve_forever, name="serve:sites", daemon=True).start()
            _SERVER[os.getpid()] = server
    host_, port = server.server_address[:2]
    return f"http://{host_}:{port}/"
