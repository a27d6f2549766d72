"""The static file server for bundled task pages (browser_env.tasks.server)."""

from __future__ import annotations

import urllib.request

from browser_env.tasks.server import serve_directory


def _get(url: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, direct
    with opener.open(url, timeout=10) as response:
        return response.read()


def test_serve_directory_serves_one_server_per_directory_and_host(tmp_path):
    (tmp_path / "a.txt").write_text("hi")
    first = serve_directory(tmp_path)
    other_host = serve_directory(tmp_path, host="127.0.0.2")
    assert first.startswith("http://127.0.0.1:") and other_host.startswith("http://127.0.0.2:")
    assert serve_directory(tmp_path) == first  # started once
    assert _get(first + "a.txt") == _get(other_host + "a.txt") == b"hi"
