"""CompactModel.load: what a plan switch moves."""

import torch

from ifprune.core.plan import Plan
def test_a_reused_load_moves_only_changed_channels_and_computes_the_same_model():
    """load(reuse=True) after another plan: the plan's channels in other slots, the same outputs as a full gather."""
    from ifprune.core.tiny import tiny_lm

    for arch in ("llama", "gpt2", "phi3"):
        lm = tiny_lm(arch, layers=2)
        g = torch.Generator().manual_seed(0)
        a = Plan.from_scores(torch.rand(lm.num_layers, lm.d_ffn, generator=g), 24)
        b = Plan.from_scores(torch.rand(lm.num_layers, lm.d_ffn, generator=g), 24)
        ids = torch.randint(0, lm.model.config.vocab_size, (1, 7), generator=g)
        c = lm.compact(24)
        c.load(b)
        with torch.no_grad():
            want = c.model(ids).logits
        c.load(a)
        c.load(b, reuse=True)
        assert sorted(c._slots[0].tolist()) == sorted(b.indices[0].tolist())
        with torch.no_grad():
            torch.testing.assert_close(c.model(ids).logits, want, rtol=1e-5, atol=1e-5)


def test_channels_name_each_slots_channel_and_need_a_loaded_plan():
    """What a kept re-selection reads back: the full channel in every slot, after a plain or an in-place load."""
    import pytest

    from ifprune.core.errors import IfpruneError
    from ifprune.core.tiny import tiny_lm

    lm = tiny_lm("llama", layers=2)
    c = lm.compact(24)
    with pytest.raises(IfpruneError, match="no plan is loaded"):
        c.channels()
    g = torch.Generator().manual_seed(1)
    a, b = (Plan.from_scores(torch.rand(lm.num_layers, lm.d_ffn, generator=g), 24) for _ in range(2))
    c.load(a)
    assert torch.equal(c.channels(), a.indices)
    c.load(b, reuse=True)
    assert torch.equal(c.channels().sort(1).values, b.indices.sort(1).values)
