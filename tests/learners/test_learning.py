"""Tests that assert learning, not just running (tiny model, a few steps each).

* SDFT lowers the KL between the student and the (frozen) teacher on fixed
  prompts, and the same check fails with the loss's sign flipped;
* SFT raises the target action's log-prob;
* one SDFT step gives the same loss in torch and in MLX;
* dropout stays out of targets; the EMA teacher rolls back with the student.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

FAST = {"wandb": False, "progress": False, "save_steps": 0}


def _scores(adapter, samples, ids_of, device="cpu"):
    """Per sample: (teacher-student KL along the target tokens, log p(target)).

    The student is the tiny model with ``adapter`` on the student prompt; the
    teacher is the tiny model without it on the teacher prompt (SDFT's frozen
    teacher with a fresh LoRA is exactly that).
    """
    import peft

    from agents.backends.transformers import TransformersBackend
    from learners.losses import token_kl
    from learners.trainable import completion_logits

    backend = TransformersBackend("tiny", device=device, dtype="float32")
    if adapter is not None:
        backend.model = peft.PeftModel.from_pretrained(backend.model, str(adapter))
    backend.model.eval()
    out = []
    with torch.no_grad():
        for sample in samples:
            ids = ids_of(backend, sample)
            student = completion_logits(backend, sample.messages, [], ids)
            if adapter is not None:
                with backend.model.disable_adapter():
                    teacher = completion_logits(backend, sample.teacher_messages, [], ids)
            else:
                teacher = completion_logits(backend, sample.teacher_messages, [], ids)
            target = torch.tensor(ids, device=student.device)[:, None]
            logp = torch.log_softmax(student.float(), -1).gather(-1, target)
            out.append((float(token_kl(student, teacher).mean()), float(logp.sum())))
    backend.close()
    return out


def _samples(episodes_dir):
    from learners.samples import iter_samples

    return list(iter_samples([episodes_dir]))


def _target_ids(backend, sample):
    return backend.tokenizer.encode(sample.target, add_special_tokens=False)


def _sdft(tmp_path, episodes_dir, **overrides):
    from learners.sdft import run

    out = tmp_path / "sdft"
    config = {
        **FAST,
        "output_dir": str(out),
        "episodes": [str(episodes_dir)],
        "max_steps": 4,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "max_new_tokens": 4,
        "ema_rate": 0.0,  # a frozen teacher: the KL below is to a fixed target
        **overrides,
    }
    run(config)
    return out


def _kl_ratio(tmp_path, episodes_dir, device="cpu"):
    """Mean teacher-student KL along the demonstrated actions, after / before
    (training and scoring on ``device``)."""
    samples = _samples(episodes_dir)
    before = _scores(None, samples, _target_ids, device)
    after = _scores(_sdft(tmp_path, episodes_dir, device=device), samples, _target_ids, device)
    return sum(a[0] for a in after) / sum(b[0] for b in before)


def test_sdft_lowers_student_teacher_kl_on_fixed_prompts(tmp_path, episodes_dir):
    assert _kl_ratio(tmp_path, episodes_dir) < 0.7


def test_sdft_with_a_flipped_loss_sign_fails_the_kl_check(tmp_path, episodes_dir, monkeypatch):
    import learners.losses

    original = learners.losses.token_kl
    monkeypatch.setattr(learners.losses, "token_kl", lambda *a, **k: -original(*a, **k))
    assert _kl_ratio(tmp_path, episodes_dir) > 1.5


def _sft_log_probs(tmp_path, episodes_dir, device="cpu"):
    """Each demonstration's log p(target), before and after SFT on ``device``."""
    from learners.sft import run

    samples = _samples(episodes_dir)
    before = _scores(None, samples, _target_ids, device)
    out = tmp_path / "sft"
    run(
        {
            **FAST,
            "output_dir": str(out),
            "episodes": [str(episodes_dir)],
            "max_steps": 4,
            "learning_rate": 1e-2,
            "lora_dropout": 0.0,
            "device": device,
        }
    )
    return before, _scores(out, samples, _target_ids, device)


def test_sft_raises_the_targets_log_prob(tmp_path, episodes_dir):
    before, after = _sft_log_probs(tmp_path, episodes_dir)
    assert all(a[1] > b[1] + 0.1 for a, b in zip(after, before, strict=True)), (before, after)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sft_and_sdft_learn_on_cuda(tmp_path, episodes_dir):
    before, after = _sft_log_probs(tmp_path, episodes_dir, device="cuda")
    assert all(a[1] > b[1] + 0.1 for a, b in zip(after, before, strict=True)), (before, after)
    assert _kl_ratio(tmp_path, episodes_dir, device="cuda") < 0.7


@pytest.mark.slow
def test_one_sdft_step_gives_the_same_loss_in_torch_and_mlx(tmp_path, episodes_dir):
    pytest.importorskip(
        "mlx_lm", reason="the MLX twin needs mlx-lm (pip install 'browser-rl[mlx]')"
    )
    from learners.sdft import run

    common = {
        **FAST,
        "episodes": [str(episodes_dir)],
        "max_steps": 1,
        "batch_size": 2,
        "max_new_tokens": 6,
        "temperature": 0.0,  # greedy: both backends decode the same completions
    }
    torch_row = run({**common, "output_dir": str(tmp_path / "t")})["history"][0]
    mlx_row = run({**common, "output_dir": str(tmp_path / "m"), "backend": "mlx"})["history"][0]
    assert torch_row["completion_length"] == mlx_row["completion_length"]
    assert torch_row["loss"] > 0
    assert mlx_row["loss"] == pytest.approx(torch_row["loss"], rel=1e-3, abs=1e-5)


