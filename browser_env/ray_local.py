"""Ray on this machine: an embedded instance on loopback, or the cluster in ``RAY_ADDRESS``.

::

    from browser_env.ray_local import init_ray

    init_ray()        # embedded: every Ray process on 127.0.0.1; RAY_ADDRESS joins a cluster
    ...
    shutdown_ray()    # ray.shutdown(), then the embedded instance's temp dir goes

The one place the project starts Ray (rollout actors, :class:`RayVectorEnv
<browser_env.ray_vector.RayVectorEnv>`, the training service), because
``ray.init`` needs three things done around it that it does not do itself:

- **Loopback.** Ray replaces a loopback node address (``_node_ip_address=
  "127.0.0.1"``, or ``RAY_ADDRESS=127.0.0.1:6379``) with the machine's routable
  IP, guessed from its default route, and its servers then listen on every
  interface. Only with its single-machine setting (Ray's
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the default on laptops) does it keep
  127.0.0.1 and bind there. The embedded instance, and joining a cluster whose
  address is a loopback one (a local multi-node test cluster), turn that
  setting on; after the start the node's address is checked, and a Ray that
  still chose another one is shut down with an error. A cluster on a real
  address is joined as it is.
- **Start-up on a loaded machine.** Ray's start-up waits assume an idle
  machine; on a loaded one the raylet can miss them, so the agents' ports are
  given up front, the waits lengthened, and a start that still times out is
  cleaned up and tried again.
- **Its own token.** A new local Ray turns token authentication on by
  default, prints that it did, and writes the token to ``~/.ray/auth_token``
  (readable by every user); the embedded instance gets a fresh token in this
  process's environment instead (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``,
  inherited by every Ray process it starts), unless ``RAY_AUTH_MODE`` is set.
- **Its own files.** Session files go to a temp dir of our own under /tmp
  (short: Ray's socket paths are capped), never a shared ``/tmp/ray``;
  :func:`shutdown_ray` stops the instance and removes that dir (Ray leaves
  its session dirs behind, and one per run piled up), as does the
  interpreter's exit when the driver did not call it.

Ray is imported only here and where it is used (``pip install "browser-rl[ray]"``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import socket
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from browser_env.policy import is_loopback

__all__ = [
    "check_placeable",
    "close_actors",
    "free_port",
    "init_ray",
    "kill_processes_using",
    "processes_using",
    "shutdown_ray",
    "unplaceable",
]

LOOPBACK = "127.0.0.1"

# the temp dir init_ray made for the embedded instance up now (None: none, or the caller's)
_own_root: str | None = None
# the auth variables init_ray put in os.environ for it
_own_env: list[str] = []


def _ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError as exc:  # pragma: no cover - ray is in the lock
        raise ModuleNotFoundError('Ray is needed here: pip install "browser-rl[ray]"') from exc
    return ray


def init_ray(
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    temp_dir: str | None = None,
    attempts: int = 3,
    dashboard_port: int | None = None,
    log_to_driver: bool = True,
    stop: Callable[[], bool] | None = None,
) -> bool:
    """Start (or join, with ``RAY_ADDRESS``) Ray unless it is running; True when this call did.

    Args:
        num_cpus: CPUs the embedded instance offers (default: all).
        num_gpus: GPUs it offers (default: those Ray finds).
        temp_dir: where its session files go (default: a new dir under /tmp,
            removed by :func:`shutdown_ray`; a dir given here is kept); each
            try uses a subdir of its own.
        attempts: starts to try when Ray's start-up times out.
        stop: asked after a start that failed; when it returns True no
            further start is tried (a stop asked for while Ray started, such
            as the caller's SIGTERM, does not wait for the remaining tries:
            minutes each on a loaded machine).
        dashboard_port: start Ray's dashboard (which hosts the Jobs API) on
            127.0.0.1 at this port; ``None``: no dashboard.
        log_to_driver: forward workers' output to this process.

    Raises:
        RuntimeError: Ray came up on an address other than 127.0.0.1.
        Exception: the last start's error (Ray down, the temp dir made here
            removed): one that did not time out, the last of ``attempts``, or
            the one after which ``stop`` returned True.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
    os.environ.setdefault("RAY_worker_register_timeout_seconds", "180")
    ray = _ray()
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
        if is_loopback(host):
            _keep_loopback()
        ray.init(address=address, log_to_driver=log_to_driver)
        return True
    _keep_loopback()
    _own_token()
    global _own_root
    root = temp_dir or tempfile.mkdtemp(prefix="ray-rollouts-", dir="/tmp")
    _own_root = None if temp_dir else root
    if _own_root is not None:
        atexit.register(_shutdown_at_exit, _own_root)  # a driver that ends without shutdown_ray
    dashboard = (
        {"include_dashboard": True, "dashboard_host": LOOPBACK, "dashboard_port": dashboard_port}
        if dashboard_port is not None
        else {"include_dashboard": False}
    )
    for attempt in range(1, attempts + 1):
        session_dir = os.path.join(root, f"t{attempt}")  # short: socket paths are capped
        try:
            with _agent_ports(session_dir):
                ray.init(
                    address="local",
                    num_cpus=num_cpus,
                    num_gpus=num_gpus,
                    _node_ip_address=LOOPBACK,
                    _temp_dir=session_dir,
                    configure_logging=False,
                    log_to_driver=log_to_driver,
                    **dashboard,
                )
            break
        except Exception as exc:
            ray.shutdown()
            kill_processes_using(session_dir)
            if attempt == attempts or "timed out" not in str(exc).lower() or (stop and stop()):
                _release_own()
                raise
            print(f"Ray did not start ({exc}); retrying ({attempt}/{attempts})", flush=True)
    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:
        ray.shutdown()
        kill_processes_using(root)
        _release_own()
        raise RuntimeError(
            f"the embedded Ray came up on {node_ip}, not {LOOPBACK}: this Ray release no "
            "longer keeps a loopback node address (see browser_env/ray_local.py)"
        )
    return True


