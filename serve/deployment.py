"""The Ray Serve side: one ingress deployment and the application builder.

``build(args)`` is an application builder in Ray Serve's sense, so the same
app starts three ways: ``python -m serve`` (:mod:`serve.__main__`),
``serve run serve.deployment:build state_dir=...`` and ``serve deploy
conf/serve/deploy.yaml``. ``args`` are :class:`~serve.config.ServeConfig`
fields. There is one replica, the single writer of the state dir; it asks
Ray for ``replica_num_cpus`` (Ray's default of one CPU would pin half of a
small machine), and request handlers hand long work to threads, because a
busy event loop still passes Serve's health check while requests stall.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from serve.config import ServeConfig, from_mapping

__all__ = ["APP_NAME", "build"]

APP_NAME = "browser-rl"


def _ingress_class() -> Any:
    from ray import serve

    @serve.ingress()
    class TrainingIngress:
        """Builds the service and its FastAPI app inside the replica."""

        def __init__(self, settings: dict[str, Any]) -> None:
            from serve.app import create_app
            from serve.backend import RayJobBackend
            from serve.service import TrainingService

            cfg = from_mapping(settings)
            token = cfg.token()  # refuses to run unauthenticated where not allowed
            self.service = TrainingService(cfg, RayJobBackend(cfg.ray_jobs_address))
            self.service.start()
            self.app = create_app(self.service, token, max_upload_bytes=cfg.max_upload_bytes)

        def __serve_build_asgi_app__(self) -> Any:
            return self.app

        def __del__(self) -> None:
            service = getattr(self, "service", None)
            if service is not None:
                service.close()

    return TrainingIngress


def build(args: dict[str, Any] | ServeConfig) -> Any:
    """The Ray Serve application for ``args`` (ServeConfig fields)."""
    from ray import serve

    cfg = args if isinstance(args, ServeConfig) else from_mapping(dict(args))
    cfg.token()  # fail here, in the caller, rather than in a replica that retries
    deployment = serve.deployment(
        _ingress_class(),
        name="TrainingService",
        num_replicas=1,
        max_ongoing_requests=256,
        ray_actor_options={"num_cpus": cfg.replica_num_cpus},
    )
    return deployment.bind(dataclasses.asdict(cfg))
