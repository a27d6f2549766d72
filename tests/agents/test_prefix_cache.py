"""Prefix caching across calls (``TransformersBackend(prefix_cache=N)``): the
same generations as without it, and never an entry from other weights."""

from __future__ import annotations

import pytest
from backend_contract import tiny_path
from conftest import element, observation
from hypothesis import given
from hypothesis import strategies as st

from agents.backends.common import is_available
from agents.backends.prefix_cache import PrefixCache, adapter_tag, shared_length, weights_key

needs_torch = pytest.mark.skipif(
    not (is_available("torch") and is_available("transformers")),
    reason='needs the train extra: pip install "browser-rl[train]"',
)


@given(st.lists(st.integers(0, 3), max_size=40), st.lists(st.integers(0, 3), max_size=40))
def test_shared_length_is_the_common_prefix(a, b):
    n = shared_length(a, b)
    assert a[:n] == b[:n]
    assert n == min(len(a), len(b)) or a[n] != b[n]


class _Cache:
    """What the pool needs of a transformers cache: ``crop`` (minus tokens to drop)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def crop(self, change: int) -> None:
        assert change <= 0
        self.n += change


class TestPool:
    def test_takes_the_longest_match_once_cropped_to_it(self):
        pool = PrefixCache(4, min_tokens=2)
        pool.check("w")
        pool.put([1, 2, 3, 4], _Cache(4))
        pool.put([1, 2, 9, 9, 9], _Cache(5))
        cache, n = pool.take([1, 2, 3, 7, 7])
        assert (n, cache.n) == (3, 3)  # the first entry, cut to what is shared
        assert len(pool) == 1  # taken, not copied: no two rows share an entry
        assert pool.take([1, 2, 3, 7]) is not None  # the other one, 2 shared
        assert pool.take([1, 2, 3]) is None
        assert (pool.hits, pool.misses, pool.reused_tokens) == (2, 1, 5)

    def test_thresholds(self):
        pool = PrefixCache(4, min_tokens=3)
        pool.check("w")
        pool.put([1, 2, 5], _Cache(3))
        assert pool.take([1, 2, 6]) is None  # 2 shared < min_tokens
        pool.put([1, 2, 3, 4], _Cache(4))
        assert pool.take([1, 2, 3, 4, 5], at_least=4) is None  # not more than the batch prefix
        assert pool.take([1, 2, 3, 4, 5], at_least=3)[1] == 4

    def test_capacity_drops_the_oldest(self):
        pool = PrefixCache(2, min_tokens=1)
        pool.check("w")
        for i in range(3):
            pool.put([i, i], _Cache(2))
        assert len(pool) == 2
        assert pool.take([0, 0]) is None and pool.take([2, 2]) is not None

    def test_the_same_prompt_is_kept_once(self):
        pool = PrefixCache(3, min_tokens=1)
        pool.check("w")
        older, newer = _Cache(2), _Cache(2)
        pool.put([5, 5], older)
        pool.put([1, 1], _Cache(2))
        pool.put([5, 5], newer)  # a batch's identical rows: one entry, the newest
        assert len(pool) == 2
        assert pool.take([5, 5])[0] is newer and pool.take([5, 5]) is None
        assert pool.take([1, 1]) is not None

    def test_a_lookup_sees_only_its_tags_entries(self):
        pool = PrefixCache(4, min_tokens=1)
        pool.check("w", tag="a")
        pool.put([1, 2, 3], _Cache(3))
        pool.check("w", tag="b")  # the same weights, another adapter: kept, not served
        assert len(pool) == 1 and pool.take([1, 2, 3, 4]) is None
        pool.put([1, 2, 3], _Cache(3))  # b's own entry of the same prompt
        assert len(pool) == 2
        pool.check("w", tag="a")
        assert pool.take([1, 2, 3, 4])[1] == 3 and pool.take([1, 2, 3, 4]) is None
        pool.check("w2", tag="b")  # other weights: every tag's entries go
        assert len(pool) == 0

    def test_other_weights_empty_it(self):
        pool = PrefixCache(2, min_tokens=1)
        pool.check("w1")
        pool.put([1, 1], _Cache(2))
        pool.check("w1")
        assert len(pool) == 1
        pool.check("w2")
        assert len(pool) == 0
        with pytest.raises(ValueError, match="capacity"):
            PrefixCache(0)


@needs_torch
def test_weights_key_follows_every_weight_change():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    key = weights_key(model)
    assert weights_key(model) == key  # reading changes nothing
    model(torch.ones(1, 4)).sum().backward()
    assert weights_key(model) == key  # gradients are not weights
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    stepped = weights_key(model)
    assert stepped != key
    model.load_state_dict(model.state_dict())
    assert weights_key(model) != stepped
    loaded = weights_key(model)
    model[0].weight.data = torch.zeros(4, 4)
    assert weights_key(model) != loaded
    assert (adapter_tag(model), adapter_tag(model, bypass_adapter=True)) == ("", "bare")


@needs_torch
def test_peft_state_that_moves_no_counter_is_seen(tmp_path):
    """``set_scale`` and ``merge_adapter`` change what runs without a
    parameter's version counter moving; several active adapters are their own tag."""
    import peft
    import transformers

    model_dir = tiny_path("text")
    first, second = _random_loras(model_dir, tmp_path, 2)
    base = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    model = peft.PeftModel.from_pretrained(base, first, adapter_name="a0")
    model.load_adapter(second, adapter_name="a1")
    key, tag = weights_key(model), adapter_tag(model)
    assert tag == "adapter:a0"
    model.base_model.set_adapter(["a0", "a1"])
    assert model.active_adapter == "a0"  # the attribute PEFT leaves behind
    assert adapter_tag(model) == "adapter:a0,a1" and weights_key(model) == key
    model.base_model.set_adapter("a0")
    for module in model.modules():
        if hasattr(module, "set_scale") and "a0" in getattr(module, "scaling", {}):
            module.set_scale("a0", 3.0)
    scaled = weights_key(model)
    assert scaled != key
    model.base_model.merge_adapter(["a1"])  # adds to weight.data: no counter moves
    assert weights_key(model) != scaled


