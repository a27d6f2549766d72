"""The observation contract: its Gymnasium space, its compact text rendering,
and the :class:`Observer` that reads it off a page.

An observation is a dict::

    goal               str    the task's instruction
    url                str    the current page's URL
    elements           tuple[Element, ...]  every rendered interactive element
    text               str    the page's visible text (iframes and shadow roots included)
    screenshot         uint8 array (H, W, 3)   only when the "screenshot" modality is on
    last_action_error  str    "" when the last action ran cleanly
    capped             str    "" unless the extraction hit a cap on a huge page;
                              then which (see :class:`ObserverLimits`)

Each element is a dict (see :data:`ELEMENT_FIELDS`): ``element_id`` ("e12",
stable for the element's lifetime within an episode, never reused, handed out
in document order whatever has painted yet), ``tag``, ``role``, ``text`` (its
content), ``label`` (its explicit label: ``aria-labelledby``, ``aria-label``,
``label[for]`` or a wrapping label, ``title``, ``alt``), ``placeholder``,
``value`` (the live value), ``bbox`` (x, y, width, height in CSS pixels of the
top-level viewport, float32), and the flags ``enabled``, ``visible``
(intersects the viewport and is not covered at its centre), ``focused``,
``checked`` as 0/1 ints. Elements scrolled out of view are still listed with
``visible=0``; elements that are not rendered at all are not.

What a person would use to identify it:

* ``name``: the accessible name, in the order of the WAI-ARIA accessible-name
  computation where practical (``aria-labelledby``, ``aria-label``, a label,
  content for buttons and links, ``title``, ``alt``, ``placeholder``); when
  all are empty, the nearest visible text beside it in its row
  (``name_from="inferred"``); then its ``name`` or ``id`` attribute if that
  reads as words. ``name_from`` names the route (``""`` when unnamed).
* ``context``: the nearest visible text beside the element in its row
  (preceding; following for checkboxes and radios), whatever its name.
* ``input_type`` (an ``<input>``'s type: text, password, email, number, date,
  checkbox, radio, file, ...; ``""`` for other tags), the flags ``required`` and
  ``readonly``, ``min``/``max`` (attribute strings, ``""`` when unset) and
  ``maxlength`` (-1 when unset).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

import numpy as np
from gymnasium import spaces

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = [
    "ELEMENT_FIELDS",
    "MODALITIES",
    "OBSERVE_JS",
    "Element",
    "Observation",
    "Observer",
    "ObserverLimits",
    "UnicodeText",
    "check_modalities",
    "element_from_row",
    "element_space",
    "empty_observation",
    "make_element",
    "observation_space",
    "render_element",
    "render_element_lines",
    "render_elements",
]

MODALITIES = ("elements", "text", "screenshot")
OBSERVE_JS = (Path(__file__).with_name("js") / "observe.js").read_text()

TEXT_FIELDS = ("element_id", "tag", "role", "text", "label", "placeholder", "value")
FLAG_FIELDS = ("enabled", "visible", "focused", "checked")
NAME_FIELDS = ("name", "name_from", "context", "input_type")
STATE_FLAGS = ("required", "readonly")
RANGE_FIELDS = ("min", "max")
ELEMENT_FIELDS = (
    *TEXT_FIELDS,
    "bbox",
    *FLAG_FIELDS,
    *NAME_FIELDS,
    *STATE_FLAGS,
    *RANGE_FIELDS,
    "maxlength",
)


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
    name: str
    name_from: str
    context: str
    input_type: str
    required: int
    readonly: int
    min: str
    max: str
    maxlength: int


class Observation(TypedDict):
    """What ``reset`` and ``step`` return (see the module docstring); a modality
    that is off (``elements``, ``text``, ``screenshot``) is absent."""

    goal: str
    url: str
    elements: NotRequired[tuple[Element, ...]]
    text: NotRequired[str]
    screenshot: NotRequired[np.ndarray]
    last_action_error: str
    capped: str


#: The longest page text an observation holds (``ObserverLimits.max_text_chars`` at most).
MAX_TEXT_CHARS = 1 << 24
#: The longest string field an observation holds (``text`` aside: ``max_text_chars``).
MAX_FIELD_CHARS = 1 << 20


class UnicodeText(spaces.Space[str]):
    """Any Python ``str`` of at most ``max_length`` characters.

    Gymnasium's ``Text`` space restricts the charset, which a web page cannot
    promise; this space only bounds the length.
    """

    def __init__(self, max_length: int = MAX_FIELD_CHARS, seed: int | None = None) -> None:
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
    text_fields = (*TEXT_FIELDS, *NAME_FIELDS, *RANGE_FIELDS)
    fields: dict[str, spaces.Space[Any]] = {name: UnicodeText() for name in text_fields}
    fields["bbox"] = spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
    for flag in (*FLAG_FIELDS, *STATE_FLAGS):
        fields[flag] = spaces.Discrete(2)
    fields["maxlength"] = spaces.Discrete(2**31, start=-1)
    return spaces.Dict(fields)


def check_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    """``modalities`` as a tuple of names from :data:`MODALITIES`.

    Raises:
        TypeError: a string (``"text"`` would be read as its letters), not a
            sequence of names.
        ValueError: a name not in :data:`MODALITIES`.
    """
    if isinstance(modalities, str):
        raise TypeError(
            f"modalities must be a sequence of names such as ({modalities!r},), "
            f"not the string {modalities!r}"
        )
    names = tuple(modalities)
    unknown = set(names) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {MODALITIES}")
    return names


def observation_space(
    modalities: Sequence[str] = MODALITIES, viewport: tuple[int, int] = (1280, 720)
) -> spaces.Dict:
    """The space of observations for the given modalities and viewport (width, height)."""
    modalities = check_modalities(modalities)
    fields: dict[str, spaces.Space[Any]] = {
        "goal": UnicodeText(),
        "url": UnicodeText(),
        "last_action_error": UnicodeText(),
        "capped": UnicodeText(),
    }
    if "elements" in modalities:
        fields["elements"] = spaces.Sequence(element_space(), stack=False)
    if "text" in modalities:
        fields["text"] = UnicodeText(MAX_TEXT_CHARS)
    if "screenshot" in modalities:
        width, height = viewport
        fields["screenshot"] = spaces.Box(0, 255, shape=(height, width, 3), dtype=np.uint8)
    return spaces.Dict(fields)


def fit_text(text: Any, limit: int = MAX_FIELD_CHARS) -> Any:
    """``text`` cut to ``limit`` characters (ending in an ellipsis when cut): what
    the observation space allows a string field (a textarea's live value, say,
    may be any length)."""
    if not isinstance(text, str) or len(text) <= limit:
        return text
    return text[: limit - 1] + "\u2026"


def element_from_row(row: Sequence[Any]) -> Element:
    """An element from the observer script's compact row (see ``js/observe.js``)."""
    element: dict[str, Any] = dict(zip(TEXT_FIELDS, map(fit_text, row[:7]), strict=True))
    element["bbox"] = np.array(row[7:11], dtype=np.float32)
    element.update(zip(FLAG_FIELDS, row[11:15], strict=True))
    element.update(zip(NAME_FIELDS, map(fit_text, row[15:19]), strict=True))
    element.update(zip(STATE_FLAGS, row[19:21], strict=True))
    element.update(zip(RANGE_FIELDS, map(fit_text, row[21:23]), strict=True))
    element["maxlength"] = int(row[23])
    return element  # type: ignore[return-value]


