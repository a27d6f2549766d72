"""The MLX backend, and the proof that a PEFT adapter converts: MLX and torch logits match.

mlx runs on this Linux CPU through ``mlx[cpu]``; its first run compiles
kernels (~30 s), later runs take seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from backend_contract import MESSAGES, BackendContract, screenshot, tiny_path

from agents.backends.base import SamplingParams
from agents.backends.common import is_available

pytestmark = pytest.mark.skipif(
    not all(is_available(m) for m in ("mlx", "mlx_lm", "torch", "transformers", "peft")),
    reason='needs the mlx and train extras: pip install "browser-rl[mlx,train]"',
)


class TestMLXText(BackendContract):
    def make_backend(self):
        from agents.backends.mlx import MLXBackend

        return MLXBackend(tiny_path("text"))

    def test_greedy_tokens_match_transformers(self, backend):
        from agents.backends.transformers import TransformersBackend

        torch_backend = TransformersBackend(tiny_path("text"), device="cpu")
        try:
            sampling = SamplingParams(max_new_tokens=8)
            ours = backend.generate(MESSAGES, sampling=sampling)
            theirs = torch_backend.generate(MESSAGES, sampling=sampling)
            assert ours.token_ids == theirs.token_ids
            assert ours.logprobs == pytest.approx(theirs.logprobs, abs=1e-4)
        finally:
            torch_backend.close()


def _logits(arch: str, adapter=None):
    """Logits of the tiny model on MESSAGES from torch (PEFT) and from MLX (converted)."""
    import mlx.core as mx
    import torch

    from agents.backends.mlx import MLXBackend
    from agents.backends.transformers import TransformersBackend

    model = tiny_path("text", arch=arch)
    torch_backend = TransformersBackend(model, adapter=adapter, device="cpu")
    mlx_backend = MLXBackend(model, adapter=adapter)
    try:
        _, inputs = torch_backend.encode_chat(MESSAGES)
        ids = mlx_backend.encode_chat(MESSAGES)
        assert inputs["input_ids"][0].tolist() == ids
        with torch.no_grad():
            torch_logits = torch_backend.model(**inputs).logits[0].numpy()
        mlx_logits = np.array(mlx_backend.model(mx.array(ids)[None])[0])
        return torch_logits, mlx_logits
    finally:
        torch_backend.close()
        mlx_backend.close()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_converted_peft_adapter_gives_the_same_logits(arch, tmp_path):
    from agents.tiny import build_tiny_adapter

    adapter = build_tiny_adapter(
        tiny_path("text", arch=arch),
        tmp_path / "adapter",
        target_modules=(
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ),
    )
    base_torch, base_mlx = _logits(arch)
    torch_logits, mlx_logits = _logits(arch, adapter)
    # The adapter must matter, or matching logits would prove nothing.
    assert np.abs(torch_logits - base_torch).max() > 0.1
    assert np.abs(mlx_logits - base_mlx).max() > 0.1
    np.testing.assert_allclose(base_mlx, base_torch, atol=2e-4, rtol=1e-3)
    np.testing.assert_allclose(mlx_logits, torch_logits, atol=2e-4, rtol=1e-3)


def test_rslora_and_partial_layers_convert(tmp_path):
    """Adapters on only some layers, with rsLoRA scaling, still match."""
    import peft
    import torch
    import transformers

    model_dir = tiny_path("text")
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = peft.LoraConfig(
        r=2,
        lora_alpha=3,
        target_modules=["v_proj", "down_proj"],
        layers_to_transform=[1],
        use_rslora=True,
    )
    peft_model = peft.get_peft_model(model, config)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
    peft_model.save_pretrained(tmp_path / "adapter")
    base_torch, _ = _logits("llama")
    torch_logits, mlx_logits = _logits("llama", tmp_path / "adapter")
    assert np.abs(torch_logits - base_torch).max() > 0.1
    np.testing.assert_allclose(mlx_logits, torch_logits, atol=2e-4, rtol=1e-3)


def test_conversion_layout(tmp_path):
    import mlx.core as mx
    from safetensors.numpy import load_file

    from agents.backends.mlx import convert_peft_adapter_to_mlx
    from agents.tiny import build_tiny_adapter

    peft_dir = build_tiny_adapter(tiny_path("text"), tmp_path / "peft", rank=4, alpha=8)
    out = convert_peft_adapter_to_mlx(peft_dir, tmp_path / "mlx")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["lora_parameters"]["rank"] == 4
    assert config["lora_parameters"]["scale"] == pytest.approx(2.0)
    assert config["num_layers"] == 2  # read from the base model's config
    assert "self_attn.q_proj" in config["lora_parameters"]["keys"]
    source = load_file(str(peft_dir / "adapter_model.safetensors"))
    converted = mx.load(str(out / "adapters.safetensors"))
    a = source["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"]
    b = source["base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"]
    np.testing.assert_array_equal(
        np.array(converted["model.layers.1.self_attn.q_proj.lora_a"]), a.T
    )
    np.testing.assert_array_equal(
        np.array(converted["model.layers.1.self_attn.q_proj.lora_b"]), b.T
    )
    assert len(converted) == len(source)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"use_dora": True}, "DoRA"),
        ({"rank_pattern": {"q_proj": 8}}, "rank_pattern"),
        ({"bias": "all"}, "bias"),
        ({"peft_type": "IA3"}, "only LORA"),
    ],
)
def test_unconvertible_adapters_are_refused(tmp_path, change, message):
    from agents.backends.mlx import convert_peft_adapter_to_mlx
    from agents.tiny import build_tiny_adapter

    peft_dir = build_tiny_adapter(tiny_path("text"), tmp_path / "peft")
    config_file = peft_dir / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **change}))
    with pytest.raises(ValueError, match=message):
        convert_peft_adapter_to_mlx(peft_dir, tmp_path / "mlx")


def test_load_adapter_switches_and_backend_reports_it(tmp_path):
    from agents.backends.mlx import MLXBackend
    from agents.tiny import build_tiny_adapter

    first = build_tiny_adapter(tiny_path("text"), tmp_path / "a", seed=0)
    second = build_tiny_adapter(tiny_path("text"), tmp_path / "b", seed=1)
    backend = MLXBackend(tiny_path("text"), adapter=first)
    try:
        sampling = SamplingParams(max_new_tokens=4)
        one = backend.generate(MESSAGES, sampling=sampling)
        backend.load_adapter(second)
        two = backend.generate(MESSAGES, sampling=sampling)
        assert one.logprobs != two.logprobs
        assert two.info["adapter"] == str(second)
    finally:
        backend.close()


needs_mlx_vlm = pytest.mark.skipif(
    not is_available("mlx_vlm"), reason='needs mlx-vlm: pip install "browser-rl[mlx]"'
)


@needs_mlx_vlm
class TestMLXIdefics3(BackendContract):
    """A VLM on mlx-vlm, fed by the same Hugging Face processor as the transformers backend."""

    arch = "llama"

    def make_backend(self):
        from agents.backends.mlx import MLXBackend

        return MLXBackend(tiny_path("vlm", arch=self.arch))

    def test_is_multimodal(self, backend):
        assert backend.multimodal is True
        assert backend.processor is not None

    @pytest.mark.parametrize("with_image", [True, False])
    def test_greedy_tokens_match_transformers(self, backend, with_image):
        from agents.backends.transformers import TransformersBackend

        torch_backend = TransformersBackend(tiny_path("vlm", arch=self.arch), device="cpu")
        try:
            images = [screenshot(2)] if with_image else []
            sampling = SamplingParams(max_new_tokens=8)
            ours = backend.generate(MESSAGES, images=images, sampling=sampling)
            theirs = torch_backend.generate(MESSAGES, images=images, sampling=sampling)
            assert ours.info["prompt_tokens"] == theirs.info["prompt_tokens"]
            assert ours.token_ids == theirs.token_ids
            assert ours.logprobs == pytest.approx(theirs.logprobs, abs=1e-4)
        finally:
            torch_backend.close()

    def test_the_image_changes_the_output(self, backend):
        sampling = SamplingParams(max_new_tokens=6)
        a = backend.generate(MESSAGES, images=[screenshot(0)], sampling=sampling)
        b = backend.generate(MESSAGES, images=[screenshot(5)], sampling=sampling)
        no_image = backend.generate(MESSAGES, sampling=sampling)
        assert len({tuple(a.logprobs), tuple(b.logprobs), tuple(no_image.logprobs)}) == 3

    def test_auto_processor_is_left_alone(self, backend):
        """mlx-vlm patches AutoProcessor when its model modules load; the backend undoes it."""
        import transformers

        from agents.backends.transformers import TransformersBackend

        method = transformers.AutoProcessor.from_pretrained.__func__
        assert method.__module__ == "transformers.models.auto.processing_auto"
        torch_backend = TransformersBackend(tiny_path("vlm", arch=self.arch), device="cpu")
        try:
            assert type(torch_backend.processor).__module__.startswith("transformers.")
        finally:
            torch_backend.close()

    def test_adapters_are_refused_for_vlms(self, backend, tmp_path):
        with pytest.raises(NotImplementedError, match="text models only"):
            backend.load_adapter(tmp_path)


class TestMLXQwen2VL(TestMLXIdefics3):
    """Qwen2-VL (M-RoPE, dynamic resolution), a transformers-5 checkpoint shown to mlx-vlm."""

    arch = "qwen2"

    def test_config_is_staged_in_the_legacy_layout(self, backend):
        from pathlib import Path

        assert backend._staged is not None
        staged = json.loads((Path(backend._staged.name) / "config.json").read_text())
        assert staged["hidden_size"] == staged["text_config"]["hidden_size"] == 128
        assert staged["rope_scaling"]["type"] == "mrope"
        assert sum(staged["rope_scaling"]["mrope_section"]) == 16
        assert staged["vision_config"]["model_type"] == "qwen2_vl"


def test_missing_mlx_vlm_names_the_extra(monkeypatch):
    import sys

    from agents.backends.mlx import MLXBackend

    monkeypatch.setitem(sys.modules, "mlx_vlm", None)
    monkeypatch.setitem(sys.modules, "mlx_vlm.utils", None)
    with pytest.raises(ImportError, match=r"browser-rl\[mlx\]"):
        MLXBackend(tiny_path("vlm"))
