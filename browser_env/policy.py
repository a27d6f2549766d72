"""Which URLs an env may load, which hosts a page may reach, how much it may download.

:class:`UrlPolicy` is checked in three places:

* ``reset``: the task's start URL (``options["url"]`` and the page it ends on);
* ``NAVIGATE``: the URL the policy asked for;
* every request the browser makes, when ``allowed_hosts`` is set, twice:

  - a request interception route aborts requests to any other host (the page
    sees a network error; the step, or for the start page ``reset``, reports it
    in ``info["blocked_requests"]``);
  - the env's browser context sends every request to any other host through a
    proxy that refuses all connections (:meth:`UrlPolicy.context_proxy`: the
    allowed hosts bypass it, loopback included only when listed). This stops
    what interception never sees: a redirect's later hops (Playwright routes
    only the first request of a redirect chain), so an allowed page cannot
    ``fetch()`` its way through an open redirect to a refused host, nor a
    worker's request or a WebSocket. Such a hop is reported in
    ``info["blocked_requests"]`` too, and a tab that a refused redirect took
    to an error page goes back after the step (a popup with nowhere to go
    back to is closed; ``last_action_error`` says so; see
    ``PageLifecycle._leave_refused_page``). Both are settings of the
    context, so the envs sharing one browser keep their own policies.
  - WebRTC's UDP (STUN, ICE) is seen by neither: the browser is launched to
    send it only through a proxy (``BASE_ARGS`` in :mod:`browser_env.browser`),
    which no context has, so WebRTC reaches peers over TCP, through the proxy.
    The switch is the browser's, so it holds for every context, with or
    without ``allowed_hosts``; an env that needs WebRTC over UDP (and no
    ``allowed_hosts``) passes
    ``extra_args=("--webrtc-ip-handling-policy=default",)``.

Hosts are read from a URL as the browser reads it (a backslash is a slash).

``file:``, ``chrome:``, ``javascript:`` and ``data:`` URLs are refused unless
their scheme is listed in ``allowed_url_schemes``; ``about:blank`` is always
allowed. MiniWoB++ tasks declare ``allowed_hosts = ("127.0.0.1", "localhost")``:
their pages are served from loopback and need nothing else.

Downloads larger than ``max_download_bytes`` are cancelled (and reported in
``info["downloads"]`` with ``"cancelled": "too large"``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
import threading
from collections.abc import Iterable, Sequence
from urllib.parse import SplitResult, urlsplit

__all__ = ["LOOPBACK_HOSTS", "UrlPolicy", "is_loopback", "proxy_bypass"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_ALWAYS = ("about:blank",)
_NETWORK = ("http", "https", "ws", "wss")
# a host name or IPv4 address (``.`` first: its subdomains); nothing that could
# end or extend a proxy bypass rule (commas, spaces, wildcards)
_HOST = re.compile(r"\.?[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_REFUSING: socket.socket | None = None  # see _refusing_port
_REFUSING_LOCK = threading.Lock()


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8 (IPv4-mapped too), ``::1`` and ``localhost``; False for
    ``0.0.0.0`` and other names (what a server's bind host or a socket's address
    must be to stay on this machine)."""
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


