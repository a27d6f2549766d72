"""Scripted experts for the Threadline shop (``sites.shop.*``)."""

from __future__ import annotations

import re

from agents.experts.base import Context, Decision, ExpertError, click, describe, name_of, type_into
from agents.experts.sites.base import (
    button,
    consent,
    field,
    fill,
    finish,
    goal_quotes,
    has,
    link,
    links_after,
    options,
    page_path,
    query,
    site_expert,
)

SHIP = re.compile(r'Ship to "([^"]+)", "([^"]+)", "([^"]+)"')


def _filters(ctx: Context, wanted: dict[str, str]) -> Decision | None:
    """Set the search filters (label -> value); apply them once they are set
    and the URL does not show them yet."""
    for label, value in wanted.items():
        decision = fill(ctx, [(label, value)])
        if decision:
            return decision
    keys = {
        "Category": "cat",
        "Size": "size",
        "Color": "color",
        "Max price": "max",
        "Sort by": "sort",
    }
    current = query(ctx)
    if any(current.get(keys[label]) != value for label, value in wanted.items()):
        return button(ctx, "Apply filters", "The filters are set; apply them.")
    return None


def _first_result(ctx: Context) -> tuple[str, float] | None:
    results = [
        e for e in links_after(ctx, "Apply filters") if not name_of(e).startswith(("Page ", "["))
    ]
    if not results:
        return None
    name = name_of(results[0])
    match = re.search(rf"^{re.escape(name)} \$(\d+\.\d\d)", ctx.text, re.M)
    if not match:
        raise ExpertError(f"no price for {name!r}")
    return name, float(match.group(1))


def _product_form(ctx: Context, size: str, color: str | None, qty: int) -> Decision:
    if color is None:  # any color: the first one offered
        color = next(o for o in options(field(ctx, "Color")) if not o.startswith("Choose"))
    decision = fill(ctx, [("Size", size), ("Color", color), ("Quantity", str(qty))])
    return decision or button(
        ctx, "Add to cart", "Size, color and quantity are set; add it to the cart."
    )


def _checkout(ctx: Context) -> Decision:
    match = SHIP.search(ctx.goal)
    if not match:
        raise ExpertError("no address in the goal")
    name, street, city = match.groups()
    decision = fill(ctx, [("Full name", name), ("Street address", street), ("City", city)])
    return decision or button(ctx, "Place order", "The address is filled in; place the order.")


def _after_cart(ctx: Context) -> Decision | None:
    path = page_path(ctx)
    if path == "/cart":
        return link(ctx, "Proceed to checkout", "The cart holds what the goal asks for; check out.")
    if path == "/checkout":
        return _checkout(ctx)
    return None


def _open_named(ctx: Context, name: str) -> Decision:
    """From anywhere, search for ``name`` and open its page (exact name)."""
    if page_path(ctx) == "/search" and has(ctx, name, ("link",)):
        return link(ctx, name, f'"{name}" is in the results (exact name, not a near-duplicate).')
    if page_path(ctx) != "/":
        return link(ctx, "Home", "Go to the home page to search.")
    box = field(ctx, "Search products")
    if box.get("value") != name:
        return type_into(box, name, f'Search for "{name}".')
    return button(ctx, "Search", "Run the search.")


@site_expert("sites.shop.buy-cheapest", r"^Buy the cheapest item")
def buy_cheapest(ctx: Context) -> Decision:
    if decision := consent(ctx):
        return decision
    category, size = goal_quotes(ctx, 2)[:2]
    cap = re.search(r"under \$(\d+)", ctx.goal).group(1)
    path = page_path(ctx)
    if decision := _after_cart(ctx):
        return decision
    if path.startswith("/product/"):
        return _product_form(ctx, size, None, 1)
    if path != "/search":
        return link(ctx, "All products", "Browse all products to filter them.")
    wanted = {"Category": category, "Size": size, "Max price": cap, "Sort by": "Price: low to high"}
    if decision := _filters(ctx, wanted):
        return decision
    first = _first_result(ctx)
    if first is None:
        raise ExpertError("no results")
    return link(ctx, first[0], f"Sorted by price, {first[0]} is the cheapest match.")


@site_expert("sites.shop.buy-named", r"^Buy \d of ")
def buy_named(ctx: Context) -> Decision:
    if decision := consent(ctx):
        return decision
    name, color, size = goal_quotes(ctx, 3)[:3]
    qty = int(re.search(r"^Buy (\d)", ctx.goal).group(1))
    if decision := _after_cart(ctx):
        return decision
    if page_path(ctx).startswith("/product/"):
        return _product_form(ctx, size, color, qty)
    return _open_named(ctx, name)


@site_expert("sites.shop.add-to-cart", r"^Add one ")
def add_to_cart(ctx: Context) -> Decision:
    if decision := consent(ctx):
        return decision
    name, size, color = goal_quotes(ctx, 3)[:3]
    if page_path(ctx).startswith("/product/"):
        return _product_form(ctx, size, color, 1)
    if page_path(ctx) == "/cart":
        return finish("", "The item is in the cart.")
    return _open_named(ctx, name)


@site_expert("sites.shop.remove-and-checkout", r"from your cart, then check out")
def remove_and_checkout(ctx: Context) -> Decision:
    if decision := consent(ctx):
        return decision
    name = goal_quotes(ctx, 1)[0]
    path = page_path(ctx)
    if path == "/cart":
        target = has(ctx, f"Remove {name}", ("button",))
        if target:
            return click(target, f'Remove "{name}" as asked: {describe(target)}.')
    if decision := _after_cart(ctx):
        return decision
    return link(ctx, "Cart", "Open the cart.")


@site_expert("sites.shop.cheapest-price", r"^What is the price of the cheapest")
def cheapest_price(ctx: Context) -> Decision:
    if decision := consent(ctx):
        return decision
    category, color = goal_quotes(ctx, 2)[:2]
    if page_path(ctx) != "/search":
        return link(ctx, "All products", "Browse all products to filter them.")
    wanted = {"Category": category, "Color": color, "Sort by": "Price: low to high"}
    if decision := _filters(ctx, wanted):
        return decision
    first = _first_result(ctx)
    if first is None:
        raise ExpertError("no results")
    return finish(
        f"{first[1]:.2f}", f"Sorted by price, the first match {first[0]} costs ${first[1]:.2f}."
    )


@site_expert("sites.shop.count-under", r"^How many items in ")
def count_under(ctx: Context) -> Decision:
    if decision := consent(ctx):
        return decision
    category = goal_quotes(ctx, 1)[0]
    cap = re.search(r"at most \$(\d+)", ctx.goal).group(1)
    if page_path(ctx) != "/search":
        return link(ctx, "All products", "Browse all products to filter them.")
    if decision := _filters(ctx, {"Category": category, "Max price": cap}):
        return decision
    count = re.search(r"^(\d+) results", ctx.text, re.M).group(1)
    return finish(count, f"With the filters applied the page reports {count} results.")