_ELEMENT_DEFAULTS: dict[str, Any] = {
    **dict.fromkeys((*TEXT_FIELDS, *NAME_FIELDS, *RANGE_FIELDS), ""),
    "enabled": 1,
    "visible": 1,
    **dict.fromkeys(("focused", "checked", *STATE_FLAGS), 0),
    "maxlength": -1,
}


def make_element(
    element_id: str, tag: str, role: str = "", text: str = "", **fields: Any
) -> Element:
    """An element with every field of :data:`ELEMENT_FIELDS`, for observations
    made without a browser (tests, synthetic episodes, a policy's unit tests).

    Unset fields take the values the observer gives an element that lacks
    them: empty strings, enabled and visible, no other flag, ``maxlength``
    -1 (none), ``bbox`` zeros (``x, y, width, height``, float32; any
    4-sequence is converted). An unknown field name raises ``ValueError``.
    """
    unknown = sorted(set(fields) - set(ELEMENT_FIELDS))
    if unknown:
        raise ValueError(f"unknown element fields {unknown}; known: {ELEMENT_FIELDS}")
    element = {
        **_ELEMENT_DEFAULTS,
        "element_id": element_id,
        "tag": tag,
        "role": role,
        "text": text,
    }
    element.update(fields)
    bbox = np.asarray(fields.get("bbox", np.zeros(4)), dtype=np.float32)
    if bbox.shape != (4,):
        raise ValueError(f"bbox must be 4 numbers (x, y, width, height), got shape {bbox.shape}")
    element["bbox"] = bbox
    return element  # type: ignore[return-value]


