"""The transformers backend on tiny text and vision models built offline."""

from __future__ import annotations

import json

import pytest
from backend_contract import MESSAGES, BackendContract, screenshot, tiny_path

from agents.backends.base import SamplingParams
from agents.backends.common import is_available

pytestmark = pytest.mark.skipif(
    not (is_available("torch") and is_available("transformers")),
    reason='needs the train extra: pip install "browser-rl[train]"',
)


def _backend(kind: str = "text", arch: str = "llama", **kwargs):
    from agents.backends.transformers import TransformersBackend

    return TransformersBackend(tiny_path(kind, arch=arch), device="cpu", **kwargs)


class TestTransformersText(BackendContract):
    def make_backend(self):
        return _backend("text")

    def test_is_text_only(self, backend):
        assert backend.multimodal is False
        assert backend.processor is None

    def test_exposes_model_and_tokenizer(self, backend):
        prompt, inputs = backend.encode_chat(MESSAGES)
        assert prompt.endswith("<|im_start|>assistant\n")
        logits = backend.model(**inputs).logits
        assert logits.shape[:2] == inputs["input_ids"].shape
        assert backend.tokenizer.decode(inputs["input_ids"][0]) == prompt

    def test_logprobs_are_the_model_distribution(self, backend):
        import torch

        gen = backend.generate(MESSAGES, sampling=SamplingParams(max_new_tokens=4))
        _, inputs = backend.encode_chat(MESSAGES)
        ids = torch.cat([inputs["input_ids"], torch.tensor([gen.token_ids])], dim=1)
        with torch.no_grad():
            logits = backend.model(input_ids=ids).logits[0]
        n = inputs["input_ids"].shape[1]
        expected = [
            torch.log_softmax(logits[n - 1 + i], -1)[t].item() for i, t in enumerate(gen.token_ids)
        ]
        assert gen.logprobs == pytest.approx(expected, abs=1e-4)

    def test_finish_reason(self, backend):
        gen = backend.generate(MESSAGES, sampling=SamplingParams(max_new_tokens=3))
        assert gen.info["finish_reason"] in ("length", "stop")
        assert gen.info["completion_tokens"] == len(gen.token_ids)

    def test_rejects_bad_device_and_dtype(self):
        from agents.backends.transformers import TransformersBackend

        with pytest.raises(ValueError, match="device"):
            TransformersBackend(tiny_path("text"), device="tpu")
        with pytest.raises(ValueError, match="dtype"):
            TransformersBackend(tiny_path("text"), device="cpu", dtype="int3")
        with pytest.raises(ValueError, match="prefill must be one of"):
            TransformersBackend(tiny_path("text"), device="cpu", prefill="chunked")

    def test_auto_prefill_is_per_row_on_cpu(self, backend):
        assert backend.prefill == "per_row"
        batch = [MESSAGES, [MESSAGES[1]]]
        gens = backend.generate_batch(batch, sampling=SamplingParams(max_new_tokens=3))
        assert [g.info["prefill"] for g in gens] == ["per_row", "per_row"]
        assert [g.info["batch_size"] for g in gens] == [2, 2]

    def test_padded_batches_sample_seeded_rows_as_alone_too(self):
        from agents.backends.transformers import TransformersBackend

        padded = TransformersBackend(tiny_path("text"), device="cpu", prefill="padded")
        batch = [MESSAGES, [MESSAGES[1]], [{"role": "user", "content": "hi"}]]
        rows = [
            SamplingParams(max_new_tokens=8, temperature=0.8, top_p=0.9, seed=s) for s in (1, 2, 3)
        ]
        together = padded.generate_batch(batch, sampling=rows)
        assert [g.info["prefill"] for g in together] == ["padded"] * 3
        alone = [padded.generate(m, sampling=r) for m, r in zip(batch, rows, strict=True)]
        assert [g.token_ids for g in together] == [g.token_ids for g in alone]
        padded.close()

    def test_sampling_leaves_torchs_global_generator_alone(self, backend):
        import torch

        torch.manual_seed(0)
        expected = torch.rand(3)
        torch.manual_seed(0)
        backend.generate(MESSAGES, sampling=SamplingParams(max_new_tokens=4, temperature=1.0))
        backend.generate_batch(
            [MESSAGES, MESSAGES], sampling=SamplingParams(max_new_tokens=4, temperature=1.0)
        )
        assert torch.equal(torch.rand(3), expected)

    def test_generation_runs_in_eval_mode_and_gives_the_callers_mode_back(self, backend):
        import torch

        modes: list[bool] = []
        hook = backend.model.register_forward_pre_hook(lambda m, a: modes.append(m.training))
        try:
            backend.model.train()  # as a learner may leave it
            frozen = next(m for m in backend.model.modules() if m is not backend.model)
            frozen.eval()  # one part left in eval: it stays so
            torch.manual_seed(0)
            expected = torch.rand(3)
            torch.manual_seed(0)
            sampled = SamplingParams(max_new_tokens=3, temperature=1.0)
            backend.generate(MESSAGES, sampling=sampled)
            backend.generate_batch([MESSAGES, [MESSAGES[1]]], sampling=sampled)
            assert torch.equal(torch.rand(3), expected)  # dropout drew nothing either
            assert modes and not any(modes)
            assert backend.model.training and not frozen.training
        finally:
            hook.remove()
            backend.model.eval()

    def test_rows_that_go_one_by_one_say_so(self, backend):
        """Stop strings (and one prompt) are generated row by row: batch size 1."""
        batch = [MESSAGES, [MESSAGES[1]]]
        gens = backend.generate_batch(batch, sampling=SamplingParams(max_new_tokens=3, stop=("}",)))
        assert [g.info["batch_size"] for g in gens] == [1, 1]
        (one,) = backend.generate_batch([MESSAGES], sampling=SamplingParams(max_new_tokens=3))
        assert one.info["batch_size"] == 1


