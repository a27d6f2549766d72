"""OpenAI-compatible HTTP backend: NVIDIA NIM, vLLM, TGI, our own ``serve.openai_server``.

::

    backend = OpenAIBackend(
        base_url="https://integrate.api.nvidia.com/v1",
        model="meta/llama-3.1-8b-instruct",
        api_key_env="NVIDIA_API_KEY",
    )

Requests go to ``{base_url}/chat/completions`` through httpx (no OpenAI SDK).
Images become base64 ``data:image/png;base64,...`` URLs in the last user
message, when ``multimodal=True``; otherwise they are dropped and
``Generation.info["images_ignored"]`` says how many.

Connection errors, timeouts, 408, 429 and 5xx responses are retried with
exponential backoff (``backoff * 2**attempt`` seconds, capped at
``max_backoff``, or the server's ``Retry-After``); other 4xx responses raise
:class:`OpenAIRequestError` at once with the server's message. The API key is
read from an environment variable and never appears in reprs, errors or logs.

``token_ids`` are filled in only when the server returns them (vLLM and our
server do with ``return_token_ids=True``); ``logprobs`` when the server
supports ``logprobs: true``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from typing import Any

from agents.backends.base import BackendBase, Generation, Message, SamplingParams
from agents.backends.common import (
    apply_stop,
    batch_images,
    image_to_data_url,
    last_user_index,
    require,
    row_samplings,
    validate_messages,
)

__all__ = ["OpenAIBackend", "OpenAIError", "OpenAIRequestError", "OpenAIUnavailableError"]

logger = logging.getLogger(__name__)

DEFAULT_KEY_ENVS = ("NVIDIA_API_KEY", "OPENAI_API_KEY")
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class OpenAIError(RuntimeError):
    """A request to an OpenAI-compatible server failed."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class OpenAIRequestError(OpenAIError):
    """The server rejected the request (4xx other than 408/429): retrying will not help."""


class OpenAIUnavailableError(OpenAIError):
    """The server could not be reached or kept failing after every retry."""


