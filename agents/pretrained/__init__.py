"""Pretrained models that ship inside the repository (``agent=tiny`` acts with one).

Each is a plain Hugging Face model directory (config, safetensors weights,
tokenizer, chat template) plus ``training.json``, which records the command
that produced it and the success rates measured at the time::

    from agents.pretrained import path
    backend = TransformersBackend(path("tiny-miniwob"))

``conf/agent/tiny.yaml`` is the agent built on ``tiny-miniwob``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["ROOT", "available", "info", "path"]

#: The directory holding the shipped models.
ROOT = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the shipped models."""
    return sorted(p.name for p in ROOT.iterdir() if (p / "config.json").is_file())


def path(name: str) -> str:
    """The directory of shipped model ``name`` (e.g. ``"tiny-miniwob"``), as a string."""
    directory = ROOT / name
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"no shipped model {name!r} under {ROOT}; available: {available() or 'none'}"
        )
    return str(directory)


def info(name: str) -> dict[str, Any]:
    """The model's ``training.json``: how it was made and how well it did."""
    return json.loads((Path(path(name)) / "training.json").read_text())