class TestRowPrefill:
    """``prefill="per_row"``: the cache it builds is the one a lone prompt builds."""

    @pytest.mark.parametrize(
        "rows",
        [
            [[5, 6, 7, 8, 9], [5, 6, 10, 11], [5, 6, 12]],  # a shared prefix, computed once
            [[5, 6, 7, 8, 9], [10, 11], [12]],  # a row with nothing to prefill
        ],
    )
    @pytest.mark.parametrize("max_new_tokens", [None, 3])  # a DynamicCache, a StaticCache
    def test_cache_equals_each_row_alone(self, rows, max_new_tokens):
        import torch
        from transformers import DynamicCache, StaticCache

        from agents.backends.row_prefill import left_padded, prefill_rows

        backend = _backend("text")
        width = max(len(r) for r in rows)
        with torch.inference_mode():
            got = prefill_rows(backend.model, rows, pad_id=0, max_new_tokens=max_new_tokens)
            want = left_padded(rows, 0, backend.model.device)
            for key in ("input_ids", "attention_mask"):
                assert torch.equal(got[key], want[key])
            cache = got["past_key_values"]
            assert int(cache.get_seq_length()) == width - 1
            if max_new_tokens is None:
                assert type(cache) is DynamicCache
            else:  # room for the last prompt token and the new ones, all zeros yet
                assert isinstance(cache, StaticCache)
                assert cache.layers[0].keys.shape[2] == width + max_new_tokens
                assert not any(layer.keys[:, :, width - 1 :].any() for layer in cache.layers)
            for row, ids in enumerate(rows):
                alone = backend.model(input_ids=torch.tensor([ids]), use_cache=True).past_key_values
                n, pad = len(ids) - 1, width - len(ids)
                for layer, mine in zip(alone.layers, cache.layers, strict=True):
                    end = pad + n
                    assert torch.allclose(
                        mine.keys[row, :, pad:end], layer.keys[0, :, :n], atol=1e-5
                    )
                    assert torch.allclose(
                        mine.values[row, :, pad:end], layer.values[0, :, :n], atol=1e-5
                    )
                    assert not mine.keys[row, :, :pad].any()  # padding: zeros, masked
            with pytest.raises(ValueError, match="at least one token"):
                prefill_rows(backend.model, [[1], []], pad_id=0)
            with pytest.raises(ValueError, match="max_new_tokens"):
                prefill_rows(backend.model, [[1, 2], [3]], pad_id=0, max_new_tokens=0)
        backend.close()

    def test_only_full_attention_models_are_split(self):
        from transformers import AutoModelForCausalLM, MistralConfig

        from agents.backends.row_prefill import supported
        from agents.backends.transformers import TransformersBackend

        small = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2}
        small |= {"num_key_value_heads": 1, "num_hidden_layers": 2, "vocab_size": 64}
        assert supported(
            AutoModelForCausalLM.from_config(MistralConfig(**small, sliding_window=None))
        )
        sliding = AutoModelForCausalLM.from_config(MistralConfig(**small, sliding_window=4))
        assert not supported(sliding)
        with pytest.raises(ValueError, match="full attention"):
            TransformersBackend(tiny_path("vlm"), device="cpu", prefill="per_row")

    def test_a_checkpoint_naming_its_cache_keeps_the_padded_batch(self, tmp_path):
        """``generate`` refuses a cache passed in when the generation config names a
        cache class; such a checkpoint falls back to the padded batch."""
        import shutil

        from agents.backends.transformers import TransformersBackend

        model_dir = tmp_path / "model"
        shutil.copytree(tiny_path("text"), model_dir)
        config_path = model_dir / "generation_config.json"
        config = json.loads(config_path.read_text())
        config_path.write_text(json.dumps({**config, "cache_implementation": "dynamic"}))
        backend = TransformersBackend(model_dir, device="cpu")
        assert backend.prefill == "padded"
        gens = backend.generate_batch(
            [MESSAGES, [MESSAGES[1]]], sampling=SamplingParams(max_new_tokens=3)
        )
        assert [g.info["prefill"] for g in gens] == ["padded", "padded"]
        with pytest.raises(ValueError, match="cache_implementation"):
            TransformersBackend(model_dir, device="cpu", prefill="per_row")
        backend.close()