# --- rendering ----------------------------------------------------------------------

#: Input types a role already says (a ``type=`` would only cost tokens).
_TYPE_IMPLIED_BY_ROLE = {
    "textbox": {"text"},
    "checkbox": {"checkbox"},
    "radio": {"radio"},
    "button": {"button", "submit", "reset"},
    "slider": {"range"},
    "spinbutton": {"number"},
    "searchbox": {"search"},
}
#: Names that are attributes, shown as such (``name="user name"``) rather than as a name.
_ATTRIBUTE_NAMES = ("name", "id")


def render_element(element: Element, *, context: bool = False) -> str:
    """One line per element, the form prompts show, e.g.
    ``[e7] textbox type=email "Departure" value="NYC" maxlength=20 (focused, required)``.

    Works on elements recorded before the name fields existed (they are read
    with defaults). ``context=True`` adds ``near="..."`` (the nearest text in
    the element's row) when it is not already the name: what
    :func:`render_element_lines` uses to tell look-alikes apart.
    """
    get = element.get
    role = get("role") or get("tag") or "element"
    parts = [f"[{get('element_id')}] {role}"]
    input_type = get("input_type") or ""
    if input_type and input_type not in _TYPE_IMPLIED_BY_ROLE.get(role, ()):
        parts.append(f"type={input_type}")
    name_from = get("name_from") or ""
    text, label, placeholder = get("text") or "", get("label") or "", get("placeholder") or ""
    shown = text or label or placeholder
    if not shown and name_from not in _ATTRIBUTE_NAMES:
        shown = get("name") or ""  # alt, or the inferred name
    if shown:
        parts.append(repr_text(shown))
    elif name_from in _ATTRIBUTE_NAMES and get("name"):
        parts.append(f"{name_from}={repr_text(str(get('name')))}")
    if label and label != shown:
        parts.append(f"label={repr_text(label)}")
    if placeholder and placeholder != shown:
        parts.append(f"placeholder={repr_text(placeholder)}")
    near = get("context") or ""
    if context and near and near != shown and name_from != "inferred":
        parts.append(f"near={repr_text(near, 60)}")
    if get("value"):
        parts.append(f"value={repr_text(str(get('value')))}")
    for key in RANGE_FIELDS:
        if get(key):
            parts.append(f"{key}={get(key)}")
    maxlength = get("maxlength", -1)
    if maxlength is not None and int(maxlength) >= 0:
        parts.append(f"maxlength={int(maxlength)}")
    flags = [
        flag
        for flag, on in (
            ("checked", get("checked")),
            ("focused", get("focused")),
            ("disabled", not get("enabled", 1)),
            ("multiline", get("tag") == "textarea"),
            ("required", get("required")),
            ("readonly", get("readonly")),
            ("offscreen", not get("visible", 1)),
        )
        if on
    ]
    if flags:
        parts.append(f"({', '.join(flags)})")
    return " ".join(parts)


def render_element_lines(elements: Iterable[Element]) -> list[str]:
    """:func:`render_element` for a page's elements, where two elements would
    read the same (ignoring id and live value) each also shows its row's text
    (``near="..."``), as the page shows the number beside each of a list's
    "Odd" buttons. Look-alikes whose rows say nothing stay alike."""
    elements = list(elements)
    lines = [render_element(e) for e in elements]
    keys = [line_key(e) for e in elements]
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return [
        render_element(e, context=True) if counts[key] > 1 else line
        for e, line, key in zip(elements, lines, keys, strict=True)
    ]


def render_elements(elements: Iterable[Element]) -> str:
    return "\n".join(render_element_lines(elements))


