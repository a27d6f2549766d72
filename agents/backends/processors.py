"""A VLM's processor, loadable without torchvision.

Qwen2-VL-style processors (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) carry a video
processor even for still images, and building it needs torchvision;
:func:`load_processor` then loads the same processor class without it (the
image processor falls back to its Pillow backend). Used by the transformers
and MLX backends.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from agents.backends.common import require

__all__ = ["load_processor"]


def load_processor(
    model: str | os.PathLike[str], *, model_type: str | None = None, **kwargs: Any
) -> Any:
    """``AutoProcessor.from_pretrained(model)``, or the same processor without its video part.

    Qwen2-VL-family processors require a video processor, which needs
    torchvision (and a saved video processor config, which processors saved
    by this fallback lack); when that is what fails, the processor class is
    loaded with only its image processor and tokenizer (images work as
    usual; passing ``videos=`` is then unsupported). Any other failure is
    raised unchanged.
    """
    transformers = require("transformers", purpose="loading a processor")
    model = os.fspath(model)
    try:
        return transformers.AutoProcessor.from_pretrained(model, **kwargs)
    except (ImportError, OSError) as exc:
        message = str(exc).lower()
        if "torchvision" not in message and "video" not in message:
            raise
        processor_cls = _processor_class(transformers, model, model_type)
        if processor_cls is None or "video_processor" not in processor_cls.get_attributes():
            raise
        try:
            return _without_video(processor_cls).from_pretrained(model, **kwargs)
        except Exception as fallback_exc:
            raise fallback_exc from exc


def _processor_class(transformers: Any, model: str, model_type: str | None) -> Any:
    """The processor class a checkpoint names (its processor or tokenizer config), else its type's."""
    name = None
    for filename in ("processor_config.json", "tokenizer_config.json"):
        file = Path(model) / filename
        if file.is_file():
            name = json.loads(file.read_text()).get("processor_class")
            if name:
                break
    if not name and model_type:
        from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

        name = PROCESSOR_MAPPING_NAMES.get(model_type)
    return getattr(transformers, name, None) if name else None


def _without_video(processor_cls: Any) -> Any:
    """A subclass of ``processor_cls`` whose only parts are the image processor and tokenizer.

    ``ProcessorMixin`` takes a processor's parts from its ``__init__``
    signature, so this one loads, saves and checks only those two; the
    class keeps its name so saved configs stay loadable by ``AutoProcessor``.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        processor_cls.__init__(
            self,
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )

    namespace = {"__init__": __init__, "__module__": processor_cls.__module__}
    return type(processor_cls.__name__, (processor_cls,), namespace)
