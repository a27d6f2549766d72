"""Which URLs an env may load, which hosts a page may reach, how much it may download.

:class:`UrlPolicy` is checked in three places:

* ``reset``: the task's start URL (``options["url"]`` and the page it ends on);
* ``NAVIGATE``: the URL the policy asked for;
* every request the browser makes, when ``allowed_hosts`` is set: a request
  interception route aborts requests to any other host (the page sees a
  network error, the step reports it in ``info["blocked_requests"]``). The
  interception sees only the first request of a redirect chain: a page that a
  redirect took to another host is left after the step (``last_action_error``
  says so; see ``PageLifecycle._leave_refused_page``).

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
from collections.abc import Sequence
from urllib.parse import urlsplit

__all__ = ["LOOPBACK_HOSTS", "UrlPolicy", "is_loopback"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_ALWAYS = ("about:blank",)


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
        allowed_hosts: hosts every request may go to (``None``: any host). A
            leading ``.`` allows subdomains: ``.example.com``.
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
            object.__setattr__(self, "allowed_hosts", tuple(h.lower() for h in hosts))
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
        if scheme in ("http", "https", "ws", "wss") and not self.host_allowed(url):
            return f"host {urlsplit(url).hostname!r} is not in allowed_hosts {list(self.allowed_hosts or ())}"
        return None

    def host_allowed(self, url: str) -> bool:
        """Whether a request to ``url`` may leave the browser (non-network URLs always may)."""
        if self.allowed_hosts is None:
            return True
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "ws", "wss"):
            return True
        host = (parts.hostname or "").lower()
        return any(
            host == allowed or (allowed.startswith(".") and host.endswith(allowed))
            for allowed in self.allowed_hosts
        )


def _as_tuple(value: Sequence[str] | str, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValueError(f"{name} must be a list of strings, not the string {value!r}")
    return tuple(str(v) for v in value)
