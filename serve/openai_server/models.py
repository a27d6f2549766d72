"""What the server serves: one base model and the LoRA adapters loaded at run time.

:class:`ServedModels` is the adapter registry behind the routes. Every call
that touches the backend (generation, adding and deleting adapters) holds
one lock, so an adapter never changes under a generation. The routes map its
errors to HTTP: ``ValueError`` is a 400, ``FileNotFoundError`` and
``KeyError`` are 404s.

Concurrent requests are decoded together: a request waits in a queue for
the lock, and whichever request takes the lock serves every queued request
of the same model and settings (seeds aside; up to ``max_batch_size``) with
one ``generate_batch``, whose tokens are each prompt's alone (the backend
contract: greedy rows decode as they would alone, and sampled rows draw from
streams of their own, so a seeded request samples what it samples alone;
with the tiny policy on a CPU the tokens are the same, while a batch's logits
differ in the last digits, so a near tie can go either way with what else
is in flight: ``max_batch_size=1`` gives bit-for-bit repeatable answers). The requests
that arrive while a generation runs form the next batch; a request that
finds the backend idle waits up to ``batch_wait_ms`` for others to join it
(a client's concurrent requests do not leave it at the same instant), so a
client's concurrent calls (the OpenAI backend's ``generate_batch``, a
vectorised rollout) batch as they would on vLLM. Requests with images or
stop strings are served one at a time, as are all with
``max_batch_size=1``; a batch that raises is served again one request at a
time, so an error is only the request's own. Written here rather than with
Ray Serve's ``@serve.batch``: this server runs without Ray, in one process,
and that decorator is for async Serve replicas.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agents.backends.base import Backend, Generation, SamplingParams

__all__ = ["LORA_NAME", "AdapterExists", "ServedModels", "adapter_dir"]

LORA_NAME = re.compile(r"[A-Za-z0-9._:/+@-]{1,128}")
"""What a runtime adapter may be called (vLLM's names, no whitespace or control bytes)."""

_RUNTIME_ADAPTER_METHODS = ("add_adapter", "delete_adapter", "using_adapter")


class AdapterExists(ValueError):
    """A load of a name already loaded, without ``load_inplace`` (vLLM's 400 and message)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"The lora adapter '{name}' has already been loaded.")


class _Request:
    """A queued request and, once served, its generation or exception. ``key``:
    what the requests of one batch share (the model, the sampling but its
    seed); ``sampling``: the request's own."""

    def __init__(
        self,
        key: tuple[str, SamplingParams],
        messages: list[dict[str, str]],
        sampling: SamplingParams,
    ) -> None:
        self.key, self.messages, self.sampling = key, messages, sampling
        self.generation: Generation | None = None
        self.error: BaseException | None = None
        self.done = False


@dataclass(frozen=True)
class _Adapter:
    peft_name: str  # the name inside the backend: our own, since PEFT allows no dots there
    path: str
    created: int


class ServedModels:
    """The base model ``model_name`` of ``backend`` and the adapters loaded over it.

    ``adapter_root``: when set, adapters load only from directories inside it.
    ``max_batch_size``: the most concurrent requests decoded together
    (1: one at a time); ``batch_wait_ms``: how long a request that finds the
    backend idle waits for others (see the module docstring).
    """

    def __init__(
        self,
        backend: Backend,
        model_name: str,
        adapter_root: str | os.PathLike[str] | None = None,
        *,
        max_batch_size: int = 8,
        batch_wait_ms: float = 2.0,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be >= 0, got {batch_wait_ms}")
        self.backend = backend
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_ms / 1e3
        self._queue: collections.deque[_Request] = collections.deque()
        self._arrived = threading.Condition()  # guards _queue; notified at every arrival
        self.model_name = model_name
        self.root = os.path.realpath(adapter_root) if adapter_root is not None else None
        self.created = int(time.time())
        self._adapters: dict[str, _Adapter] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        """Every model id a request may name: the base model first."""
        return [self.model_name, *self._adapters]

    @property
    def can_load_adapters(self) -> bool:
        return all(hasattr(self.backend, m) for m in _RUNTIME_ADAPTER_METHODS)

    def cards(self) -> list[dict[str, Any]]:
        """``GET /v1/models``' data: the base model, then each adapter with its
        ``root`` (directory) and ``parent`` (the base model)."""
        base = {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "browser-rl",
        }
        return [base] + [
            {
                "id": name,
                "object": "model",
                "created": adapter.created,
                "owned_by": "browser-rl",
                "root": adapter.path,
                "parent": self.model_name,
            }
            for name, adapter in self._adapters.items()
        ]

    def generate(
        self,
        model: str,
        messages: list[dict[str, str]],
        images: Sequence[Any],
        sampling: SamplingParams,
    ) -> Generation:
        """Generate with ``model`` (the base model or a loaded adapter's name);
        blocks while another call holds the backend, and may be served in a
        batch with the concurrent requests of the same model and settings."""
        batchable = (
            self.max_batch_size > 1
            and not images
            and not sampling.stop  # generate_batch would serve these one by one anyway
            and hasattr(self.backend, "generate_batch")
        )
        if not batchable:
            with self._lock, self._adapter(model):
                return self.backend.generate(messages, images=images or None, sampling=sampling)
        shared = dataclasses.replace(sampling, seed=None)
        if sampling.temperature == 0:  # greedy: seed and top_p change nothing
            sampling = shared = dataclasses.replace(shared, top_p=1.0)
        request = _Request((model, shared), messages, sampling)
        with self._arrived:
            self._queue.append(request)
            self._arrived.notify_all()
        # a request that finds the backend idle waits for others to join it; one that
        # waited for the lock has its batch queued already
        idle = self._lock.acquire(blocking=False)
        if not idle:
            self._lock.acquire()
        try:  # whoever holds the lock serves the queue: maybe this request is done
            while not request.done:  # oldest first, max_batch_size at a time
                self._serve(request.key, wait=idle)
                idle = False
        finally:
            self._lock.release()
        if request.error is not None:
            raise request.error
        assert request.generation is not None
        return request.generation

    def _serve(self, key: tuple[str, SamplingParams], wait: bool) -> None:
        """Under the lock: generate for up to ``max_batch_size`` queued requests of
        ``key`` (the caller's own among them) in one batch, after waiting up to
        ``batch_wait_ms`` for the batch to fill when ``wait``."""
        with self._arrived:
            if wait:
                self._arrived.wait_for(
                    lambda: sum(r.key == key for r in self._queue) >= self.max_batch_size,
                    timeout=self.batch_wait_s,
                )
            batch = [r for r in self._queue if r.key == key][: self.max_batch_size]
            for request in batch:
                self._queue.remove(request)
        model, _ = key
        try:
            if len(batch) > 1:
                try:
                    with self._adapter(model):
                        generations = self.backend.generate_batch(
                            [r.messages for r in batch], sampling=[r.sampling for r in batch]
                        )
                except Exception:  # noqa: BLE001 - maybe one request's fault: each alone below
                    pass
                else:
                    for request, generation in zip(batch, generations, strict=True):
                        request.generation, request.done = generation, True
                    return
            for request in batch:  # one at a time: an error is its own request's
                try:
                    with self._adapter(model):
                        request.generation = self.backend.generate(
                            request.messages, sampling=request.sampling
                        )
                except Exception as exc:  # noqa: BLE001 - answered to that request
                    request.error = exc
                request.done = True
        finally:  # whatever happened (KeyboardInterrupt too), no request waits for ever
            for request in batch:
                if not request.done:
                    request.error = request.error or RuntimeError("the batch was interrupted")
                    request.done = True

    def _adapter(self, model: str) -> Any:
        """The context a generation with ``model`` runs in (its adapter, if any)."""
        if model == self.model_name:
            return contextlib.nullcontext()
        return self.backend.using_adapter(self._adapters[model].peft_name)

    def check_load(self, name: str, lora_path: str, inplace: bool) -> str:
        """The adapter directory to load as ``name``, after every check that
        needs no backend call (see :func:`adapter_dir`)."""
        if not LORA_NAME.fullmatch(name) or name == self.model_name:
            raise ValueError(
                f"lora_name must be 1-128 of [A-Za-z0-9._:/+@-] and not the base model's name, "
                f"got {name!r}"
            )
        if name in self._adapters and not inplace:
            raise AdapterExists(name)
        return adapter_dir(lora_path, self.root)

    def load(self, name: str, path: str, *, inplace: bool = False) -> None:
        """Load the adapter at ``path`` as ``name``; with ``inplace`` an adapter of
        that name is replaced once the new weights are in, without it one is an
        :class:`AdapterExists` (checked again under the lock: of two concurrent
        loads of a name, which both passed :meth:`check_load`, one loads). The
        backend's ``ValueError`` passes through."""
        peft_name = f"served_{next(self._ids)}"
        with self._lock:
            if name in self._adapters and not inplace:
                raise AdapterExists(name)
            self.backend.add_adapter(path, peft_name)
            previous = self._adapters.get(name)
            self._adapters[name] = _Adapter(peft_name, path, int(time.time()))
            if previous is not None:
                self.backend.delete_adapter(previous.peft_name)

    def unload(self, name: str) -> None:
        """Delete the adapter ``name``; ``KeyError`` when none is loaded."""
        if name not in self._adapters:
            raise KeyError(name)
        with self._lock:
            adapter = self._adapters.pop(name)
            self.backend.delete_adapter(adapter.peft_name)


def adapter_dir(lora_path: str, root: str | None) -> str:
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
