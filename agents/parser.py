"""Turn a model's free text into an :class:`Action`, never raising.

:func:`parse_action` tries, in order:

1. JSON: the whole text, then the bodies of Markdown code fences, then every
   brace-balanced ``{...}`` span in the text (outermost first, left to right).
   The first object that yields a valid action wins. It tolerates a nested
   ``{"action": {"action": "CLICK", ...}}``, a list of actions (the first
   valid one), lowercase or spaced verbs (``"press enter"``), common verb and
   key synonyms (``"type"``/``"verb"`` for the verb, ``"element"``/``"id"``
   for the element, ``"text"``/``"answer"``/``"url"`` for the value), element
   ids given as ``5``, ``"5"``, ``"[e5]"`` or ``"E5"`` (and dropped for verbs
   that take none), Python-style dicts and trailing commas.
2. A line-anchored verb: ``CLICK e5``, ``TYPE e3 "hello"``, ``TYPE(e3, "hi")``,
   ``SCROLL down``, ``WAIT 500``, ``NAVIGATE https://...``, ``FINISH answer``,
   optionally after ``Action:`` or a list bullet. Non-uppercase verbs are
   accepted only with structured arguments, so prose such as "Click the
   button" is not an action.
3. Done-language ("task complete", "I am done", ...) -> ``FINISH``.

Otherwise it returns a :class:`ParseFailure` whose ``reason`` is written for
the model to read.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from typing import Any

from browser_env.actions import Action, ActionError, Verb

__all__ = ["ParseFailure", "ParseOutcome", "explain_parse", "parse_action"]

MAX_CHARS = 20_000  # longer outputs are cut before parsing; no model emits an action that long
_MAX_CANDIDATES = 64

_VERB_SYNONYMS = {
    "ENTER": Verb.PRESS_ENTER,
    "PRESS": Verb.PRESS_ENTER,
    "SUBMIT": Verb.PRESS_ENTER,
    "PRESSENTER": Verb.PRESS_ENTER,
    "INPUT": Verb.TYPE,
    "FILL": Verb.TYPE,
    "TYPE_TEXT": Verb.TYPE,
    "GOTO": Verb.NAVIGATE,
    "GO_TO": Verb.NAVIGATE,
    "OPEN_URL": Verb.NAVIGATE,
    "DONE": Verb.FINISH,
    "STOP": Verb.FINISH,
    "ANSWER": Verb.FINISH,
    "SLEEP": Verb.WAIT,
}
_VERB_KEYS = ("action", "type", "verb", "name", "action_type")
_ELEMENT_KEYS = ("element_id", "element", "elementid", "id", "target", "element_index", "index")
_VALUE_KEYS = ("value", "text", "answer", "url", "direction", "ms", "content", "query")
_ELEMENT_REF = re.compile(r"^\[?\s*(?:e|E|#)?\s*([1-9][0-9]{0,8})\s*\]?$")

_LINE = re.compile(
    r"^[ \t]*(?:[-*>]\s+|\d+[.)]\s+)?(?:\*\*)?(?:action\s*[:=]\s*)?(?:\*\*\s*)?`?"
    r"(?P<verb>click|type|press[ _]enter|enter|scroll|wait|navigate|goto|go[ _]to|finish|done)\b"
    r"(?P<args>[^\n]*)$",
    re.IGNORECASE | re.MULTILINE,
)
_ARG_ELEMENT = re.compile(
    r"^(?:on\s+|into\s+|element\s+)?\[?(?:e|E|#)([1-9][0-9]{0,8})\]?(?=$|[\s,:;.)])"
)
_ARG_BARE_NUMBER = re.compile(r"^\[?([1-9][0-9]{0,8})\]?(?=$|[\s,:;)])")
_QUOTED = re.compile(r"^(?P<q>[\"'“‘])(?P<body>.*?)(?:\"|'|”|’)(?=$|[\s,.;)])", re.DOTALL)
_URL = re.compile(r"https?://[^\s\"'<>`)]+")
_DONE = re.compile(
    r"\b(?:(?:the\s+)?(?:task|goal)\s+(?:is\s+|has\s+been\s+)?(?:now\s+)?"
    r"(?:complete|completed|done|finished|accomplished|achieved)"
    r"|i\s+am\s+(?:now\s+)?done|i'm\s+done|i\s+have\s+(?:completed|finished|accomplished)\s+the\s+(?:task|goal))\b"
    r"(?!\s*\?)",
    re.IGNORECASE,
)


@dataclasses.dataclass(frozen=True)
class ParseFailure:
    """No action could be read; ``reason`` is meant for the model."""

    reason: str
    text: str = ""

    def __bool__(self) -> bool:
        return False


@dataclasses.dataclass(frozen=True)
class ParseOutcome:
    """The result of :func:`explain_parse`: the action or failure and how it was
    found (``"json"``, ``"fence"``, ``"braces"``, ``"verb_line"``, ``"done_language"``
    or ``"failed"``)."""

    result: Action | ParseFailure
    method: str

    @property
    def ok(self) -> bool:
        return isinstance(self.result, Action)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "method": self.method}
        if isinstance(self.result, ParseFailure):
            out["error"] = self.result.reason
        else:
            out["action"] = self.result.to_dict()
        return out


def parse_action(text: Any) -> Action | ParseFailure:
    """The action in ``text`` or a :class:`ParseFailure`; never raises."""
    return explain_parse(text).result


def explain_parse(text: Any) -> ParseOutcome:
    """Like :func:`parse_action` but also says which stage found the action."""
    try:
        return _explain(text)
    except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
        return ParseOutcome(
            ParseFailure(f"could not parse the output ({type(exc).__name__})"), "failed"
        )


def _explain(text: Any) -> ParseOutcome:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        return ParseOutcome(ParseFailure(f"expected text, got {type(text).__name__}"), "failed")
    text = text[:MAX_CHARS]
    if not text.strip():
        return ParseOutcome(
            ParseFailure("the output was empty; reply with one JSON action", text), "failed"
        )
    json_errors: list[str] = []
    for method, candidate in _json_candidates(text):
        data = _load(candidate)
        if data is None:
            continue
        result = _from_data(data)
        if isinstance(result, Action):
            return ParseOutcome(result, method)
        json_errors.append(result)
    action = _from_lines(text)
    if action is not None:
        return ParseOutcome(action, "verb_line")
    if _DONE.search(text):
        return ParseOutcome(Action(Verb.FINISH, value=""), "done_language")
    if json_errors:
        reason = f"the JSON action was invalid: {json_errors[0]}"
    else:
        reason = 'no action found; reply with one JSON object such as {"action": "CLICK", "element_id": "e5"}'
    return ParseOutcome(ParseFailure(reason, text[:500]), "failed")


# --- JSON ---------------------------------------------------------------------


def _json_candidates(text: str):
    yield "json", text.strip()
    for match in re.finditer(
        r"```[ \t]*(?:json|JSON|javascript|js)?[ \t]*\n?(.*?)```", text, re.DOTALL
    ):
        yield "fence", match.group(1).strip()
    for n, span in enumerate(_balanced_spans(text, "{", "}")):
        if n >= _MAX_CANDIDATES:
            break
        yield "braces", span
    if "[" in text:
        for n, span in enumerate(_balanced_spans(text, "[", "]")):
            if n >= 8:
                break
            yield "braces", span


def _balanced_spans(text: str, open_ch: str, close_ch: str):
    """Top-level ``open..close`` spans, honouring JSON strings, left to right; an
    unclosed span is retried from the next opening character."""
    start = text.find(open_ch)
    while start != -1:
        depth, in_str, esc, end = 0, False, False, -1
        for i in range(start, len(text)):
            ch = text[i]
            if in_str:
                if esc:
                    esc = False
                elif ch == "\\":
                    esc = True
                elif ch == '"':
                    in_str = False
            elif ch == '"':
                in_str = True
            elif ch == open_ch:
                depth += 1
            elif ch == close_ch:
                depth -= 1
                if depth == 0:
                    end = i
                    break
        if end == -1:
            start = text.find(open_ch, start + 1)
            continue
        yield text[start : end + 1]
        start = text.find(open_ch, end + 1)


def _load(candidate: str) -> Any:
    if not candidate or candidate[0] not in "{[":
        return None
    try:
        return json.loads(candidate)
    except (ValueError, RecursionError):
        pass
    relaxed = re.sub(r",\s*([}\]])", r"\1", candidate)
    try:
        return json.loads(relaxed)
    except (ValueError, RecursionError):
        pass
    if len(candidate) > 2000 or candidate.count("{") > 20:
        return None
    try:  # Python-style dicts with single quotes; literal_eval runs no code
        data = ast.literal_eval(relaxed)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return data if isinstance(data, dict | list) else None


def _from_data(data: Any) -> Action | str:
    """An action from decoded JSON, or the reason it is not one."""
    if isinstance(data, list):
        reasons = []
        for item in data[:8]:
            result = _from_data(item)
            if isinstance(result, Action):
                return result
            reasons.append(result)
        return reasons[0] if reasons else "an empty JSON list is not an action"
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    outer: dict[str, Any] = {}
    for _ in range(4):  # unwrap {"action": {...}} nesting, keeping an outer reasoning
        inner = next(
            (
                data[k]
                for k in ("action", "next_action", "command")
                if isinstance(data.get(k), dict)
            ),
            None,
        )
        if inner is None:
            break
        outer.update({k: v for k, v in data.items() if k in ("reasoning", "thought")})
        data = inner
    fields = {str(k).lower().replace("-", "_"): v for k, v in data.items()}
    for key, value in outer.items():
        fields.setdefault(key, value)
    verb = _normalise_verb(_first(fields, _VERB_KEYS))
    if verb is None:
        return 'the object has no recognisable "action" verb'
    element = _first(fields, _ELEMENT_KEYS)
    value = _first(fields, _VALUE_KEYS)
    reasoning = fields.get("reasoning", fields.get("thought"))
    if verb in (Verb.WAIT, Verb.NAVIGATE, Verb.FINISH):
        element = None  # these verbs take none; a stray id should not sink the action
    element_id = _normalise_element(element)
    if element is not None and element_id is None:
        return f"element_id {element!r} is not of the form 'e<number>'"
    if isinstance(value, bool) or (value is not None and not isinstance(value, str | int | float)):
        return f"value must be a string or a number, got {type(value).__name__}"
    try:
        return Action(
            verb,
            element_id,
            None if value is None else str(value),
            None if reasoning is None else str(reasoning),
        )
    except ActionError as exc:
        return str(exc)


def _first(fields: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if fields.get(key) is not None:
            return fields[key]
    return None


def _normalise_verb(raw: Any) -> Verb | None:
    if not isinstance(raw, str):
        return None
    name = re.sub(r"[\s\-]+", "_", raw.strip().upper())
    if name in Verb.__members__:
        return Verb[name]
    return _VERB_SYNONYMS.get(name)


def _normalise_element(raw: Any) -> str | None:
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return f"e{raw}" if raw > 0 else None
    if isinstance(raw, float):
        return f"e{int(raw)}" if raw.is_integer() and raw > 0 else None
    if not isinstance(raw, str):
        return None
    match = _ELEMENT_REF.match(raw.strip())
    return f"e{match.group(1)}" if match else None


# --- verb lines ---------------------------------------------------------------


def _from_lines(text: str) -> Action | None:
    for match in _LINE.finditer(text):
        verb_text = match.group("verb")
        strict = not verb_text.isupper()
        args = match.group("args").strip().rstrip("`").strip()
        if args.endswith("**"):
            args = args[:-2].strip()
        if args.startswith("(") and args.endswith(")"):
            args = args[1:-1].strip()
        if args.startswith(":"):
            args = args[1:].strip()
        try:
            action = _line_action(_normalise_verb(verb_text) or Verb.FINISH, args, strict)
        except ActionError:
            action = None
        if action is not None:
            return action
    return None


def _line_action(verb: Verb, args: str, strict: bool) -> Action | None:
    takes_element = verb in (Verb.CLICK, Verb.TYPE, Verb.PRESS_ENTER, Verb.SCROLL)
    element_id, rest = _take_element(args) if takes_element else (None, args)
    rest = rest.lstrip(" ,:;").strip()
    quoted = _QUOTED.match(rest)
    quoted_value = quoted.group("body") if quoted else None
    if verb is Verb.CLICK:
        return Action(verb, element_id) if element_id else None
    if verb is Verb.TYPE:
        if quoted_value is not None:
            return Action(verb, element_id, quoted_value) if quoted_value else None
        if element_id and rest and not strict:
            return Action(verb, element_id, rest)
        return None
    if verb is Verb.PRESS_ENTER:
        if strict and rest:
            return None
        return Action(verb, element_id)
    if verb is Verb.SCROLL:
        word = (
            (quoted_value or rest).split()[0].lower().strip(".,")
            if (quoted_value or rest)
            else "down"
        )
        if word not in ("up", "down"):
            return None
        return Action(verb, element_id, word)
    if verb is Verb.WAIT:
        number = re.match(r"^(\d+(?:\.\d+)?)\s*(ms|milliseconds)?\s*$", rest)
        if number:
            return Action(verb, None, number.group(1))
        return Action(verb) if not rest else None
    if verb is Verb.NAVIGATE:
        url = _URL.search(rest)
        return Action(verb, None, url.group(0).rstrip(".,;")) if url else None
    # FINISH: an answer that is quoted, empty, or (for an uppercase verb) the rest of the line
    if quoted_value is not None:
        return Action(verb, None, quoted_value)
    if not rest.rstrip(".!"):
        return Action(verb, None, "")
    return None if strict else Action(verb, None, rest)


def _take_element(args: str) -> tuple[str | None, str]:
    match = _ARG_ELEMENT.match(args)
    if match:
        return f"e{match.group(1)}", args[match.end() :]
    match = _ARG_BARE_NUMBER.match(args)
    if match:
        return f"e{match.group(1)}", args[match.end() :]
    return None, args
