import pytest
import torch

from ifprune.core.errors import IfpruneError
from ifprune.selection.softtopk import hard_topk_indicator, pairwise_overlap, soft_topk, soft_topk_lambda


@pytest.fixture
def scores():
    return torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(0))


def test_exactly_k_nonzeros_per_layer(scores):
    m = soft_topk(scores, 16, eps=0.5)
    assert ((m != 0).sum(-1) == 16).all()


def test_lambda_in_unit_interval_and_sums_to_k(scores):
    for eps, tol in ((1.0, 0.01), (0.3, 0.01), (0.05, 1.0)):
        lam = soft_topk_lambda(scores, 16, eps=eps, iterations=100)
        assert lam.min() >= 0 and lam.max() <= 1 + 1e-6
        # small eps: only the boundary entry may be fractional, so the sum is within one of k
        torch.testing.assert_close(lam.sum(-1), torch.full(lam.shape[:-1], 16.0), atol=tol, rtol=0)


def test_gradients_reach_the_scores(scores):
    s = scores.clone().requires_grad_(True)
    m = soft_topk(s, 16, eps=0.5)
    (m * torch.randn_like(m)).sum().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    # channels inside the top-k get gradient of their own
    kept = m != 0
    assert (s.grad[kept] != 0).float().mean() > 0.9


def test_converges_to_hard_topk_as_eps_shrinks(scores):
    hard = hard_topk_indicator(scores, 16)
    errs = [(soft_topk(scores, 16, eps=e) - hard).abs().mean().item() for e in (1.0, 0.1, 0.003)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-4
    # the selected set is always the hard top-k of the scores
    assert torch.equal((soft_topk(scores, 16, eps=1.0) != 0).float(), hard)


def test_keep_all_is_all_ones(scores):
    assert torch.equal(soft_topk(scores, 64), torch.ones_like(scores))


@pytest.mark.parametrize("k,eps,it", [(0, 0.1, 5), (65, 0.1, 5), (4, 0.0, 5), (4, 0.1, 0)])
def test_bad_arguments(scores, k, eps, it):
    with pytest.raises(IfpruneError):
        soft_topk(scores, k, eps=eps, iterations=it)


def test_pairwise_overlap():
    a = torch.zeros(1, 2, 8)
    a[..., :4] = 1
    same = a.repeat(3, 1, 1)
    assert pairwise_overlap(same) == pytest.approx(1.0)
    b = torch.zeros(1, 2, 8)
    b[..., 4:] = 1
    assert pairwise_overlap(torch.cat([a, b])) == pytest.approx(0.0)
