"""Helpers that every backend shares: optional imports, message checks, images, stop strings.

Only the standard library, numpy and Pillow are imported here, so importing a
backend module stays cheap until the backend is built.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import importlib.util
import io
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from agents.backends.base import BackendBase, Generation, Message, SamplingParams

__all__ = [
    "EXTRAS",
    "IMAGE_FORMATS",
    "apply_stop",
    "batch_images",
    "data_url_to_image",
    "image_to_data_url",
    "is_available",
    "last_user_index",
    "one_by_one",
    "render_chat",
    "require",
    "row_samplings",
    "to_pil",
    "validate_messages",
]

#: Which ``browser-rl`` extra provides each optional top-level module.
EXTRAS: dict[str, str] = {
    "torch": "train",
    "transformers": "train",
    "peft": "train",
    "tokenizers": "train",
    "safetensors": "train",
    "mlx": "mlx",
    "mlx_lm": "mlx",
    "mlx_vlm": "mlx",
    "httpx": "api",
    "fastapi": "serve",
    "uvicorn": "serve",
    "tensorrt_llm": "tensorrt",
}

_ROLES = frozenset({"system", "user", "assistant"})


def is_available(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (for test skips)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, *, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise an ``ImportError`` that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = EXTRAS.get(top)
        what = f" for {purpose}" if purpose else ""
        if extra == "tensorrt":
            hint = (
                "install NVIDIA TensorRT-LLM (`pip install tensorrt_llm` on a CUDA machine, "
                'or NVIDIA\'s container); the extra is "browser-rl[tensorrt]"'
            )
        elif extra is not None:
            hint = f'pip install "browser-rl[{extra}]"'
        else:
            hint = f"pip install {top}"
        raise ImportError(f"{module!r} is needed{what} but is not installed: {hint}") from exc


def validate_messages(messages: Sequence[Message]) -> list[Message]:
    """Check OpenAI-style chat messages and return them as a list of plain dicts.

    Raises ``ValueError`` on an empty list, an unknown role, or content that is
    neither a string nor a list of ``{"type": "text", ...}`` parts.
    """
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise ValueError("messages must be a list of {'role': ..., 'content': ...} dicts")
    if not messages:
        raise ValueError("messages must not be empty")
    out: list[Message] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"messages[{i}] must be a dict, got {type(message).__name__}")
        role = message.get("role")
        if role not in _ROLES:
            raise ValueError(f"messages[{i}] has role {role!r}; expected one of {sorted(_ROLES)}")
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(_text_of_part(part, i) for part in content)
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}]['content'] must be a string")
        out.append({"role": role, "content": content})
    return out


def _text_of_part(part: Any, i: int) -> str:
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return part["text"]
    raise ValueError(
        f"messages[{i}]['content'] holds a non-text part; pass images through `images=`"
    )


def last_user_index(messages: Sequence[Message]) -> int:
    """Index of the last user message (the one that images belong to)."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "user":
            return i
    raise ValueError("images were given but there is no user message to attach them to")


def render_chat(
    template_owner: Any, messages: Sequence[Message], n_images: int = 0, *, parts: bool = False
) -> str:
    """The prompt string: ``template_owner``'s chat template with the generation prompt.

    ``template_owner`` is a tokenizer or a processor. ``parts=True`` (VLM
    processors, whose templates expect it) passes content as a list of
    ``{"type": "text"}`` parts with ``n_images`` ``{"type": "image"}`` parts
    in front of the last user message's text. Without a chat template (base
    models), a plain ``role: content`` transcript ending in ``assistant:``.
    """
    conversation = validate_messages(messages)
    if getattr(template_owner, "chat_template", None) is None:
        return "\n".join(f"{m['role']}: {m['content']}" for m in conversation) + "\nassistant:"
    if parts:
        conversation = [
            {"role": m["role"], "content": [{"type": "text", "text": m["content"]}]}
            for m in conversation
        ]
        if n_images:
            last = last_user_index(conversation)
            images = [{"type": "image"} for _ in range(n_images)]
            conversation[last]["content"] = images + conversation[last]["content"]
    return template_owner.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=False
    )


def to_pil(image: Any) -> Any:
    """A PIL RGB image from a PIL image or an ``(H, W, 3)``/``(H, W, 4)`` uint8 array."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    import numpy as np

    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8:
        raise ValueError(
            f"an image must be a PIL image or an (H, W, 3) uint8 array, got {array.dtype} {array.shape}"
        )
    return Image.fromarray(array[:, :, :3], mode="RGB")


def image_to_data_url(image: Any, fmt: str = "PNG") -> str:
    """Encode an image as a ``data:image/...;base64,`` URL (the OpenAI image format)."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format=fmt)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"data:image/{fmt.lower()};base64,{encoded}"


IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
"""The formats :func:`data_url_to_image` decodes (OpenAI's image input formats)."""


def data_url_to_image(url: str, max_pixels: int = 64_000_000) -> Any:
    """Decode a base64 ``data:image/...`` URL into a PIL RGB image.

    Only data URLs are accepted: fetching remote URLs on behalf of a client is
    a server-side request forgery risk. Only :data:`IMAGE_FORMATS`, told by
    the bytes (the URL's media type is the client's word): Pillow would
    otherwise hand whatever it recognises to its decoder, EPS included, which
    runs Ghostscript. Raises ``ValueError`` otherwise.
    """
    from PIL import Image, UnidentifiedImageError

    if not url.startswith("data:image/") or ";base64," not in url:
        raise ValueError("only base64 data:image/... URLs are accepted")
    try:
        raw = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
        try:
            image = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
        except UnidentifiedImageError:
            raise ValueError(
                f"the image is not one of {', '.join(IMAGE_FORMATS)} (told by its bytes)"
            ) from None
        width, height = image.size
        if width * height > max_pixels:
            raise ValueError(f"image of {width}x{height} pixels is too large")
        return image.convert("RGB")
    except ValueError:
        raise
    except Exception as exc:  # PIL raises several unrelated types on bad data
        raise ValueError(f"could not decode image: {exc}") from exc


def begin_generation(
    backend: BackendBase, images: Sequence[Any] | None, sampling: SamplingParams | None
) -> tuple[SamplingParams, list[Any], dict[str, Any]]:
    """What every local backend does before decoding: refuse a closed backend,
    default the sampling, start ``info`` and drop images a text model cannot
    take (counted in ``info["images_ignored"]``). Returns ``(sampling, images, info)``."""
    if backend._closed:
        raise RuntimeError("this backend was closed")
    info: dict[str, Any] = {"model": backend.model_name, "adapter": backend.adapter}
    images = list(images or [])
    if images and not backend.multimodal:
        info["images_ignored"] = len(images)
        images = []
    return sampling or SamplingParams(), images, info


def batch_images(
    batch: Sequence[Any], images: Sequence[Sequence[Any] | None] | None
) -> list[Sequence[Any] | None]:
    """``generate_batch``'s image lists, one per prompt (``None`` for none)."""
    images = list(images) if images is not None else [None] * len(batch)
    if len(images) != len(batch):
        raise ValueError(f"{len(batch)} prompts but {len(images)} image lists")
    return images


def row_samplings(
    sampling: SamplingParams | Sequence[SamplingParams] | None, rows: int
) -> list[SamplingParams]:
    """``generate_batch``'s sampling, one per row: ``None`` is the default for
    every row, one ``SamplingParams`` is every row's, a sequence is each row's
    own; rows may differ in ``seed`` only (a ``ValueError`` otherwise)."""
    if sampling is None or isinstance(sampling, SamplingParams):
        return [sampling or SamplingParams()] * rows
    given = list(sampling)
    if len(given) != rows:
        raise ValueError(f"{rows} prompts but {len(given)} sampling settings")
    if len({dataclasses.replace(s, seed=None) for s in given}) > 1:
        raise ValueError("the rows of a batch may differ in their sampling seed only")
    return given


def one_by_one(
    backend: BackendBase,
    batch: Sequence[Sequence[Message]],
    images: Sequence[Sequence[Any] | None],
    sampling: SamplingParams | Sequence[SamplingParams] | None,
) -> list[Generation]:
    """A local backend's ``generate_batch`` for what it does not batch (one
    prompt, multimodal prompts, ``stop`` strings): ``generate`` per prompt
    with the row's sampling, each row's ``info["batch_size"]`` 1 (it ran
    alone), as a batched row's says how many rows shared its model call."""
    rows = row_samplings(sampling, len(batch))
    generations = [backend.generate(m, i, s) for m, i, s in zip(batch, images, rows, strict=True)]
    for generation in generations:
        generation.info["batch_size"] = 1
    return generations


def apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string; return ``(text, stopped)``.

    As in the OpenAI API, the stop string itself is not part of the result.
    """
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    if cut < 0:
        return text, False
    return text[:cut], True