def line_key(element: Element, *, context: bool = False) -> str:
    """The element's rendered line without its id and live value: two elements
    with the same key look the same to a reader of the prompt."""
    return render_element({**element, "element_id": "", "value": ""}, context=context)  # type: ignore[typeddict-item]


def repr_text(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return '"' + text.replace('"', "'") + '"'


# --- reading it off a page -------------------------------------------------------------

#: Errors that mean "the page is navigating": observe again once it settles.
RETRYABLE = ("Execution context was destroyed", "navigat", "Cannot find context", "Target page")
_TRIES = 5


@dataclasses.dataclass(frozen=True)
class ObserverLimits:
    """Caps that keep one observation bounded on a huge DOM (say 100,000
    elements). The walk stops after ``max_nodes`` nodes or ``max_elements``
    listed elements, and the page text is cut at ``max_text_chars``; the
    observation's ``capped`` says which applied. The defaults are far above
    what MiniWoB++ pages (< 1,000 nodes) or a large news page (~10,000) need."""

    max_nodes: int = 50_000
    max_elements: int = 2_000
    max_text_chars: int = 200_000

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if int(getattr(self, field.name)) < 1:
                raise ValueError(f"ObserverLimits.{field.name} must be >= 1")
        if self.max_text_chars > MAX_TEXT_CHARS:  # the observation space's bound
            raise ValueError(
                f"ObserverLimits.max_text_chars must be <= {MAX_TEXT_CHARS}, "
                f"got {self.max_text_chars}"
            )


class Observer:
    """The one place an observation is read off a page, for the env and the
    demo recorder alike: runs the observer script (``js/observe.js``) with the
    task's scope and the limits, retries while the page navigates, keeps the
    episode's element-id counter, and builds the observation dict for the
    chosen modalities.

    Args:
        modalities: which of :data:`MODALITIES` the observation holds; the
            script skips what is off.
        root, exclude: CSS selectors bounding the walk (the task's
            ``observation_root``/``observation_exclude``).
        state_js: a task's state-reading function to run in the same call; its
            result is the raw observation's ``state``.
        limits: :class:`ObserverLimits`.
    """

    def __init__(
        self,
        modalities: Sequence[str] = MODALITIES,
        *,
        root: str | None = None,
        exclude: str | None = None,
        state_js: str | None = None,
        limits: ObserverLimits | None = None,
    ) -> None:
        self.modalities = check_modalities(modalities)
        self.root = root
        self.exclude = exclude
        self.limits = limits or ObserverLimits()
        self.script = _observer_script(state_js)
        self.next_id = 1

    def args(self, reset: bool = False) -> dict[str, Any]:
        """The script's arguments; ``reset`` starts a new episode's ids at e1."""
        if reset:
            self.next_id = 1
        return {
            "reset": reset,
            "next": self.next_id,
            "root": self.root,
            "exclude": self.exclude,
            "elements": "elements" in self.modalities,
            "text": "text" in self.modalities,
            **self._limit_args(),
        }

    def _limit_args(self) -> dict[str, int]:
        return {
            "maxNodes": self.limits.max_nodes,
            "maxElements": self.limits.max_elements,
            "maxTextChars": self.limits.max_text_chars,
        }

    def page_function(self) -> str:
        """The observer script as a JS function of its args, with this observer's
        limits applied: for callers inside the page (the demo recorder's listeners),
        which return the raw object that :meth:`to_observation` takes."""
        limits = json.dumps(self._limit_args())
        return f"((args) => ({OBSERVE_JS})(Object.assign({{}}, args, {limits})))"

    def read(
        self,
        page: Page,
        *,
        reset: bool = False,
        settle: Callable[[], None] | None = None,
        intents: bool = False,
    ) -> dict[str, Any] | None:
        """The raw result of the script on ``page``: tried up to five times while
        the page navigates (``settle`` runs between tries); ``None`` if it never
        ran. Other errors (a crashed renderer) propagate. With ``intents``, the
        same call also takes the page's notes of windows and navigations it asked
        for (``js/intents.js``) as the result's ``intents`` (``None`` where the
        page has no notes), sparing the env a call of its own after an action;
        a page that asked for something, was never observed or is still loading
        is then not walked, and the result is ``{"skipped": True, "intents": ...}``."""
        args = {**self.args(reset), "intents": intents}
        for _ in range(_TRIES):
            try:
                text = page.evaluate(self.script, args)
                raw = json.loads(text)
            except Exception as exc:  # noqa: BLE001 - Playwright raises plain Errors
                if not any(marker in str(exc) for marker in RETRYABLE):
                    raise
                if settle is not None:
                    settle()
                continue
            if "\\ud" in text:  # JSON.stringify writes a lone surrogate so (see well_formed)
                raw = well_formed(raw)
            self.next_id = max(self.next_id, int(raw.get("next", self.next_id)))
            return raw
        return None

    def to_observation(
        self,
        raw: dict[str, Any] | None,
        *,
        goal: str,
        url: str,
        error: str = "",
        screenshot: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """The observation from a raw script result (``None``: an empty page at
        ``url``). A raw result from the recorder's in-page snapshot works too;
        its ``next`` advances the id counter."""
        raw = raw or {}
        self.next_id = max(self.next_id, int(raw.get("next", self.next_id)))
        obs: dict[str, Any] = {
            "goal": fit_text(goal),
            "url": fit_text(raw.get("url", url)),
            "last_action_error": fit_text(error),
            "capped": describe_caps(raw.get("capped")),
        }
        if "elements" in self.modalities:
            obs["elements"] = tuple(element_from_row(row) for row in raw.get("elements", ()))
        if "text" in self.modalities:
            obs["text"] = raw.get("text", "")
        if "screenshot" in self.modalities and screenshot is not None:
            obs["screenshot"] = screenshot
        return obs


def well_formed(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings replaced by U+FFFD.

    A JS string may hold one (``"\\ud800"``, a page's half of an emoji); as a
    Python ``str`` it fits the observation space, but no UTF-8 file can hold
    it, so an episode that recorded it could not be written."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {key: well_formed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [well_formed(item) for item in value]
    return value


def describe_caps(capped: dict[str, int] | None) -> str:
    """``"elements: stopped after 50000 nodes; ..."`` for the caps that applied, or ``""``."""
    if not capped:
        return ""
    notes = []
    if capped.get("nodes"):
        notes.append(f"elements: stopped after {capped['nodes']} nodes (max_nodes)")
    if capped.get("elements"):
        notes.append(f"elements: stopped after {capped['elements']} elements (max_elements)")
    if capped.get("text_chars"):
        notes.append(f"text: cut at {capped['text_chars']} characters (max_text_chars)")
    return "; ".join(notes)


def _observer_script(state_js: str | None) -> str:
    """The observation script, optionally reading the task state in the same call
    (``{...observation, state}``), with the page's intents when ``args.intents``
    (else ``intents: null``); then ``{skipped: true, intents}`` instead where the
    page is not worth walking yet (see below). It returns a JSON string: one
    string crosses the Playwright protocol far faster than a nested structure
    (~1 ms a step)."""
    # With args.intents, a page that asked for a window or a navigation, a document
    # never observed (the action navigated) or one still loading is not walked:
    # the env waits for it and reads again, and ids go to the loaded document only.
    intents = (
        "const intents = args.intents && window.__brlIntents ? window.__brlIntents() : null;"
        " if (args.intents && ((intents && (intents.popups || intents.navigate))"
        ' || !window.__brlState || document.readyState === "loading"))'
        " return JSON.stringify({ skipped: true, intents });"
    )
    # the task state is read before the walk
    state, keys = (
        ("", "intents")
        if state_js is None
        else (f"const state = ({state_js})(); ", "state, intents")
    )
    return f"(args) => {{ {intents} {state}return JSON.stringify({{ ...({OBSERVE_JS})(args), {keys} }}); }}"


def empty_observation(space: spaces.Space[Any]) -> Any:
    """The emptiest value of ``space``: "" for text, () for sequences, zeros for
    arrays (a blank screenshot); what a step shows when there is no page."""
    if isinstance(space, spaces.Dict):
        return {key: empty_observation(sub) for key, sub in space.spaces.items()}
    if isinstance(space, spaces.Box):
        return np.zeros(space.shape, dtype=space.dtype)
    if isinstance(space, spaces.Sequence):
        return ()
    if isinstance(space, spaces.Discrete):
        return int(space.start)
    if isinstance(space, spaces.Tuple):
        return tuple(empty_observation(sub) for sub in space.spaces)
    return ""  # Text, UnicodeText
