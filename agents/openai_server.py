"""An OpenAI-compatible HTTP server in front of any ``Backend``.

One local endpoint for several clients (agents, benchmarks, other tools)::

    python -m agents.openai_server model=path/to/model port=8000 [adapter=...] [api_key_env=MY_TOKEN]
    python -m agents.openai_server backend=mlx model=...

Serves ``POST /v1/chat/completions`` (non-streaming, and streaming as one
chunk), ``GET /v1/models`` and ``GET /health``. It binds 127.0.0.1 unless
told otherwise; with ``api_key_env`` set, clients must send ``Authorization:
Bearer <the value of that variable>``. Bodies larger than
``max_request_bytes`` get 413; images must be base64 ``data:`` URLs (the
server never fetches remote URLs) and belong to the last user message, as in
the ``Backend`` contract. Requests are served one at a time.

Beyond the OpenAI schema, ``"return_token_ids": true`` adds the generated
``token_ids`` to the choice, as vLLM does.

Runtime LoRA adapters, as vLLM's (``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``)::

    POST /v1/load_lora_adapter    {"lora_name": "policy-3", "lora_path": "/abs/dir", "load_inplace": false}
    POST /v1/unload_lora_adapter  {"lora_name": "policy-3"}

A loaded adapter is a model: requests with ``"model": "policy-3"`` generate
with it, other requests are unaffected, ``GET /v1/models`` lists it (with
``root`` and ``parent``). Success answers 200 with vLLM's plain-text
message; a name already loaded is a 400 unless ``load_inplace`` is true, an
unknown name to unload a 404. These endpoints change what the server
serves and read server-side directories, so they are off unless the server
has a write token (``write_api_key_env``), and they require ``Authorization:
Bearer <write token>`` (which also works for the read endpoints).
``lora_path`` must be an absolute path to an existing directory holding a
PEFT LoRA ``adapter_config.json``, after symlinks are resolved inside
``adapter_root`` when one is set. Needs a backend that can hold several
adapters (the transformers backend).

In Python, :func:`create_app` builds the ASGI app and :class:`ServerThread`
runs it in a background thread (tests use it with port 0).
"""

from __future__ import annotations

import hmac
import ipaddress
import itertools
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from agents.backends.base import Backend, Generation, SamplingParams
from agents.backends.common import data_url_to_image, require

