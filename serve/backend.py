"""Where training jobs run: the :class:`JobBackend` interface and its Ray Jobs implementation.

The service (:mod:`serve.service`) owns the queue and the records; a backend
only starts, observes and stops processes. :class:`RayJobBackend` submits
each job as a Ray Job whose submission id is the service's job id, so Ray
itself refuses a second submission under the same id. Tests use a fake
backend with the same four methods; nothing here imports Ray at module level.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

__all__ = ["TERMINAL", "JobBackend", "RayJobBackend"]

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
"""Backend states after which a job's process is gone."""


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
        """Start ``entrypoint`` (a shell command) as job ``job_id``; raise on refusal."""
        ...

    def status(self, job_id: str) -> str | None:
        """The job's state, or None when the backend does not know the id (any more)."""
        ...

    def stop(self, job_id: str) -> None:
        """Ask the job to stop (SIGTERM, then SIGKILL after a grace period)."""
        ...

    def node_resource(self) -> dict[str, float]:
        """A resource request that pins a job to the calling process's node."""
        ...


class RayJobBackend:
    """Ray Jobs through ``JobSubmissionClient`` (HTTP to the cluster's dashboard).

    ``address`` is passed to the client; ``"auto"`` means the cluster this
    process is connected to (a Serve replica's own), named by its GCS
    address -- Ray's own "auto" would pick whichever cluster it finds on the
    machine first. Ray's token auth is taken from the environment
    (``RAY_AUTH_TOKEN``) by the client itself.
    """

    def __init__(self, address: str = "auto") -> None:
        import ray
        from ray.job_submission import JobSubmissionClient

        if address == "auto" and ray.is_initialized():
            address = ray.get_runtime_context().gcs_address
        self.client = JobSubmissionClient(address)

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
        self.client.submit_job(
            entrypoint=entrypoint,
            submission_id=job_id,
            entrypoint_num_cpus=num_cpus,
            entrypoint_num_gpus=num_gpus,
            entrypoint_resources=dict(resources) or None,
            runtime_env={"env_vars": dict(env_vars)},
            metadata={"service": "browser-rl"},
        )

    def status(self, job_id: str) -> str | None:
        try:
            return str(self.client.get_job_status(job_id).value)
        except RuntimeError as exc:
            if "does not exist" in str(exc) or "404" in str(exc):
                return None
            raise

    def stop(self, job_id: str) -> None:
        try:
            self.client.stop_job(job_id)
        except RuntimeError as exc:
            if "does not exist" not in str(exc):
                raise

    def node_resource(self) -> dict[str, float]:
        import ray

        return {f"node:{ray.util.get_node_ip_address()}": 0.001}
