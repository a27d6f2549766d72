"""The observation contract: its Gymnasium space and its compact text rendering.

An observation is a dict::

    goal               str    the task's instruction
    url                str    the current page's URL
    elements           tuple[Element, ...]  every rendered interactive element
    text               str    the page's visible text (iframes and shadow roots included)
    screenshot         uint8 array (H, W, 3)   only when the "screenshot" modality is on
    last_action_error  str    "" when the last action ran cleanly

Each element is a dict (see :data:`ELEMENT_FIELDS`): ``element_id`` ("e12",
stable for the element's lifetime within an episode, never reused, handed out
in document order whatever has painted yet), ``tag``,
``role``, ``text``, ``label``, ``placeholder``, ``value`` (the live value),
``bbox`` (x, y, width, height in CSS pixels of the top-level viewport,
float32), and the flags ``enabled``, ``visible`` (intersects the viewport),
``focused``, ``checked`` as 0/1 ints. Elements scrolled out of view are still
listed with ``visible=0``; elements that are not rendered at all are not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NotRequired, TypedDict

import numpy as np
from gymnasium import spaces

__all__ = [
    "ELEMENT_FIELDS",
    "MODALITIES",
    "Element",
    "Observation",
    "UnicodeText",
    "element_from_row",
    "element_space",
    "observation_space",
    "render_element",
    "render_elements",
]

MODALITIES = ("elements", "text", "screenshot")
TEXT_FIELDS = ("element_id", "tag", "role", "text", "label", "placeholder", "value")
FLAG_FIELDS = ("enabled", "visible", "focused", "checked")
ELEMENT_FIELDS = (*TEXT_FIELDS, "bbox", *FLAG_FIELDS)


class Element(TypedDict):
    element_id: str
    tag: str
    role: str
    text: str
    label: str
    placeholder: str
    value: str
    bbox: np.ndarray
    enabled: int
    visible: int
    focused: int
    checked: int


class Observation(TypedDict):
    """What ``reset`` and ``step`` return (see the module docstring); a modality
    that is off (``elements``, ``text``, ``screenshot``) is absent."""

    goal: str
    url: str
    elements: NotRequired[tuple[Element, ...]]
    text: NotRequired[str]
    screenshot: NotRequired[np.ndarray]
    last_action_error: str


class UnicodeText(spaces.Space[str]):
    """Any Python ``str`` of at most ``max_length`` characters.

    Gymnasium's ``Text`` space restricts the charset, which a web page cannot
    promise; this space only bounds the length.
    """

    def __init__(self, max_length: int = 1 << 20, seed: int | None = None) -> None:
        if max_length < 0:
            raise ValueError("max_length must be >= 0")
        self.max_length = max_length
        super().__init__(shape=None, dtype=str, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        length = int(self.np_random.integers(0, min(self.max_length, 16) + 1))
        return "".join(chr(int(c)) for c in self.np_random.integers(32, 0x2FF, size=length))

    def __repr__(self) -> str:
        return f"UnicodeText({self.max_length})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnicodeText) and other.max_length == self.max_length


def element_space() -> spaces.Dict:
    fields: dict[str, spaces.Space[Any]] = {name: UnicodeText() for name in TEXT_FIELDS}
    fields["bbox"] = spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
    for flag in FLAG_FIELDS:
        fields[flag] = spaces.Discrete(2)
    return spaces.Dict(fields)


def observation_space(
    modalities: Sequence[str] = MODALITIES, viewport: tuple[int, int] = (1280, 720)
) -> spaces.Dict:
    """The space of observations for the given modalities and viewport (width, height)."""
    unknown = set(modalities) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {MODALITIES}")
    fields: dict[str, spaces.Space[Any]] = {
        "goal": UnicodeText(),
        "url": UnicodeText(),
        "last_action_error": UnicodeText(),
    }
    if "elements" in modalities:
        fields["elements"] = spaces.Sequence(element_space(), stack=False)
    if "text" in modalities:
        fields["text"] = UnicodeText(1 << 24)
    if "screenshot" in modalities:
        width, height = viewport
        fields["screenshot"] = spaces.Box(0, 255, shape=(height, width, 3), dtype=np.uint8)
    return spaces.Dict(fields)


def element_from_row(row: Sequence[Any]) -> Element:
    """An element from the observer script's compact row (see ``js/observe.js``)."""
    element: dict[str, Any] = dict(zip(TEXT_FIELDS, row[:7], strict=True))
    element["bbox"] = np.array(row[7:11], dtype=np.float32)
    element["enabled"], element["visible"], element["focused"], element["checked"] = row[11:15]
    return element  # type: ignore[return-value]


def render_element(element: Element) -> str:
    """One line per element, the form prompts show, e.g.
    ``[e7] textbox "Departure" value="NYC" (focused)``."""
    parts = [f"[{element['element_id']}] {element['role'] or element['tag']}"]
    name = element["text"] or element["label"] or element["placeholder"]
    if name:
        parts.append(repr_text(name))
    if element["label"] and element["label"] != name:
        parts.append(f"label={repr_text(element['label'])}")
    if element["placeholder"] and element["placeholder"] != name:
        parts.append(f"placeholder={repr_text(element['placeholder'])}")
    if element["value"]:
        parts.append(f"value={repr_text(element['value'])}")
    flags = [
        flag
        for flag, on in (
            ("checked", element["checked"]),
            ("focused", element["focused"]),
            ("disabled", not element["enabled"]),
            ("offscreen", not element["visible"]),
        )
        if on
    ]
    if flags:
        parts.append(f"({', '.join(flags)})")
    return " ".join(parts)


def render_elements(elements: Iterable[Element]) -> str:
    return "\n".join(render_element(e) for e in elements)


def repr_text(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return '"' + text.replace('"', "'") + '"'