__all__ = ["ServerThread", "create_app", "main", "serve"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 20 * 1024 * 1024


def create_app(
    backend: Backend,
    model_name: str,
    *,
    api_key: str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_tokens_limit: int = 4096,
    write_api_key: str | None = None,
    adapter_root: str | os.PathLike[str] | None = None,
) -> Any:
    """A FastAPI app serving ``backend`` under the id ``model_name``.

    ``api_key``: the bearer token every request needs (None: open).
    ``write_api_key``: the bearer token the adapter endpoints need (None:
    they answer 403); it is accepted for reading too. ``adapter_root``: when
    set, adapters load only from directories inside it.
    """
    fastapi = require("fastapi", purpose="the OpenAI-compatible server")
    pydantic = require("pydantic", purpose="the OpenAI-compatible server")
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool

    class ContentPart(pydantic.BaseModel):
        type: Literal["text", "image_url"]
        text: str | None = None
        image_url: dict[str, Any] | str | None = None

    class ChatMessage(pydantic.BaseModel):
        role: Literal["system", "user", "assistant"]
        content: str | list[ContentPart] | None = None

    class ChatRequest(pydantic.BaseModel):
        model: str | None = None
        messages: list[ChatMessage] = pydantic.Field(min_length=1)
        max_tokens: int | None = pydantic.Field(default=None, ge=1)
        max_completion_tokens: int | None = pydantic.Field(default=None, ge=1)
        temperature: float = pydantic.Field(default=1.0, ge=0.0, le=2.0)
        top_p: float = pydantic.Field(default=1.0, gt=0.0, le=1.0)
        seed: int | None = None
        stop: str | list[str] | None = None
        n: int = 1
        stream: bool = False
        logprobs: bool = False
        return_token_ids: bool = False

    class LoadLoRARequest(pydantic.BaseModel):
        lora_name: str
        lora_path: str
        load_inplace: bool = False

    class UnloadLoRARequest(pydantic.BaseModel):
        lora_name: str
        lora_int_id: int | None = None

    app = fastapi.FastAPI(title="browser-rl OpenAI-compatible server")
    generate_lock = threading.Lock()
    created = int(time.time())
    # runtime adapters: public name -> record; PEFT names are our own (no dots allowed there)
    adapters: dict[str, dict[str, Any]] = {}
    adapter_ids = itertools.count(1)
    root = os.path.realpath(adapter_root) if adapter_root is not None else None

    def error(status: int, message: str, kind: str = "invalid_request_error") -> Any:
        return JSONResponse(
            {"error": {"message": message, "type": kind, "code": status}}, status_code=status
        )

    def bearer_is(request: Any, key: str) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), key.encode()
        )

    def authorized(request: Any) -> bool:
        if api_key is None:
            return True
        return bearer_is(request, api_key) or (
            write_api_key is not None and bearer_is(request, write_api_key)
        )

    def write_denied(request: Any) -> Any | None:
        """The error response for an adapter request that may not write, else None."""
        if write_api_key is None:
            return error(
                403,
                "runtime LoRA loading is off: start the server with write_api_key_env=VAR "
                "and send that token",
                "permission_error",
            )
        if not bearer_is(request, write_api_key):
            return error(401, "invalid or missing write token", "authentication_error")
        if not all(hasattr(backend, m) for m in ("add_adapter", "delete_adapter", "using_adapter")):
            return error(400, f"the {backend.name} backend cannot load adapters at run time")
        return None

    async def read_request(request: Any, schema: Any) -> Any:
        """The body validated as ``schema``, or an error response (413 when too large,
        400 when not JSON or not valid)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_request_bytes:
            return error(413, f"request body larger than {max_request_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_request_bytes:
                return error(413, f"request body larger than {max_request_bytes} bytes")
        try:
            return schema.model_validate(json.loads(body))
        except (ValueError, pydantic.ValidationError) as exc:
            return error(400, f"invalid request: {exc}"[:2000])

    def to_backend_call(req: ChatRequest) -> tuple[list[dict[str, str]], list[Any]]:
        messages: list[dict[str, str]] = []
        images: list[Any] = []
        user_turns = [i for i, m in enumerate(req.messages) if m.role == "user"]
        last_user = user_turns[-1] if user_turns else -1
        for i, message in enumerate(req.messages):
            if isinstance(message.content, list):
                texts = []
                for part in message.content:
                    if part.type == "text":
                        texts.append(part.text or "")
                        continue
                    if i != last_user:
                        raise ValueError("images are only accepted in the last user message")
                    url = (
                        part.image_url.get("url")
                        if isinstance(part.image_url, dict)
                        else part.image_url
                    )
                    if not isinstance(url, str):
                        raise ValueError("image_url needs a url")
                    images.append(data_url_to_image(url))
                content = "".join(texts)
            else:
                content = message.content or ""
            messages.append({"role": message.role, "content": content})
        return messages, images

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    def list_models(request) -> Any:
        if not authorized(request):
            return error(401, "invalid or missing bearer token", "authentication_error")
        cards = [
            {"id": model_name, "object": "model", "created": created, "owned_by": "browser-rl"}
        ]
        cards += [
            {
                "id": name,
                "object": "model",
                "created": record["created"],
                "owned_by": "browser-rl",
                "root": record["path"],
                "parent": model_name,
            }
            for name, record in adapters.items()
        ]
        return {"object": "list", "data": cards}

    async def chat_completions(request) -> Any:
        if not authorized(request):
            return error(401, "invalid or missing bearer token", "authentication_error")
        req = await read_request(request, ChatRequest)
        if isinstance(req, JSONResponse):
            return req
        served = req.model if req.model is not None else model_name
        if served != model_name and served not in adapters:
            known = [model_name, *adapters]
            return error(
                404,
                f"model {req.model!r} not found; this server serves {known!r}",
                "not_found_error",
            )
        if req.n != 1:
            return error(400, "only n=1 is supported")
        max_tokens = req.max_completion_tokens or req.max_tokens or 256
        if max_tokens > max_tokens_limit:
            return error(
                400, f"max_tokens {max_tokens} exceeds this server's limit {max_tokens_limit}"
            )
        stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        try:
            messages, images = to_backend_call(req)
            sampling = SamplingParams(
                max_new_tokens=max_tokens,
                temperature=req.temperature,
                top_p=req.top_p,
                seed=req.seed,
                stop=stop,
            )
        except ValueError as exc:
            return error(400, str(exc))

        def run() -> Generation:
            with generate_lock:
                if served == model_name:
                    return backend.generate(messages, images=images or None, sampling=sampling)
                with backend.using_adapter(adapters[served]["peft_name"]):
                    return backend.generate(messages, images=images or None, sampling=sampling)

        try:
            gen = await run_in_threadpool(run)
        except ValueError as exc:
            return error(400, str(exc))
        except Exception:
            logger.exception("generation failed")
            return error(500, "generation failed; see the server log", "server_error")
        completion = _completion(gen, served, backend, req.logprobs, req.return_token_ids)
        if req.stream:
            return StreamingResponse(_sse(completion), media_type="text/event-stream")
        return completion

    # Annotated here rather than in the signatures: with postponed evaluation
    # FastAPI could not resolve a lazily imported name and would read
    # ``request`` as a query parameter.
    async def load_lora_adapter(request) -> Any:
        denied = write_denied(request)
        if denied is not None:
            return denied
        req = await read_request(request, LoadLoRARequest)
        if isinstance(req, JSONResponse):
            return req
        if not _LORA_NAME.fullmatch(req.lora_name) or req.lora_name == model_name:
            return error(
                400,
                f"lora_name must be 1-128 of [A-Za-z0-9._:/+@-] and not the base model's name, "
                f"got {req.lora_name!r}",
            )
        if req.lora_name in adapters and not req.load_inplace:
            return error(400, f"The lora adapter '{req.lora_name}' has already been loaded.")
        try:
            path = _adapter_dir(req.lora_path, root)
        except FileNotFoundError as exc:
            return error(404, str(exc), "not_found_error")
        except ValueError as exc:
            return error(400, str(exc))
        peft_name = f"served_{next(adapter_ids)}"

        def load() -> None:
            with generate_lock:
                backend.add_adapter(path, peft_name)
                previous = adapters.get(req.lora_name)
                adapters[req.lora_name] = {
                    "peft_name": peft_name,
                    "path": path,
                    "created": int(time.time()),
                }
                if previous is not None:  # load_inplace: the old weights go once the new are in
                    backend.delete_adapter(previous["peft_name"])

        try:
            await run_in_threadpool(load)
        except ValueError as exc:
            return error(400, f"could not load the adapter: {exc}"[:2000])
        logger.info("loaded LoRA adapter %r from %s", req.lora_name, path)
        return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' added successfully.")

    async def unload_lora_adapter(request) -> Any:
        denied = write_denied(request)
        if denied is not None:
            return denied
        req = await read_request(request, UnloadLoRARequest)
        if isinstance(req, JSONResponse):
            return req
        if req.lora_name not in adapters:
            return error(
                404, f"The lora adapter '{req.lora_name}' cannot be found.", "not_found_error"
            )

        def unload() -> None:
            with generate_lock:
                record = adapters.pop(req.lora_name)
                backend.delete_adapter(record["peft_name"])

        await run_in_threadpool(unload)
        logger.info("unloaded LoRA adapter %r", req.lora_name)
        return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' removed successfully.")

    for endpoint in (list_models, chat_completions, load_lora_adapter, unload_lora_adapter):
        endpoint.__annotations__["request"] = fastapi.Request
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route("/v1/load_lora_adapter", load_lora_adapter, methods=["POST"])
    app.add_api_route("/v1/unload_lora_adapter", unload_lora_adapter, methods=["POST"])
    return app


_LORA_NAME = re.compile(r"[A-Za-z0-9._:/+@-]{1,128}")


def _adapter_dir(lora_path: str, root: str | None) -> str:
    """The resolved adapter directory ``lora_path`` names, or a ``ValueError`` saying why not.

    Absolute paths only (a relative one would depend on the server's working
    directory); symlinks and ``..`` are resolved before the ``root`` check,
    so neither leads outside it. ``FileNotFoundError`` when nothing is there.
    """
    if not lora_path or "\x00" in lora_path:
        raise ValueError("lora_path must be a non-empty path")
    if not os.path.isabs(lora_path):
        raise ValueError(f"lora_path must be absolute on the server's machine, got {lora_path!r}")
    path = os.path.realpath(lora_path)
    if root is not None and os.path.commonpath([path, root]) != root:
        raise ValueError(f"lora_path {lora_path!r} is outside this server's adapter_root")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no adapter directory at {lora_path!r}")
    config_file = os.path.join(path, "adapter_config.json")
    if not os.path.isfile(config_file):
        raise ValueError(f"{lora_path!r} is not a PEFT adapter directory (no adapter_config.json)")
    try:
        with open(config_file, encoding="utf-8") as f:
            peft_type = json.load(f).get("peft_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"{lora_path!r}: unreadable adapter_config.json ({exc})") from exc
    if str(peft_type).upper() != "LORA":
        raise ValueError(f"{lora_path!r} holds a {peft_type} adapter; only LoRA is served")
    return path


def _completion(
    gen: Generation, model_name: str, backend: Backend, logprobs: bool, token_ids: bool
) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": gen.text},
        "finish_reason": gen.info.get("finish_reason", "stop"),
        "logprobs": None,
    }
    if logprobs and gen.logprobs is not None:
        tokens = _token_strings(backend, gen.token_ids) if gen.token_ids else []
        choice["logprobs"] = {
            "content": [
                {
                    "token": tokens[i] if i < len(tokens) else "",
                    "logprob": lp,
                    "bytes": list((tokens[i] if i < len(tokens) else "").encode()),
                    "top_logprobs": [],
                }
                for i, lp in enumerate(gen.logprobs)
            ]
        }
    if token_ids:
        choice["token_ids"] = list(gen.token_ids)
    prompt_tokens = int(gen.info.get("prompt_tokens", 0))
    completion_tokens = int(gen.info.get("completion_tokens", len(gen.token_ids)))
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _token_strings(backend: Backend, token_ids: Sequence[int]) -> list[str]:
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None:
        return []
    return [tokenizer.decode([t]) for t in token_ids]


def _sse(completion: dict[str, Any]):
    """Stream a finished completion as OpenAI chunks: the content, then the finish reason."""
    choice = completion["choices"][0]
    base = {k: completion[k] for k in ("id", "created", "model")} | {
        "object": "chat.completion.chunk"
    }
    first = {
        "index": 0,
        "delta": {"role": "assistant", "content": choice["message"]["content"]},
        "finish_reason": None,
    }
    if choice["logprobs"] is not None:
        first["logprobs"] = choice["logprobs"]
    last = {"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}
    for chunk_choice in (first, last):
        yield f"data: {json.dumps(base | {'choices': [chunk_choice]})}\n\n"
    yield "data: [DONE]\n\n"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerThread:
    """Run an app with uvicorn in a background thread; ``port=0`` picks a free port.

    ::

        with ServerThread(create_app(backend, "tiny")) as server:
            OpenAIBackend(server.base_url, "tiny").generate(...)
    """

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        uvicorn = require("uvicorn", purpose="the OpenAI-compatible server")
        self.host = host
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off")
        )
        self._thread = threading.Thread(target=self._server.run, name="openai-server", daemon=True)
        self.port = port

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(cfg: Any) -> None:
    """Build the configured backend and serve it until interrupted (the entry point's body)."""
    from hydra.utils import instantiate

    uvicorn = require("uvicorn", purpose="the OpenAI-compatible server")
    api_key = None
    if cfg.get("api_key_env"):
        api_key = os.environ.get(cfg.api_key_env)
        if not api_key:
            raise ValueError(f"api_key_env={cfg.api_key_env!r} but that variable is not set")
    if not _is_loopback(cfg.host) and api_key is None:
        logger.warning(
            "serving on %s without a bearer token: anyone who can reach it can use it", cfg.host
        )
    from omegaconf import open_dict

    with open_dict(cfg.backend):
        for key in ("model", "adapter"):
            if cfg.get(key) is not None:
                cfg.backend[key] = cfg[key]
    backend = instantiate(cfg.backend)
    model = str(cfg.backend.model)
    name = cfg.get("served_model_name") or os.path.basename(os.path.normpath(model))
    write_api_key = None
    if cfg.get("write_api_key_env"):
        write_api_key = os.environ.get(cfg.write_api_key_env)
        if not write_api_key:
            raise ValueError(
                f"write_api_key_env={cfg.write_api_key_env!r} but that variable is not set"
            )
        logger.warning(
            "runtime LoRA loading is on: holders of the write token can load adapters from %s",
            cfg.get("adapter_root") or "any directory this process can read",
        )
    app = create_app(
        backend,
        name,
        api_key=api_key,
        max_request_bytes=cfg.max_request_bytes,
        max_tokens_limit=cfg.max_tokens_limit,
        write_api_key=write_api_key,
        adapter_root=cfg.get("adapter_root"),
    )
    logger.info("serving %s (%s) at http://%s:%d/v1", name, backend.name, cfg.host, cfg.port)
    try:
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)
    finally:
        backend.close()


def main() -> None:
    hydra = require("hydra", purpose="the server's command line")
    hydra.main(version_base=None, config_path="../conf", config_name="openai_server")(serve)()


if __name__ == "__main__":
    main()
