"""Request bodies of the OpenAI-compatible server, validated by pydantic.

Only what the server acts on is declared; unknown fields are ignored, as
OpenAI's own server does.
"""

from __future__ import annotations

from typing import Any, Literal

from agents.backends.common import require

pydantic = require("pydantic", purpose="the OpenAI-compatible server")

__all__ = ["ChatMessage", "ChatRequest", "ContentPart", "LoadLoRARequest", "UnloadLoRARequest"]


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