class OpenAIBackend(BackendBase):
    """A model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        base_url: the API root, ending in ``/v1``.
        model: the model id the server knows.
        api_key_env: environment variable holding the key. ``None`` tries
            ``NVIDIA_API_KEY`` then ``OPENAI_API_KEY``; when none is set no
            ``Authorization`` header is sent (fine for local servers). ``""``
            never sends a key (a local server must not see your NIM key).
        multimodal: send images (only for vision models; text-only servers
            reject image parts).
        timeout: seconds per request (connect, read and write).
        max_retries: retries after the first attempt for transient failures.
        backoff, max_backoff: exponential backoff base and cap, in seconds.
        request_logprobs: ask for ``logprobs`` (turn off for servers that refuse it).
        return_token_ids: ask for generated token ids (vLLM >= 0.10.2, our server).
        tokenizer: local path or hub id of the model's tokenizer for exact
            ``count_tokens``; without it, tokens are estimated as characters / 3.
        extra_body: extra JSON fields merged into every request.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        *,
        multimodal: bool = False,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        request_logprobs: bool = True,
        return_token_ids: bool = False,
        tokenizer: str | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        httpx = require("httpx", purpose="the OpenAI-compatible backend")
        if max_retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError("max_retries and backoff must be >= 0 and timeout > 0")
        self.base_url = base_url.rstrip("/")
        self.model_name = model
        self.multimodal = multimodal
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.request_logprobs = request_logprobs
        self.return_token_ids = return_token_ids
        self.extra_body = dict(extra_body or {})
        self._key_envs = (
            DEFAULT_KEY_ENVS if api_key_env is None else (api_key_env,) if api_key_env else ()
        )
        self._api_key = next((os.environ[e] for e in self._key_envs if os.environ.get(e)), None)
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self._tokenizer_name = tokenizer
        self._tokenizer: Any = None

    # -- requests -----------------------------------------------------------

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Send with retries; return the decoded JSON body."""
        httpx = require("httpx")
        if self._closed:
            raise RuntimeError("this backend was closed")
        url = f"{self.base_url}{path}"
        last = ""
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            try:
                response = self._client.request(method, path, json=body)
            except httpx.TransportError as exc:  # connect, read, timeouts: retried
                last = f"{type(exc).__name__}: {exc}"
            except httpx.RequestError as exc:  # e.g. a body that does not decode: not retried
                raise OpenAIError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise OpenAIError(f"{url} returned invalid JSON") from exc
                message = _error_message(response)
                if response.status_code not in _RETRY_STATUS:
                    hint = ""
                    if response.status_code in (401, 403):
                        hint = (
                            f" (set the API key in ${' or $'.join(self._key_envs)})"
                            if self._key_envs
                            else " (api_key_env='' sends no key; name the variable holding it)"
                        )
                    raise OpenAIRequestError(
                        f"{method} {url} -> HTTP {response.status_code}: {message}{hint}",
                        response.status_code,
                    )
                last = f"HTTP {response.status_code}: {message}"
                retry_after = _retry_after(response)
            if attempt == self.max_retries:
                break
            delay = min(self.max_backoff, self.backoff * 2**attempt)
            if retry_after is not None:
                delay = min(self.max_backoff, max(delay, retry_after))
            logger.warning(
                "%s %s failed (%s); retry %d/%d in %.1fs",
                method,
                url,
                last,
                attempt + 1,
                self.max_retries,
                delay,
            )
            time.sleep(delay)
        raise OpenAIUnavailableError(
            f"{method} {url} failed after {self.max_retries + 1} attempts: {last}"
        )

    def list_models(self) -> list[str]:
        """Model ids the server offers (``GET /models``)."""
        return [m["id"] for m in self._request("GET", "/models").get("data", [])]

    def build_request(
        self,
        messages: Sequence[Message],
        images: Sequence[Any] | None = None,
        sampling: SamplingParams | None = None,
    ) -> dict[str, Any]:
        """The JSON body that :meth:`generate` sends."""
        sampling = sampling or SamplingParams()
        payload: list[dict[str, Any]] = [dict(m) for m in validate_messages(messages)]
        if images and self.multimodal:
            last = last_user_index(payload)
            parts: list[dict[str, Any]] = [{"type": "text", "text": payload[last]["content"]}]
            parts += [
                {"type": "image_url", "image_url": {"url": image_to_data_url(image)}}
                for image in images
            ]
            payload[last]["content"] = parts
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": payload,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "stream": False,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if self.request_logprobs:
            body["logprobs"] = True
        if self.return_token_ids:
            body["return_token_ids"] = True
        body.update(self.extra_body)
        return body

    def generate(
        self,
        messages: Sequence[Message],
        images: Sequence[Any] | None = None,
        sampling: SamplingParams | None = None,
    ) -> Generation:
        sampling = sampling or SamplingParams()
        images = list(images or [])
        body = self.build_request(messages, images, sampling)
        info: dict[str, Any] = {"model": self.model_name, "base_url": self.base_url}
        if images and not self.multimodal:
            info["images_ignored"] = len(images)
        start = time.perf_counter()
        data = self._request("POST", "/chat/completions", body)
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise OpenAIError(
                f"unexpected response shape from {self.base_url}: {data!r:.300}"
            ) from exc
        text, _ = apply_stop(text, sampling.stop)
        token_ids = [int(t) for t in choice.get("token_ids") or []]
        content_logprobs = (choice.get("logprobs") or {}).get("content")
        logprobs = (
            [float(entry["logprob"]) for entry in content_logprobs]
            if content_logprobs is not None
            else None
        )
        info.update(
            finish_reason=choice.get("finish_reason"),
            usage=data.get("usage"),
            latency_s=time.perf_counter() - start,
        )
        return Generation(text=text, token_ids=token_ids, logprobs=logprobs, info=info)

    def generate_batch(
        self,
        batch: Sequence[Sequence[Message]],
        images: Sequence[Sequence[Any] | None] | None = None,
        sampling: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        max_concurrency: int = 16,
    ) -> list[Generation]:
        """:meth:`generate` for every prompt of ``batch``, as concurrent requests
        (at most ``max_concurrency`` in flight): the server (vLLM, NIM, TGI,
        ``serve.openai_server``) batches them on its side. ``sampling`` is every
        request's, or one per request differing only in ``seed``. Results are
        in ``batch`` order; the first failed request's error is raised."""
        from concurrent.futures import ThreadPoolExecutor

        images = batch_images(batch, images)
        rows = row_samplings(sampling, len(batch))
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if len(batch) <= 1:
            return [self.generate(m, i, s) for m, i, s in zip(batch, images, rows, strict=True)]
        with ThreadPoolExecutor(
            min(max_concurrency, len(batch))
        ) as pool:  # httpx.Client is thread-safe
            futures = [
                pool.submit(self.generate, m, i, s)
                for m, i, s in zip(batch, images, rows, strict=True)
            ]
            return [future.result() for future in futures]

    def count_tokens(self, text: str) -> int:
        """Exact with ``tokenizer=``; otherwise a conservative estimate (3 characters a token)."""
        if self._tokenizer_name is not None:
            if self._tokenizer is None:
                transformers = require("transformers", purpose="exact token counts")
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(self._tokenizer_name)
            return len(self._tokenizer.encode(text, add_special_tokens=False))
        return math.ceil(len(text) / 3)

    def _release(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        key = "set" if self._api_key else "unset"
        return (
            f"OpenAIBackend(base_url={self.base_url!r}, model={self.model_name!r}, api_key={key})"
        )


def _error_message(response: Any) -> str:
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return str(message)[:500]
    except (ValueError, AttributeError):
        pass
    return response.text[:500] or response.reason_phrase


def _retry_after(response: Any) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None
