"""The HTTP API of the training service as a FastAPI app, buildable without Ray.

:func:`create_app` takes a :class:`~serve.service.TrainingService` (with any
job backend) and the bearer token; :mod:`serve.deployment` wraps the same
app as a Ray Serve ingress, and tests drive it with ``TestClient``. Routes
are thin: they check ids and the request size (``max_upload_bytes`` for an
upload, ``max_job_request_bytes`` for a job), then call the service. Every
route but ``GET /healthz`` depends on :func:`auth`; handlers that touch the
disk are plain ``def`` (FastAPI runs them in a thread pool) so a slow one
never blocks the replica's event loop.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from serve.auth import bearer_matches
from serve.service import ServiceError, TrainingService
from serve.store import JOB_ID
from serve.uploads import UploadRejected

__all__ = ["JobRequest", "create_app"]


class JobRequest(BaseModel):
    learner: str = Field(description="sft | sdft | grpo")
    dataset_ids: list[str] = Field(default_factory=list)
    overrides: dict[str, Any] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)


def create_app(service: TrainingService, token: str | None, *, max_upload_bytes: int) -> FastAPI:
    """The API over ``service``; ``token`` None serves without auth (the caller
    decided that is allowed: :meth:`serve.config.ServeConfig.token`)."""

    def auth(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is not None and not bearer_matches(authorization, token):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    # no /docs, /redoc or /openapi.json: they would answer without the token
    app = FastAPI(
        title="browser-rl training service",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    api = APIRouter(prefix="/v1", dependencies=[Depends(auth)])

    @app.exception_handler(ServiceError)
    @app.exception_handler(UploadRejected)
    async def refused(request: Request, exc: ServiceError | UploadRejected) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.put("/datasets", status_code=201)
    async def put_dataset(request: Request, response: Response) -> dict[str, Any]:
        if _declared_over(request, max_upload_bytes):
            raise ServiceError(413, f"upload larger than {max_upload_bytes} bytes")
        workdir = service.store.temp_dir()
        try:
            body = workdir / "body"
            digest, size = hashlib.sha256(), 0
            with body.open("wb") as out:
                # Chunked bodies carry no Content-Length: count while reading.
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_upload_bytes:
                        raise ServiceError(413, f"upload larger than {max_upload_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)
            if size == 0:
                raise ServiceError(422, "empty upload")
            manifest, created = await run_in_threadpool(
                service.add_dataset, body, digest.hexdigest(), size
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        response.status_code = 201 if created else 200
        return manifest

    @api.get("/datasets")
    def list_datasets() -> list[dict[str, Any]]:
        return service.datasets()

    @api.post("/jobs", status_code=201, openapi_extra=_json_body(JobRequest))
    async def create_job(
        request: Request,
        response: Response,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        # Read here, not as a JobRequest parameter: FastAPI would read any size.
        body = await _read_capped(request, service.cfg.max_job_request_bytes)
        try:
            job_request = JobRequest.model_validate_json(body)
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            raise RequestValidationError(errors) from None
        job, created = await run_in_threadpool(
            service.create_job, job_request.model_dump(), idempotency_key
        )
        response.status_code = 201 if created else 200
        return job

    @api.get("/jobs")
    def list_jobs() -> list[dict[str, Any]]:
        return service.jobs()

    @api.get("/jobs/{job_id}")
    def get_job(job_id: str) -> dict[str, Any]:
        return service.job(_checked(job_id))

    @api.get("/jobs/{job_id}/logs")
    def get_logs(job_id: str, offset: int = 0) -> dict[str, Any]:
        return service.logs(_checked(job_id), offset)

    @api.post("/jobs/{job_id}/cancel", status_code=202)
    def cancel_job(job_id: str) -> dict[str, Any]:
        return service.cancel(_checked(job_id))

    @api.get("/jobs/{job_id}/adapter")
    def get_adapter(job_id: str) -> FileResponse:
        archive = service.adapter_archive(_checked(job_id))
        return _TempFileResponse(
            archive, media_type="application/gzip", filename=f"{job_id}-adapter.tar.gz"
        )

    app.include_router(api)
    return app


class _TempFileResponse(FileResponse):
    """A FileResponse of a file alone in a temp dir, which goes once the response
    ends, however it ends: Starlette runs a ``background`` task only after a
    whole answer, not after its answer to a bad ``Range`` header (400, 416) or
    a transfer that raised."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            shutil.rmtree(Path(self.path).parent, ignore_errors=True)


async def _read_capped(request: Request, limit: int) -> bytes:
    """The request body; 413 past ``limit`` bytes, by Content-Length or, for a
    chunked body, as it is read."""
    if _declared_over(request, limit):
        raise ServiceError(413, f"request body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ServiceError(413, f"request body larger than {limit} bytes")
    return bytes(body)


def _declared_over(request: Request, limit: int) -> bool:
    """Whether the request's Content-Length is not a plain decimal of at most
    ``limit`` (compared by length first: ``int()`` refuses past 4300 digits)."""
    declared = request.headers.get("content-length")
    if declared is None:
        return False
    if not (declared.isascii() and declared.isdigit()):
        return True
    digits = declared.lstrip("0")
    return len(digits) > len(str(limit)) or int(digits or "0") > limit


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a route that reads its JSON body itself."""
    schema = {"application/json": {"schema": model.model_json_schema()}}
    return {"requestBody": {"required": True, "content": schema}}


def _checked(job_id: str) -> str:
    if not JOB_ID.match(job_id):
        raise ServiceError(404, "no such job")
    return job_id
