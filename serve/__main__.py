"""``python -m serve``: start Ray (embedded, or the cluster in ``RAY_ADDRESS``) and the app.

::

    BROWSER_RL_SERVE_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))') \\
        python -m serve state_dir=serve_state port=8765 max_concurrent_jobs=1

Without ``RAY_ADDRESS`` the Ray instance is embedded: ``ray.init(address=
"local")`` (never attaching to a cluster that happens to run here), every
component on 127.0.0.1, usage stats off, Ray's token authentication on with
a fresh secret, so its dashboard and job API accept no anonymous job, and
its session files under a temp dir of its own (nothing under ``~/.ray``).
With ``RAY_ADDRESS`` it connects there, starts no cluster, and removes its
app on exit. :func:`run` is the plain function; :func:`main` the Hydra
wrapper (``conf/serve.yaml``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

from serve.config import ServeConfig, from_mapping
from serve.launch import free_port, kill_processes_using

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
        # Ray's own waits for its agents and workers assume an idle machine;
        # a loaded small one misses them and the raylet aborts.
        os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
        os.environ.setdefault("RAY_worker_register_timeout_seconds", "180")
    import ray

    if not embedded:
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
        return False
    root = cfg.ray_temp_dir or tempfile.mkdtemp(prefix="browser-rl-ray-", dir="/tmp")
    for attempt in range(1, cfg.ray_start_attempts + 1):
        temp_dir = os.path.join(root, f"try{attempt}")  # short: Ray's socket paths are capped
        try:
            with _own_agent_port():
                ray.init(
                    address="local",
                    _node_ip_address="127.0.0.1",
                    include_dashboard=True,  # hosts the Ray Jobs API
                    dashboard_host="127.0.0.1",
                    dashboard_port=free_port(),
                    num_cpus=cfg.ray_num_cpus,
                    _temp_dir=temp_dir,
                    log_to_driver=False,
                )
            break
        except Exception as exc:
            # On an overloaded machine the raylet can still miss one of Ray's
            # fixed startup deadlines; a fresh start usually works. A failed
            # start leaves its processes running: end them (they are ours,
            # found by the temp dir only this attempt used).
            ray.shutdown()
            kill_processes_using(temp_dir)
            if attempt == cfg.ray_start_attempts or "timed out" not in str(exc):
                raise
            print(
                f"Ray did not start ({exc}); retrying ({attempt}/{cfg.ray_start_attempts})",
                flush=True,
            )
    return True


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
    import ray
    from ray import serve

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
        ray.shutdown()


@contextlib.contextmanager
def _own_agent_port() -> Iterator[None]:
    """Give the dashboard agent a free port instead of Ray's fixed 52365,
    which collides with any other Ray instance on the machine (another
    user's, a test's). ``ray.init`` does not expose the setting, so it is
    filled into Ray's ``RayParams`` while Ray starts."""
    from ray._private.parameter import RayParams

    original = RayParams.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.dashboard_agent_listen_port = free_port()

    RayParams.__init__ = init  # type: ignore[method-assign]
    try:
        yield
    finally:
        RayParams.__init__ = original  # type: ignore[method-assign]


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
