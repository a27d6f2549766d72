"""Where training jobs run: the :class:`JobBackend` interface and its Ray Jobs implementation.

The service (:mod:`serve.service`) owns the queue and the records; a backend
only starts, observes and stops processes. :class:`RayJobBackend` submits
each job as a Ray Job whose submission id is the service's job id, so Ray
itself refuses a second submission under the same id. Every call has a
deadline: a Jobs API that accepts a connection and never answers, or a GCS
that does not report its nodes, raises :class:`BackendTimeout` instead of
holding the caller. Tests use a fake
backend with the same five methods; nothing here imports Ray at module level.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

__all__ = ["TERMINAL", "BackendTimeout", "JobBackend", "RayJobBackend", "unknown_job"]

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
"""Backend states after which a job's process is gone."""

T = TypeVar("T")

_NO_SUCH_JOB = re.compile(
    r"Request failed with status code 404: Job (?P<job_id>\S+) does not exist\.?"
)


class BackendTimeout(TimeoutError):
    """The backend did not answer in time; whether the call took effect is unknown."""


class JobBackend(Protocol):
    """Runs job processes. States are Ray's: PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED."""

    def submit(
        self,
        job_id: str,
        entrypoint: str,
        *,
        num_cpus: float,
        num_gpus: float,
        resources: Mapping[str, float],
        env_vars: Mapping[str, str],
    ) -> None:
        """Start ``entrypoint`` (a shell command) as job ``job_id``; raise on refusal
        (:class:`BackendTimeout` when the answer did not come: maybe started)."""
        ...

    def status(self, job_id: str) -> str | None:
        """The job's state, or None when the backend says it does not know the id
        (any more). Raise when it gives no clear answer (:class:`BackendTimeout`,
        an error): a job reported unknown is taken for lost and its process killed."""
        ...

    def stop(self, job_id: str) -> None:
        """Ask the job to stop (SIGTERM, then SIGKILL after a grace period)."""
        ...

    def node_resource(self) -> dict[str, float]:
        """A resource request that pins a job to the calling process's node."""
        ...

    def capacity(self, *, pinned: bool) -> dict[str, float]:
        """The most ``num_cpus`` and ``num_gpus`` one job could be given: the totals
        of the calling process's node when ``pinned`` (:meth:`node_resource`),
        else the largest of the alive nodes' (each key on its own). Raises
        :class:`BackendTimeout` when the cluster did not answer in time."""
        ...


