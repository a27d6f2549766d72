"""OpenAI's chat format on the wire <-> the ``Backend`` call.

:func:`backend_call` turns a validated :class:`~.schemas.ChatRequest` into
the messages, images and sampling a ``Backend`` takes; :func:`completion`
turns a ``Generation`` into a ``chat.completion`` body and :func:`sse` into
the chunks of a stream. Nothing here touches HTTP.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from agents.backends.base import Backend, Generation, SamplingParams
from agents.backends.common import data_url_to_image

if TYPE_CHECKING:
    from serve.openai_server.schemas import ChatRequest

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "MAX_IMAGE_PIXELS",
    "MAX_STOP",
    "MAX_STOP_CHARS",
    "backend_call",
    "completion",
    "sse",
]

DEFAULT_MAX_TOKENS = 256
MAX_IMAGE_PIXELS = 64_000_000
"""The pixels all images of one request may hold together: each is decoded to
RGB (3 bytes a pixel) before generation, and a tiny PNG can claim 64M pixels."""
MAX_STOP = 4
"""Stop strings one request may give (OpenAI's limit). The transformers
backend's stop criterion is built per request over the whole vocabulary, in
time and memory that grow with the strings' count and length."""
MAX_STOP_CHARS = 256
"""The longest stop string a request may give."""


def backend_call(
    req: ChatRequest, max_tokens_limit: int
) -> tuple[list[dict[str, str]], list[Any], SamplingParams]:
    """The messages, images and sampling for ``Backend.generate``.

    Raises ``ValueError`` (a 400 for the client) when the request asks for
    more than one choice or more tokens than ``max_tokens_limit``, gives more
    than :data:`MAX_STOP` stop strings or one longer than :data:`MAX_STOP_CHARS`,
    puts an image anywhere but in the last user message, or its images hold
    more than :data:`MAX_IMAGE_PIXELS` pixels together.
    """
    if req.n != 1:
        raise ValueError("only n=1 is supported")
    max_tokens = req.max_completion_tokens or req.max_tokens or DEFAULT_MAX_TOKENS
    if max_tokens > max_tokens_limit:
        raise ValueError(f"max_tokens {max_tokens} exceeds this server's limit {max_tokens_limit}")
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    if len(stop) > MAX_STOP or any(len(s) > MAX_STOP_CHARS for s in stop):
        raise ValueError(
            f"stop takes at most {MAX_STOP} strings of at most {MAX_STOP_CHARS} characters"
        )
    pixels_left = MAX_IMAGE_PIXELS
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
                # each image is checked against what the request's earlier ones left
                image = data_url_to_image(url, max_pixels=pixels_left)
                pixels_left -= image.width * image.height
                images.append(image)
            content = "".join(texts)
        else:
            content = message.content or ""
        messages.append({"role": message.role, "content": content})
    sampling = SamplingParams(
        max_new_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        seed=req.seed,
        stop=stop,
    )
    return messages, images, sampling


def completion(
    gen: Generation, model_name: str, backend: Backend, logprobs: bool, token_ids: bool
) -> dict[str, Any]:
    """A ``chat.completion`` body for ``gen``; ``token_ids`` adds vLLM's extra field."""
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


def sse(completion: dict[str, Any]) -> Iterator[str]:
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
