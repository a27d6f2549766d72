"""The error the training service raises for a request it refuses.

Every service module (:mod:`serve.service`, :mod:`serve.job_request`,
:mod:`serve.records`) raises :class:`ServiceError` with the HTTP status the
request gets; :mod:`serve.app` turns it into that response. It is here, in a
module of its own, so that those modules need not import one another for it.
"""

from __future__ import annotations

__all__ = ["ServiceError"]


class ServiceError(Exception):
    """A request the service refuses; ``status`` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