class RayJobBackend:
    """Ray Jobs through ``JobSubmissionClient`` (HTTP to the cluster's dashboard).

    ``address`` is passed to the client; ``"auto"`` means the cluster this
    process is connected to (a Serve replica's own), named by its GCS
    address -- Ray's own "auto" would pick whichever cluster it finds on the
    machine first. Ray's token auth is taken from the environment
    (``RAY_AUTH_TOKEN``) by the client itself. Each HTTP request (the
    client's version check at construction included) waits at most
    ``timeout`` seconds to connect and as long again for each read, then
    raises :class:`BackendTimeout`; so does :meth:`capacity` when the GCS
    has not listed the nodes within ``timeout`` seconds.
    """

    def __init__(self, address: str = "auto", *, timeout: float = 30.0) -> None:
        import ray

        if address == "auto" and ray.is_initialized():
            address = ray.get_runtime_context().gcs_address
        self.timeout = timeout
        self._nodes_guard = threading.Lock()
        self._nodes_query: Future[list[dict[str, Any]]] | None = None  # see _nodes
        self._nodes_asked = 0.0  # when _nodes_query was sent (time.monotonic)
        self.client = self._call(_client_class(), address, timeout=timeout)

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        import requests

        try:
            return fn(*args, **kwargs)
        except (requests.exceptions.Timeout, ConnectionError) as exc:
            # the client's version check turns requests' ConnectTimeout (a
            # ConnectionError there too) into the built-in ConnectionError
            if not isinstance(exc, requests.exceptions.Timeout) and not isinstance(
                exc.__context__, requests.exceptions.Timeout
            ):
                raise
            raise BackendTimeout(
                f"the Ray Jobs API did not answer within {self.timeout:g} s"
            ) from exc

    def submit(
        self,
        job_id: str,
        entrypoint: str,
        *,
        num_cpus: float,
        num_gpus: float,
        resources: Mapping[str, float],
        env_vars: Mapping[str, str],
    ) -> None:
        self._call(
            self.client.submit_job,
            entrypoint=entrypoint,
            submission_id=job_id,
            entrypoint_num_cpus=num_cpus,
            entrypoint_num_gpus=num_gpus,
            entrypoint_resources=dict(resources) or None,
            runtime_env={"env_vars": dict(env_vars)},
            metadata={"service": "browser-rl"},
        )

    def status(self, job_id: str) -> str | None:
        """The job's state; None only for Ray's own "no such job" answer
        (:func:`unknown_job`). Any other error is raised: the caller takes it
        for a failed call, not for a job Ray forgot (that would kill a
        running job's process and mark it lost)."""
        try:
            return str(self._call(self.client.get_job_status, job_id).value)
        except RuntimeError as exc:
            if unknown_job(exc, job_id):
                return None
            raise

    def stop(self, job_id: str) -> None:
        try:
            self._call(self.client.stop_job, job_id)
        except RuntimeError as exc:
            if not unknown_job(exc, job_id):
                raise

    def node_resource(self) -> dict[str, float]:
        import ray

        return {f"node:{ray.util.get_node_ip_address()}": 0.001}

    def capacity(self, *, pinned: bool) -> dict[str, float]:
        pin = next(iter(self.node_resource())) if pinned else None
        nodes = [
            node["Resources"]
            for node in self._nodes()
            if node.get("Alive") and (pin is None or pin in node["Resources"])
        ]
        return {
            key: max((float(node.get(name, 0.0)) for node in nodes), default=0.0)
            for key, name in (("num_cpus", "CPU"), ("num_gpus", "GPU"))
        }

    def _nodes(self) -> list[dict[str, Any]]:
        """``ray.nodes()``, or :class:`BackendTimeout` after ``timeout`` seconds.

        ``ray.nodes()`` asks the GCS and takes no deadline, so it runs in a
        daemon thread that a hung GCS holds instead of the caller (a job
        request's capacity check). While one query is unanswered, later
        calls wait on it, for what is left of its ``timeout``, rather than
        start another: a hung GCS costs one thread, not one per request, and
        each request at most ``timeout`` seconds, not ``timeout`` each after
        the first's.
        """
        import ray

        with self._nodes_guard:
            query = self._nodes_query
            if query is None or query.done():
                query = self._nodes_query = Future()
                self._nodes_asked = time.monotonic()
                threading.Thread(
                    target=_answer, args=(query, ray.nodes), name="ray-nodes", daemon=True
                ).start()
            left = max(0.0, self._nodes_asked + self.timeout - time.monotonic())
        try:
            return query.result(timeout=left)
        except TimeoutError as exc:
            raise BackendTimeout(
                f"the Ray GCS did not list its nodes within {self.timeout:g} s"
            ) from exc


def unknown_job(exc: BaseException, job_id: str) -> bool:
    """Whether ``exc`` is the Ray Jobs API's answer that ``job_id`` does not exist.

    ``JobSubmissionClient`` raises ``RuntimeError("Request failed with status
    code {code}: {body}.")`` for every answer but 200, and the dashboard's job
    routes answer an unknown id with 404 and the body ``Job {id} does not
    exist`` (Ray 2.x, ``dashboard/modules/job/job_head.py``). Only that whole
    message counts: a 500 whose traceback mentions "line 404" or "does not
    exist" is a failed call, whatever it says.
    """
    found = _NO_SUCH_JOB.fullmatch(str(exc))
    return found is not None and found["job_id"] == job_id


def _answer(future: Future[T], fn: Callable[[], T]) -> None:
    """Set ``future`` to what ``fn()`` returns or raises."""
    try:
        future.set_result(fn())
    except BaseException as exc:  # whatever it is, the caller waiting on it gets it
        future.set_exception(exc)


def _client_class() -> type:
    """``JobSubmissionClient`` with a ``timeout`` for every request it sends.

    Its public methods take no timeout and ``requests`` waits forever by
    default; every request goes through ``_do_request``, which hands extra
    keyword arguments to ``requests.request`` (Ray 2.x).
    """
    from ray.job_submission import JobSubmissionClient

    class TimedJobSubmissionClient(JobSubmissionClient):
        def __init__(self, address: str, *, timeout: float) -> None:
            self._timeout = timeout  # before super(): its version check is a request
            super().__init__(address)

        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", self._timeout)
            return super()._do_request(method, endpoint, **kwargs)

    return TimedJobSubmissionClient
