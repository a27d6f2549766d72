"""The routes of the OpenAI-compatible server.

Each route is thin: auth is a dependency (:func:`reader` or :func:`writer`,
both through :func:`serve.auth.bearer_matches`), the body is read once with
a size cap and validated (:func:`read_body`), and the work is done by
:class:`~serve.openai_server.models.ServedModels` (what is served) and
:mod:`~serve.openai_server.wire` (OpenAI's format). Errors are raised as
:class:`ApiError` and answered in OpenAI's ``{"error": {...}}`` shape.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Annotated, Any

from agents.backends.base import Backend
from agents.backends.common import require
from serve.auth import bearer_matches
from serve.openai_server.models import AdapterExists, ServedModels
from serve.openai_server.schemas import ChatRequest, LoadLoRARequest, UnloadLoRARequest
from serve.openai_server.wire import backend_call, completion, sse

fastapi = require("fastapi", purpose="the OpenAI-compatible server")
pydantic = require("pydantic", purpose="the OpenAI-compatible server")

from fastapi import Depends, Request  # noqa: E402 - after require() names the extra
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "ApiError", "create_app"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 20 * 1024 * 1024


class ApiError(Exception):
    """An error answered to the client as ``{"error": {"message", "type", "code"}}``."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


@dataclass(frozen=True)
class _Settings:
    models: ServedModels
    api_key: str | None
    write_api_key: str | None
    max_request_bytes: int
    max_tokens_limit: int