@dataclasses.dataclass(frozen=True)
class UrlPolicy:
    """What the browser of one env may load.

    Attributes:
        allowed_url_schemes: schemes that ``reset`` and ``NAVIGATE`` accept.
        allowed_hosts: hosts every request may go to (``None``: any host):
            names or IP addresses (IPv6 with or without brackets); a leading
            ``.`` allows subdomains: ``.example.com``. Anything else (a
            wildcard, a port, a URL) is a ``ValueError``.
        max_download_bytes: downloads beyond this are cancelled.
    """

    allowed_url_schemes: tuple[str, ...] = ("http", "https")
    allowed_hosts: tuple[str, ...] | None = None
    max_download_bytes: int = 50 * 2**20

    def __post_init__(self) -> None:
        schemes = _as_tuple(self.allowed_url_schemes, "allowed_url_schemes")
        object.__setattr__(self, "allowed_url_schemes", tuple(s.lower() for s in schemes))
        if self.allowed_hosts is not None:
            hosts = _as_tuple(self.allowed_hosts, "allowed_hosts")
            object.__setattr__(self, "allowed_hosts", tuple(_host(h) for h in hosts))
        if int(self.max_download_bytes) < 0:
            raise ValueError(f"max_download_bytes must be >= 0, got {self.max_download_bytes}")

    def url_error(self, url: str) -> str | None:
        """Why ``url`` may not be loaded, or ``None`` when it may."""
        if url in _ALWAYS:
            return None
        scheme = urlsplit(url).scheme.lower() if ":" in url else ""
        if not scheme:
            return f"{url!r} is not an absolute URL"
        if scheme not in self.allowed_url_schemes:
            return (
                f"{scheme}: URLs are not allowed (allowed_url_schemes="
                f"{list(self.allowed_url_schemes)})"
            )
        if scheme in _NETWORK and not self.host_allowed(url):
            return f"host {_split(url).hostname!r} is not in allowed_hosts {list(self.allowed_hosts or ())}"
        return None

    def context_proxy(self) -> dict[str, str] | None:
        """Playwright's ``proxy`` setting for a browser context under this policy
        (module doc): the allowed hosts bypass a proxy that refuses every
        connection; ``None`` when any host is allowed."""
        if self.allowed_hosts is None:
            return None
        return {
            "server": f"http://127.0.0.1:{_refusing_port()}",
            "bypass": proxy_bypass(self.allowed_hosts),
        }

    def host_allowed(self, url: str) -> bool:
        """Whether a request to ``url`` may leave the browser (non-network URLs always may)."""
        if self.allowed_hosts is None:
            return True
        parts = _split(url)
        if parts.scheme not in _NETWORK:
            return True
        host = (parts.hostname or "").lower()
        return any(
            host == allowed or (allowed.startswith(".") and host.endswith(allowed))
            for allowed in self.allowed_hosts
        )


def proxy_bypass(hosts: Iterable[str]) -> str:
    """Chromium's proxy bypass list for ``hosts`` (``.example.com``: its
    subdomains): ``<-loopback>`` first, so loopback addresses bypass the proxy
    only when listed (Chromium bypasses them all by default)."""
    patterns = sorted({_bypass_pattern(h) for h in map(_host, hosts)})
    return ", ".join(["<-loopback>", *patterns])


def _split(url: str) -> SplitResult:
    """``url``'s parts as the browser reads them: in a URL of a network scheme a
    backslash is a slash (WHATWG URL; ``urlsplit`` would take the host of
    ``http://localhost\\@127.0.0.1/`` to be 127.0.0.1, Chromium takes localhost)."""
    parts = urlsplit(url)
    if parts.scheme.lower() in _NETWORK and "\\" in url:
        parts = urlsplit(url.replace("\\", "/"))
    return parts


def _bypass_pattern(host: str) -> str:
    if host.startswith("."):
        return "*" + host
    return f"[{host}]" if ":" in host else host


def _refusing_port() -> int:
    """A port on 127.0.0.1 that refuses every connection: bound by this process
    and never listened on, so no other program can take it while we run."""
    global _REFUSING
    with _REFUSING_LOCK:
        if _REFUSING is None:
            _REFUSING = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            _REFUSING.bind(("127.0.0.1", 0))
        return _REFUSING.getsockname()[1]


def _host(entry: str) -> str:
    """``entry`` of ``allowed_hosts`` as ``host_allowed`` compares it: lower case,
    an IPv6 address without brackets; a ``ValueError`` for anything else."""
    host = str(entry).strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:  # only an IPv6 address has one
        try:
            ip = ipaddress.IPv6Address(host)
        except ValueError:
            pass
        else:  # a zone id (``%eth0``) may hold any character, a bypass rule's commas too
            if ip.scope_id is None:
                return str(ip)
    elif _HOST.fullmatch(host):
        return host
    hint = " (allowed_hosts=None allows any host)" if "*" in host else ""
    raise ValueError(
        f"allowed_hosts entry {entry!r} is not a host name or IP address{hint}; "
        "a leading '.' allows subdomains: '.example.com'"
    )


def _as_tuple(value: Sequence[str] | str, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValueError(f"{name} must be a list of strings, not the string {value!r}")
    return tuple(str(v) for v in value)
