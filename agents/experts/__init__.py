"""Scripted (hand-written, not learned) experts for MiniWoB++ tasks.

``ScriptedExpert`` is the ``expert`` agent; one module per family of tasks
(:mod:`.click`, :mod:`.forms`, :mod:`.choose`) registers a policy per task.
"""

from __future__ import annotations

from agents.experts.expert import (
    SUPPORTED_TASKS,
    ScriptedExpert,
    UnsupportedTaskError,
    expert_task,
    unsupported_env_ids,
)

__all__ = [
    "SUPPORTED_TASKS",
    "ScriptedExpert",
    "UnsupportedTaskError",
    "expert_task",
    "unsupported_env_ids",
]