class TestTransformersQwen2(BackendContract):
    def make_backend(self):
        from agents.backends.transformers import TransformersBackend

        return TransformersBackend(tiny_path("text", arch="qwen2"), device="cpu")


class TestTransformersVLM(BackendContract):
    """Idefics3 (SmolVLM's architecture)."""

    arch = "llama"

    def make_backend(self):
        return _backend("vlm", arch=self.arch)

    def test_is_multimodal(self, backend):
        assert backend.multimodal is True
        assert backend.processor is not None

    def test_image_tokens_reach_the_model(self, backend):
        prompt, inputs = backend.encode_chat(MESSAGES, [screenshot()])
        assert "<image>" in prompt
        assert "pixel_values" in inputs
        image_id = backend.tokenizer.convert_tokens_to_ids("<image>")
        assert int((inputs["input_ids"] == image_id).sum()) == backend.processor.image_seq_len

    def test_the_image_changes_the_output(self, backend):
        sampling = SamplingParams(max_new_tokens=6)
        a = backend.generate(MESSAGES, images=[screenshot(0)], sampling=sampling)
        b = backend.generate(MESSAGES, images=[screenshot(5)], sampling=sampling)
        no_image = backend.generate(MESSAGES, sampling=sampling)
        assert len({tuple(a.logprobs), tuple(b.logprobs), tuple(no_image.logprobs)}) == 3

    def test_large_screenshots_are_downscaled(self):
        backend = _backend("vlm", arch=self.arch, max_image_side=64)
        try:
            gen = backend.generate(
                MESSAGES,
                images=[screenshot(height=720, width=1280)],
                sampling=SamplingParams(max_new_tokens=2),
            )
            assert isinstance(gen.text, str)
        finally:
            backend.close()


class TestTransformersQwen2VL(TestTransformersVLM):
    """Qwen2-VL: dynamic resolution, ``image_grid_thw`` and M-RoPE from ``mm_token_type_ids``."""

    arch = "qwen2"

    def test_is_multimodal(self, backend):
        assert backend.multimodal is True
        assert type(backend.processor).__name__ == "Qwen2VLProcessor"
        if not is_available("torchvision"):
            # Loaded without the video processor, which needs torchvision.
            assert "video_processor" not in backend.processor.get_attributes()

    def test_image_tokens_reach_the_model(self, backend):
        image = screenshot(height=48, width=80)
        prompt, inputs = backend.encode_chat(MESSAGES, [image])
        assert "<|vision_start|><|image_pad|><|vision_end|>" in prompt
        # 48 x 80 is already a multiple of patch_size * merge_size = 16: a
        # 6 x 10 grid of 8-pixel patches, merged 2 x 2 into 15 image tokens.
        assert inputs["image_grid_thw"].tolist() == [[1, 6, 10]]
        assert inputs["pixel_values"].shape == (60, 3 * 2 * 8 * 8)
        image_id = backend.model.config.image_token_id
        is_image = inputs["input_ids"] == image_id
        assert int(is_image.sum()) == 15
        assert (inputs["mm_token_type_ids"] == is_image.long()).all()

    def test_image_positions_are_m_rope(self, backend):
        """Image tokens get (t, h, w) positions; text after the image resumes past them."""
        _, inputs = backend.encode_chat(MESSAGES, [screenshot(height=48, width=80)])
        positions, _ = backend.model.model.get_rope_index(
            inputs["input_ids"],
            mm_token_type_ids=inputs["mm_token_type_ids"],
            image_grid_thw=inputs["image_grid_thw"],
            attention_mask=inputs["attention_mask"],
        )
        is_image = (inputs["input_ids"] == backend.model.config.image_token_id)[0]
        t, h, w = (positions[axis, 0][is_image] for axis in range(3))
        assert len(set(t.tolist())) == 1
        assert h.max() - h.min() == 2 and w.max() - w.min() == 4  # a 3 x 5 merged grid
        text = positions[0, 0][~is_image]
        assert (text[1:] > text[:-1]).all()

    def test_saved_processor_reloads(self, backend, tmp_path):
        from agents.backends.processors import load_processor

        backend.processor.save_pretrained(tmp_path)
        reloaded = load_processor(tmp_path)
        image = screenshot(3)
        prompt = backend.render_chat(MESSAGES, n_images=1)
        a = backend.processor(text=[prompt], images=[[image]], return_tensors="pt")
        b = reloaded(text=[prompt], images=[[image]], return_tensors="pt")
        assert a.keys() == b.keys()
        for key in a:
            assert (a[key] == b[key]).all()


