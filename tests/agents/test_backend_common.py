"""Helpers every backend shares, and the promise that importing backends is cheap."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from backend_contract import REPO_ROOT

from agents.backends.common import (
    apply_stop,
    data_url_to_image,
    image_to_data_url,
    require,
    to_pil,
    validate_messages,
)


def test_importing_backends_loads_no_heavy_library():
    code = (
        "import sys, agents, agents.tiny, serve.openai_server\n"
        "import agents.backends.transformers, agents.backends.mlx\n"
        "import agents.backends.openai, agents.backends.tensorrt\n"
        "heavy = {'torch', 'transformers', 'mlx', 'mlx_lm', 'httpx', 'fastapi', 'peft', 'tensorrt_llm'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_require_names_the_extra():
    with pytest.raises(ImportError, match=r'pip install "browser-rl\[mlx\]"'):
        require("mlx_lm.no_such_module")
    with pytest.raises(ImportError, match="pip install not_a_real_package_xyz"):
        require("not_a_real_package_xyz")


def test_validate_messages():
    parts = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]
    assert validate_messages(parts) == [{"role": "user", "content": "ab"}]
    for bad in ([], "hello", [{"role": "user"}], [{"role": "tool", "content": "x"}], [1]):
        with pytest.raises(ValueError):
            validate_messages(bad)
    with pytest.raises(ValueError, match="images="):
        validate_messages([{"role": "user", "content": [{"type": "image"}]}])


def test_images_round_trip_through_data_urls():
    array = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    url = image_to_data_url(array)
    assert url.startswith("data:image/png;base64,")
    np.testing.assert_array_equal(np.asarray(data_url_to_image(url)), array)
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    assert to_pil(rgba).mode == "RGB"
    with pytest.raises(ValueError):
        to_pil(np.zeros((2, 2), dtype=np.float32))
    for bad in (
        "http://example.com/a.png",
        "data:image/png;base64,!!!",
        "data:text/plain;base64,aGk=",
    ):
        with pytest.raises(ValueError):
            data_url_to_image(bad)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n"


def test_data_urls_decode_png_jpeg_webp_gif_and_nothing_else(monkeypatch):
    """Pillow picks a decoder by the bytes, whatever the URL's media type says:
    an EPS sent as image/png must not reach Pillow's EPS plugin (Ghostscript)."""
    import base64
    import io

    from PIL import EpsImagePlugin, Image

    array = np.full((6, 5, 3), 128, dtype=np.uint8)
    for fmt in ("PNG", "JPEG", "WEBP", "GIF"):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format=fmt)
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        assert data_url_to_image(url).size == (5, 6), fmt

    opened = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: opened.append(1))
    bmp = io.BytesIO()
    Image.fromarray(array).save(bmp, format="BMP")
    for raw in (EPS, bmp.getvalue()):
        url = "data:image/png;base64," + base64.b64encode(raw).decode()
        with pytest.raises(ValueError, match="not one of PNG, JPEG, WEBP, GIF"):
            data_url_to_image(url)
    assert opened == []


def test_apply_stop():
    assert apply_stop("abc}def", ("}",)) == ("abc", True)
    assert apply_stop("abcdef", ("x", "cd", "b")) == ("a", True)
    assert apply_stop("abc", ()) == ("abc", False)
    assert apply_stop("abc", ("",)) == ("abc", False)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1, got 0"),
        ({"temperature": -0.5}, "temperature must be a finite number >= 0, got -0.5"),
        ({"temperature": float("nan")}, "temperature must be a finite number >= 0, got nan"),
        ({"temperature": float("inf")}, "temperature must be a finite number >= 0, got inf"),
        ({"top_p": 0.0}, "top_p must be in (0, 1], got 0.0"),
        ({"top_p": float("nan")}, "top_p must be in (0, 1], got nan"),
    ],
)
def test_sampling_params_refuse_what_no_backend_can_decode_saying_the_value(settings, message):
    """A NaN temperature compared false with 0 and was let through to the backends."""
    import re

    from agents.backends.base import SamplingParams

    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        SamplingParams(**settings)
    assert SamplingParams(temperature=0.7, top_p=0.9).temperature == 0.7
