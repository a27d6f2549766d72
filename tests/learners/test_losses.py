"""KL loss and gradient against a hand computation; EMA; GRPO group advantages."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from learners.losses import (  # noqa: E402
    agreement,
    ema_update,
    group_advantages,
    grpo_token_loss,
    masked_mean,
    token_kl,
)

S = [1.0, 2.0, 0.5]  # student logits over a 3-token vocabulary
T = [0.0, 1.0, 2.0]  # teacher logits


def _softmax(z):
    m = max(z)
    e = [math.exp(x - m) for x in z]
    return [x / sum(e) for x in e]


def test_reverse_kl_value_and_gradient_by_hand():
    p, q = _softmax(S), _softmax(T)
    kl = sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))
    # d KL(p || q) / d s_j = p_j (log p_j - log q_j - KL)
    grad = [pj * (math.log(pj) - math.log(qj) - kl) for pj, qj in zip(p, q, strict=True)]
    s = torch.tensor([S], requires_grad=True)
    t = torch.tensor([T], requires_grad=True)
    out = token_kl(s, t, direction="reverse")
    out.sum().backward()
    assert out.item() == pytest.approx(kl, rel=1e-6)
    assert s.grad[0].tolist() == pytest.approx(grad, rel=1e-5, abs=1e-7)
    assert t.grad is None  # the teacher is a target


def test_forward_kl_value_and_gradient_by_hand():
    p, q = _softmax(S), _softmax(T)
    kl = sum(qi * (math.log(qi) - math.log(pi)) for pi, qi in zip(p, q, strict=True))
    # d KL(q || p) / d s_j = p_j - q_j
    grad = [pj - qj for pj, qj in zip(p, q, strict=True)]
    s = torch.tensor([S], requires_grad=True)
    out = token_kl(s, torch.tensor([T]), direction="forward")
    out.sum().backward()
    assert out.item() == pytest.approx(kl, rel=1e-6)
    assert s.grad[0].tolist() == pytest.approx(grad, rel=1e-5, abs=1e-7)


def test_top_k_renormalises_on_the_students_top_tokens():
    # student's top-2 tokens are 1 and 0; restricted to those and renormalised
    p2, q2 = _softmax([S[1], S[0]]), _softmax([T[1], T[0]])
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p2, q2, strict=True))
    out = token_kl(torch.tensor([S]), torch.tensor([T]), top_k=2)
    assert out.item() == pytest.approx(kl, rel=1e-6)
    assert token_kl(torch.tensor([S]), torch.tensor([T]), top_k=10).item() == pytest.approx(
        token_kl(torch.tensor([S]), torch.tensor([T])).item()
    )


def test_kl_is_zero_for_equal_distributions_and_matches_trl():
    z = torch.randn(4, 7, 11)
    assert token_kl(z, z.clone()).abs().max().item() < 1e-6
    trl_loss = pytest.importorskip("trl.experimental.sdft.loss_utils")
    s, t = torch.randn(3, 5, 13), torch.randn(3, 5, 13)
    # TRL's convention: alpha=1 is reverse KL(student || teacher), alpha=0 forward
    ref_rev = trl_loss.compute_full_logit_self_distillation_loss(s, t, distillation_alpha=1.0)
    ref_fwd = trl_loss.compute_full_logit_self_distillation_loss(s, t, distillation_alpha=0.0)
    assert torch.allclose(token_kl(s, t), ref_rev, atol=1e-5)
    assert torch.allclose(token_kl(s, t, direction="forward"), ref_fwd, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError):
        token_kl(torch.zeros(2, 3), torch.zeros(2, 3), direction="sideways")
    with pytest.raises(ValueError):
        token_kl(torch.zeros(2, 3), torch.zeros(2, 4))


def test_masked_mean_and_agreement():
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(v, m).item() == pytest.approx(7 / 3)
    assert masked_mean(v, torch.zeros_like(m)).item() == 0.0
    a = agreement(torch.tensor([[0.0, 1.0], [2.0, 1.0]]), torch.tensor([[0.0, 3.0], [0.0, 1.0]]))
    assert a.tolist() == [1.0, 0.0]


def test_ema_update():
    teacher = {"w": torch.tensor([0.0, 10.0])}
    student = [("w", torch.tensor([1.0, 0.0]))]
    ema_update(teacher, student, 0.0)  # frozen teacher
    assert teacher["w"].tolist() == [0.0, 10.0]
    ema_update(teacher, student, 0.25)
    assert teacher["w"].tolist() == pytest.approx([0.25, 7.5])
    ema_update(teacher, student, 0.25)
    assert teacher["w"].tolist() == pytest.approx([0.4375, 5.625])
    ema_update(teacher, student, 1.0)
    assert teacher["w"].tolist() == [1.0, 0.0]
    with pytest.raises(ValueError):
        ema_update(teacher, student, 1.5)


def test_group_advantages_per_group():
    rewards = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5, 0.5]
    groups = ["a", "a", "a", "a", "b", "b", "c", "c"]
    adv = group_advantages(rewards, groups, eps=0.0)
    # group a: mean 0.5, population std 0.5 -> +-1; groups b, c: all equal -> 0
    assert adv.tolist() == pytest.approx([1, -1, -1, 1, 0, 0, 0, 0])
    raw = group_advantages([3.0, 1.0, 2.0], [0, 0, 1], scale=False)
    assert raw.tolist() == pytest.approx([1.0, -1.0, 0.0])
    three = group_advantages([1.0, 0.0, 0.0], [0, 0, 0], eps=0.0)
    std = math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 3)
    assert three.tolist() == pytest.approx([(2 / 3) / std, (-1 / 3) / std, (-1 / 3) / std])


def test_grpo_loss_on_policy_is_minus_advantage_weighted_logp_gradient():
    logps = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, stats = grpo_token_loss(logps, logps.detach(), adv, mask)
    loss.backward()
    # ratio == 1: loss = -mean_tokens(A); d/d logp = -A / n_tokens on unmasked tokens
    assert loss.item() == pytest.approx(-(2 + 2 - 1) / 3)
    assert logps.grad.flatten().tolist() == pytest.approx([-2 / 3, -2 / 3, 1 / 3, 0.0])
    assert stats["clip_ratio"] == 0.0
