"""``python -m serve``: start Ray (embedded, or the cluster in ``RAY_ADDRESS``) and the app.

::

    BROWSER_RL_SERVE_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))') \\
        python -m serve state_dir=serve_state port=8765 max_concurrent_jobs=1

Without ``RAY_ADDRESS`` the Ray instance is embedded
(:func:`browser_env.ray_local.init_ray`: never attaching to a cluster that
happens to run here, every component on 127.0.0.1 but the Serve replica's
gRPC server, which Ray binds to all interfaces (``docs/serve.md``), usage
stats off, its session files under a temp dir of its own, nothing under
``~/.ray``), with
Ray's token authentication on and a fresh secret, so its dashboard and job API
accept no anonymous job. The service's bearer token is read once, before
Ray starts, and handed to the replica as an argument
(:func:`serve.deployment.build`), not through the environment that every Ray
process, job, actor and browser would inherit.
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

from browser_env.atomic import unwritable_reason
from browser_env.refusal import exit_on_refusal, refusing
from serve.config import ServeConfig, from_mapping
from serve.launch import free_port
from serve.ports import check_port_free

__all__ = ["check_state_dir", "main", "run", "start_ray"]


def start_ray(
    cfg: ServeConfig, *, keep_signals: bool = False, stop: Callable[[], bool] | None = None
) -> bool:
    """Connect to ``RAY_ADDRESS`` or start an embedded local instance; True
    when it is embedded (and so ours to shut down). ``keep_signals``: keep
    ``ray.init`` from replacing this process's SIGTERM handler with its own
    ``sys.exit`` (:func:`run` handles the signal during the start itself).
    ``stop``: True once a stop was asked for; a start that failed is then not
    tried again (:func:`browser_env.ray_local.init_ray`) and its error raised."""
    embedded = not os.environ.get("RAY_ADDRESS")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if embedded:
        # Before Ray is imported (it caches its config at import): every Ray
        # process, and the job client in the replica, inherit these; a token
        # of our own keeps Ray from generating one under ~/.ray.
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_urlsafe(32))
    import ray._private.utils as ray_utils

    from browser_env.ray_local import init_ray

    replace_handler = ray_utils.set_sigterm_handler
    if keep_signals:  # ray.init installs its handler through this function (Ray 2.x)
        ray_utils.set_sigterm_handler = lambda handler: None
    try:
        init_ray(
            num_cpus=cfg.ray_num_cpus,
            temp_dir=cfg.ray_temp_dir,
            attempts=cfg.ray_start_attempts,
            dashboard_port=free_port() if embedded else None,  # the dashboard hosts the Jobs API
            log_to_driver=False,
            stop=stop,
        )
    finally:
        ray_utils.set_sigterm_handler = replace_handler
    return embedded


def check_state_dir(state_dir: str | os.PathLike[str]) -> None:
    """Raise ``ValueError`` unless ``state_dir`` is a writable directory or one
    that can be made (its nearest existing ancestor a writable directory):
    checked before Ray starts, where the app's deployment would fail on it."""
    problem = unwritable_reason(state_dir)
    if problem:
        raise ValueError(f"state_dir={state_dir}: {problem}")


class _Stopped(BaseException):
    """A SIGINT/SIGTERM during start-up: unwinds it to :func:`run`'s clean-up."""


