"""Scripted experts for the bundled local sites (``sites.<site>.<template>``).

Importing the package registers every site policy in
:data:`~agents.experts.sites.base.SITE_POLICIES`.
"""

from __future__ import annotations

from agents.experts.sites import account, mail, shop, travel, wiki  # noqa: F401 - registers the policies
from agents.experts.sites.base import SITE_POLICIES, site_task

__all__ = ["SITE_POLICIES", "site_task"]
