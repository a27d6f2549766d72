"""Guards: small, configurable corrections applied to a parsed action before
the env runs it. Each one that fires is reported as a :class:`GuardNote`.

In the order they are checked:

``unknown_element``
    The action names an ``element_id`` that is not in the current
    observation. It becomes ``WAIT 0`` and the message is recorded as the
    step's error, so the next prompt shows it. (A CLICK on an unknown element
    while a TYPE is pending becomes ``PRESS_ENTER`` instead when
    ``enter_after_failed_click`` is on: the model is trying to submit.)
``enter_after_failed_click``
    The previous step was a CLICK that failed while a TYPE was pending (typed
    but not yet submitted): the next action becomes ``PRESS_ENTER`` on the
    typed element, unless it already is one.
``submit_before_finish``
    FINISH while a TYPE is pending becomes ``PRESS_ENTER`` on the typed
    element; a FINISH after that goes through.
``max_repeats``
    The same action (verb, element, value; reasoning ignored) as the previous
    ``max_repeats - 1`` steps: FINISH with a note in ``reasoning``. WAITs are
    left to the next guard.
``max_waits``
    A WAIT after ``max_waits - 1`` consecutive WAITs: FINISH with a note.

A TYPE is *pending* when it succeeded and no PRESS_ENTER, successful CLICK or
NAVIGATE followed it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from browser_env.actions import Action, Verb

if TYPE_CHECKING:
    from agents.history import Step

__all__ = ["GuardConfig", "GuardNote", "Guards", "pending_type"]


@dataclasses.dataclass(frozen=True)
class GuardConfig:
    """Which guards run. ``max_repeats``/``max_waits`` of 0 turn those off."""

    unknown_element: bool = True
    enter_after_failed_click: bool = True
    submit_before_finish: bool = True
    max_repeats: int = 4
    max_waits: int = 3

    def __post_init__(self) -> None:
        if self.max_repeats < 0 or self.max_waits < 0:
            raise ValueError("max_repeats and max_waits must be >= 0 (0 disables)")
        if self.max_repeats == 1 or self.max_waits == 1:
            raise ValueError("max_repeats and max_waits must be 0 (off) or >= 2")


@dataclasses.dataclass(frozen=True)
class GuardNote:
    """One guard that fired: its name, what it replaced and why. ``error`` is
    set when the message should be shown to the model as the step's error."""

    guard: str
    message: str
    proposed: Action
    replacement: Action
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "guard": self.guard,
            "message": self.message,
            "proposed": self.proposed.to_dict(),
            "replacement": self.replacement.to_dict(),
            "error": self.error,
        }


def pending_type(history: Sequence[Step]) -> Step | None:
    """The last TYPE not yet submitted (see the module docstring), or ``None``."""
    for step in reversed(history):
        verb = step.action.action
        if verb is Verb.TYPE:
            return None if step.error else step
        if verb in (Verb.PRESS_ENTER, Verb.NAVIGATE) or (verb is Verb.CLICK and not step.error):
            return None
    return None


class Guards:
    """Apply the configured guards: ``guards(action, obs, history) -> (action, notes)``."""

    def __init__(self, config: GuardConfig | Mapping[str, Any] | None = None) -> None:
        if config is None:
            config = GuardConfig()
        elif not isinstance(config, GuardConfig):
            config = GuardConfig(**dict(config))
        self.config = config

    def __call__(
        self, action: Action, obs: Mapping[str, Any], history: Sequence[Step]
    ) -> tuple[Action, list[GuardNote]]:
        cfg = self.config
        notes: list[GuardNote] = []
        pending = pending_type(history)

        def replace(name: str, new: Action, message: str, error: str = "") -> None:
            nonlocal action
            notes.append(GuardNote(name, message, action, new, error))
            action = new

        elements = obs.get("elements")
        if cfg.unknown_element and action.element_id is not None and elements is not None:
            known = {str(e["element_id"]) for e in elements}
            if action.element_id not in known:
                if (
                    action.action is Verb.CLICK
                    and pending is not None
                    and cfg.enter_after_failed_click
                ):
                    replace(
                        "enter_after_failed_click",
                        _enter(pending, elements),
                        f"{action.element_id} is not on the page; submitting the typed text instead",
                    )
                else:
                    message = (
                        f"element {action.element_id} is not on the page; "
                        "use an element_id listed under ELEMENTS"
                    )
                    replace("unknown_element", Action(Verb.WAIT, None, "0"), message, error=message)
        if (
            cfg.enter_after_failed_click
            and not notes
            and pending is not None
            and history
            and history[-1].action.action is Verb.CLICK
            and history[-1].error
            and action.action is not Verb.PRESS_ENTER
        ):
            replace(
                "enter_after_failed_click",
                _enter(pending, elements),
                "the last CLICK failed after typing; submitting the typed text with Enter",
            )
        if cfg.submit_before_finish and action.action is Verb.FINISH and pending is not None:
            replace(
                "submit_before_finish",
                _enter(pending, elements),
                "FINISH before the typed text was submitted; pressing Enter first",
            )
        if cfg.max_repeats and action.action is not Verb.WAIT:
            recent = [s.action for s in history[-(cfg.max_repeats - 1) :]]
            if len(recent) == cfg.max_repeats - 1 and all(_same(a, action) for a in recent):
                message = f"stopped: the same action was chosen {cfg.max_repeats} times in a row"
                replace("max_repeats", Action(Verb.FINISH, None, "", message), message)
        if cfg.max_waits and action.action is Verb.WAIT:
            recent = [s.action for s in history[-(cfg.max_waits - 1) :]]
            if len(recent) == cfg.max_waits - 1 and all(a.action is Verb.WAIT for a in recent):
                message = f"stopped: WAIT was chosen {cfg.max_waits} times in a row"
                replace("max_waits", Action(Verb.FINISH, None, "", message), message)
        return action, notes


def _enter(pending: Step, elements: Sequence[Mapping[str, Any]] | None) -> Action:
    """PRESS_ENTER on the typed element while it is still on the page, else on
    whatever has focus."""
    element_id = pending.action.element_id
    if elements is not None and element_id not in {str(e["element_id"]) for e in elements}:
        element_id = None
    return Action(Verb.PRESS_ENTER, element_id)


def _same(a: Action, b: Action) -> bool:
    return (a.action, a.element_id, a.value) == (b.action, b.element_id, b.value)