def shutdown_ray() -> None:
    """``ray.shutdown()``, then remove the temp dir :func:`init_ray` made for an
    embedded instance (its session files and logs; a cluster's, or a dir the
    caller named, is left alone) and the auth variables it set."""
    _ray().shutdown()
    _release_own()


def _shutdown_at_exit(root: str) -> None:
    if _own_root == root:  # not yet removed by shutdown_ray
        shutdown_ray()


def _release_own() -> None:
    """What init_ray set up for the instance that is down now: its temp dir and auth variables."""
    _remove_own_root()
    _drop_own_token()


def _remove_own_root() -> None:
    global _own_root
    root, _own_root = _own_root, None
    if root is not None:
        kill_processes_using(root)  # a process that outlived the shutdown would write on
        shutil.rmtree(root, ignore_errors=True)


def _own_token() -> None:
    """Token authentication with a token of this process's own (module doc),
    unless ``RAY_AUTH_MODE`` says otherwise. Ray reads its config once, so it
    is read again here, as Ray does when it turns the mode on itself."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    values = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_urlsafe(32)}
    for name, value in values.items():
        if name not in os.environ:
            os.environ[name] = value
            _own_env.append(name)
    _reload_auth()


def _drop_own_token() -> None:
    """Undo :func:`_own_token` once its Ray is down (a later ``init_ray`` may
    join a cluster with a token of its own)."""
    if _own_env:
        while _own_env:
            os.environ.pop(_own_env.pop(), None)
        _reload_auth()


def _reload_auth() -> None:
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _keep_loopback() -> None:
    """Make Ray keep 127.0.0.1 as this node's address (module doc): its
    single-machine setting, read once when Ray is imported, so it is set both
    in the environment (processes started later) and in the imported module."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


@contextlib.contextmanager
def _agent_ports(session_root: str) -> Iterator[None]:
    """Fill the Ray agents' ports in before the node starts.

    With port 0 the raylet waits a fixed 15 s (Ray 2.60, not configurable) for
    each agent to report the port it bound, and aborts the node when a loaded
    machine is slower; so the ports are chosen here. The dashboard agent's
    listen port is still read from the file the agent writes once it runs, so
    that file (``dashboard_agent_listen_port_<node id>``: the port number) is
    written here too as soon as the node id is known (from the GCS's port file
    of the same node), with the port the agent is told to bind.
    """
    from ray._private.parameter import RayParams

    original = RayParams.__init__
    chosen: dict[str, int] = {}

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        for name in ("metrics_agent_port", "metrics_export_port", "runtime_env_agent_port"):
            if not getattr(self, name, None):
                setattr(self, name, free_port())
        self.dashboard_agent_listen_port = free_port()  # the default collides with other Rays
        chosen["listen"] = self.dashboard_agent_listen_port

    stop = threading.Event()

    def write_listen_port() -> None:
        while not stop.wait(0.2):
            port = chosen.get("listen")
            for gcs_file in Path(session_root).glob("session_*/gcs_server_port_*"):
                node_id = gcs_file.name.removeprefix("gcs_server_port_")
                target = gcs_file.parent / f"dashboard_agent_listen_port_{node_id}"
                if port and not target.exists():
                    tmp = target.with_name(f".{target.name}.tmp")
                    tmp.write_text(str(port))
                    os.replace(tmp, target)

    watcher = threading.Thread(target=write_listen_port, daemon=True, name="ray-agent-port")
    RayParams.__init__ = init  # type: ignore[method-assign]
    watcher.start()
    try:
        yield
    finally:
        RayParams.__init__ = original  # type: ignore[method-assign]
        stop.set()
        watcher.join(timeout=5)


