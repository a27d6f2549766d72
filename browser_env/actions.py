"""The seven-verb action language shared by the env, the agents and the learners.

An action is one JSON object::

    {"action": "TYPE", "element_id": "e7", "value": "NYC", "reasoning": "..."}

| verb          | element_id | value                                  |
|---------------|------------|----------------------------------------|
| ``CLICK``     | required   | -                                      |
| ``TYPE``      | optional   | the text (non-empty); replaces content |
| ``PRESS_ENTER`` | optional | -                                      |
| ``SCROLL``    | optional   | ``"up"`` or ``"down"``                 |
| ``WAIT``      | -          | milliseconds, ``0 <= ms``               |
| ``NAVIGATE``  | -          | an absolute URL (the env's URL policy  |
|               |            | allows http(s) only, by default)       |
| ``FINISH``    | -          | the answer (may be empty)              |

:func:`coerce_action` turns whatever a policy emits (an :class:`Action`, a dict
or a JSON string) into an :class:`Action` or raises :class:`ActionError` with a
message meant for the policy to read. The env never lets that error escape: it
reports it in ``last_action_error``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from enum import Enum
from typing import Any
from urllib.parse import urlparse

import numpy as np
from gymnasium import spaces

__all__ = ["Action", "ActionError", "ActionSpace", "Verb", "coerce_action"]

_ELEMENT_ID = re.compile(r"^e[1-9][0-9]*$")
_SCROLL_DIRECTIONS = ("up", "down")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


class Verb(str, Enum):
    """The seven verbs; the string value is the canonical JSON spelling."""

    CLICK = "CLICK"
    TYPE = "TYPE"
    PRESS_ENTER = "PRESS_ENTER"
    SCROLL = "SCROLL"
    WAIT = "WAIT"
    NAVIGATE = "NAVIGATE"
    FINISH = "FINISH"


class ActionError(ValueError):
    """An action that cannot be executed as written; the message is for the policy."""


@dataclasses.dataclass(frozen=True)
class Action:
    """One validated action. Construct through :meth:`from_json`/:func:`coerce_action`
    or directly; the constructor validates and raises :class:`ActionError`."""

    action: Verb
    element_id: str | None = None
    value: str | None = None
    reasoning: str | None = None

    def __post_init__(self) -> None:
        try:
            verb = Verb(self.action.upper() if isinstance(self.action, str) else self.action)
        except ValueError:
            raise ActionError(
                f"unknown action {self.action!r}; use one of {', '.join(v.value for v in Verb)}"
            ) from None
        object.__setattr__(self, "action", verb)
        if self.element_id is not None:
            element_id = str(self.element_id).strip()
            if not _ELEMENT_ID.match(element_id):
                raise ActionError(f"element_id {self.element_id!r} is not of the form 'e<number>'")
            object.__setattr__(self, "element_id", element_id)
        if self.value is not None and not isinstance(self.value, str):
            object.__setattr__(self, "value", str(self.value))
        for field in ("value", "reasoning"):
            _check_unicode(field, getattr(self, field))
        _validate(self)

    # --- constructors -------------------------------------------------------
    @classmethod
    def click(cls, element_id: str) -> Action:
        return cls(Verb.CLICK, element_id)

    @classmethod
    def type(cls, element_id: str | None, text: str) -> Action:
        return cls(Verb.TYPE, element_id, text)

    @classmethod
    def finish(cls, answer: str = "") -> Action:
        return cls(Verb.FINISH, value=answer)

    # --- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, str]:
        """The canonical JSON object, without keys that are ``None``."""
        out = {"action": self.action.value}
        if self.element_id is not None:
            out["element_id"] = self.element_id
        if self.value is not None:
            out["value"] = self.value
        if self.reasoning is not None:
            out["reasoning"] = self.reasoning
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Action:
        """The action ``data`` (a decoded JSON object) describes; whatever ``data``
        holds, the only error raised is :class:`ActionError`."""
        return _readable(cls._from_dict, data)

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> Action:
        if not isinstance(data, dict):
            raise ActionError(f"an action must be a JSON object, got {type(data).__name__}")
        if "action" not in data:
            raise ActionError('an action needs an "action" key, e.g. {"action": "CLICK", ...}')
        unknown = set(data) - {"action", "element_id", "value", "reasoning"}
        if unknown:
            raise ActionError(f"unknown key(s) {sorted(unknown, key=str)} in action")
        value = data.get("value")
        if isinstance(value, bool) or (
            value is not None and not isinstance(value, str | int | float)
        ):
            raise ActionError(f"value must be a string or a number, got {type(value).__name__}")
        return cls(
            action=data["action"] if isinstance(data["action"], str) else _bad_verb(data["action"]),
            element_id=data.get("element_id"),
            value=None if value is None else str(value),
            reasoning=None if data.get("reasoning") is None else str(data["reasoning"]),
        )

    @classmethod
    def from_json(cls, text: str) -> Action:
        """The action the JSON ``text`` describes; whatever ``text`` is, the only
        error raised is :class:`ActionError`."""
        return _readable(cls._from_json, text)

    @classmethod
    def _from_json(cls, text: str) -> Action:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ActionError(f"action is not valid JSON: {exc}") from None
        return cls._from_dict(data)

    def __str__(self) -> str:
        return self.to_json()


def _readable(read: Callable[[Any], Action], raw: Any) -> Action:
    """``read(raw)``, with any other error junk input can raise turned into an
    :class:`ActionError`: bytes that are not UTF-8, JSON nested past the
    recursion limit, an int too long for ``str()``."""
    try:
        return read(raw)
    except ActionError:
        raise
    except (ValueError, TypeError, RecursionError) as exc:
        raise ActionError(f"action could not be read: {type(exc).__name__}: {exc}") from None


def _bad_verb(verb: Any) -> str:
    raise ActionError(f"action must be a verb string, got {verb!r}")


def _check_unicode(field: str, text: Any) -> None:
    """A lone surrogate (``"\\ud800"``, which a JSON ``\\u`` escape can carry) is not
    text: no page can type it and no UTF-8 file (an episode) can hold it."""
    if not isinstance(text, str) or text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ActionError(
            f"{field} is not valid Unicode: a lone surrogate {text[exc.start]!r} at index {exc.start}"
        ) from None


def _validate(action: Action) -> None:
    verb, element_id, value = action.action, action.element_id, action.value
    if verb is Verb.CLICK and element_id is None:
        raise ActionError('CLICK needs an "element_id"')
    if verb is Verb.TYPE and not value:
        raise ActionError('TYPE needs a non-empty "value" to type')
    if verb is Verb.SCROLL and (value or "down").lower() not in _SCROLL_DIRECTIONS:
        raise ActionError(f'SCROLL value must be "up" or "down", got {value!r}')
    if verb is Verb.WAIT and value is not None:
        try:
            ms = float(value)
        except ValueError:
            raise ActionError(f"WAIT value must be milliseconds, got {value!r}") from None
        if not np.isfinite(ms) or ms < 0:
            raise ActionError(f"WAIT value must be a non-negative number of ms, got {value!r}")
    if verb is Verb.NAVIGATE:
        # Which schemes and hosts may load is the env's URL policy (browser_env.policy);
        # here the value only has to be an absolute URL.
        try:
            parsed = urlparse(value or "")
        except ValueError:  # e.g. "http://[::1": an unclosed IPv6 host
            raise ActionError(f"NAVIGATE needs a valid URL, got {value!r}") from None
        web = parsed.scheme in ("http", "https")
        if (
            not _SCHEME.match(value or "")
            or (web and not parsed.netloc)
            or not (web or parsed.netloc or parsed.path)
        ):
            raise ActionError(f"NAVIGATE needs an absolute URL such as https://..., got {value!r}")
    if verb in (Verb.WAIT, Verb.NAVIGATE, Verb.FINISH) and element_id is not None:
        raise ActionError(f'{verb.value} takes no "element_id"')


def coerce_action(raw: Action | dict[str, Any] | str) -> Action:
    """Return ``raw`` as an :class:`Action` or raise :class:`ActionError`."""
    if isinstance(raw, Action):
        return raw
    if isinstance(raw, dict):
        return Action.from_dict(raw)
    if isinstance(raw, bytes):
        try:
            raw = raw.decode()
        except UnicodeDecodeError as exc:
            raise ActionError(f"action could not be read: {exc}") from None
    if isinstance(raw, str):
        return Action.from_json(raw)
    raise ActionError(
        f"an action must be an Action, a dict or a JSON string, got {type(raw).__name__}"
    )


class ActionSpace(spaces.Space[Action]):
    """All valid :class:`Action` values.

    ``contains`` accepts an :class:`Action`, a dict or a JSON string that
    :func:`coerce_action` accepts. ``sample`` draws valid actions: element ids
    from ``e1..e{max_element_id}``, short texts, WAITs of at most
    ``max_sample_wait_ms`` and NAVIGATEs to ``sample_urls``.
    """

    def __init__(
        self,
        max_element_id: int = 32,
        sample_urls: tuple[str, ...] = ("http://127.0.0.1:9/",),
        max_sample_wait_ms: int = 50,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__(shape=None, dtype=None, seed=seed)
        self.max_element_id = max_element_id
        self.sample_urls = tuple(sample_urls)
        self.max_sample_wait_ms = max_sample_wait_ms

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def contains(self, x: Any) -> bool:
        try:
            coerce_action(x)
        except ActionError:
            return False
        return True

    def sample(self, mask: Any = None, probability: Any = None) -> Action:
        if mask is not None or probability is not None:
            raise ValueError("ActionSpace.sample does not support masks")
        rng = self.np_random
        verb = list(Verb)[int(rng.integers(len(Verb)))]
        element = f"e{int(rng.integers(1, self.max_element_id + 1))}"
        words = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf")
        text = " ".join(
            words[int(i)] for i in rng.integers(len(words), size=int(rng.integers(1, 3)))
        )
        if verb is Verb.CLICK:
            return Action(verb, element)
        if verb is Verb.TYPE:
            return Action(verb, element, text)
        if verb is Verb.PRESS_ENTER:
            return Action(verb, element if rng.random() < 0.5 else None)
        if verb is Verb.SCROLL:
            return Action(verb, None, _SCROLL_DIRECTIONS[int(rng.integers(2))])
        if verb is Verb.WAIT:
            return Action(verb, None, str(int(rng.integers(0, self.max_sample_wait_ms + 1))))
        if verb is Verb.NAVIGATE:
            return Action(verb, None, self.sample_urls[int(rng.integers(len(self.sample_urls)))])
        return Action(verb, None, text)

    def __repr__(self) -> str:
        return f"ActionSpace(verbs={[v.value for v in Verb]})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActionSpace) and (
            other.max_element_id,
            other.sample_urls,
            other.max_sample_wait_ms,
        ) == (self.max_element_id, self.sample_urls, self.max_sample_wait_ms)

    def to_jsonable(self, sample_n: Any) -> list[dict[str, str]]:
        return [coerce_action(a).to_dict() for a in sample_n]

    def from_jsonable(self, sample_n: list[dict[str, Any]]) -> list[Action]:
        return [Action.from_dict(d) for d in sample_n]
