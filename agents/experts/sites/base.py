"""What the bundled-site experts share: the registry, dispatch on URL and goal,
and readers of the page that a careful person would use.

A site policy sees what every policy sees (goal, observation, per-episode
memory) and decides from the page it is on (the URL path) what to do next, so
it recovers when a step did not land. The template is not in the URL: the
site is (``/shop/...``), and each template's policy is registered with a
pattern its goals match.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from urllib.parse import parse_qsl, urlsplit

from agents.experts.base import (
    Context,
    Decision,
    Element,
    ExpertError,
    click,
    describe,
    find,
    name_of,
    quoted,
    type_into,
)
from browser_env.actions import Action, Verb

__all__ = [
    "SITE_POLICIES",
    "choose",
    "consent",
    "fill",
    "finish",
    "link",
    "page_path",
    "query",
    "site_expert",
    "site_task",
]

Policy = Callable[[Context], Decision]
SITE_POLICIES: dict[str, tuple[re.Pattern[str], Policy]] = {}
SITE_NAMES = ("shop", "account", "travel", "wiki", "mail")


def site_expert(task: str, goal_pattern: str) -> Callable[[Policy], Policy]:
    """Register the policy for ``task`` (``sites.shop.buy-named``), whose goals
    match ``goal_pattern`` (``re.search``) and no other template's pattern."""

    def register(policy: Policy) -> Policy:
        if task in SITE_POLICIES:
            raise ValueError(f"two experts for {task!r}")
        SITE_POLICIES[task] = (re.compile(goal_pattern), policy)
        return policy

    return register


def site_of(url: str) -> str:
    """``http://127.0.0.1:1/shop/cart`` -> ``shop`` ("" if not a bundled site)."""
    parts = urlsplit(url or "").path.split("/")
    return parts[1] if len(parts) > 1 and parts[1] in SITE_NAMES else ""


def site_task(url: str, goal: str) -> str:
    """The site task whose goal pattern ``goal`` matches, on the site of ``url``."""
    site = site_of(url)
    if not site:
        return ""
    for task, (pattern, _) in SITE_POLICIES.items():
        if task.startswith(f"sites.{site}.") and pattern.search(goal):
            return task
    return ""


def page_path(ctx: Context) -> str:
    """The path inside the site: ``/shop/product/7`` -> ``/product/7``."""
    path = urlsplit(str(ctx.obs.get("url") or "")).path
    return "/" + path.split("/", 2)[2] if path.count("/") >= 2 else "/"


def query(ctx: Context) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(str(ctx.obs.get("url") or "")).query))


def consent(ctx: Context) -> Decision | None:
    """Dismiss the cookie banner first: it covers the bottom of the page."""
    found = find(ctx.elements, text="Only essential", roles=("button",))
    if found:
        return click(
            found[0], f"A cookie banner covers the page; dismiss it with {describe(found[0])}."
        )
    return None


def link(ctx: Context, text: str, why: str = "") -> Decision:
    """Click the link named exactly ``text`` (near-duplicates differ by a word)."""
    found = find(ctx.elements, text=text, roles=("link",))
    if not found:
        raise ExpertError(f"no link {text!r} on {page_path(ctx)}")
    return click(found[0], why or f'Follow the link "{text}": {describe(found[0])}.')


def has(ctx: Context, text: str, roles: Sequence[str] = ("link", "button")) -> Element | None:
    found = find(ctx.elements, text=text, roles=roles)
    return found[0] if found else None


def button(ctx: Context, text: str, why: str = "") -> Decision:
    found = find(ctx.elements, text=text, roles=("button",))
    if not found:
        raise ExpertError(f"no button {text!r} on {page_path(ctx)}")
    return click(found[0], why or f'Press "{text}": {describe(found[0])}.')


def field(ctx: Context, label: str) -> Element:
    for element in ctx.elements:
        if " ".join(str(element.get("label") or "").split()) == label and element.get("tag") in (
            "input",
            "select",
            "textarea",
        ):
            return element
    raise ExpertError(f"no field labelled {label!r} on {page_path(ctx)}")


def options(element: Element) -> list[str]:
    """A select's option labels (the observation lists them as its text)."""
    return [o.strip() for o in str(element.get("text") or "").split(" | ")]


def choose(ctx: Context, label: str, option: str) -> Decision | None:
    """Select ``option`` in the select labelled ``label`` unless it already is."""
    element = field(ctx, label)
    if str(element.get("value") or "") == option:
        return None
    return type_into(element, option, f'Choose "{option}" as {label}: {describe(element)}.')


def fill(ctx: Context, fields: Sequence[tuple[str, str]]) -> Decision | None:
    """Type the first ``(label, text)`` whose field does not hold ``text`` yet."""
    for label, text in fields:
        element = field(ctx, label)
        if element.get("tag") == "select":
            decision = choose(ctx, label, text)
            if decision:
                return decision
        elif str(element.get("value") or "") != text:
            return type_into(element, text, f'Type "{text}" into {label}: {describe(element)}.')
    return None


def finish(answer: str, why: str) -> Decision:
    return Decision(Action(Verb.FINISH, value=answer, reasoning=why), why)


def links_after(ctx: Context, anchor: str) -> list[Element]:
    """Links that follow the element named ``anchor``, in page order."""
    seen = False
    out = []
    for element in ctx.elements:
        if seen and element.get("role") == "link":
            out.append(element)
        if name_of(element) == anchor:
            seen = True
    return out


def goal_quotes(ctx: Context, n: int) -> list[str]:
    found = quoted(ctx.goal)
    if len(found) < n:
        raise ExpertError(f"expected {n} quoted values in {ctx.goal!r}")
    return found
