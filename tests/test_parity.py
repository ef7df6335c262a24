"""Masked execution (differentiable, per example) and compact execution (a stock k-wide model) agree."""

import pytest
import torch

from ifprune.core.compact import CompactModel
from ifprune.core.ffn import discover
from ifprune.core.hooks import MaskedFFN
from ifprune.core.plan import Plan
from ifprune.core.tiny import TINY_ARCHS, tiny_model


def random_plan(layout, width, seed):
    g = torch.Generator().manual_seed(seed)
    return Plan.from_scores(torch.rand(layout.num_layers, layout.d_ffn, generator=g), width)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_masked_equals_compact_for_random_plans(arch):
    model = tiny_model(arch, layers=3).double()  # exact maths, so compare in float64: no CPU-dependent rounding
    layout = discover(model)
    masked = MaskedFFN(layout)
    ids = torch.randint(3, 128, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        dense = model(ids).logits
    for width, seed in ((1, 0), (17, 1), (30, 2), (48, 3)):
        compact = CompactModel(model, width, layout)
        plan = random_plan(layout, width, seed)
        compact.load(plan)
        with torch.no_grad(), masked.apply(plan.to_mask()):
            ref = model(ids).logits
        with torch.no_grad():
            got = compact.model(ids).logits
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
        if width < 48:
            assert not torch.allclose(got, dense, atol=1e-3), "pruning should change the logits"
        else:
            torch.testing.assert_close(got, dense, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("arch", ["llama", "phi3", "gpt2"])
def test_per_example_masks_match_per_example_compact(arch):
    model = tiny_model(arch).double()
    layout = discover(model)
    masked = MaskedFFN(layout)
    compact = CompactModel(model, 20, layout)
    plans = [random_plan(layout, 20, s) for s in range(3)]
    ids = torch.randint(3, 128, (3, 9), generator=torch.Generator().manual_seed(2))
    masks = torch.stack([p.to_mask() for p in plans])
    with torch.no_grad(), masked.apply(masks):
        batched = model(ids).logits
    for i, plan in enumerate(plans):
        compact.load(plan)
        with torch.no_grad():
            torch.testing.assert_close(compact.model(ids[i : i + 1]).logits[0], batched[i], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_compact_is_physically_narrow_and_shares_everything_else(arch):
    model = tiny_model(arch)
    layout = discover(model)
    compact = CompactModel(model, 12, layout)
    clayout = discover(compact.model)
    assert clayout.d_ffn == 12
    for layer in clayout.layers:
        for ct in layer.channel_tensors():
            assert ct.tensor.shape[ct.dim] == 12 * (2 if ct.fused else 1)
    assert getattr(compact.model.config.get_text_config(), layout.family.width_attr) == 12
    assert type(compact.model) is type(model)

    full_ptrs = {p.data_ptr() for p in model.parameters()} | {b.data_ptr() for b in model.buffers()}
    extra = {}
    for p in list(compact.model.parameters()) + list(compact.model.buffers()):
        if p.data_ptr() not in full_ptrs:
            extra[p.data_ptr()] = p.numel() * p.element_size()
    assert sum(extra.values()) == compact.ffn_bytes(), "only the FFN buffers may be new memory"
    assert not any(t.is_meta for t in compact.model.parameters())
    assert not any(t.is_meta for t in compact.model.buffers())


def test_switching_plans_reuses_buffers_and_skips_reloading_the_same_plan():
    model = tiny_model("llama")
    compact = CompactModel(model, 16)
    layout = compact.layout
    a, b = random_plan(layout, 16, 0), random_plan(layout, 16, 1)
    compact.load(a)
    ptrs = [p.data_ptr() for p in compact.model.parameters()]
    w_a = compact.model.model.layers[0].mlp.up_proj.weight.clone()
    assert compact.load(b) > 0
    assert [p.data_ptr() for p in compact.model.parameters()] == ptrs
    assert not torch.equal(compact.model.model.layers[0].mlp.up_proj.weight, w_a)
    assert compact.load(b) == 0.0  # same plan hash: nothing to gather
    full_up = model.model.layers[0].mlp.up_proj.weight
    torch.testing.assert_close(compact.model.model.layers[0].mlp.up_proj.weight, full_up[b.indices[0]])


def test_masks_are_differentiable():
    model = tiny_model("llama")
    layout = discover(model)
    masked = MaskedFFN(layout)
    masks = torch.full((2, layout.num_layers, layout.d_ffn), 0.5, requires_grad=True)
    ids = torch.randint(3, 128, (2, 7))
    with masked.apply(masks):
        loss = model(ids, labels=ids).loss
    loss.backward()
    assert masks.grad is not None and masks.grad.abs().sum() > 0
    assert masks.grad[0].abs().sum() > 0 and masks.grad[1].abs().sum() > 0
    # outside `apply` the hooks are inert
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, model(ids).logits)


def test_compact_generation_matches_masked_generation():
    model = tiny_model("qwen2")
    layout = discover(model)
    plan = random_plan(layout, 24, 5)
    compact = CompactModel(model, 24, layout)
    compact.load(plan)
    ids = torch.randint(3, 128, (1, 6), generator=torch.Generator().manual_seed(3))
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        got = compact.model.generate(ids, **kw)
        with MaskedFFN(layout).apply(plan.to_mask()):
            ref = model.generate(ids, **kw)
    assert torch.equal(got, ref)


def test_wrong_plan_shape_is_refused():
    from ifprune.core.errors import IfpruneError

    model = tiny_model("llama")
    compact = CompactModel(model, 16)
    with pytest.raises(IfpruneError, match="holds 2 layers x 16/48"):
        compact.load(random_plan(compact.layout, 20, 0))