def unplaceable(
    count: int,
    cpus: float,
    gpus: float = 0.0,
    names: tuple[str, str, str] = ("workers", "cpus_per_worker", "gpus_per_worker"),
) -> str | None:
    """Why ``count`` actors of ``cpus`` CPUs and ``gpus`` GPUs each cannot all run
    on the Ray nodes up now, or None when they can (totals per resource, and
    one actor's GPUs against the largest node's): Ray would leave the rest
    waiting for ever, so callers refuse to start them (or, on a cluster that
    may grow, warn). ``names``: the caller's names for the three, in the message."""
    ray = _ray()
    count_name, cpus_name, gpus_name = names
    total = ray.cluster_resources()
    largest_gpus = max((n["Resources"].get("GPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
    if gpus > largest_gpus:
        return (
            f"{gpus_name}={gpus:g} but the largest Ray node has {largest_gpus:g} GPU(s): "
            f"no actor could start ({gpus_name}=0 plays on CPU)"
        )
    for name, each, each_name in (("GPU", gpus, gpus_name), ("CPU", cpus, cpus_name)):
        if each and count * each > total.get(name, 0) + 1e-9:
            return (
                f"{count_name}={count} x {each_name}={each:g} needs {count * each:g} {name}s but "
                f"the Ray cluster has {total.get(name, 0):g}: some actors could never start"
            )
    return None


def check_placeable(
    count: int,
    cpus: float,
    gpus: float = 0.0,
    names: tuple[str, str, str] = ("workers", "cpus_per_worker", "gpus_per_worker"),
    *,
    stacklevel: int = 2,
) -> None:
    """Raise ``ValueError`` when :func:`unplaceable` says why ``count`` actors could
    never all start on the Ray up now; joined through ``RAY_ADDRESS`` (a cluster
    that may grow), warn instead (``stacklevel`` as in ``warnings.warn``, from the
    caller of this function)."""
    problem = unplaceable(count, cpus, gpus, names)
    if problem is None:
        return
    if not os.environ.get("RAY_ADDRESS"):
        raise ValueError(problem)
    warnings.warn(f"{problem}; waiting for the cluster to grow", stacklevel=stacklevel + 1)


def close_actors(actors: Sequence[Any], timeout_s: float) -> None:
    """Ask every actor to ``close`` (its envs, browser, agent), all at once and for
    at most ``timeout_s`` in all, then kill them all; then raise what a ``close``
    itself raised (the first), as closing local envs would: a recorder's failed
    final write is not dropped. An actor that had died has nothing to close (its
    error is not raised), and one still closing at the deadline is killed. No
    actors: nothing is done (``ray.wait([])`` would start a default Ray when
    none is connected, as after a runner shut its own down)."""
    if not actors:
        return
    ray = _ray()
    closing = [actor.close.remote() for actor in actors]
    failed: BaseException | None = None
    try:
        # a dead actor's call is ready (with its error) at once
        ready, _ = ray.wait(closing, num_returns=len(closing), timeout=timeout_s)
        for ref in ready:
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                pass
            except ray.exceptions.RayTaskError as exc:
                failed = failed or exc.as_instanceof_cause()
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
    if failed is not None:
        raise failed


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (free when asked; bind it soon)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def processes_using(path: str) -> list[Any]:
    """Every process but this one whose command line names ``path`` (psutil
    processes): those of a Ray instance started with that temp dir."""
    import psutil

    me = os.getpid()
    return [
        proc
        for proc in psutil.process_iter(["pid", "cmdline"])
        if proc.info["pid"] != me and path in " ".join(proc.info["cmdline"] or ())
    ]


def kill_processes_using(path: str) -> None:
    """SIGKILL :func:`processes_using` ``path``: the processes of a Ray instance
    started with that temp dir (ours alone)."""
    import psutil

    for proc in processes_using(path):
        with contextlib.suppress(psutil.Error):
            proc.kill()
