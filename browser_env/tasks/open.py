"""Open-ended tasks: any http(s) URL and a goal; the episode ends on FINISH.

``reset(options={"url": ..., "goal": ..., "answer": ...})``. With an expected
``answer`` the FINISH value is checked (case- and whitespace-insensitive,
exact or contained, see ``match``) and the reward is 1.0 or 0.0; without one
the reward is 0.0 and ``success`` is ``None`` (nothing to judge against).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["OpenTask", "check_start_url"]

MATCH_MODES = ("exact", "contains")


def _normalise(text: str) -> str:
    return " ".join(text.casefold().split())


def check_start_url(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` is one open-v0 can start on: http(s),
    file or ``about:blank``. Cheap: callers check before launching a browser."""
    try:
        scheme = urlparse(url).scheme if isinstance(url, str) else None
    except ValueError:  # e.g. "http://[::1": an unclosed IPv6 host
        scheme = None
    if url != "about:blank" and scheme not in ("http", "https", "file"):
        raise ValueError(
            f"open-v0 needs an http(s) or file URL, e.g. https://example.com, got {url!r}"
        )


class OpenTask:
    name = "open"
    observation_root = None
    observation_exclude = None
    screenshot_region = None
    fresh_context = True
    state_js = None  # the answer is all there is to judge: no page state to read

    def __init__(
        self,
        url: str = "about:blank",
        goal: str = "",
        answer: str | None = None,
        match: str = "exact",
        viewport: tuple[int, int] | None = None,
        timeout_ms: float = 30_000,
    ) -> None:
        self.default = {"url": url, "goal": goal, "answer": answer, "match": match}
        self.viewport = tuple(viewport) if viewport else None
        self.timeout_ms = timeout_ms
        self.current: dict[str, Any] = dict(self.default)

    def setup(self, page: Page, seed: int, options: dict[str, Any]) -> str:
        unknown = set(options) - set(self.default)
        if unknown:
            raise ValueError(
                f"unknown reset option(s) {sorted(unknown)}; open-v0 takes {sorted(self.default)}"
            )
        current = {**self.default, **options}
        url = current["url"]
        check_start_url(url)
        if current["match"] not in MATCH_MODES:
            raise ValueError(f"match must be one of {MATCH_MODES}, got {current['match']!r}")
        self.current = current
        try:
            page.goto(url, wait_until="load", timeout=self.timeout_ms)
        except Exception as exc:
            # a network error (refused, no such host, ...): the URL does not open,
            # which a new browser would not change (the env retries other errors)
            failure = re.search(r"net::ERR_[A-Z_]+", str(exc))
            if failure is None:
                raise
            raise ValueError(f"{url} could not be opened: {failure[0]}") from exc
        return str(current["goal"])

    def validate(self, page: Page, answer: str | None) -> tuple[float, bool, dict[str, Any]]:
        return self.judge(None, answer)

    def judge(self, state: Any, answer: str | None) -> tuple[float, bool, dict[str, Any]]:
        """Judge the FINISH answer against the expected one (``state`` is unused)."""
        if answer is None:
            return 0.0, False, {"raw_reward": 0.0, "success": None, "reason": None}
        expected = self.current["answer"]
        if expected is None:
            return 0.0, True, {"raw_reward": 0.0, "success": None, "reason": "finished"}
        got, want = _normalise(answer), _normalise(str(expected))
        ok = got == want if self.current["match"] == "exact" else want in got
        reward = 1.0 if ok else 0.0
        reason = "answer matches" if ok else f"expected {expected!r}"
        return reward, True, {"raw_reward": reward, "success": ok, "reason": reason}

    def teardown(self) -> None:
        pass
