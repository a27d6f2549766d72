"""The task contract, separate from the env.

The env owns the browser, the context and the page; a task only sets the page
up and judges it::

    goal = task.setup(page, seed, options)             # navigate / initialise; return the goal
    reward, done, info = task.validate(page, answer)   # after every step
    task.teardown()                                    # when the env closes

``answer`` is the FINISH value on the step that finished, else ``None``.
``info`` holds at least ``raw_reward`` (float), ``success`` (bool, or None
when the task has nothing to judge against) and ``reason`` (str or None).

Fast path: a task whose ``state_js`` is a JS function source (no arguments)
lets the env read the task state in the same ``evaluate`` as the observation,
saving a browser round trip per step; the env then calls
``judge(state, answer)`` with that function's result instead of ``validate``,
and ``judge`` must agree with ``validate``. With ``state_js = None`` the env
always calls ``validate``; ``judge`` must still exist (it may judge from state
the task holds itself, as the bundled sites do from their server).

Every attribute and method of :class:`Task` is required: the env reads them
directly. One more is optional: ``server_url``, the base URL of the bundled
server in this process that the task's pages come from (MiniWoB++'s, the
sites'), which recordings store so that a replay in another process, on
another port, can move the recorded URLs under its own server
(:func:`task_server_url`). Test a new task family with
``tests/browser_env/task_contract.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["Task", "task_server_url"]


@runtime_checkable
class Task(Protocol):
    name: str
    #: (width, height) the page should have, or None for the env's default.
    viewport: tuple[int, int] | None
    #: CSS selector that bounds observation (elements and text), or None for the whole page.
    observation_root: str | None
    #: CSS selector of subtrees left out of the observation (e.g. a page's own HUD), or None.
    observation_exclude: str | None
    #: (x, y, width, height) of the viewport that screenshots show, or None for all of it.
    screenshot_region: tuple[int, int, int, int] | None
    #: True when every reset needs a fresh browser context (no state carried over).
    fresh_context: bool
    #: JS function source whose result the env passes to :meth:`judge`, or None (see above).
    state_js: str | None

    def setup(self, page: Page, seed: int, options: dict[str, Any]) -> str: ...

    def validate(self, page: Page, answer: str | None) -> tuple[float, bool, dict[str, Any]]: ...

    def judge(self, state: Any, answer: str | None) -> tuple[float, bool, dict[str, Any]]: ...

    def teardown(self) -> None: ...


def task_server_url(env: Any) -> str | None:
    """The base URL of the bundled server that ``env``'s task is served from in
    this process (its optional ``server_url``), or ``None`` for a task without
    one, or an env without a task."""
    task = getattr(getattr(env, "unwrapped", env), "task", None)
    return getattr(task, "server_url", None)
