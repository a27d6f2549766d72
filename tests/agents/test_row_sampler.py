"""The per-row sampler: temperature, top-p and a seeded stream per row."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="needs torch: pip install 'browser-rl[train]'")

from agents.backends.row_sampler import RowSampler, row_seeds  # noqa: E402


def _draws(sampler: RowSampler, scores, n: int) -> list[list[int]]:
    out = []
    for _ in range(n):
        allowed = sampler(None, scores)
        assert torch.isfinite(allowed).sum(dim=-1).tolist() == [1] * scores.shape[0]
        out.append(allowed.argmax(dim=-1).tolist())
    return out


def test_a_row_draws_from_its_own_seeded_stream():
    scores = torch.zeros(3, 50)  # uniform: every draw is the stream's
    together = _draws(RowSampler([1, 2, 1], 1.0, 1.0), scores, 20)
    alone = _draws(RowSampler([1], 1.0, 1.0), scores[:1], 20)
    assert [d[0] for d in together] == [d[0] for d in alone] == [d[2] for d in together]
    assert [d[1] for d in together] != [d[0] for d in together]


def test_top_p_keeps_the_smallest_set_over_p_and_temperature_sharpens():
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = {d[0] for d in _draws(RowSampler([None], 1.0, 0.7), scores, 200)}
    assert kept == {0, 1}  # 0.5 < 0.7 <= 0.8: the second token is needed, the third not
    assert {d[0] for d in _draws(RowSampler([0], 1.0, 1e-6), scores, 50)} == {0}
    cold = [d[0] for d in _draws(RowSampler([0], 0.05, 1.0), scores, 100)]
    hot = [d[0] for d in _draws(RowSampler([0], 5.0, 1.0), scores, 100)]
    assert cold.count(0) > 95 and hot.count(0) < 60


def test_unseeded_rows_get_fresh_seeds_and_bad_use_is_refused():
    assert row_seeds([5, None])[0] == 5 and len(set(row_seeds([None] * 8))) == 8
    with pytest.raises(ValueError, match="temperature > 0"):
        RowSampler([1], 0.0, 1.0)
    with pytest.raises(ValueError, match="2 row seeds for 3 rows"):
        RowSampler([1, 2], 1.0, 1.0)(None, torch.zeros(3, 5))


def test_top_p_keeps_what_transformers_top_p_warper_keeps():
    from transformers.generation.logits_process import TopPLogitsWarper

    gen = torch.Generator().manual_seed(0)
    for top_p in (0.3, 0.6, 0.9, 0.99):
        scores = torch.randn(16, 40, generator=gen) * 3
        ours = RowSampler([0] * 16, 1.0, top_p)
        theirs = TopPLogitsWarper(top_p)(None, scores.clone())
        for row in range(16):
            allowed = {int(i) for i in torch.nonzero(torch.isfinite(theirs[row]))}
            drawn = {d[row] for d in _draws(ours, scores, 30)}
            assert drawn <= allowed  # never a token the warper removes
