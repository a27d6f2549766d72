"""The losses and small numerical pieces the learners share (torch).

* :func:`token_kl` -- per-token KL between student and teacher next-token
  distributions (SDFT). ``reverse`` is KL(student || teacher) =
  sum_v p_s(v) (log p_s(v) - log p_t(v)), the paper's choice: mode-seeking,
  the student is pulled towards what the teacher finds likely among what the
  student itself would say. ``forward`` is KL(teacher || student). With
  ``top_k`` both distributions are restricted to the student's k most likely
  tokens and renormalised there (the convention of TRL's SDFT trainer).
* :func:`masked_mean` -- the mean over completion tokens of the whole batch.
* :func:`ema_update` -- teacher <- (1 - rate) teacher + rate student, in place.
* :func:`group_advantages` and :func:`grpo_token_loss` -- GRPO.

The gradients flow to the student only: the teacher is a target.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "agreement",
    "ema_update",
    "entropy",
    "group_advantages",
    "grpo_token_loss",
    "k3_kl",
    "masked_mean",
    "token_kl",
]


def token_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    direction: str = "reverse",
    top_k: int | None = None,
) -> torch.Tensor:
    """KL per position between ``softmax(student_logits)`` and ``softmax(teacher_logits)``.

    Shapes ``(..., V)`` in, ``(...)`` out. The teacher is detached.
    """
    if direction not in ("reverse", "forward"):
        raise ValueError(f"direction must be 'reverse' or 'forward', got {direction!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {tuple(student_logits.shape)} "
            f"vs {tuple(teacher_logits.shape)}"
        )
    student_logits = student_logits.float()
    teacher_logits = teacher_logits.detach().float()
    if top_k is not None:
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        k = min(top_k, student_logits.shape[-1])
        index = student_logits.detach().topk(k, dim=-1).indices
        student_logits = student_logits.gather(-1, index)
        teacher_logits = teacher_logits.gather(-1, index)
    log_s = torch.log_softmax(student_logits, dim=-1)
    log_t = torch.log_softmax(teacher_logits, dim=-1)
    if direction == "reverse":
        return (log_s.exp() * (log_s - log_t)).sum(-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is true (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of ``softmax(logits)`` per position."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """1.0 where student and teacher would pick the same token greedily, else 0.0."""
    return (student_logits.argmax(-1) == teacher_logits.argmax(-1)).float()


@torch.no_grad()
def ema_update(
    teacher: Mapping[str, torch.Tensor], student: Iterable[tuple[str, torch.Tensor]], rate: float
) -> None:
    """In place: ``teacher[name] <- (1 - rate) * teacher[name] + rate * student``.

    ``rate == 0`` leaves the teacher unchanged; ``rate == 1`` copies the student.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"EMA rate must be in [0, 1], got {rate}")
    if rate == 0.0:
        return
    for name, value in student:
        teacher[name].lerp_(value.detach().to(teacher[name].dtype), rate)


def group_advantages(
    rewards: Sequence[float] | torch.Tensor,
    groups: Sequence[Any],
    *,
    scale: bool = True,
    eps: float = 1e-4,
) -> torch.Tensor:
    """GRPO advantages: each reward minus its group's mean, divided by the
    group's (population) std when ``scale``. A group whose rewards are all
    equal gets zero advantages (it carries no learning signal)."""
    r = torch.as_tensor(rewards, dtype=torch.float32)
    if r.ndim != 1 or len(groups) != r.numel():
        raise ValueError("rewards and groups must be 1-D and of equal length")
    out = torch.zeros_like(r)
    keys: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        keys.setdefault(g, []).append(i)
    for idx in keys.values():
        members = r[idx]
        centred = members - members.mean()
        scale_by = members.std(unbiased=False) + eps
        if scale and scale_by > 0:  # all-equal rewards: centred is already 0
            centred = centred / scale_by
        out[idx] = centred
    return out


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference) from the sampled tokens'
    log-probs: ``exp(d) - d - 1`` with ``d = ref - logp``. Never negative; zero
    where the two agree (Schulman's estimator, as TRL's GRPO uses)."""
    d = ref_logps.detach() - logps
    return torch.exp(d) - d - 1


def grpo_token_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon: float = 0.2,
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped surrogate, averaged over all completion tokens of the batch.

    ``logps``, ``old_logps``, ``mask``: ``(B, T)``; ``advantages``: ``(B,)``.
    With ``beta > 0`` adds the k3 estimator of KL(policy || reference).
    Returns ``(loss, stats)`` with ``clip_ratio`` and ``approx_kl``.
    """
    ratio = torch.exp(logps - old_logps.detach())
    adv = advantages.unsqueeze(-1)
    pg_loss = -torch.minimum(ratio * adv, ratio.clamp(1 - epsilon, 1 + epsilon) * adv)
    if beta and ref_logps is not None:
        pg_loss = pg_loss + beta * k3_kl(logps, ref_logps)
    loss = masked_mean(pg_loss, mask)
    with torch.no_grad():
        clipped = ((ratio - 1).abs() > epsilon).float()
        stats = {
            "clip_ratio": float(masked_mean(clipped, mask)),
            "approx_kl": float(masked_mean(old_logps - logps, mask)),
        }
    return loss, stats
