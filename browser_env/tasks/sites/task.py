"""``SiteTask``: one template of one bundled site as a :class:`~browser_env.tasks.Task`.

``SiteTask("shop.buy-cheapest")``. Each ``setup`` builds the world and the goal
from ``random.Random(f"{name}:{seed}")`` (so a seed always gives the same
episode), opens a new server-side session for them under a fresh sid, drops
the previous episode's session, and loads ``/start?sid=...``, which sets the
``sid`` cookie and redirects to the site's home page. Nothing of an earlier
episode survives a reset: its session is gone, so even its old URLs answer
"session expired".

Judging never reads the page: ``validate`` asks the session's goal, which
reads the server-side world (orders, bookings, sent mail, settings) or the
FINISH answer. Reward is 1.0 on success, else 0.0; the episode ends when the
goal is met, when an irreversible step went wrong (e.g. a wrong order was
placed), or on FINISH.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from browser_env.policy import LOOPBACK_HOSTS
from browser_env.tasks.sites.catalog import SITES, site_task_names
from browser_env.tasks.sites.common import Session, Verdict
from browser_env.tasks.sites.server import close_session, open_session, serve_sites

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["SITE_VIEWPORT", "SiteTask"]

SITE_VIEWPORT = (800, 600)
SETTLE_S = 5.0  # a page of the local server loads in milliseconds; this is for a loaded machine
_LEAVING_JS = "() => [window.__sitesLeaving === true, document.readyState]"


class SiteTask:
    """One task template of a bundled site, e.g. ``SiteTask("wiki.infobox-fact")``."""

    viewport = SITE_VIEWPORT
    observation_root = None
    observation_exclude = None
    screenshot_region = None
    fresh_context = False  # isolation comes from the per-episode server session
    state_js = None  # judging reads server-side state, in this process: no page round trip
    #: The sites' server is on loopback, and their pages load nothing from elsewhere:
    #: the env's request interception keeps NAVIGATE and every request there.
    allowed_hosts = LOOPBACK_HOSTS

    def __init__(self, name: str, timeout_ms: float = 10_000) -> None:
        if name not in site_task_names():
            raise ValueError(
                f"unknown site task {name!r}; see browser_env.tasks.sites.site_task_names()"
            )
        self.name = f"sites.{name}"
        self.site_name, self.template = name.split(".", 1)
        self.timeout_ms = timeout_ms
        self.session: Session | None = None

    @property
    def server_url(self) -> str:
        """The base URL of the sites' server (see browser_env.tasks.base)."""
        return serve_sites()

    def setup(self, page: Page, seed: int, options: dict[str, Any]) -> str:
        if options:
            raise ValueError(f"site tasks take no reset options, got {sorted(options)}")
        self.teardown()
        site = SITES[self.site_name]
        rng = random.Random(f"{self.name}:{seed}")
        world = site.build(rng)
        goal = site.templates[self.template](rng, world)
        ads = tuple(rng.sample(site.ads, k=min(3, len(site.ads))))
        self.session = open_session(lambda sid: Session(sid, site, self.name, world, goal, ads=ads))
        page.goto(f"{serve_sites()}start?sid={self.session.sid}", timeout=self.timeout_ms)
        return goal.text

    def validate(self, page: Page, answer: str | None) -> tuple[float, bool, dict[str, Any]]:
        self._settle(page)
        return self.judge(None, answer)

    def _settle(self, page: Page) -> None:
        """Wait until a navigation that the last action started (a link or a
        form, marked by the page's ``__sitesLeaving`` flag) has loaded the next
        document: only then has the server seen the request, and only then
        does the observation show where the action led."""
        if not page.url.startswith(
            serve_sites()
        ):  # e.g. an error page: nothing of ours to wait for
            return
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            try:
                leaving, ready = page.evaluate(_LEAVING_JS)
            except Exception:  # noqa: BLE001 - the old document is being torn down
                leaving, ready = True, "loading"
            if not leaving and ready != "loading":
                return
            time.sleep(0.01)

    def judge(self, state: Any, answer: str | None) -> tuple[float, bool, dict[str, Any]]:
        """Judge from the session's server-side world (``state`` is unused)."""
        verdict = (
            self.session.judge(answer) if self.session else Verdict(False, False, "no episode")
        )
        reward = 1.0 if verdict.success else 0.0
        done = verdict.done or answer is not None
        info = {"raw_reward": reward, "success": verdict.success, "reason": verdict.reason or None}
        return reward, done, info

    def teardown(self) -> None:
        if self.session is not None:
            close_session(self.session.sid)
            self.session = None
