"""Bundled multi-page web apps served offline from 127.0.0.1 (issue 11).

Five sites (``shop``, ``account``, ``travel``, ``wiki``, ``mail``), each a
module with seeded content and task templates; one local server
(:mod:`.server`); one task class (:class:`.task.SiteTask`). Registered as
``browser_env/sites.<site>.<template>-v0``. See ``docs/sites.md``.
"""

from browser_env.tasks.sites.catalog import SITES, site_task_names
from browser_env.tasks.sites.task import SiteTask

__all__ = ["SITES", "SiteTask", "site_task_names"]
