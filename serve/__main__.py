"""``python -m serve``: start Ray (embedded, or the cluster in ``RAY_ADDRESS``) and the app.

::

    BROWSER_RL_SERVE_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))') \\
        python -m serve state_dir=serve_state port=8765 max_concurrent_jobs=1

Without ``RAY_ADDRESS`` the Ray instance is embedded
(:func:`browser_env.ray_local.init_ray`: never attaching to a cluster that
happens to run here, every component on 127.0.0.1, usage stats off, its
session files under a temp dir of its own, nothing under ``~/.ray``), with
Ray's token authentication on and a fresh secret, so its dashboard and job API
accept no anonymous job.
With ``RAY_ADDRESS`` it connects there, starts no cluster, and removes its
app on exit. :func:`run` is the plain function; :func:`main` the Hydra
wrapper (``conf/serve.yaml``).
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
from collections.abc import Callable
from typing import Any

from serve.config import ServeConfig, from_mapping
from serve.launch import free_port

__all__ = ["main", "run", "start_ray"]


def start_ray(cfg: ServeConfig) -> bool:
    """Connect to ``RAY_ADDRESS`` or start an embedded local instance; True
    when it is embedded (and so ours to shut down)."""
    embedded = not os.environ.get("RAY_ADDRESS")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if embedded:
        # Before Ray is imported (it caches its config at import): every Ray
        # process, and the job client in the replica, inherit these; a token
        # of our own keeps Ray from generating one under ~/.ray.
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_urlsafe(32))
    from browser_env.ray_local import init_ray

    init_ray(
        num_cpus=cfg.ray_num_cpus,
        temp_dir=cfg.ray_temp_dir,
        attempts=cfg.ray_start_attempts,
        dashboard_port=free_port() if embedded else None,  # the dashboard hosts the Jobs API
        log_to_driver=False,
    )
    return embedded


def run(
    cfg: ServeConfig | dict[str, Any],
    *,
    until: threading.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until ``until`` is set (default: SIGINT or SIGTERM), then stop."""
    if not isinstance(cfg, ServeConfig):
        cfg = from_mapping(cfg)
    cfg.validate()
    cfg.token()  # refuse to start before any cluster exists
    embedded = start_ray(cfg)
    from ray import serve

    from browser_env.ray_local import shutdown_ray
    from serve.deployment import APP_NAME, build

    try:
        serve.start(http_options={"host": cfg.host, "port": cfg.port})
        serve.run(build(cfg), name=APP_NAME, route_prefix="/")
        stop = until or threading.Event()
        if until is None:  # from here on, SIGINT/SIGTERM stop Serve and Ray in order
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
        url = f"http://{cfg.host}:{cfg.port}"
        print(f"training service on {url} (state in {os.path.abspath(cfg.state_dir)})", flush=True)
        if on_ready is not None:
            on_ready(url)
        while not stop.wait(1.0):  # short waits: signal handlers run in between
            pass
    finally:
        # An embedded instance goes down whole with ray.shutdown() (Serve's
        # own graceful shutdown can stall for minutes on a loaded machine).
        if not embedded:
            serve.delete(APP_NAME)
        shutdown_ray()


def hydra_entry(cfg: Any) -> None:
    from omegaconf import OmegaConf

    run(OmegaConf.to_container(cfg, resolve=True))


def main() -> None:
    import hydra
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="serve_schema", node=ServeConfig)
    hydra.main(version_base="1.3", config_path="../conf", config_name="serve")(hydra_entry)()


if __name__ == "__main__":
    main()