class TestAdapter:
    @pytest.fixture(scope="class")
    @classmethod
    def adapter_dir(cls, tmp_path_factory):
        from agents.tiny import build_tiny_adapter

        return build_tiny_adapter(tiny_path("text"), tmp_path_factory.mktemp("adapter"))

    def test_adapter_changes_logits_and_can_be_merged(self, adapter_dir):
        import torch

        base, adapted, merged = _backend(), _backend(adapter=adapter_dir), None
        try:
            from peft import PeftModel

            assert isinstance(adapted.model, PeftModel)
            _, inputs = base.encode_chat(MESSAGES)
            with torch.no_grad():
                base_logits = base.model(**inputs).logits
                adapted_logits = adapted.model(**inputs).logits
            assert (adapted_logits - base_logits).abs().max() > 1e-2
            merged = _backend(adapter=adapter_dir, merge_adapter=True)
            assert not isinstance(merged.model, PeftModel)
            with torch.no_grad():
                merged_logits = merged.model(**inputs).logits
            torch.testing.assert_close(merged_logits, adapted_logits, atol=1e-4, rtol=1e-4)
        finally:
            for backend in (base, adapted, merged):
                if backend is not None:
                    backend.close()

    def test_an_adapter_loaded_after_a_merge_replaces_the_merged_one(self, adapter_dir, tmp_path):
        """A merged backend's ``load_adapter`` (an online learner's update of
        the adapter) gives base + the new adapter, not base + old + new; and it
        refuses to serve other adapters beside a merged one."""
        import torch

        from agents.tiny import build_tiny_adapter

        other = build_tiny_adapter(tiny_path("text"), tmp_path / "other", seed=1)
        merged, expected = (
            _backend(adapter=adapter_dir, merge_adapter=True),
            _backend(adapter=other),
        )
        try:
            with pytest.raises(ValueError, match="merged into the weights"):
                merged.add_adapter(other, "beside")
            merged.load_adapter(adapter_dir)  # the same adapter again: nothing changes
            _, inputs = expected.encode_chat(MESSAGES)
            once = _backend(adapter=adapter_dir)
            with torch.no_grad():
                torch.testing.assert_close(
                    merged.model(**inputs).logits, once.model(**inputs).logits, atol=1e-4, rtol=1e-4
                )
            once.close()
            merged.load_adapter(other)
            with torch.no_grad():
                got, want = merged.model(**inputs).logits, expected.model(**inputs).logits
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
            assert merged.adapter == str(other)
        finally:
            merged.close()
            expected.close()

    def test_load_adapter_switches(self, adapter_dir, tmp_path):
        from agents.tiny import build_tiny_adapter

        other = build_tiny_adapter(tiny_path("text"), tmp_path / "other", seed=1)
        backend = _backend(adapter=adapter_dir)
        try:
            sampling = SamplingParams(max_new_tokens=4)
            first = backend.generate(MESSAGES, sampling=sampling)
            backend.load_adapter(other, name="other")
            assert backend.model.active_adapter == "other"
            second = backend.generate(MESSAGES, sampling=sampling)
            assert first.logprobs != second.logprobs
            assert backend.adapter == str(other)
        finally:
            backend.close()
