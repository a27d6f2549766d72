"""Runtime LoRA loading in ``serve.openai_server``, vLLM's endpoints, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os

import pytest
from backend_contract import MESSAGES, tiny_path

from agents.backends.base import SamplingParams
from agents.backends.common import is_available

pytestmark = pytest.mark.skipif(
    not all(is_available(m) for m in ("httpx", "fastapi", "uvicorn", "torch", "peft")),
    reason='needs the api, serve and train extras: pip install "browser-rl[api,serve,train]"',
)

WRITE = "write-" + "5" * 24
READ = "read-" + "3" * 24
GREEDY = SamplingParams(max_new_tokens=4)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    from agents.tiny import build_tiny_adapter

    root = tmp_path_factory.mktemp("adapters")
    return {
        name: build_tiny_adapter(tiny_path("text"), root / name, seed=seed)
        for seed, name in enumerate(("a", "b"))
    }


@pytest.fixture
def served(adapters):
    """(base url, backend) of a server with a read token, a write token and an adapter_root."""
    from agents.backends.transformers import TransformersBackend
    from serve.openai_server import ServerThread, create_app

    backend = TransformersBackend(tiny_path("text"), device="cpu")
    root = os.path.dirname(adapters["a"])
    app = create_app(backend, "tiny", api_key=READ, write_api_key=WRITE, adapter_root=root)
    with ServerThread(app) as server:
        yield server.base_url, backend
    backend.close()


def _post(url, path, body, token=WRITE):
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(url + path, json=body, headers=headers, timeout=30)


def _client(url, model, monkeypatch, token=READ):
    from agents.backends.openai import OpenAIBackend

    monkeypatch.setenv("LORA_TEST_TOKEN", token)
    return OpenAIBackend(
        url, model, api_key_env="LORA_TEST_TOKEN", return_token_ids=True, max_retries=0
    )


def test_loaded_adapter_is_a_model_of_its_own(served, adapters, monkeypatch):
    url, local = served
    base = _client(url, "tiny", monkeypatch).generate(MESSAGES, sampling=GREEDY)

    ok = _post(url, "/load_lora_adapter", {"lora_name": "pol-1", "lora_path": str(adapters["a"])})
    assert ok.status_code == 200, ok.text
    assert ok.text == "Success: LoRA adapter 'pol-1' added successfully."  # vLLM's message
    cards = _client(url, "tiny", monkeypatch)._request("GET", "/models")["data"]
    assert [c["id"] for c in cards] == ["tiny", "pol-1"]
    assert cards[1]["parent"] == "tiny" and cards[1]["root"] == os.path.realpath(adapters["a"])

    lora = _client(url, "pol-1", monkeypatch).generate(MESSAGES, sampling=GREEDY)
    assert lora.logprobs != base.logprobs and lora.token_ids
    # what the server generates under the name is what the adapter generates locally
    from agents.backends.transformers import TransformersBackend

    want = TransformersBackend(tiny_path("text"), adapter=adapters["a"], device="cpu")
    expected = want.generate(MESSAGES, sampling=GREEDY)
    assert lora.token_ids == expected.token_ids
    assert lora.logprobs == pytest.approx(expected.logprobs, abs=1e-5)
    # the base model is untouched by the loaded adapter
    again = _client(url, "tiny", monkeypatch).generate(MESSAGES, sampling=GREEDY)
    assert again.logprobs == pytest.approx(base.logprobs, abs=1e-6)

    # a name loads once, unless load_inplace replaces it
    dup = _post(url, "/load_lora_adapter", {"lora_name": "pol-1", "lora_path": str(adapters["b"])})
    assert dup.status_code == 400 and "already been loaded" in dup.json()["error"]["message"]
    body = {"lora_name": "pol-1", "lora_path": str(adapters["b"]), "load_inplace": True}
    assert _post(url, "/load_lora_adapter", body).status_code == 200
    replaced = _client(url, "pol-1", monkeypatch).generate(MESSAGES, sampling=GREEDY)
    assert replaced.logprobs != lora.logprobs
    assert len(local.model.peft_config) == 1  # the replaced weights were dropped

    gone = _post(url, "/unload_lora_adapter", {"lora_name": "pol-1"})
    assert gone.status_code == 200 and "removed successfully" in gone.text
    from agents.backends.openai import OpenAIRequestError

    with pytest.raises(OpenAIRequestError, match="404"):
        _client(url, "pol-1", monkeypatch).generate(MESSAGES, sampling=GREEDY)
    missing = _post(url, "/unload_lora_adapter", {"lora_name": "pol-1"})
    assert missing.status_code == 404 and "cannot be found" in missing.json()["error"]["message"]
    after = _client(url, "tiny", monkeypatch).generate(MESSAGES, sampling=GREEDY)
    assert after.logprobs == pytest.approx(base.logprobs, abs=1e-6)


def test_adapter_endpoints_need_the_write_token(served, adapters):
    url, _ = served
    body = {"lora_name": "x", "lora_path": str(adapters["a"])}
    for token in (None, READ, "wrong"):
        response = _post(url, "/load_lora_adapter", body, token=token)
        assert response.status_code == 401, token
        assert WRITE not in response.text
    assert _post(url, "/unload_lora_adapter", {"lora_name": "x"}, token=READ).status_code == 401


def test_write_endpoints_are_off_without_a_write_token(adapters):
    import httpx

    from agents.backends.transformers import TransformersBackend
    from serve.openai_server import ServerThread, create_app

    backend = TransformersBackend(tiny_path("text"), device="cpu")
    with ServerThread(create_app(backend, "tiny")) as server:
        body = {"lora_name": "x", "lora_path": str(adapters["a"])}
        response = httpx.post(server.base_url + "/load_lora_adapter", json=body)
        assert response.status_code == 403 and "write_api_key_env" in response.text
    backend.close()


def test_adapter_paths_are_checked(served, adapters, tmp_path):
    url, local = served
    inside = os.path.dirname(adapters["a"])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    not_lora = os.path.join(inside, "prefix")
    os.makedirs(not_lora, exist_ok=True)
    with open(os.path.join(not_lora, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "PREFIX_TUNING"}, f)
    link = os.path.join(inside, "escape")
    if not os.path.islink(link):
        os.symlink(outside, link)
    cases = {
        "relative/dir": (400, "absolute"),
        os.path.join(inside, "a", "..", "..", outside.name): (400, "outside"),
        str(outside): (400, "outside"),
        link: (400, "outside"),  # a symlink inside the root that points out of it
        os.path.join(inside, "nope"): (404, "no adapter directory"),
        inside: (400, "adapter_config.json"),
        not_lora: (400, "only LoRA"),
    }
    for path, (status, words) in cases.items():
        response = _post(url, "/load_lora_adapter", {"lora_name": "x", "lora_path": path})
        assert response.status_code == status, (path, response.text)
        assert words in response.json()["error"]["message"], (path, response.text)
    for name in ("", "tiny", "has space", "x" * 129):
        body = {"lora_name": name, "lora_path": str(adapters["a"])}
        assert _post(url, "/load_lora_adapter", body).status_code == 400, name
    assert _post(url, "/load_lora_adapter", {"lora_name": "x"}).status_code == 400
    assert not hasattr(local.model, "peft_config")  # nothing was loaded


def test_a_request_whose_adapter_is_unloaded_while_it_waits_is_a_404(adapters):
    import threading
    import time

    from agents.backends.openai import OpenAIBackend, OpenAIRequestError
    from agents.backends.transformers import TransformersBackend
    from serve.openai_server import ServerThread, create_app

    backend = TransformersBackend(tiny_path("text"), device="cpu")
    app = create_app(backend, "tiny", write_api_key=WRITE)
    models = app.state.settings.models
    with ServerThread(app) as server:
        body = {"lora_name": "pol-1", "lora_path": str(adapters["a"])}
        assert _post(server.base_url, "/load_lora_adapter", body).status_code == 200
        client = OpenAIBackend(server.base_url, "pol-1", api_key_env="", max_retries=0)
        out: list = []

        def ask():
            try:
                out.append(client.generate(MESSAGES, sampling=GREEDY))
            except OpenAIRequestError as exc:
                out.append(exc)

        with models._lock:  # the request queues behind a generation ...
            asker = threading.Thread(target=ask)
            asker.start()
            deadline = time.monotonic() + 30
            while not models._queue:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            del models._adapters["pol-1"]  # ... and its adapter goes, as an unload would
        asker.join(timeout=60)
    backend.close()
    assert isinstance(out[0], OpenAIRequestError) and out[0].status_code == 404
    assert "was unloaded" in str(out[0])


def test_the_command_line_refuses_a_short_write_token(monkeypatch):
    """The write token loads adapters from disk: shorter than the training
    service's minimum, the server does not start (before any model loads)."""
    from omegaconf import OmegaConf

    from serve.auth import MIN_TOKEN_LENGTH
    from serve.openai_server.cli import run

    monkeypatch.setenv("BRL_TEST_WRITE_TOKEN", "x" * (MIN_TOKEN_LENGTH - 1))
    cfg = OmegaConf.create(
        {"host": "127.0.0.1", "write_api_key_env": "BRL_TEST_WRITE_TOKEN", "backend": {}}
    )
    with pytest.raises(ValueError, match=f"{MIN_TOKEN_LENGTH}"):
        run(cfg)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "give model=PATH"),
        ({"model": "/no/such/model"}, "model=/no/such/model: no such file or directory"),
        ({"model": "m", "max_batch_size": 0}, "max_batch_size must be an integer >= 1"),
        ({"model": "m", "port": "abc"}, "^port: Value 'abc' of type 'str' could not be converted"),
        ({"model": "m", "prot": 8001}, "Key 'prot' not in 'OpenAIServerConfig'"),
        ({"model": "m", "port": 70000}, "port must be in 1..65535"),
    ],
)
def test_the_command_line_refuses_bad_settings_before_the_model_loads(settings, message):
    from omegaconf import OmegaConf

    from serve.openai_server.cli import run

    cfg = OmegaConf.create(
        {"host": "127.0.0.1", "backend": {"_target_": "no.such.Backend", "model": "???"}}
    )
    cfg.merge_with(settings)
    with pytest.raises(ValueError, match=message):
        run(cfg)


