"""Dense prefill: the prompt (but its last token) through the full model, the rest through the compact one."""

import pytest
import torch

from ifprune.core.errors import IfpruneError
from ifprune.core.plan import Plan
from ifprune.core.tiny import tiny_lm
from ifprune.eval import Scorer
from ifprune.eval.compare import SelectorSpec
from ifprune.selection.selectors import make_selector


@pytest.fixture(scope="module")
def lm():
    torch.set_num_threads(1)
    return tiny_lm("llama")


def _masked_from(lm, plan: Plan, ids: torch.Tensor, first_masked: int) -> torch.Tensor:
    """Log-probs of one full-model forward whose FFN channels outside `plan` are zeroed from position
    `first_masked` on (before it every channel runs): what a dense prefill must equal."""
    mask = plan.to_mask()

    def make(i):
        def pre(module, args):
            x = args[0].clone()
            x[:, first_masked:] = x[:, first_masked:] * mask[i].to(x)
            return (x,)
        return pre

    handles = [layer.down.register_forward_pre_hook(make(layer.index)) for layer in lm.layout.layers]
    try:
        with torch.no_grad():
            return torch.log_softmax(lm.model(ids).logits.float(), -1)
    finally:
        for h in handles:
            h.remove()


def test_dense_prefill_equals_a_forward_masked_only_after_the_prompt(lm):
    g = torch.Generator().manual_seed(0)
    plan = Plan.from_scores(torch.rand(lm.num_layers, lm.d_ffn, generator=g), 24)
    ctx = torch.randint(3, 100, (9,), generator=g).tolist()
    cont = torch.randint(3, 100, (5,), generator=g).tolist()
    sc = Scorer(lm, make_selector("griffin"), 24, prefill="dense")
    (lp, n, _), = sc.loglikelihoods(plan, [(ctx, cont)])
    ids = torch.tensor([ctx + cont])
    ref = _masked_from(lm, plan, ids, len(ctx) - 1)  # the prompt's last token is the compact model's first input
    expect = sum(float(ref[0, len(ctx) - 1 + j, t]) for j, t in enumerate(cont))
    assert n == len(cont) and lp == pytest.approx(expect, abs=1e-4)
    pruned, = Scorer(lm, make_selector("griffin"), 24).loglikelihoods(plan, [(ctx, cont)])
    ref0 = _masked_from(lm, plan, ids, 0)
    assert pruned[0] == pytest.approx(sum(float(ref0[0, len(ctx) - 1 + j, t]) for j, t in enumerate(cont)), abs=1e-4)
    assert abs(pruned[0] - lp) > 1e-3  # the dense prompt changes the answer's log-likelihood


def test_dense_prefill_is_recorded_and_named(lm, tmp_path):
    sc = Scorer(lm, make_selector("griffin"), 24, prefill="dense")
    assert sc.config()["prefill"] == "dense"
    assert "prefill" not in Scorer(lm, make_selector("griffin"), 24).config()  # old cache keys unchanged
    spec = SelectorSpec.parse("griffin+dense-prefill")
    assert spec.prefill == "dense" and spec.label() == "griffin+dense-prefill"
    with pytest.raises(IfpruneError, match="dense runs every token"):
        SelectorSpec.parse("dense+dense-prefill")


def test_training_reads_the_prompt_dense_as_inference_does(lm):
    """Training's masked forward under `prefill: dense` (MaskedFFN with dense positions) scores an answer as
    the dense-prefill Scorer does; under a re-selection's labels the answer's first tokens are dense too."""
    from ifprune.core.hooks import MaskedFFN
    from ifprune.training.loop import dense_before, split_at_refresh

    g = torch.Generator().manual_seed(1)
    plan = Plan.from_scores(torch.rand(lm.num_layers, lm.d_ffn, generator=g), 24)
    ctx = torch.randint(3, 100, (7,), generator=g).tolist()
    cont = torch.randint(3, 100, (6,), generator=g).tolist()
    ids = torch.tensor([ctx + cont])
    labels = torch.tensor([[-100] * len(ctx) + cont])
    masked = MaskedFFN(lm.layout)
    try:
        with torch.no_grad(), masked.apply(plan.to_mask(), dense=dense_before(labels)):
            lp = torch.log_softmax(lm.model(ids).logits.float(), -1)
    finally:
        masked.remove()
    got = sum(float(lp[0, len(ctx) - 1 + j, t]) for j, t in enumerate(cont))
    (want, _, _), = Scorer(lm, make_selector("griffin"), 24, prefill="dense").loglikelihoods(plan, [(ctx, cont)])
    assert got == pytest.approx(want, abs=1e-4)
    head, tail = split_at_refresh(labels, 2)
    assert dense_before(head).tolist() == [[True] * (len(ctx) - 1) + [False] * (len(cont) + 1)]
    assert dense_before(tail).tolist() == [[True] * (len(ctx) + 1) + [False] * (len(cont) - 1)]
    assert dense_before(torch.full((1, 4), -100)).all()  # no label: nothing of that row is scored
    with pytest.raises(IfpruneError, match="bool tensor"):
        with masked.apply(plan.to_mask(), dense=torch.ones(1, 4)):
            pass