@pytest.fixture(scope="module")
def policies():
    from agents.backends.transformers import TransformersBackend
    from agents.pretrained import path

    plain = TransformersBackend(path("tiny-miniwob"), device="cpu", dtype="float32")
    cached = TransformersBackend(
        path("tiny-miniwob"), device="cpu", dtype="float32", prefix_cache=8
    )
    yield plain, cached
    plain.close()
    cached.close()


def _episode_prompts(steps: int = 3) -> list[list[list[dict]]]:
    """Prompts of two envs over ``steps`` steps: each env's prompts begin alike."""
    from agents.agent import LLMAgent

    class _NoModel:
        def count_tokens(self, text):
            return len(text) // 3

    agent = LLMAgent(_NoModel(), prompt={"use_screenshot": False})
    goals = [
        ("Click the OK button", (element("e1", "button", "OK"), element("e2", "button", "No"))),
        ("Select Blue and click Submit.", (element("e5", "checkbox", "Blue"),)),
    ]
    return [
        [
            agent.build_prompt(
                observation(goal=g, elements=els, text=f"page {i} step {s}")
            ).messages
            for i, (g, els) in enumerate(goals)
        ]
        for s in range(steps)
    ]


def _random_loras(model_dir, root, n: int) -> list:
    """``n`` LoRA adapters (q_proj, rank 2) with random weights, saved under ``root``."""
    import peft
    import torch
    import transformers

    adapters = []
    for seed in range(n):
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
        lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj"]))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in lora.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator))
        lora.save_pretrained(root / str(seed))
        adapters.append(root / str(seed))
    return adapters


