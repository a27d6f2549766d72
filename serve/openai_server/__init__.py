"""An OpenAI-compatible HTTP server in front of any ``Backend``.

One local endpoint for several clients (agents, benchmarks, other tools)::

    python -m serve.openai_server model=path/to/model port=8000 [adapter=...] [api_key_env=MY_TOKEN]
    python -m serve.openai_server backend=mlx model=...

Serves ``POST /v1/chat/completions`` (non-streaming, and streaming as one
chunk), ``GET /v1/models`` and ``GET /health``. It binds 127.0.0.1 unless
told otherwise; with ``api_key_env`` set, clients must send ``Authorization:
Bearer <the value of that variable>``. Bodies larger than
``max_request_bytes`` get 413; images must be base64 ``data:`` URLs (the
server never fetches remote URLs) and belong to the last user message, as in
the ``Backend`` contract, and hold at most 64M pixels together; ``stop`` takes
at most 4 strings of at most 256 characters (:mod:`.wire`). Concurrent requests for one model (greedy or sampled) are
decoded as one batch (``max_batch_size``, default 8, gathered for up to
``batch_wait_ms``; the same tokens as one at a time: :mod:`.models`); others
are served one at a time.

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

The parts: :mod:`.app` (the routes and their auth), :mod:`.models` (the
base model and the runtime adapters: what the server serves, one request at
a time), :mod:`.schemas` (request bodies), :mod:`.wire` (OpenAI's response
and stream format), :mod:`.thread` (:class:`ServerThread`: the app in a
background thread; tests use it with port 0) and :mod:`.cli` (the Hydra
entry point over ``conf/openai_server.yaml``).

Importing this package is light: FastAPI, pydantic and uvicorn load with
the first use of :func:`create_app`, :class:`ServerThread` or :func:`run`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServerThread", "create_app", "main", "run"]

_LAZY = {
    "create_app": "serve.openai_server.app",
    "ServerThread": "serve.openai_server.thread",
    "run": "serve.openai_server.cli",
    "main": "serve.openai_server.cli",
}


def __getattr__(name: str) -> Any:  # lazy: the app pulls in FastAPI and pydantic
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'serve.openai_server' has no attribute {name!r}")
