"""Every bundled site by name, and the ``<site>.<template>`` task names."""

from __future__ import annotations

from functools import cache

from browser_env.tasks.sites import account, mail, shop, travel, wiki
from browser_env.tasks.sites.common import Site

__all__ = ["SITES", "site_task_names"]

SITES: dict[str, Site] = {s.SITE.name: s.SITE for s in (shop, account, travel, wiki, mail)}


@cache
def site_task_names() -> tuple[str, ...]:
    """``("account.change-email", ..., "wiki.population")``: every template of every site."""
    return tuple(sorted(f"{site.name}.{t}" for site in SITES.values() for t in site.templates))
