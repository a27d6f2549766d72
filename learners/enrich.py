"""Optional enrichment of SDFT's teacher context: a rationale per expert action.

An OpenAI-compatible model (NIM by default) is asked why the expert's action
is right for the observation; the answer goes into the demonstration as the
action's ``reasoning``, so the teacher sees the action *and* a reason::

    python -m learners.sdft learner.episodes=[runs/expert] \\
        learner.enrich.base_url=https://integrate.api.nvidia.com/v1 \\
        learner.enrich.model=meta/llama-3.1-8b-instruct

Contracts:

* Cached on disk, one JSON file per key, the key being a hash of (model,
  ``ENRICH_PROMPT_VERSION``, observation as the student prompt renders it,
  action); a cache hit sends nothing.
* Any failure (server down, bad status, empty answer, timeout) falls back to
  the raw action, is counted in :attr:`Enricher.stats`, and is logged with the
  exception type only: the API key is read by the backend from the
  environment and never appears in logs, cache files or ``training.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.prompt import DEMO_BEGIN
from browser_env.atomic import write_text_atomic

if TYPE_CHECKING:
    from agents.backends.base import Backend
    from learners.samples import Sample

__all__ = ["ENRICH_PROMPT_VERSION", "Enricher", "enrich_sample"]

log = logging.getLogger(__name__)

#: Bump when the enrichment prompt changes, so cached rationales are not reused.
ENRICH_PROMPT_VERSION = "enrich-v1"

_SYSTEM = (
    "You explain a web agent expert's action. Given the page and the action the expert "
    "took, reply with one short sentence saying why this action moves towards the goal. "
    "Reply with the sentence only."
)


class Enricher:
    """Rationales from an OpenAI-compatible model, cached under ``cache_dir``.

    ``backend`` may be given (anything with ``generate(messages, sampling=...)``
    and ``model_name``); otherwise an :class:`agents.backends.openai.OpenAIBackend`
    is made from ``base_url``, ``model`` and ``api_key_env``.
    """

    def __init__(
        self,
        model: str = "meta/llama-3.1-8b-instruct",
        base_url: str = "https://integrate.api.nvidia.com/v1",
        *,
        api_key_env: str | None = None,
        cache_dir: str | os.PathLike[str] = "~/.cache/browser-rl/enrich",
        max_tokens: int = 64,
        temperature: float = 0.0,
        timeout: float = 30.0,
        backend: Backend | None = None,
    ) -> None:
        self.model = model if backend is None else str(getattr(backend, "model_name", model))
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.cache_dir = Path(cache_dir).expanduser()
        self._backend = backend
        self.stats = {"cached": 0, "generated": 0, "failed": 0}

    def _client(self) -> Any:
        if self._backend is None:
            from agents.backends.openai import OpenAIBackend

            self._backend = OpenAIBackend(
                self.base_url,
                self.model,
                self.api_key_env,
                timeout=self.timeout,
                max_retries=1,
                request_logprobs=False,
            )
        return self._backend

    def key(self, observation: str, action: str) -> str:
        data = json.dumps([self.model, ENRICH_PROMPT_VERSION, observation, action])
        return hashlib.sha256(data.encode()).hexdigest()

    def rationale(self, observation: str, action: str) -> str | None:
        """One sentence on why ``action`` fits ``observation``; ``None`` on failure."""
        path = self.cache_dir / f"{self.key(observation, action)}.json"
        if path.is_file():
            self.stats["cached"] += 1
            return json.loads(path.read_text())["rationale"]
        from agents.backends.base import SamplingParams

        messages = [
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": f"{observation}\n\nEXPERT ACTION:\n{action}"},
        ]
        try:
            text = (
                self._client()
                .generate(
                    messages,
                    sampling=SamplingParams(
                        max_new_tokens=self.max_tokens, temperature=self.temperature, seed=0
                    ),
                )
                .text
            )
            text = " ".join(str(text).split())
            if not text:
                raise ValueError("empty rationale")
        except Exception as exc:  # any failure: fall back to the raw action
            self.stats["failed"] += 1
            log.warning("enrichment failed (%s); using the raw action", type(exc).__name__)
            return None
        self.stats["generated"] += 1
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({"model": self.model, "rationale": text}))
        return text

    def close(self) -> None:
        if self._backend is not None and hasattr(self._backend, "close"):
            self._backend.close()


def enrich_sample(sample: Sample, enricher: Enricher) -> Sample:
    """``sample`` with its teacher demonstration carrying the rationale as
    ``reasoning``; unchanged when enrichment fails."""
    import dataclasses

    content = sample.teacher_messages[-1]["content"]
    if not isinstance(content, str) or DEMO_BEGIN not in content:
        return sample
    observation = str(sample.messages[-1]["content"])
    why = enricher.rationale(observation, sample.demonstration)
    if why is None:
        return sample
    action: Mapping[str, Any] = json.loads(sample.demonstration)
    demo = json.dumps({**action, "reasoning": why}, ensure_ascii=False)
    head, _, tail = content.rpartition(DEMO_BEGIN)
    messages = [dict(m) for m in sample.teacher_messages]
    messages[-1]["content"] = head + DEMO_BEGIN + tail.replace(sample.demonstration, demo)
    return dataclasses.replace(sample, teacher_messages=messages, demonstration=demo)