@needs_torch
class TestBackend:
    def test_same_generations_as_without(self, policies):
        from agents.backends.base import SamplingParams

        plain, cached = policies
        sampling = SamplingParams(max_new_tokens=24)
        for batch in _episode_prompts():
            got = cached.generate_batch(batch, sampling=sampling)
            want = plain.generate_batch(batch, sampling=sampling)
            alone = [cached.generate(m, sampling=sampling) for m in batch]
            for g, w, a in zip(got, want, alone, strict=True):
                assert g.token_ids == w.token_ids == a.token_ids
                assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)
                assert a.logprobs == pytest.approx(w.logprobs, abs=1e-4)
        pool = cached.prefix_cache
        assert pool.hits > 0 and pool.reused_tokens > 0  # it was really used

    def test_never_serves_a_cache_of_other_weights(self, policies, monkeypatch):
        """After an in-place weight change (a learner's step) the cached backend
        gives what the plain one gives; with the weights check switched off
        it would not (the flipped test)."""
        import torch

        from agents.backends import transformers as tf_backend
        from agents.backends.base import SamplingParams

        plain, cached = policies
        sampling = SamplingParams(max_new_tokens=4)
        first, second = _episode_prompts(2)
        cached.prefix_cache.clear()

        def step_both(scale):
            for backend in (plain, cached):
                with torch.no_grad():
                    for p in backend.model.model.layers[0].parameters():
                        p.mul_(scale)

        try:
            cached.generate(first[0], sampling=sampling)  # fills the pool
            step_both(1.5)
            assert cached.generate(second[0], sampling=sampling).logprobs == pytest.approx(
                plain.generate(second[0], sampling=sampling).logprobs, abs=1e-4
            )
            monkeypatch.setattr(tf_backend, "weights_key", lambda model, **kw: "frozen")
            cached.prefix_cache.clear()
            cached.generate(first[0], sampling=sampling)
            step_both(1.5)
            stale = cached.generate(second[0], sampling=sampling).logprobs
            fresh = plain.generate(second[0], sampling=sampling).logprobs
            assert max(abs(a - b) for a, b in zip(stale, fresh, strict=False)) > 1e-3
        finally:
            step_both(1 / 1.5**2)

    def test_a_replaced_adapter_never_sees_the_old_ones_entries(self, tmp_path):
        """Replacing an adapter under its name can give its tensors the old
        ones' addresses and version counts; the backend empties the pool
        itself."""
        from agents.backends.base import SamplingParams
        from agents.backends.transformers import TransformersBackend

        model_dir = tiny_path("text")
        adapters = _random_loras(model_dir, tmp_path, 2)
        first, second = _episode_prompts(2)
        sampling = SamplingParams(max_new_tokens=3)
        cached = TransformersBackend(model_dir, adapter=adapters[0], device="cpu", prefix_cache=4)
        cached.generate(first[0], sampling=sampling)
        assert len(cached.prefix_cache) == 1
        cached.load_adapter(adapters[1])  # the same name, "default"
        assert len(cached.prefix_cache) == 0
        got = cached.generate(second[0], sampling=sampling)
        assert cached.prefix_cache.hits == 0  # the pool was emptied
        plain = TransformersBackend(model_dir, adapter=adapters[1], device="cpu")
        assert got.logprobs == pytest.approx(
            plain.generate(second[0], sampling=sampling).logprobs, abs=1e-4
        )
        cached.close()
        plain.close()

    def test_switching_adapters_keeps_each_adapters_entries(self, tmp_path, monkeypatch):
        """Two adapters served by name (as the OpenAI-compatible server does):
        each lookup sees only the running adapter's entries, so every
        generation is what a backend without the pool gives; with one tag for
        all (the flipped test) adapter b would start from a's cache."""
        from agents.backends import transformers as tf_backend
        from agents.backends.base import SamplingParams
        from agents.backends.transformers import TransformersBackend

        model_dir = tiny_path("text")
        adapters = _random_loras(model_dir, tmp_path, 2)
        first, second = _episode_prompts(2)
        sampling = SamplingParams(max_new_tokens=3)
        want = {}
        for i, adapter in enumerate(adapters):
            plain = TransformersBackend(model_dir, adapter=adapter, device="cpu")
            want[i] = [plain.generate(m[0], sampling=sampling).logprobs for m in (first, second)]
            plain.close()

        def play(cached):
            got = {}
            for prompts in (first, second):
                for i in range(2):
                    with cached.using_adapter(f"a{i}"):
                        got.setdefault(i, []).append(
                            cached.generate(prompts[0], sampling=sampling).logprobs
                        )
            return got

        cached = TransformersBackend(model_dir, device="cpu", prefix_cache=8)
        for i, adapter in enumerate(adapters):
            cached.add_adapter(adapter, f"a{i}")
        got = play(cached)
        for i in range(2):
            for g, w in zip(got[i], want[i], strict=True):
                assert g == pytest.approx(w, abs=1e-4)
        pool = cached.prefix_cache
        assert pool.hits == 2 and len(pool) == 2  # each adapter's second prompt hit its own
        pool.clear()
        monkeypatch.setattr(tf_backend, "adapter_tag", lambda model, **kw: "one tag")
        stale = play(cached)[1][0]  # a1's first prompt, from a0's cache of the same prompt
        assert max(abs(a - b) for a, b in zip(stale, want[1][0], strict=True)) > 1e-3
        cached.close()

    def test_using_adapter_restores_several_active_adapters(self, tmp_path):
        from agents.backends.transformers import TransformersBackend

        model_dir = tiny_path("text")
        first, second = _random_loras(model_dir, tmp_path, 2)
        backend = TransformersBackend(model_dir, adapter=first, device="cpu", prefix_cache=2)
        backend.add_adapter(second, "a1")
        backend.model.base_model.set_adapter(["default", "a1"])
        with backend.using_adapter("a1"):
            assert backend.model.active_adapters == ["a1"]
        assert sorted(backend.model.active_adapters) == ["a1", "default"]
        backend.close()

    def test_bad_settings(self):
        from agents.backends.transformers import TransformersBackend

        with pytest.raises(ValueError, match="prefix_cache must be"):
            TransformersBackend(tiny_path("text"), device="cpu", prefix_cache=-1)
        with pytest.raises(ValueError, match="not 'padded'"):
            TransformersBackend(tiny_path("text"), device="cpu", prefix_cache=4, prefill="padded")
        with pytest.raises(ValueError, match="prefix_cache need"):
            TransformersBackend(tiny_path("vlm"), device="cpu", prefix_cache=4)