@pytest.mark.parametrize(
    ("adapter_config", "suggestion"),
    [
        ({"peft_type": "LORA", "base_model_name_or_path": "org/base"}, "model=org/base adapter="),
        ({"peft_type": "LORA"}, "names no base_model_name_or_path: serve it over the model"),
    ],
)
def test_an_adapter_dir_as_the_model_is_refused_with_the_form_that_serves_it(
    tmp_path, adapter_config, suggestion
):
    """``model=<adapter dir>`` (adapter_config.json, no config.json) is refused
    before anything loads, suggesting ``model=<its base> adapter=<the dir>``."""
    from omegaconf import OmegaConf

    from serve.openai_server.cli import run

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(adapter_config))
    cfg = OmegaConf.create({"host": "127.0.0.1", "backend": {"_target_": "no.such.Backend"}})
    cfg.merge_with({"model": str(adapter)})
    with pytest.raises(ValueError, match="is a LoRA adapter directory") as refused:
        run(cfg)
    message = str(refused.value)
    assert suggestion in message and message.endswith(f"adapter={adapter}"), message
    (adapter / "config.json").write_text("{}")  # a model dir that also holds an adapter: served
    cfg.port = 70000
    with pytest.raises(ValueError, match="port must be in 1..65535"):
        run(cfg)