def test_an_init_adapters_saved_dropout_does_not_override_the_run(tmp_path, episodes_dir):
    """An SFT adapter saved with lora_dropout=0.5: SDFT/GRPO from it train with
    their own setting (0), and teacher targets are dropout-free either way."""
    from learners.config import SDFTConfig
    from learners.sft import run
    from learners.trainable import completion_logits, load_trainable, no_dropout

    sft = tmp_path / "sft"
    run(
        {
            **FAST,
            "output_dir": str(sft),
            "episodes": [str(episodes_dir)],
            "max_steps": 1,
            "lora_dropout": 0.5,
        }
    )
    trainable = load_trainable(SDFTConfig(init_adapter=str(sft), output_dir=str(tmp_path / "x")))
    drops = [m for n, m in trainable.model.named_modules() if n.endswith("lora_dropout.default")]
    assert drops and all(not isinstance(m, torch.nn.Dropout) for m in drops)

    noisy = load_trainable(
        SDFTConfig(init_adapter=str(sft), lora_dropout=0.5, output_dir=str(tmp_path / "y"))
    )
    noisy.model.train()
    sample = _samples(episodes_dir)[0]
    ids = _target_ids(noisy.backend, sample)
    with torch.no_grad():
        a = completion_logits(noisy.backend, sample.teacher_messages, [], ids)
        b = completion_logits(noisy.backend, sample.teacher_messages, [], ids)
        assert not torch.equal(a, b)  # dropout is live in train mode ...
        with no_dropout(noisy.model):
            c = completion_logits(noisy.backend, sample.teacher_messages, [], ids)
            d = completion_logits(noisy.backend, sample.teacher_messages, [], ids)
    assert torch.equal(c, d) and noisy.model.training  # ... and off for targets


@pytest.mark.slow
def test_sdft_defaults_to_an_ema_teacher_that_rolls_back_with_the_student(tmp_path, episodes_dir):
    from learners.config import SDFTConfig
    from learners.sdft import run

    assert SDFTConfig().ema_rate > 0
    verdicts = iter([1.0, 0.0, 0.0])  # step 1 is the best; step 2 rolls back
    out = tmp_path / "sdft"
    run(
        {
            **FAST,
            "output_dir": str(out),
            "episodes": [str(episodes_dir)],
            "max_steps": 3,
            "save_steps": 1,
            "save_total_limit": 5,
            "eval_steps": 1,
            "learning_rate": 1e-2,
            "ema_rate": 0.5,
            "max_new_tokens": 6,
        },
        evaluate_fn=lambda: next(verdicts),
    )
    root = out / "checkpoints"
    best = torch.load(root / "best" / "state.pt", weights_only=False)
    after_rollback = torch.load(root / "step-000002" / "state.pt", weights_only=False)
    step1 = torch.load(root / "step-000001" / "state.pt", weights_only=False)
    assert best["step"] == 1
    teacher_best, teacher_2 = best["extra"]["teacher"], after_rollback["extra"]["teacher"]
    assert all(torch.equal(teacher_best[k], teacher_2[k]) for k in teacher_best)
    assert all(torch.equal(step1["extra"]["teacher"][k], teacher_2[k]) for k in teacher_best)


LLAMA3_CHAT = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{{ message['content'] | trim }}{{ '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)


def _llama3_style_model(path, tiny_model):
    """The tiny model with Llama-3's turn tokens: its chat template ends an assistant
    turn with ``<|eot_id|>``, and ``generation_config.eos_token_id`` lists
    ``<|end_of_text|>`` first, as Meta's Llama-3 instruct checkpoints do."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    turn_tokens = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|end_of_text|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": turn_tokens})
    tokenizer.eos_token = "<|end_of_text|>"
    tokenizer.chat_template = LLAMA3_CHAT
    eot, end = tokenizer.convert_tokens_to_ids(["<|eot_id|>", "<|end_of_text|>"])
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.config.eos_token_id = model.generation_config.eos_token_id = [end, eot]
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, eot, end


def test_sft_ends_the_action_with_the_chat_templates_end_of_turn_token(
    tmp_path, episodes_dir, tiny_model
):
    """SFT's target is the action and the token the chat template closes an
    assistant turn with -- ``<|eot_id|>`` for Llama-3 -- not the first of
    ``generation_config.eos_token_id`` (``<|end_of_text|>``): after training,
    the model ends the action as its chat format does."""
    from agents.backends.transformers import TransformersBackend
    from learners.sft import run
    from learners.trainable import completion_logits

    model, eot, end = _llama3_style_model(tmp_path / "llama3", tiny_model)
    out = tmp_path / "sft"
    run(
        {
            **FAST,
            "model": str(model),
            "output_dir": str(out),
            "episodes": [str(episodes_dir)],
            "max_steps": 4,
            "learning_rate": 1e-2,
            "lora_dropout": 0.0,
        }
    )
    backend = TransformersBackend(str(model), adapter=str(out), device="cpu", dtype="float32")
    gaps = []
    with torch.no_grad():
        for sample in _samples(episodes_dir):
            ids = _target_ids(backend, sample)
            logits = completion_logits(backend, sample.messages, [], [*ids, eot])
            after_action = torch.log_softmax(logits[-1].float(), -1)
            gaps.append(float(after_action[eot] - after_action[end]))
    backend.close()
    assert all(gap > 1.0 for gap in gaps), gaps