def create_app(
    backend: Backend,
    model_name: str,
    *,
    api_key: str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_tokens_limit: int = 4096,
    write_api_key: str | None = None,
    adapter_root: str | os.PathLike[str] | None = None,
    max_batch_size: int = 8,
    batch_wait_ms: float = 2.0,
) -> Any:
    """A FastAPI app serving ``backend`` under the id ``model_name``.

    ``api_key``: the bearer token every request needs (None: open).
    ``write_api_key``: the bearer token the adapter endpoints need (None:
    they answer 403); it is accepted for reading too. ``adapter_root``: when
    set, adapters load only from directories inside it. ``max_batch_size``:
    the most concurrent requests decoded as one batch (1: one request
    at a time), ``batch_wait_ms`` how long a request that finds the backend
    idle waits for others (:mod:`.models`).
    """
    # no /docs, /redoc or /openapi.json: they would answer without the token
    app = fastapi.FastAPI(
        title="browser-rl OpenAI-compatible server",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = _Settings(
        ServedModels(
            backend,
            model_name,
            adapter_root,
            max_batch_size=max_batch_size,
            batch_wait_ms=batch_wait_ms,
        ),
        api_key,
        write_api_key,
        max_request_bytes,
        max_tokens_limit,
    )
    app.add_exception_handler(ApiError, _answer_error)
    app.include_router(router)
    return app


def _answer_error(request: Request, exc: ApiError) -> JSONResponse:
    body = {"error": {"message": exc.message, "type": exc.kind, "code": exc.status}}
    return JSONResponse(body, status_code=exc.status)


def reader(request: Request) -> _Settings:
    """Auth for the read routes: the read token or the write token (none when the server is open)."""
    settings: _Settings = request.app.state.settings
    header = request.headers.get("authorization")
    if settings.api_key is None or bearer_matches(header, settings.api_key):
        return settings
    if settings.write_api_key is not None and bearer_matches(header, settings.write_api_key):
        return settings
    raise ApiError(401, "invalid or missing bearer token", "authentication_error")


def writer(request: Request) -> _Settings:
    """Auth for the adapter routes: the write token, on a server that has one and
    a backend that can load adapters."""
    settings: _Settings = request.app.state.settings
    if settings.write_api_key is None:
        raise ApiError(
            403,
            "runtime LoRA loading is off: start the server with write_api_key_env=VAR "
            "and send that token",
            "permission_error",
        )
    if not bearer_matches(request.headers.get("authorization"), settings.write_api_key):
        raise ApiError(401, "invalid or missing write token", "authentication_error")
    if not settings.models.can_load_adapters:
        raise ApiError(
            400, f"the {settings.models.backend.name} backend cannot load adapters at run time"
        )
    return settings


async def read_body(request: Request, schema: type[Any], max_bytes: int) -> Any:
    """The body validated as ``schema``; 413 when larger than ``max_bytes``
    (counted as it streams in, whatever Content-Length claims), 400 when not
    JSON or not valid."""
    too_large = ApiError(413, f"request body larger than {max_bytes} bytes")
    declared = request.headers.get("content-length") or ""
    if declared.isascii() and declared.isdigit():
        digits = declared.lstrip("0")  # int() refuses past 4300 digits: lengths first
        if len(digits) > len(str(max_bytes)) or int(digits or "0") > max_bytes:
            raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    # off the event loop: parsing and validating up to max_bytes takes a while
    return await run_in_threadpool(_parse, bytes(body), schema)


def _parse(body: bytes, schema: type[Any]) -> Any:
    try:
        return schema.model_validate(json.loads(body))
    except RecursionError:  # json's answer to a deeply nested document
        raise ApiError(400, "invalid request: JSON nested too deeply") from None
    except (ValueError, pydantic.ValidationError) as exc:
        raise ApiError(400, f"invalid request: {exc}"[:2000]) from None


Reader = Annotated[_Settings, Depends(reader)]
Writer = Annotated[_Settings, Depends(writer)]
router = fastapi.APIRouter()


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/v1/models")
def list_models(settings: Reader) -> dict[str, Any]:
    return {"object": "list", "data": settings.models.cards()}


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, settings: Reader) -> Any:
    req = await read_body(request, ChatRequest, settings.max_request_bytes)
    models = settings.models
    served = req.model if req.model is not None else models.model_name
    if served not in models.names:
        raise ApiError(
            404,
            f"model {req.model!r} not found; this server serves {models.names!r}",
            "not_found_error",
        )
    try:
        # off the event loop: decoding a request's images takes up to a second
        messages, images, sampling = await run_in_threadpool(
            backend_call, req, settings.max_tokens_limit
        )
        gen = await run_in_threadpool(models.generate, served, messages, images, sampling)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    except KeyError:  # the adapter was unloaded while the request waited
        raise ApiError(404, f"model {served!r} was unloaded", "not_found_error") from None
    except Exception:
        logger.exception("generation failed")
        raise ApiError(500, "generation failed; see the server log", "server_error") from None
    body = completion(gen, served, models.backend, req.logprobs, req.return_token_ids)
    if req.stream:
        return StreamingResponse(sse(body), media_type="text/event-stream")
    return body


@router.post("/v1/load_lora_adapter")
async def load_lora_adapter(request: Request, settings: Writer) -> PlainTextResponse:
    req = await read_body(request, LoadLoRARequest, settings.max_request_bytes)
    try:
        path = settings.models.check_load(req.lora_name, req.lora_path, req.load_inplace)
    except FileNotFoundError as exc:
        raise ApiError(404, str(exc), "not_found_error") from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    try:
        await run_in_threadpool(settings.models.load, req.lora_name, path, inplace=req.load_inplace)
    except AdapterExists as exc:  # loaded by a concurrent request since check_load
        raise ApiError(400, str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, f"could not load the adapter: {exc}"[:2000]) from None
    logger.info("loaded LoRA adapter %r from %s", req.lora_name, path)
    return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' added successfully.")


@router.post("/v1/unload_lora_adapter")
async def unload_lora_adapter(request: Request, settings: Writer) -> PlainTextResponse:
    req = await read_body(request, UnloadLoRARequest, settings.max_request_bytes)
    try:
        await run_in_threadpool(settings.models.unload, req.lora_name)
    except KeyError:
        raise ApiError(
            404, f"The lora adapter '{req.lora_name}' cannot be found.", "not_found_error"
        ) from None
    logger.info("unloaded LoRA adapter %r", req.lora_name)
    return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' removed successfully.")