def test_the_command_line_refuses_an_adapter_dir_as_the_model_in_one_line(adapters, tmp_path):
    """A real PEFT adapter given as ``model=``: ``error: <why>`` naming its base
    model and ``adapter=``, exit status 2, before transformers' "Unrecognized model"."""
    from _commands import python_m

    adapter = adapters["a"]
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    out = python_m("serve.openai_server", f"model={adapter}", "port=70000", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        f"error: model={adapter} is a LoRA adapter directory (adapter_config.json, no "
        f"config.json): serve it over its base model with model={base} adapter={adapter}"
    ], out.stderr[-2000:]


def test_settings_are_checked_as_they_will_run():
    """A config made without Hydra (``OmegaConf.create``) is checked over the
    schema: ``port: "8001"`` is the port 8001, the settings left out are the defaults."""
    from omegaconf import OmegaConf

    from serve.openai_server.cli import check_options

    cfg = OmegaConf.create({"backend": {"model": "m"}, "port": "8001"})
    checked = check_options(cfg)
    assert checked.port == 8001 and checked.max_batch_size == 8 and checked.host == "127.0.0.1"


def test_a_relative_model_path_is_the_callers(tmp_path):
    """The command keeps the caller's working directory (Hydra can move a job
    into its run dir, where ``model=./m`` is not): the path passes its check,
    and the next setting (a port out of range) is what stops it."""
    from _commands import python_m

    (tmp_path / "m").mkdir()
    out = python_m("serve.openai_server", "model=./m", "port=70000", cwd=tmp_path)
    assert out.returncode != 0
    assert "port must be in 1..65535" in out.stderr, out.stderr[-2000:]


def test_of_two_concurrent_loads_of_one_name_one_loads_and_one_is_a_400(adapters):
    """Both pass the check before either loads (they wait behind a generation):
    the second must find the name taken, not replace the first's weights."""
    import threading
    import time

    from agents.backends.transformers import TransformersBackend
    from serve.openai_server import ServerThread, create_app

    backend = TransformersBackend(tiny_path("text"), device="cpu")
    app = create_app(backend, "tiny", write_api_key=WRITE)
    models = app.state.settings.models
    answers: dict[str, object] = {}
    with ServerThread(app) as server:

        def load(which):
            body = {"lora_name": "pol-1", "lora_path": str(adapters[which])}
            answers[which] = _post(server.base_url, "/load_lora_adapter", body)

        loaders = [threading.Thread(target=load, args=(w,)) for w in ("a", "b")]
        with models._lock:  # the backend is busy: both loads queue behind it
            for loader in loaders:
                loader.start()
            time.sleep(1.0)  # both pass check_load (no lock, no backend call) meanwhile
            assert answers == {}  # and wait for the backend
        for loader in loaders:
            loader.join(timeout=60)
        cards = app.state.settings.models.cards()
    peft_names = list(backend.model.peft_config)
    backend.close()
    codes = sorted(answers[w].status_code for w in ("a", "b"))
    assert codes == [200, 400], {w: answers[w].text for w in answers}
    [refused] = [r for r in answers.values() if r.status_code == 400]
    assert "already been loaded" in refused.json()["error"]["message"]
    [winner] = [w for w, r in answers.items() if r.status_code == 200]
    assert [c["id"] for c in cards] == ["tiny", "pol-1"]
    assert cards[1]["root"] == os.path.realpath(adapters[winner])
    assert len(peft_names) == 1  # the refused load added nothing to the backend
