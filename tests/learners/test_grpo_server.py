"""GRPO with generation=server against a real serve.openai_server on 127.0.0.1.

The server loads each adapter version through vLLM's runtime LoRA endpoints;
the tests check that the rollouts were generated under those names and that
the weights the server ends up serving are the trainer's.
"""

from __future__ import annotations

import socket

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from learners.rollout import StepSample, Trajectory  # noqa: E402

TOKEN = "grpo-write-" + "9" * 20
FAST = {"wandb": False, "progress": False, "save_steps": 0}


@pytest.fixture
def server(tiny_model, monkeypatch):
    """A served tiny model that records every adapter it loads and every adapter it generates with."""
    from safetensors.torch import load_file

    from agents.backends.transformers import TransformersBackend
    from serve.openai_server import ServerThread, create_app

    backend = TransformersBackend(tiny_model, device="cpu")
    loaded, used = [], []
    add, using = backend.add_adapter, backend.using_adapter

    def add_adapter(path, name):
        loaded.append(load_file(f"{path}/adapter_model.safetensors"))
        add(path, name)

    def using_adapter(name):
        used.append(name)
        return using(name)

    backend.add_adapter, backend.using_adapter = add_adapter, using_adapter
    monkeypatch.setenv("GRPO_SERVER_TOKEN", TOKEN)
    with ServerThread(create_app(backend, "tiny", write_api_key=TOKEN)) as running:
        yield running.base_url, loaded, used
    backend.close()


def _server_cfg(url, out, **overrides):
    return {
        **FAST,
        "output_dir": str(out),
        "generation": "server",
        "server_url": url,
        "server_token_env": "GRPO_SERVER_TOKEN",
        **overrides,
    }


def _models(url):
    import httpx

    headers = {"Authorization": f"Bearer {TOKEN}"}
    return [m["id"] for m in httpx.get(f"{url}/models", headers=headers).json()["data"]]


def _alternating(env_id, seed, sample_seed, count=[0]):  # noqa: B006 - the call counter
    """Each group's G = 2 rollouts: one rewarded, one not (sample seeds are hashed,
    so their parity would not alternate)."""
    count[0] += 1
    win = count[0] % 2 == 0
    completion = [5, 6, 7] if win else [8, 9]
    step = StepSample([{"role": "user", "content": f"seed {seed}"}], [], completion, True)
    return Trajectory(env_id, seed, [step], float(win), win)


def test_grpo_pushes_every_adapter_version_to_the_server(tmp_path, server):
    from safetensors.torch import load_file

    from learners.grpo import run

    url, loaded, _ = server
    out = tmp_path / "grpo"
    cfg = _server_cfg(url, out, max_steps=3, learning_rate=1e-2, num_generations=2)
    result = run(cfg, play_fn=_alternating)
    # one version before each step's rollouts, then the final adapter; only the last stays
    assert len(loaded) == 4
    assert result["served_model"] == "grpo-policy-3"
    assert _models(url) == ["tiny", "grpo-policy-3"]
    assert sorted(p.name for p in (out / "served").iterdir()) == ["grpo-policy-3"]
    final = load_file(str(out / "adapter_model.safetensors"))
    assert loaded[-1].keys() == final.keys()
    for name, value in final.items():
        assert torch.equal(loaded[-1][name], value), name
    # the fresh LoRA (B = 0) went out first; every step changed what the server got
    assert all(v.abs().sum() == 0 for k, v in loaded[0].items() if "lora_B" in k)
    for before, after in zip(loaded, loaded[1:], strict=False):
        assert any(not torch.equal(before[k], after[k]) for k in before)


def test_grpo_resumed_after_a_crash_unloads_the_versions_the_crash_left_served(
    tmp_path, server, killer
):
    """The crashed run's last version stays loaded on the server (nothing
    unloads it); the resumed run's first push takes it off, and its dir."""
    from learners.grpo import run

    url, _, _ = server
    out = tmp_path / "grpo"
    cfg = _server_cfg(url, out, max_steps=3, save_steps=1, num_generations=2)
    killer.at = 2
    with pytest.raises(killer.error):
        run(cfg, play_fn=_alternating)
    left = [m for m in _models(url) if m != "tiny"]
    assert len(left) == 1 and left[0] != "grpo-policy-3"
    result = run(cfg, play_fn=_alternating)
    assert result["served_model"] == "grpo-policy-3"
    assert _models(url) == ["tiny", "grpo-policy-3"]
    assert sorted(p.name for p in (out / "served").iterdir()) == ["grpo-policy-3"]


