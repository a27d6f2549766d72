"""The OpenAI-compatible server's request bodies: every malformed one is a 400
in OpenAI's error shape, never a 500."""

from __future__ import annotations

import pytest


class _Backend:
    name = "none"  # no route here reaches generation


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"\xff\xfe",
        b"{",
    ],
    ids=["nested", "nested-field", "not-utf8", "cut"],
)
def test_a_malformed_chat_body_is_a_400(body):
    from fastapi.testclient import TestClient

    from serve.openai_server.app import create_app

    client = TestClient(create_app(_Backend(), "m"), raise_server_exceptions=False)
    response = client.post(
        "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400 and error["message"].startswith("invalid request")
