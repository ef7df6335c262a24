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
