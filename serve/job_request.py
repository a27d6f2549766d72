"""A job request checked before anything is written: what it names, sets and asks for.

:func:`check_job_request` turns the body of ``POST /v1/jobs`` (the fields of
:class:`serve.app.JobRequest`) into the ``(learner, dataset_ids, overrides,
resources)`` a job record holds, or raises :class:`~serve.errors.ServiceError`
422 naming the first problem: an unknown learner or dataset, a dataset named
twice, an override the learner's config does not take or the server owns
(:mod:`serve.overrides`), a value the learner's config refuses as it is made
or an env id there that is not registered (:func:`check_learner_config`), a
``model`` outside ``allowed_models``, rollout options the learner would
refuse or that play more than ``max_rollout_envs`` envs at once
(:func:`rollout_actors`), or resources that are not finite numbers >= 0 or,
with those of the job's rollout actors (GRPO ``runner=ray``), more than one
job can be given (:func:`capacity`). It reads
the store (do the datasets exist) and may ask the backend for its capacity,
so it runs outside the service's lock; it writes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

from serve.backend import JobBackend
from serve.config import ServeConfig
from serve.errors import ServiceError
from serve.overrides import LEARNERS, override_problem
from serve.store import Store

__all__ = ["capacity", "check_job_request", "check_learner_config", "rollout_actors"]

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
    for i, dataset_id in enumerate(dataset_ids):
        if not isinstance(dataset_id, str) or store.dataset(dataset_id) is None:
            raise ServiceError(422, f"unknown dataset {dataset_id!r}")
        if dataset_id in dataset_ids[:i]:
            raise ServiceError(422, f"dataset {dataset_id!r} is named twice")
    if not dataset_ids and learner != "grpo":
        raise ServiceError(422, f"{learner} needs at least one dataset id")
    overrides = dict(request.get("overrides") or {})
    problem = override_problem(lc.LEARNER_CONFIGS[learner], learner, overrides)
    if problem is not None:
        raise ServiceError(422, problem)
    check_learner_config(learner, overrides)
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
    actors = rollout_actors(lc.LEARNER_CONFIGS[learner], overrides, cfg.max_rollout_envs)
    for key, limit in capacity(cfg, backend).items():
        asked = resources[key] + actors[key]
        if limit is None or asked <= limit:
            continue
        if not actors[key]:
            raise ServiceError(
                422,
                f"{key}={resources[key]:g} is more than one job can be given here "
                f"({limit:g}); it would wait for ever",
            )
        raise ServiceError(
            422,
            f"{key}={resources[key]:g} for the job plus {actors[key]:g} for its rollout actors "
            f"(runner=ray: workers={actors['workers']} x {_PER_WORKER[key]}="
            f"{actors[key] / actors['workers']:g}) is {asked:g}, more than one job can be given "
            f"here ({limit:g}); it would wait for ever",
        )
    return learner, dataset_ids, overrides, resources


# What the scheduler sets when the job starts (serve.scheduler's _mark_started),
# as stand-ins: a config only holds these paths, the learner reads them later.
_SERVER_VALUES = {
    "episodes": ["datasets/<id>/data"],
    "output_dir": "jobs/<id>/adapter",
    "progress": True,
}


def check_learner_config(learner: str, overrides: dict[str, Any]) -> None:
    """Raise ServiceError 422 with the learner's own message when its config
    refuses ``overrides`` as it is made (``__post_init__``: ``batch_size=0``,
    ``device="gpu"``, ...) or names an env in ``env_ids`` (GRPO) or
    ``eval_env_ids`` that is not registered, as the learner checks before its
    model loads: such a job would otherwise take a slot and a backend job only
    to fail at start-up.

    ``overrides`` must have passed :func:`serve.overrides.override_problem`
    (known fields of the right types, none the server's). The config is built
    as the learner builds it (:func:`learners.config.from_mapping`), with
    stand-ins for the server's paths; nothing reads them, and the env ids are
    looked up in Gymnasium's registry only (no env is made, no browser starts).
    """
    import gymnasium as gym

    import browser_env  # noqa: F401 - registers the browser_env/* ids
    import learners.config as lc

    try:
        config = lc.from_mapping(lc.LEARNER_CONFIGS[learner], {**overrides, **_SERVER_VALUES})
    except (ValueError, TypeError) as exc:
        raise ServiceError(422, f"{learner} setting refused: {exc}") from None
    for key in ("env_ids", "eval_env_ids"):
        for env_id in getattr(config, key, ()):
            try:
                gym.spec(env_id)
            except gym.error.Error as exc:
                raise ServiceError(422, f"{key}: {exc}") from None


_PER_WORKER = {"num_cpus": "cpus_per_worker", "num_gpus": "gpus_per_worker"}


def rollout_actors(config_class: type, overrides: dict[str, Any], max_envs: int) -> dict[str, Any]:
    """What a job's rollouts ask Ray for besides the job itself: ``{"workers",
    "num_cpus", "num_gpus"}``, all 0 unless ``runner=ray`` (whose ``workers``
    actors each ask for ``cpus_per_worker`` and ``gpus_per_worker``).

    The rollout options (GRPO's ``runner``, ``workers``, ``envs_per_worker``,
    ``cpus_per_worker``, ``gpus_per_worker``; the config's defaults where not
    overridden) are checked as the learner would check them
    (:func:`agents.runners.options.check_runner_options`), and the envs played
    at once (``vector``: ``workers``; ``ray``: ``workers * envs_per_worker``;
    each a browser context) are capped at ``max_envs``, whatever the actors
    ask for (``cpus_per_worker=0`` asks for nothing). ServiceError 422
    otherwise. A learner without rollouts asks for nothing.
    """
    none = {"workers": 0, "num_cpus": 0.0, "num_gpus": 0.0}
    names = {f.name: f for f in dataclasses.fields(config_class)}
    if "runner" not in names:
        return none
    keys = ("runner", "workers", "envs_per_worker", "cpus_per_worker", "gpus_per_worker")
    options = {k: overrides.get(k, names[k].default) for k in keys}
    from agents.runners.options import check_runner_options

    try:
        check_runner_options(options["runner"], **{k: options[k] for k in keys[1:]})
    except ValueError as exc:
        raise ServiceError(422, str(exc)) from None
    runner, workers = options["runner"], options["workers"]
    envs = {"local": 1, "vector": workers}.get(runner, workers * options["envs_per_worker"])
    if envs > max_envs:
        played = f"workers={workers}" + (
            f" x envs_per_worker={options['envs_per_worker']}" if runner == "ray" else ""
        )
        raise ServiceError(
            422,
            f"runner={runner} with {played} plays {envs} envs at once; at most {max_envs} "
            "per job here (max_rollout_envs)",
        )
    if runner != "ray":
        return none
    return {
        "workers": workers,
        "num_cpus": workers * float(options["cpus_per_worker"]),
        "num_gpus": workers * float(options["gpus_per_worker"]),
    }


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
