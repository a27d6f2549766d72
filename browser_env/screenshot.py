"""The observation's screenshot: what the viewport shows, cut to the task's region.

One CDP call, ``Page.captureScreenshot`` with ``fromSurface: false`` and no
``clip``: Chromium redraws the view and copies the frame that reached the
screen, the viewport exactly as a person sees it; the region is then cut out
here. Why not CDP's ``clip``: a clip is in *document* coordinates, so on a
page scrolled down a clip at the viewport's origin shows what is above the
viewport (blank), not what is on screen; and measured on this machine
(``python -m benchmarks.rollout_speed``), a capture this way costs the
browser about two thirds of the CPU time of a clipped capture from the
compositor surface. A Chromium that refuses ``fromSurface: false`` is asked
again without it (the surface also holds the viewport), and not again.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Screenshotter"]

_PARAMS = {"format": "png", "optimizeForSpeed": True}


class Screenshotter:
    """Captures ``region`` (x, y, width, height, in viewport pixels) of a page through
    its CDP session; the image is always ``height x width x 3`` uint8 (a smaller
    view, e.g. a popup's, is padded by resizing)."""

    def __init__(self, region: Sequence[int]) -> None:
        x, y, width, height = (int(v) for v in region)
        self.region = (x, y, width, height)
        self.from_surface = False

    def capture(self, cdp: Any) -> np.ndarray:
        from PIL import Image

        params = dict(_PARAMS) if self.from_surface else {**_PARAMS, "fromSurface": False}
        try:
            shot = cdp.send("Page.captureScreenshot", params)
        except Exception as exc:
            if self.from_surface or "surface" not in str(exc).lower():
                raise
            self.from_surface = True
            return self.capture(cdp)
        image = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
        x, y, width, height = self.region
        if (x, y, width, height) != (0, 0, *image.size):
            image = image.crop((x, y, min(x + width, image.width), min(y + height, image.height)))
        if image.size != (width, height):  # a smaller view, e.g. a popup's
            image = image.resize((width, height))
        return np.asarray(image, dtype=np.uint8).copy()
