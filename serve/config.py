"""The training service's settings: one dataclass, the single source of defaults.

``conf/serve.yaml`` (``python -m serve``) and the ``args`` of
``serve/deploy.yaml`` (``serve deploy``) hold only overrides of these
fields; :func:`from_mapping` rejects unknown keys. :meth:`ServeConfig.token`
applies the security rules of the service: a token of at least
:data:`~serve.auth.MIN_TOKEN_LENGTH` characters, or an explicit
``allow_no_auth=true`` on a loopback address.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from agents.schema import help_field
from browser_env.policy import is_loopback
from serve.auth import MIN_TOKEN_LENGTH, load_token

__all__ = ["ServeConfig", "from_mapping", "is_loopback"]


_f = help_field  # a field with its help text


@dataclasses.dataclass
class ServeConfig:
    """Settings of ``python -m serve`` and of the Ray Serve application."""

    host: str = _f("127.0.0.1", "HTTP bind address; anything but loopback needs a token.")
    port: int = _f(8765, "HTTP port of the Serve proxy.")
    state_dir: str = _f("serve_state", "Jobs, datasets and idempotency keys live here as files.")
    token_env: str | None = _f(
        "BROWSER_RL_SERVE_TOKEN", "Environment variable holding the bearer token."
    )
    token_file: str | None = _f(None, "File holding the bearer token (instead of token_env).")
    allow_no_auth: bool = _f(
        False, "Serve without a token; refused unless host is a loopback address."
    )
    max_concurrent_jobs: int = _f(1, "Training jobs running at once; the rest wait queued.")
    max_queued_jobs: int = _f(1000, "Jobs waiting in the queue before submissions get 429.")
    shared_storage: bool = _f(
        False,
        "state_dir is on storage every Ray node sees; without it jobs are pinned to the "
        "service's node.",
    )
    resume_lost: bool = _f(
        False,
        "After a restart, a running job Ray no longer knows is queued again and resumes from "
        "its last checkpoint (else it is marked failed: lost).",
    )
    poll_interval_s: float = _f(1.0, "Seconds between scheduler passes (status, queue).")
    default_num_cpus: float = _f(1.0, "CPUs a job asks Ray for when the request names none.")
    default_num_gpus: float = _f(0.0, "GPUs a job asks Ray for when the request names none.")
    max_num_cpus: float | None = _f(
        None,
        "Most CPUs one job may ask for, its rollout actors' (GRPO runner=ray: workers x "
        "cpus_per_worker) included (422 beyond). null: the most one node offers, as Ray "
        "reports it at submission (the service's node unless shared_storage); set it on an "
        "autoscaling cluster, whose nodes to come Ray cannot report.",
    )
    max_num_gpus: float | None = _f(
        None, "Most GPUs one job may ask for (422 beyond); null: as for max_num_cpus."
    )
    max_rollout_envs: int = _f(
        32,
        "Most envs (browser contexts) one job's rollouts may play at once (422 beyond): GRPO "
        "runner=vector's workers, runner=ray's workers x envs_per_worker.",
    )
    allowed_models: list[str] | None = _f(
        ["tiny-random"],
        "Values the 'model' override may take; a preset's old name counts as the preset "
        "(tiny is tiny-random). null: any, including server paths.",
    )
    # upload limits
    max_upload_bytes: int = _f(256 << 20, "Largest request body of an upload (413 beyond).")
    max_uncompressed_bytes: int = _f(1 << 30, "Largest total size of an upload's files.")
    max_members: int = _f(50_000, "Most files and directories in one upload.")
    max_depth: int = _f(8, "Deepest path (components) in an upload.")
    max_image_side: int = _f(4096, "Largest PNG width or height (read from its header).")
    max_log_chunk: int = _f(1 << 20, "Most log bytes one logs request returns.")
    max_job_request_bytes: int = _f(
        256 << 10, "Largest request body of a job submission (413 beyond)."
    )
    # Ray
    replica_num_cpus: float = _f(
        0.1, "CPUs reserved by the Serve replica (Ray's default of 1 is half a small machine)."
    )
    ray_temp_dir: str | None = _f(
        None, "Embedded Ray's session dir root (default: a fresh dir under /tmp)."
    )
    ray_num_cpus: int | None = _f(None, "CPUs the embedded Ray offers (default: all).")
    ray_start_attempts: int = _f(
        3,
        "Starts of the embedded Ray before giving up (a loaded machine can miss Ray's "
        "fixed 15 s wait for its dashboard agent, which aborts the node).",
    )
    ray_jobs_address: str = _f(
        "auto",
        "Ray Jobs API address for the replica ('auto': the cluster it runs in, by its GCS address).",
    )
    ray_jobs_timeout_s: float = _f(
        30.0,
        "Seconds each Ray Jobs API request may take to connect, and again to answer, before "
        "it fails; a hung API then delays scheduling but never holds the service. A job "
        "request's capacity check waits as long for Ray's node list (then goes unchecked).",
    )

    def validate(self) -> None:
        """Raise ``ValueError`` for settings that cannot work."""
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if self.max_concurrent_jobs < 1:
            raise ValueError("max_concurrent_jobs must be >= 1")
        for name in (
            "max_upload_bytes",
            "max_uncompressed_bytes",
            "max_members",
            "max_depth",
            "max_job_request_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_log_chunk < 4:  # a chunk always holds one whole UTF-8 character
            raise ValueError("max_log_chunk must be >= 4")
        # NaN passes every comparison (poll_interval_s=nan made the scheduler spin)
        for name in ("ray_jobs_timeout_s", "poll_interval_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        for name in ("max_queued_jobs", "max_image_side", "ray_start_attempts", "max_rollout_envs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.ray_num_cpus is not None and self.ray_num_cpus < 1:
            raise ValueError(f"ray_num_cpus must be >= 1 or null (all), got {self.ray_num_cpus}")
        for name in ("default_num_cpus", "default_num_gpus", "replica_num_cpus"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        for name in ("max_num_cpus", "max_num_gpus"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0 or null, got {value}")

    def token(self) -> str | None:
        """The bearer token, or None where serving without one is allowed.

        Raises ``ValueError`` (the service refuses to start) when no token is
        configured and either the host is not loopback or ``allow_no_auth`` is
        false, and when a configured token is shorter than MIN_TOKEN_LENGTH.
        """
        token = load_token(self.token_env, self.token_file, min_length=MIN_TOKEN_LENGTH)
        if token is not None:
            return token
        if not is_loopback(self.host):
            raise ValueError(
                f"refusing to serve on {self.host!r} without a token: set ${self.token_env} "
                "(or token_file) to a secret of at least "
                f"{MIN_TOKEN_LENGTH} characters"
            )
        if not self.allow_no_auth:
            raise ValueError(
                f"no token: set ${self.token_env} (or token_file) to a secret of at least "
                f"{MIN_TOKEN_LENGTH} characters, or pass allow_no_auth=true to serve "
                "unauthenticated on loopback"
            )
        return None


def from_mapping(values: Mapping[str, Any]) -> ServeConfig:
    """A :class:`ServeConfig` from a mapping; unknown keys are an error."""
    names = {f.name for f in dataclasses.fields(ServeConfig)}
    values = {k: v for k, v in values.items() if not str(k).startswith("_")}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown serve settings: {unknown}; known: {sorted(names)}")
    cfg = ServeConfig(**values)
    cfg.validate()
    return cfg
