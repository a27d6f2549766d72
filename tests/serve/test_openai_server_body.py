"""The OpenAI-compatible server's request bodies: every malformed one is a 400
in OpenAI's error shape, never a 500, and what one request may ask of the
model (images, stop strings) is bounded."""

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


def test_fastapis_pages_are_off_like_every_route_they_would_describe():
    """/docs, /redoc and /openapi.json would answer without the token while
    /v1/models needs it: the server has none (as the training service)."""
    from fastapi.testclient import TestClient

    from serve.openai_server.app import create_app

    key = "k" * 40
    client = TestClient(create_app(_Backend(), "m", api_key=key), raise_server_exceptions=False)
    assert client.get("/v1/models").status_code == 401
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        for headers in ({}, {"Authorization": f"Bearer {key}"}):
            assert client.get(path, headers=headers).status_code == 404, path


def test_an_image_in_a_format_the_api_does_not_take_is_a_400():
    import base64

    from fastapi.testclient import TestClient

    from serve.openai_server.app import create_app

    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n"
    url = "data:image/png;base64," + base64.b64encode(eps).decode()
    part = {"type": "image_url", "image_url": {"url": url}}
    body = {"messages": [{"role": "user", "content": [part]}]}
    client = TestClient(create_app(_Backend(), "m"), raise_server_exceptions=False)
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text[:300]
    assert "not one of PNG, JPEG, WEBP, GIF" in response.json()["error"]["message"]


@pytest.fixture(scope="module")
def tiny_backend():
    """The tiny text model behind the server (real generation, a few ms a call)."""
    from agents.backends.transformers import TransformersBackend
    from agents.tiny import tiny_model_path

    backend = TransformersBackend(str(tiny_model_path("text")), device="cpu")
    yield backend
    backend.close()


class _Counting:
    """``backend`` as the server sees it, counting the generation calls that reach it."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self.calls = 0

    def __getattr__(self, name):
        value = getattr(self._backend, name)
        if name in ("generate", "generate_batch"):

            def counted(*args, **kwargs):
                self.calls += 1
                return value(*args, **kwargs)

            return counted
        return value


def _client(backend):
    from fastapi.testclient import TestClient

    from serve.openai_server.app import create_app

    app = create_app(backend, "m", max_batch_size=1)
    return TestClient(app, raise_server_exceptions=False)


def _png_url(side: int) -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, "PNG", optimize=True)  # a few KiB, side**2 pixels
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_the_images_of_one_request_are_capped_together(tiny_backend):
    backend = _Counting(tiny_backend)
    client = _client(backend)
    side = 5000  # 25M pixels: each alone is allowed, three (75M) are more than 64M
    part = {"type": "image_url", "image_url": {"url": _png_url(side)}}

    def ask(n: int):
        content = [{"type": "text", "text": "look"}] + [part] * n
        body = {"messages": [{"role": "user", "content": content}], "max_tokens": 1}
        return client.post("/v1/chat/completions", json=body)

    assert ask(2).status_code == 200 and backend.calls == 1
    refused = ask(3)
    assert refused.status_code == 400, refused.text[:200]
    assert "too large" in refused.json()["error"]["message"] and backend.calls == 1


@pytest.mark.parametrize(
    "stop",
    [[f"s{i}" for i in range(5)], "x" * 257, ["ok", "y" * 1000]],
    ids=["too-many", "too-long", "one-too-long"],
)
def test_stop_strings_are_capped_in_count_and_length(stop, tiny_backend):
    backend = _Counting(tiny_backend)
    client = _client(backend)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "stop": stop}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text[:200]
    assert "stop takes at most" in response.json()["error"]["message"] and backend.calls == 0
    fine = {**body, "stop": ["a" * 256, "b", "c", "d"]}
    assert client.post("/v1/chat/completions", json=fine).status_code == 200


def test_a_content_length_of_thousands_of_digits_is_not_a_500(tiny_backend):
    client = _client(_Counting(tiny_backend))
    response = client.post(
        "/v1/chat/completions", content=b"{}", headers={"Content-Length": "9" * 5000}
    )
    assert response.status_code == 413, response.text[:200]
    assert response.json()["error"]["code"] == 413


@pytest.mark.parametrize("held", ["backend_call", "model_validate"])
def test_a_request_is_answered_while_another_one_is_read(tiny_backend, monkeypatch, held):
    """A request's body is parsed and validated (up to 20 MB of JSON) and its
    images decoded (up to ~1 s) off the event loop: while one request's real
    ``ChatRequest.model_validate`` or ``backend_call`` is held, another request
    (``GET /v1/models``) is answered. On the loop the listing could not be
    answered until the held call gave up waiting."""
    import threading

    import httpx

    import serve.openai_server.app as app_module
    from serve.openai_server import ServerThread
    from serve.openai_server.schemas import ChatRequest

    listed, entered, waits = threading.Event(), threading.Event(), []
    owner = app_module if held == "backend_call" else ChatRequest
    real = getattr(owner, held)

    def held_call(*args, **kwargs):
        entered.set()
        waits.append(listed.wait(timeout=10))  # False: nothing was answered meanwhile
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, held, held_call)
    part = {"type": "image_url", "image_url": {"url": _png_url(64)}}
    content = [{"type": "text", "text": "look"}, part]
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 1}
    with ServerThread(app_module.create_app(tiny_backend, "m", max_batch_size=1)) as server:
        url = server.base_url
        answers: list[int] = []
        asker = threading.Thread(
            target=lambda: answers.append(
                httpx.post(url + "/chat/completions", json=body, timeout=60).status_code
            )
        )
        asker.start()
        assert entered.wait(timeout=30), f"the request never reached {held}"
        response = httpx.get(url + "/models", timeout=30)
        listed.set()
        asker.join(timeout=60)
    assert response.status_code == 200 and answers == [200]
    assert waits == [True], f"/v1/models was not answered while {held} ran"


def _run_openai_server(tmp_path, *args: str):
    from _commands import python_m

    return python_m("serve.openai_server", *args, cwd=tmp_path, timeout=60)


@pytest.mark.parametrize("mistake", ["no-such-model", "port-in-use"])
def test_python_m_serve_openai_server_refuses_a_bad_config_in_one_line(tmp_path, mistake):
    """A model path that does not exist, or a port another socket listens on
    (found before the model loads): ``error: ...`` on stderr, exit 2, no
    traceback."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        if mistake == "no-such-model":
            done = _run_openai_server(tmp_path, f"model={tmp_path / 'nonexistent'}")
            expected = "no such file or directory"
        else:
            # a path that exists: the model would load (and fail) if the port went unchecked
            done = _run_openai_server(tmp_path, f"model={tmp_path}", f"port={port}")
            expected = f"port {port} on 127.0.0.1 is in use"
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, done.stderr