def run(
    cfg: ServeConfig | dict[str, Any],
    *,
    until: threading.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until ``until`` is set (default: SIGINT or SIGTERM), then stop.

    Without ``until`` a SIGINT or SIGTERM at any moment, start-up included,
    ends in the same clean-up: Serve's app removed (on a cluster) and Ray shut
    down (the embedded instance whole, its temp dir removed). While Ray starts
    the signal is noted and acted on once ``ray.init`` returns (an exception
    raised inside it can end in Ray's native code, which aborts), and a start
    that failed is not tried again; while Serve starts it interrupts the
    start; each step of the start checks for it as well, in case library code
    swallowed the interruption. ``ray.init`` would put a SIGTERM handler of
    its own in place (``sys.exit``), which is kept out; its core worker
    installs a native one, so ours go back as soon as ``ray.init`` returns.
    """
    with refusing():  # refuse to start before any cluster exists
        if not isinstance(cfg, ServeConfig):
            cfg = from_mapping(cfg)
        cfg.validate()
        token = cfg.token()
        if not os.environ.get("RAY_ADDRESS"):  # on a cluster its nodes hold these
            check_state_dir(cfg.state_dir)
            check_port_free(cfg.host, cfg.port)  # else found once Ray has started (~30 s)
    stop = until or threading.Event()
    starting = True
    interrupt = True  # False while Ray starts: the signal is only noted

    def on_signal(*_: object) -> None:
        first = not stop.is_set()
        stop.set()
        if starting and interrupt and first:  # once: not to cut the clean-up short
            raise _Stopped()

    def take_signals() -> None:
        if until is None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, on_signal)
        if starting and stop.is_set():  # a signal whose interruption was swallowed
            raise _Stopped()

    take_signals()
    deployed = False
    # Every Ray process this one starts (raylet, workers, the replica, each
    # job and its actors and browsers) would inherit the token from here: it
    # goes to the replica as an argument instead (build), and back into this
    # process's environment once Ray is down.
    hidden = os.environ.pop(cfg.token_env, None) if cfg.token_env else None
    try:
        interrupt = False
        embedded = start_ray(cfg, keep_signals=until is None, stop=stop.is_set)
        interrupt = True
        take_signals()  # the native handler of Ray's core worker replaced them
        from ray import serve

        from serve.deployment import APP_NAME, build

        deployed = True  # from here on there may be an app to remove
        serve.start(http_options={"host": cfg.host, "port": cfg.port})
        take_signals()
        serve.run(build(cfg, token), name=APP_NAME, route_prefix="/")
        take_signals()  # whatever Serve did to them
        url = f"http://{cfg.host}:{cfg.port}"
        print(f"training service on {url} (state in {os.path.abspath(cfg.state_dir)})", flush=True)
        if on_ready is not None:
            on_ready(url)
        starting = False  # from here on a signal only sets `stop`
        while not stop.wait(1.0):  # short waits: signal handlers run in between
            pass
    except (_Stopped, Exception) as exc:
        # The interruption may surface as a library's own error (Ray's Cython
        # code turns it into a SystemError): with a stop asked for, it is one.
        if not (starting and stop.is_set()):
            raise
        print(f"stopped by a signal during start-up ({type(exc).__name__})", flush=True)
    finally:
        starting = False
        # An embedded instance goes down whole with ray.shutdown() (Serve's
        # own graceful shutdown can stall for minutes on a loaded machine).
        if deployed and not embedded:
            from ray import serve

            from serve.deployment import APP_NAME

            serve.delete(APP_NAME)
        from browser_env.ray_local import shutdown_ray

        shutdown_ray()
        if hidden is not None:
            os.environ[cfg.token_env] = hidden


def hydra_entry(cfg: Any) -> None:
    from omegaconf import OmegaConf

    with exit_on_refusal():  # a refused config: one line on stderr, exit 2
        run(OmegaConf.to_container(cfg, resolve=True))


def register_config() -> None:
    """Store :class:`ServeConfig` in Hydra's ConfigStore as ``serve_schema``
    (``conf/serve.yaml`` builds on it) and the ``--help`` resolver."""
    from hydra.core.config_store import ConfigStore

    from browser_env import cli_help

    ConfigStore.instance().store(name="serve_schema", node=ServeConfig)
    cli_help.register()


def main() -> None:
    import hydra

    register_config()
    hydra.main(version_base="1.3", config_path="../conf", config_name="serve")(hydra_entry)()


if __name__ == "__main__":
    main()
