"""Selection's prompt pass: same hidden states and GRIFFIN scores as a full forward, without the LM
head and without the blocks past the predictor's read-out layer."""

from __future__ import annotations

import pytest
import torch

from ifprune.core.errors import IfpruneError
from ifprune.core.hooks import record_intermediates
from ifprune.selection.heads import pool_last, pooled_hidden
from ifprune.core.prompt_pass import prompt_hidden
from ifprune.selection.selectors import GriffinSelector
from ifprune.core.tiny import tiny_lm

ARCHS = ["llama", "qwen2", "gemma2", "gpt2", "gpt_neox", "phi3"]


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 100, (2, 9), generator=g)
    att = torch.ones_like(ids)
    att[1, 6:] = 0
    return ids, att


@pytest.mark.parametrize("arch", ARCHS)
def test_pooled_hidden_equals_the_full_forward_at_every_readout_layer(arch):
    lm = tiny_lm(arch, layers=4)
    ids, att = _batch()
    with torch.no_grad():
        hs = lm.model(ids, attention_mask=att, output_hidden_states=True).hidden_states
    for n in (None, 1, 2, 3, 4):
        torch.testing.assert_close(pooled_hidden(lm.model, ids, att, n), pool_last(hs, att, n), rtol=0, atol=1e-6)


def test_early_exit_runs_only_the_blocks_it_reads_and_never_the_lm_head():
    lm = tiny_lm("llama", layers=4)
    ids, att = _batch()
    calls: list[str] = []
    handles = [b.register_forward_hook(lambda m, a, o, i=i: calls.append(f"block{i}"))
               for i, b in enumerate(layer.block for layer in lm.layout.layers)]
    handles.append(lm.model.get_output_embeddings().register_forward_hook(lambda *a: calls.append("head")))
    try:
        prompt_hidden(lm.model, ids, att, 2)
        assert calls == ["block0", "block1"]
        calls.clear()
        prompt_hidden(lm.model, ids, att, None)
        assert calls == ["block0", "block1", "block2", "block3"]
        calls.clear()
        GriffinSelector.scores_from_ids(lm, ids, att)
        assert "head" not in calls
    finally:
        for h in handles:
            h.remove()
    # the hook is gone: a later full pass runs every block
    assert prompt_hidden(lm.model, ids, att, None).shape == (2, 9, 32)


def test_readout_layer_out_of_range_is_a_clear_error():
    lm = tiny_lm("llama", layers=4)
    ids, att = _batch()
    for bad in (0, 5):
        with pytest.raises(IfpruneError, match=r"backbone_layers must be in 1\.\.4"):
            prompt_hidden(lm.model, ids, att, bad)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_griffin_scores_equal_those_of_a_full_forward(arch):
    lm = tiny_lm(arch, layers=3)
    ids, att = _batch()
    ref = torch.zeros(2, lm.num_layers, lm.d_ffn)

    def acc(i, x):
        x = x.float() / x.float().norm(dim=-1, keepdim=True).clamp_min(1e-12)
        ref[:, i] = (x * att.unsqueeze(-1)).pow(2).sum(1).sqrt()

    with torch.no_grad(), record_intermediates(lm.layout, acc):
        lm.model(ids, attention_mask=att)
    torch.testing.assert_close(GriffinSelector.scores_from_ids(lm, ids, att), ref, rtol=0, atol=1e-6)
