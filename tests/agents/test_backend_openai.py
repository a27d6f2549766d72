"""The OpenAI-compatible backend against our own server, really listening on 127.0.0.1.

No mocks: the contract runs through HTTP against ``serve.openai_server``
serving the tiny VLM with the transformers backend; the retry tests use a
small stdlib HTTP server that fails on purpose.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from backend_contract import MESSAGES, REPO_ROOT, BackendContract, screenshot, tiny_path

from agents.backends.base import SamplingParams
from agents.backends.common import is_available

pytestmark = pytest.mark.skipif(
    not all(is_available(m) for m in ("httpx", "fastapi", "uvicorn", "torch", "transformers")),
    reason='needs the api, serve and train extras: pip install "browser-rl[api,serve,train]"',
)

SERVED = {}


@pytest.fixture(scope="module")
def local_backend():
    from agents.backends.transformers import TransformersBackend

    backend = TransformersBackend(tiny_path("vlm"), device="cpu")
    yield backend
    backend.close()


@pytest.fixture(scope="module", autouse=True)
def server(local_backend):
    from serve.openai_server import ServerThread, create_app

    app = create_app(local_backend, "tiny-vlm", max_request_bytes=2_000_000)
    with ServerThread(app) as running:
        SERVED["url"] = running.base_url
        yield running
    SERVED.clear()


def _client(**kwargs):
    from agents.backends.openai import OpenAIBackend

    options = {"multimodal": True, "return_token_ids": True, "max_retries": 0, **kwargs}
    return OpenAIBackend(SERVED["url"], "tiny-vlm", **options)


class TestOpenAIAgainstOurServer(BackendContract):
    def make_backend(self):
        return _client()

    def test_matches_the_served_backend_exactly(self, backend, local_backend):
        images = [screenshot(3)]
        sampling = SamplingParams(max_new_tokens=6, temperature=0.8, seed=11)
        remote = backend.generate(MESSAGES, images=images, sampling=sampling)
        local = local_backend.generate(MESSAGES, images=images, sampling=sampling)
        assert remote.text == local.text
        assert remote.token_ids == local.token_ids
        assert remote.logprobs == pytest.approx(local.logprobs, abs=1e-6)
        assert remote.info["usage"]["completion_tokens"] == len(local.token_ids)

    def test_lists_the_model(self, backend):
        assert backend.list_models() == ["tiny-vlm"]


def test_text_only_client_drops_images():
    backend = _client(multimodal=False)
    try:
        body = backend.build_request(MESSAGES, [screenshot()])
        assert all(isinstance(m["content"], str) for m in body["messages"])
        gen = backend.generate(
            MESSAGES, images=[screenshot()], sampling=SamplingParams(max_new_tokens=2)
        )
        assert gen.info["images_ignored"] == 1
    finally:
        backend.close()


def test_images_travel_as_data_urls():
    backend = _client()
    try:
        body = backend.build_request(MESSAGES, [screenshot()])
        parts = body["messages"][-1]["content"]
        assert parts[0] == {"type": "text", "text": MESSAGES[-1]["content"]}
        assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    finally:
        backend.close()


def test_unknown_model_is_a_clear_4xx_error():
    from agents.backends.openai import OpenAIBackend, OpenAIRequestError

    backend = OpenAIBackend(SERVED["url"], "no-such-model", max_retries=3, backoff=5.0)
    try:
        start = time.monotonic()
        with pytest.raises(OpenAIRequestError, match="404.*no-such-model") as excinfo:
            backend.generate(MESSAGES)
        assert excinfo.value.status_code == 404
        assert time.monotonic() - start < 4, "4xx must not be retried"
    finally:
        backend.close()


def test_server_validates_requests():
    import httpx

    url = SERVED["url"]
    too_big = {"model": "tiny-vlm", "messages": [{"role": "user", "content": "x" * 2_100_000}]}
    assert httpx.post(f"{url}/chat/completions", json=too_big).status_code == 413
    assert httpx.post(f"{url}/chat/completions", content=b"{not json").status_code == 400
    assert httpx.post(f"{url}/chat/completions", json={"messages": []}).status_code == 400
    remote_image = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "http://169.254.169.254/x.png"}}
                ],
            }
        ]
    }
    response = httpx.post(f"{url}/chat/completions", json=remote_image)
    assert response.status_code == 400 and "data:image" in response.json()["error"]["message"]
    many = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}
    assert httpx.post(f"{url}/chat/completions", json=many).status_code == 400


def test_server_streams_one_chunk():
    import httpx

    body = {"messages": MESSAGES, "max_tokens": 3, "temperature": 0, "stream": True}
    response = httpx.post(f"{SERVED['url']}/chat/completions", json=body)
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_bearer_token_is_required_and_never_leaks(local_backend, monkeypatch, caplog):
    from agents.backends.openai import OpenAIBackend, OpenAIRequestError
    from serve.openai_server import ServerThread, create_app

    secret = "sk-test-" + "7" * 24
    app = create_app(local_backend, "tiny-vlm", api_key=secret)
    with ServerThread(app) as running:
        monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        anonymous = OpenAIBackend(running.base_url, "tiny-vlm", max_retries=0)
        with pytest.raises(OpenAIRequestError, match="401") as excinfo:
            anonymous.generate(MESSAGES)
        assert "NVIDIA_API_KEY" in str(excinfo.value)
        anonymous.close()

        monkeypatch.setenv("NVIDIA_API_KEY", secret)  # right key, but "" must not send any
        keyless = OpenAIBackend(running.base_url, "tiny-vlm", api_key_env="", max_retries=0)
        with pytest.raises(OpenAIRequestError, match="401") as excinfo:
            keyless.generate(MESSAGES)
        assert "sends no key" in str(excinfo.value)
        keyless.close()
        monkeypatch.delenv("NVIDIA_API_KEY")

        monkeypatch.setenv("MY_SERVER_TOKEN", secret)
        with caplog.at_level(logging.DEBUG):
            client = OpenAIBackend(running.base_url, "tiny-vlm", api_key_env="MY_SERVER_TOKEN")
            gen = client.generate(MESSAGES, sampling=SamplingParams(max_new_tokens=2))
            assert isinstance(gen.text, str)
            assert secret not in repr(client)
            client.close()
        assert secret not in caplog.text


# -- retries, against a server that fails on purpose ---------------------------


class _Flaky(BaseHTTPRequestHandler):
    failures = 0
    status = 503
    calls = 0

    def do_POST(self):  # noqa: N802 (http.server's naming)
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if type(self).calls <= type(self).failures:
            self._send(type(self).status, {"error": {"message": "try again"}})
        else:
            choice = {"message": {"content": "ok"}, "finish_reason": "stop"}
            self._send(200, {"choices": [choice]})

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    handler = type("Flaky", (_Flaky,), {"calls": 0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("status", [503, 500, 429])
def test_retries_transient_errors_with_backoff(flaky, status):
    from agents.backends.openai import OpenAIBackend

    handler, url = flaky
    handler.failures, handler.status = 2, status
    backend = OpenAIBackend(url, "m", max_retries=3, backoff=0.05)
    start = time.monotonic()
    gen = backend.generate(MESSAGES)
    assert gen.text == "ok" and gen.token_ids == [] and gen.logprobs is None
    assert handler.calls == 3
    assert time.monotonic() - start >= 0.05 + 0.1  # 0.05 * 2**0 + 0.05 * 2**1
    backend.close()


def test_gives_up_after_max_retries(flaky):
    from agents.backends.openai import OpenAIBackend, OpenAIUnavailableError

    handler, url = flaky
    handler.failures, handler.status = 10, 502
    backend = OpenAIBackend(url, "m", max_retries=2, backoff=0.01)
    with pytest.raises(OpenAIUnavailableError, match="3 attempts.*502"):
        backend.generate(MESSAGES)
    assert handler.calls == 3
    backend.close()


class _BadGzip(_Flaky):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("content-length", 0)))
        data = b"this is not gzip"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-encoding", "gzip")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_a_body_that_does_not_decode_is_an_openai_error_not_retried():
    from agents.backends.openai import OpenAIBackend, OpenAIError

    handler = type("BadGzip", (_BadGzip,), {"calls": 0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    backend = OpenAIBackend(f"http://127.0.0.1:{httpd.server_address[1]}/v1", "m", max_retries=2)
    try:
        with pytest.raises(OpenAIError, match="DecodingError"):
            backend.generate(MESSAGES)
        assert handler.calls == 1
    finally:
        backend.close()
        httpd.shutdown()
        httpd.server_close()


def test_connection_refused_is_retried_then_reported():
    from agents.backends.openai import OpenAIBackend, OpenAIUnavailableError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff=0.01)
    with pytest.raises(OpenAIUnavailableError, match="ConnectError"):
        backend.generate(MESSAGES)
    backend.close()


# -- the command line ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.exhaustive  # ~25 s (a server process loading a model); started from its
# command line and answering: the compare-backends notebook test; the token: test_openai_server_body
def test_command_line_server(tmp_path):
    import httpx

    from agents.backends.openai import OpenAIBackend

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SERVER_TOKEN": "s3cret"}
    command = [
        sys.executable,
        "-m",
        "serve.openai_server",
        f"model={tiny_path('text')}",
        f"port={port}",
        "backend.device=cpu",
        "served_model_name=tiny",
        "api_key_env=SERVER_TOKEN",
        f"hydra.run.dir={tmp_path}",
    ]
    proc = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(proc.stdout.read().decode(errors="replace")[-3000:])
            time.sleep(0.25)
        os.environ["SERVER_TOKEN_FOR_CLIENT"] = "s3cret"
        client = OpenAIBackend(
            f"http://127.0.0.1:{port}/v1", "tiny", api_key_env="SERVER_TOKEN_FOR_CLIENT"
        )
        assert client.list_models() == ["tiny"]
        assert isinstance(client.generate(MESSAGES).text, str)
        client.close()
    finally:
        os.environ.pop("SERVER_TOKEN_FOR_CLIENT", None)
        proc.terminate()
        proc.wait(timeout=30)


def test_generate_batch_sends_concurrent_requests_in_order():
    backend = _client()
    sampling = SamplingParams(max_new_tokens=4, seed=3)
    batch = [[{"role": "user", "content": f"say {word}"}] for word in ("a", "bb", "ccc")]
    alone = [backend.generate(m, sampling=sampling) for m in batch]
    together = backend.generate_batch(batch, sampling=sampling, max_concurrency=3)
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]
    assert [g.text for g in together] == [g.text for g in alone]
    with pytest.raises(ValueError, match="image lists"):
        backend.generate_batch(batch, images=[None], sampling=sampling)
    backend.close()