@pytest.mark.browser
def test_grpo_rollouts_generate_on_the_server_with_the_trained_adapter(
    tmp_path, server, tiny_model, monkeypatch
):
    import dataclasses

    from safetensors.torch import load_file

    import learners.rollout
    from agents.backends.base import SamplingParams
    from agents.backends.openai import OpenAIBackend
    from agents.backends.transformers import TransformersBackend
    from agents.tiny import build_tiny_adapter
    from learners.grpo import run

    url, loaded, used = server
    # The random tiny model fails click-test every time, and the KL reference is the
    # initial policy (the init adapter): a group of equal rewards would give no
    # update. Judge the real, server-generated rollouts alternately as won and lost
    # so each group of two has an advantage to follow.
    real_play, calls = learners.rollout.LearnerRollouts.play, [0]

    def play(self, jobs):
        judged = []
        for trajectory in real_play(self, jobs):
            calls[0] += 1
            judged.append(dataclasses.replace(trajectory, success=calls[0] % 2 == 0))
        return judged

    monkeypatch.setattr(learners.rollout.LearnerRollouts, "play", play)
    init = build_tiny_adapter(tiny_model, tmp_path / "init")
    out = tmp_path / "grpo"
    cfg = _server_cfg(
        url,
        out,
        init_adapter=str(init),
        beta=0.5,
        max_steps=2,
        learning_rate=5e-2,
        num_generations=2,
        max_episode_steps=2,
        max_new_tokens=8,
        env_ids=["browser_env/miniwob.click-test-v0"],
        train_seeds=[0],
    )
    result = run(cfg)
    assert result["history"][-1]["num_samples"] >= 2
    # every rollout step was generated on the server, under a served adapter version
    assert len(used) >= 2 * 2 and set(used) <= {f"served_{i}" for i in (1, 2)}
    # the server got the init adapter first and the trained one last
    init_weights = load_file(str(init / "adapter_model.safetensors"))
    assert all(torch.equal(loaded[0][k], v) for k, v in init_weights.items())
    final = load_file(str(out / "adapter_model.safetensors"))
    assert all(torch.equal(loaded[-1][k], v) for k, v in final.items())
    assert any(not torch.equal(loaded[0][k], loaded[-1][k]) for k in final)
    # and generating under the served name is generating with the trained adapter
    messages = [{"role": "user", "content": 'Click on the "ONE" button.'}]
    greedy = SamplingParams(max_new_tokens=6)
    served = OpenAIBackend(
        url, result["served_model"], api_key_env="GRPO_SERVER_TOKEN", return_token_ids=True
    ).generate(messages, sampling=greedy)
    base = OpenAIBackend(url, "tiny", api_key_env="GRPO_SERVER_TOKEN").generate(
        messages, sampling=greedy
    )
    local = TransformersBackend(tiny_model, adapter=str(out), device="cpu")
    want = local.generate(messages, sampling=greedy)
    assert served.token_ids == want.token_ids
    assert served.logprobs == pytest.approx(want.logprobs, abs=1e-5)
    assert served.logprobs != pytest.approx(base.logprobs, abs=1e-5)


def test_grpo_server_mode_says_when_no_server_answers(tmp_path):
    from learners.grpo import run
    from learners.lora_server import LoRAServerError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(
        LoRAServerError, match=rf"no generation server answers at {url}.*vllm serve"
    ):
        run(_server_cfg(url, tmp_path / "grpo", server_token_env=None), play_fn=_alternating)


def test_grpo_server_mode_says_when_the_server_is_not_an_openai_one(tmp_path):
    """Something else answers on the port (here a plain static file server):
    a LoRAServerError that says so, not a JSON or attribute error."""
    import http.server
    import threading

    from learners.grpo import run
    from learners.lora_server import LoRAServerError

    class NotOpenAI(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            body = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/v1"
    try:
        with pytest.raises(LoRAServerError, match=r"did not answer with an OpenAI model list"):
            run(_server_cfg(url, tmp_path / "grpo", server_token_env=None), play_fn=_alternating)
    finally:
        server.shutdown()
        server.server_close()


def test_grpo_server_mode_needs_the_write_token(tmp_path, server, monkeypatch):
    from learners.grpo import run
    from learners.lora_server import LoRAServerError

    url, loaded, _ = server
    monkeypatch.setenv("GRPO_SERVER_TOKEN", "not-the-token")
    with pytest.raises(LoRAServerError, match="401"):
        run(_server_cfg(url, tmp_path / "grpo", max_steps=1), play_fn=_alternating)
    assert loaded == []


def test_grpo_rejects_an_unknown_generation_mode():
    from learners.grpo import run

    with pytest.raises(ValueError, match="generation"):
        run({**FAST, "generation": "vllm"})


def test_an_answer_httpx_cannot_decode_is_a_lora_server_error(tmp_path):
    """A server whose gzip body is not gzip: httpx raises DecodingError (a
    RequestError, not a TransportError); the learner gets a LoRAServerError."""
    import http.server
    import threading

    from learners.lora_server import LoRAServer, LoRAServerError

    class BrokenGzip(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b"this is not gzip"
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer  # noqa: N815 - the stdlib's names

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), BrokenGzip)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/v1"
    lora = LoRAServer(url, tmp_path)
    try:
        with pytest.raises(LoRAServerError, match=r"GET .*/v1/models: the answer could not"):
            lora.check()
        with pytest.raises(LoRAServerError, match=r"DecodingError"):
            lora._call("POST", "/unload_lora_adapter", {"lora_name": "x"})
    finally:
        lora.close()
        server.shutdown()
        server.server_close()
