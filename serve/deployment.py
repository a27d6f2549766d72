"""The Ray Serve side: one ingress deployment and the application builder.

``build(args)`` is an application builder in Ray Serve's sense, so the same
app starts three ways: ``python -m serve`` (:mod:`serve.__main__`),
``serve run serve.deployment:build state_dir=...`` and ``serve deploy
serve/deploy.yaml``. ``args`` are :class:`~serve.config.ServeConfig`
fields; the token is never one of them (:func:`build`). There is one
replica, the single writer of the state dir; it asks Ray for
``replica_num_cpus`` (Ray's default of one CPU would pin half of a small
machine), and request handlers hand long work to threads, because a busy
event loop still passes Serve's health check while requests stall.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from serve.config import ServeConfig, from_mapping

__all__ = ["APP_NAME", "build", "deploy_config", "main", "replica_app"]

APP_NAME = "browser-rl"
DEPLOYMENT = "TrainingService"
MAX_ONGOING_REQUESTS = 256


def replica_app(settings: dict[str, Any], token: str | None = None) -> tuple[Any, Any]:
    """``(service, app)``: what the replica builds from its constructor's arguments.

    A started :class:`~serve.service.TrainingService` over the Ray Jobs API
    and its FastAPI app, authenticated by ``token``; without one (not handed
    over by :func:`build`), the token ``token_env``/``token_file`` names on
    this node (refused where serving without one is not allowed).
    """
    from serve.app import create_app
    from serve.backend import RayJobBackend
    from serve.service import TrainingService

    cfg = from_mapping(settings)
    if token is None:
        token = cfg.token()
    service = TrainingService(
        cfg, RayJobBackend(cfg.ray_jobs_address, timeout=cfg.ray_jobs_timeout_s)
    )
    service.start()
    return service, create_app(service, token, max_upload_bytes=cfg.max_upload_bytes)


def _ingress_class() -> Any:
    from ray import serve

    @serve.ingress()
    class TrainingIngress:
        """Builds the service and its FastAPI app inside the replica (:func:`replica_app`)."""

        def __init__(self, settings: dict[str, Any], token: str | None = None) -> None:
            # Not `self.app`: Serve's ASGI wrapper owns that name.
            self.service, self._asgi = replica_app(settings, token)

        def __serve_build_asgi_app__(self) -> Any:
            return self._asgi

        def __del__(self) -> None:
            service = getattr(self, "service", None)
            if service is not None:
                service.close()

    return TrainingIngress


def build(args: dict[str, Any] | ServeConfig, token: str | None = None) -> Any:
    """The Ray Serve application for ``args`` (ServeConfig fields).

    ``token``: the bearer token, handed to the replica as an argument of its
    constructor (Serve keeps it with the deployment, behind Ray's own auth),
    so that it need not be in the environment of any Ray process: ``python -m
    serve`` reads it once and keeps it out of the environment Ray starts
    with, which every job and actor would inherit. Without it (``serve run``,
    ``serve deploy``) the replica reads ``token_env``/``token_file`` on its node.
    """
    from ray import serve

    cfg = args if isinstance(args, ServeConfig) else from_mapping(dict(args))
    if token is None:
        cfg.token()  # fail here, in the caller, rather than in a replica that retries
    deployment = serve.deployment(
        _ingress_class(),
        name=DEPLOYMENT,
        num_replicas=1,
        max_ongoing_requests=MAX_ONGOING_REQUESTS,
        ray_actor_options={"num_cpus": cfg.replica_num_cpus},
    )
    settings = dataclasses.asdict(cfg)
    return deployment.bind(settings) if token is None else deployment.bind(settings, token)


def deploy_config(args: dict[str, Any]) -> dict[str, Any]:
    """A ``serve deploy`` config (Ray's ServeDeploySchema) for :func:`build`.

    It names the host explicitly (the schema's default is 0.0.0.0), repeats
    the deployment options :func:`build` sets, and carries ``args`` as they
    are: never put a token there (the replica reads ``token_env`` or
    ``token_file`` on its node).
    """
    cfg = from_mapping(args)
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": cfg.host, "port": cfg.port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": "serve.deployment:build",
                "args": dict(args),
                "deployments": [
                    {
                        "name": DEPLOYMENT,
                        "num_replicas": 1,
                        "max_ongoing_requests": MAX_ONGOING_REQUESTS,
                        "ray_actor_options": {"num_cpus": cfg.replica_num_cpus},
                    }
                ],
            }
        ],
    }


DEPLOY_ARGS = {"host": "127.0.0.1", "port": 8765, "state_dir": "/var/lib/browser-rl/serve"}
"""The args of the committed ``serve/deploy.yaml``."""


def main(argv: list[str] | None = None) -> None:
    """``python -m serve.deployment [OUT]``: write the deploy config (default stdout)."""
    import argparse
    import sys

    import yaml

    from browser_env.atomic import write_text_atomic

    parser = argparse.ArgumentParser(
        prog="python -m serve.deployment",
        description="Write the Serve deploy config of the training service "
        "(serve/deploy.yaml is this command's output; `serve deploy` takes it).",
    )
    parser.add_argument("out", nargs="?", help="the file to write (default: stdout)")
    args = parser.parse_args(argv)
    text = (
        "# serve deploy serve/deploy.yaml -- generated by `python -m serve.deployment "
        "serve/deploy.yaml`.\n# Host is explicit (the schema's default is 0.0.0.0). No "
        "token here: the replica reads $BROWSER_RL_SERVE_TOKEN\n# (or args.token_file) on its "
        "node. See docs/serve.md.\n" + yaml.safe_dump(deploy_config(DEPLOY_ARGS), sort_keys=False)
    )
    if args.out:
        write_text_atomic(args.out, text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
