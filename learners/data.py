"""Episodes -> training samples for a given backend (thin glue over :mod:`learners.datasets`).

Prompts are rebuilt with the backend's own tokenizer as the token counter and
the agent's prompt settings (``cfg.prompt``, a :class:`agents.agent.PromptConfig`),
so a sample's prompt is the prompt the agent would send at that step.
"""

from __future__ import annotations

import json
from typing import Any

from learners.datasets import Sample, iter_samples

__all__ = ["action_matches", "data_info", "load_samples", "sample_images"]


def action_matches(text: str, target: str) -> bool:
    """Whether the model output ``text`` parses to the target action JSON (reasoning ignored)."""
    from agents.parser import parse_action

    action = parse_action(text)
    if not hasattr(action, "to_dict"):
        return False
    got = {k: v for k, v in action.to_dict().items() if k != "reasoning"}
    return got == json.loads(target)


def load_samples(cfg: Any, backend: Any) -> list[Sample]:
    if not cfg.episodes:
        raise ValueError("no episodes given: set learner.episodes=[DIR, ...]")
    samples = list(
        iter_samples(
            cfg.episodes,
            success_only=cfg.success_only,
            tasks=cfg.tasks,
            sources=cfg.sources,
            prompt=cfg.prompt,
            backend=backend,
        )
    )
    if not samples:
        raise ValueError(f"no samples in {cfg.episodes} with the given filters")
    return samples


def sample_images(sample: Sample, backend: Any) -> list[Any]:
    """The step's screenshot for multimodal backends (as the agent would send it)."""
    if not getattr(backend, "multimodal", False) or not sample.screenshot:
        return []
    from PIL import Image

    with Image.open(sample.screenshot) as image:
        return [image.convert("RGB")]


def data_info(cfg: Any, samples: list[Any]) -> dict[str, Any]:
    return {
        "episodes": list(cfg.episodes),
        "num_samples": len(samples),
        "num_episodes": len({s.episode_id for s in samples}),
        "tasks": sorted({s.task for s in samples}),
        "sources": sorted({s.source for s in samples}),
        "success_only": cfg.success_only,
    }
