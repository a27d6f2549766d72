"""A job request checked before anything is written: what it names, sets and asks for.

:func:`check_job_request` turns the body of ``POST /v1/jobs`` (the fields of
:class:`serve.app.JobRequest`) into the ``(learner, dataset_ids, overrides,
resources)`` a job record holds, or raises :class:`~serve.errors.ServiceError`
422 naming the first problem: an unknown learner or dataset, an override the
learner's config does not take or the server owns (:mod:`serve.overrides`), a
``model`` outside ``allowed_models``, or resources that are not finite
numbers >= 0 or more than one job can be given (:func:`capacity`). It reads
the store (do the datasets exist) and may ask the backend for its capacity,
so it runs outside the service's lock; it writes nothing.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from serve.backend import JobBackend
from serve.config import ServeConfig
from serve.errors import ServiceError
from serve.overrides import LEARNERS, override_problem
from serve.store import Store

__all__ = ["capacity", "check_job_request"]

log = logging.getLogger(__name__)


def check_job_request(
    request: dict[str, Any], cfg: ServeConfig, store: Store, backend: JobBackend
) -> tuple[str, list[str], dict, dict]:
    """``(learner, dataset_ids, overrides, resources)`` of a valid ``request``;
    ``resources`` holds both ``num_cpus`` and ``num_gpus`` as floats, the
    configured defaults filled in. Raises ServiceError 422 otherwise."""
    import learners.config as lc

    learner = request.get("learner")
    if learner not in LEARNERS:
        raise ServiceError(422, f"unknown learner {learner!r}; one of {sorted(LEARNERS)}")
    dataset_ids = list(request.get("dataset_ids") or [])
    for dataset_id in dataset_ids:
        if not isinstance(dataset_id, str) or store.dataset(dataset_id) is None:
            raise ServiceError(422, f"unknown dataset {dataset_id!r}")
    if not dataset_ids and learner != "grpo":
        raise ServiceError(422, f"{learner} needs at least one dataset id")
    overrides = dict(request.get("overrides") or {})
    problem = override_problem(lc.LEARNER_CONFIGS[learner], learner, overrides)
    if problem is not None:
        raise ServiceError(422, problem)
    allowed = cfg.allowed_models
    if "model" in overrides and allowed is not None:
        from agents.models import canonical_model

        # an old preset name is the preset it stands for (tiny is tiny-random)
        if canonical_model(str(overrides["model"])) not in {canonical_model(m) for m in allowed}:
            raise ServiceError(422, f"model {overrides['model']!r} is not one of {allowed}")
    resources = dict(request.get("resources") or {})
    for key in resources:
        if key not in ("num_cpus", "num_gpus"):
            raise ServiceError(422, f"unknown resource {key!r} (num_cpus, num_gpus)")
    for key, default in (
        ("num_cpus", cfg.default_num_cpus),
        ("num_gpus", cfg.default_num_gpus),
    ):
        value = resources.get(key, default)
        # `not 0 <= value < inf`: the JSON parser takes NaN and Infinity too
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 <= value < math.inf
        ):
            raise ServiceError(422, f"{key} must be a finite number >= 0")
        resources[key] = float(value)
    for key, limit in capacity(cfg, backend).items():
        if limit is not None and resources[key] > limit:
            raise ServiceError(
                422,
                f"{key}={resources[key]:g} is more than one job can be given here "
                f"({limit:g}); it would wait for ever",
            )
    return learner, dataset_ids, overrides, resources


def capacity(cfg: ServeConfig, backend: JobBackend) -> dict[str, float | None]:
    """The most ``num_cpus``/``num_gpus`` a job may ask for (None: unchecked).

    ``max_num_cpus``/``max_num_gpus`` where configured, else what the
    backend reports at this submission: Ray leaves a request no node can
    hold pending for ever (it only warns of an "infeasible" task), and such
    a job would hold a ``max_concurrent_jobs`` slot until cancelled. The
    largest node counts, not the cluster's sum (a job runs on one node),
    and only the service's node when jobs are pinned to it (no
    ``shared_storage``), less the ``replica_num_cpus`` that this service's
    replica holds there for good (a job asking for the node's whole count
    would never be placed, and Ray would not call it infeasible either).
    Ray cannot report the nodes an autoscaler may add, hence the
    configured maximums. A backend that cannot answer, or does not answer
    within its deadline (:class:`~serve.backend.BackendTimeout`: a hung
    GCS), leaves the request unchecked, as a submission while it is down is
    queued rather than refused.
    """
    limits = {"num_cpus": cfg.max_num_cpus, "num_gpus": cfg.max_num_gpus}
    if None in limits.values():
        pinned = not cfg.shared_storage
        try:
            reported = dict(backend.capacity(pinned=pinned))
        except Exception as exc:
            log.warning("the job backend did not report its capacity (%s)", exc)
            reported = {}
        if pinned and reported.get("num_cpus") is not None:
            reported["num_cpus"] = max(0.0, reported["num_cpus"] - cfg.replica_num_cpus)
        limits = {k: reported.get(k) if v is None else v for k, v in limits.items()}
    return limits
