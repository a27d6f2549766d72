"""The observation's screenshot is what the viewport shows, also on a scrolled page."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from browser_env.env import BrowserEnv

pytestmark = pytest.mark.browser


def _viewport_as_playwright_sees_it(env: BrowserEnv) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(env.page.screenshot())).convert("RGB"))


def test_a_scrolled_page_is_captured_as_shown(site_url):
    env = BrowserEnv("open", viewport=(320, 240))
    try:
        env.reset(seed=0, options={"url": site_url + "stripes.html"})
        obs, *_ = env.step({"action": "SCROLL", "value": "down"})
        scroll_y = env.page.evaluate("window.scrollY")
        assert scroll_y > 100  # the stripe at the top is no longer the first one
        shot = obs["screenshot"]
        assert shot.shape == (240, 320, 3)
        assert np.array_equal(shot, _viewport_as_playwright_sees_it(env))
        band = int(scroll_y // 100)  # the stripe under the viewport's top edge
        colours = env.page.evaluate(
            "() => [...document.querySelectorAll('div')].map(d => getComputedStyle(d).backgroundColor)"
        )
        r, g, b = (int(v) for v in colours[band][4:-1].split(","))
        assert tuple(shot[0, 0]) == (r, g, b)
    finally:
        env.close()


def test_a_region_is_cut_from_the_viewport(site_url):
    env = BrowserEnv("open", viewport=(320, 240))
    try:
        env.reset(seed=0, options={"url": site_url + "stripes.html"})
        env.page.evaluate("window.scrollTo(0, 250)")
        full = env.screenshot()
        from browser_env.screenshot import Screenshotter

        part = Screenshotter((10, 20, 100, 50)).capture(env._cdp)
        assert part.shape == (50, 100, 3)
        assert np.array_equal(part, full[20:70, 10:110])
    finally:
        env.close()
