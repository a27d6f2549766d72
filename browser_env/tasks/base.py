"""The task contract, separate from the env.

The env owns the browser, the context and the page; a task only sets the page
up and judges it::

    goal = task.setup(page, seed)                  # navigate / initialise; return the goal
    reward, done, info = task.validate(page, answer)   # after every step
    task.teardown()                                # when the env closes

``answer`` is the FINISH value on the step that finished, else ``None``.
``info`` holds at least ``raw_reward`` (float), ``success`` (bool) and
``reason`` (str or None).

Fast path (optional): a task with a ``state_js`` attribute (a JS function
source, no arguments) and a ``judge(state, answer)`` method lets the env read
the task state in the same ``evaluate`` as the observation, saving a browser
round trip per step; ``judge`` must then agree with ``validate``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["Task"]


@runtime_checkable
class Task(Protocol):
    name: str
    #: (width, height) the page should have, or None for the env's default.
    viewport: tuple[int, int] | None
    #: CSS selector that bounds observation (elements and text), or None for the whole page.
    observation_root: str | None
    #: CSS selector of subtrees left out of the observation (e.g. a page's own HUD), or None.
    observation_exclude: str | None
    #: Optional (x, y, width, height) of the viewport that screenshots show (None: all of it).
    #: Read with ``getattr(task, "screenshot_region", None)``.
    #: True when every reset needs a fresh browser context (no state carried over).
    fresh_context: bool

    def setup(self, page: Page, seed: int, options: dict[str, Any]) -> str: ...

    def validate(self, page: Page, answer: str | None) -> tuple[float, bool, dict[str, Any]]: ...

    def teardown(self) -> None: ...
