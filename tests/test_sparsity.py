"""2:4 pruning: the pattern holds in every pruned weight, after plan gathering and after a LoRA merge;
the compact sparse model equals its dense-emulated reference."""

import pytest
import torch

from ifprune.compress.pipeline import CompressConfig, compress
from ifprune.core.errors import IfpruneError
from ifprune.core.hooks import MaskedFFN
from ifprune.core.plan import Plan
from ifprune.compress.sparsity import (
    expected_reprune_density, is_2_4, mask_2_4, prunable_linears, sparsegpt_2_4, sparsity_masks, merge_lora_keep_2_4,
    to_semi_structured, wanda_scores,
)
from ifprune.core.tiny import tiny_lm


@pytest.fixture(scope="module")
def calib(data_dir):
    return str(data_dir / "pretrain" / "llamafactory" / "c4_demo.jsonl")


def small_lm(seed=0, **kw):
    return tiny_lm("llama", seed=seed, hidden=64, d_ffn=64, layers=2, **kw)


def names_of(lm):
    return [n for block in prunable_linears(lm.model, lm.layout) for n, _ in block]


def test_mask_keeps_top_two_of_each_group():
    s = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.0, 0.0, 5.0, 5.0]])
    assert mask_2_4(s).tolist() == [[True, False, True, False, False, False, True, True]]
    w = torch.randn(16, 32) * mask_2_4(torch.rand(16, 32))
    assert is_2_4(w) and not is_2_4(torch.randn(16, 32))


def test_width_not_multiple_of_four_is_refused():
    lm = tiny_lm("llama", hidden=32, d_ffn=50, layers=1)
    with pytest.raises(IfpruneError, match="not a multiple of 4"):
        prunable_linears(lm.model, lm.layout)
    with pytest.raises(IfpruneError, match="not a multiple of 4"):
        mask_2_4(torch.rand(3, 6))


def test_sparsegpt_update_beats_plain_masking():
    torch.manual_seed(0)
    x = torch.randn(512, 64) @ torch.randn(64, 64)  # correlated inputs: the update has something to use
    w = torch.randn(32, 64)
    h = x.T @ x / x.shape[0]
    pruned = sparsegpt_2_4(w, h)
    assert is_2_4(pruned)
    masked = w * mask_2_4(wanda_scores(w, x.pow(2).sum(0).sqrt()))
    err = lambda v: (x @ (w - v).T).pow(2).mean()  # noqa: E731
    assert err(pruned) < 0.8 * err(masked)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("down", ["regather", "reprune"])
def test_every_pruned_weight_is_2_4_also_after_plans(calib, method, down):
    lm = small_lm()
    comp = compress(lm, CompressConfig(method=method, down=down, calibration=calib, calib_tokens=512, seq_len=64))
    rep = comp.pattern(lm.model)
    assert rep["all_2_4"] and rep["layers"] == 14 and rep["density"] == pytest.approx(0.5)
    for width, seed in ((16, 0), (40, 1), (64, 2)):
        plan = Plan.from_scores(torch.rand(2, 64, generator=torch.Generator().manual_seed(seed)), width)
        compact = comp.compact(lm, plan)
        cnames = names_of(type(lm)(compact.model, lm.tokenizer, "compact"))
        for n in cnames:
            assert is_2_4(compact.model.get_submodule(n).weight), n
        downs = [layer.down.weight for layer in compact.compact_layout.layers]
        dens = sum(int((w != 0).sum()) for w in downs) / sum(w.numel() for w in downs)
        if down == "regather":
            assert dens == pytest.approx(0.5)  # the best half of the plan's own dense columns
        else:
            assert dens <= 0.5 + 1e-9
            if width < 64:
                assert dens < 0.5


def test_reprune_density_expectation():
    assert expected_reprune_density() == pytest.approx(26 / 64)


def test_compact_sparse_model_equals_dense_emulation(calib):
    """Compact 2:4 model vs the full model with the plan as a mask and the re-imposed 2:4 down scattered
    back into a full-width weight: same logits."""
    lm = small_lm(seed=1)
    comp = compress(lm, CompressConfig(method="wanda", calibration=calib, calib_tokens=512, seq_len=64))
    plan = Plan.from_scores(torch.rand(2, 64, generator=torch.Generator().manual_seed(3)), 24)
    compact = comp.compact(lm, plan)
    ids = torch.randint(10, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = compact.model(ids).logits
        saved = [layer.down.weight.detach().clone() for layer in lm.layout.layers]
        for li, layer in enumerate(lm.layout.layers):
            full = torch.zeros_like(layer.down.weight)
            full[:, plan.indices[li]] = compact.compact_layout.layers[li].down.weight
            layer.down.weight.copy_(full)
        masked = MaskedFFN(lm.layout)
        with masked.apply(plan.to_mask()):
            ref = lm.model(ids).logits
        masked.remove()
        for layer, w in zip(lm.layout.layers, saved):
            layer.down.weight.copy_(w)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_lora_merge_keeps_pattern_and_sparsity(calib):
    from peft import LoraConfig, get_peft_model

    lm = small_lm(seed=2)
    comp = compress(lm, CompressConfig(method="wanda", calibration=calib, calib_tokens=512, seq_len=64))
    names = comp.linears
    masks = sparsity_masks(lm.model, names)
    before = comp.pattern(lm.model)["density"]
    pm = get_peft_model(lm.model, LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"]))
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(10, 100, (4, 16), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        loss = pm(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    merged = merge_lora_keep_2_4(pm, masks)
    rep = comp.pattern(merged)
    assert rep["all_2_4"] and rep["density"] == pytest.approx(before)
    for n in names:  # the surviving positions are exactly the pruned model's
        assert torch.equal(merged.get_submodule(n).weight != 0, masks[n])


def test_plain_lora_merge_would_destroy_the_pattern(calib):
    from peft import LoraConfig, get_peft_model

    lm = small_lm(seed=2)
    comp = compress(lm, CompressConfig(method="wanda", calibration=calib, calib_tokens=512, seq_len=64))
    pm = get_peft_model(lm.model, LoraConfig(r=4, init_lora_weights="gaussian", target_modules=["up_proj"]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_()
    merged = pm.merge_and_unload()
    assert not comp.pattern(merged)["all_2_4"]


def test_semi_structured_refuses_cpu_and_wrong_dtype():
    lm = small_lm()
    with pytest.raises(IfpruneError, match="CUDA"):
        to_semi_structured(lm.model, names_of(lm))


@pytest.mark.parametrize("mode", ["masked", "peft"])
def test_recovery_fine_tuning_keeps_positions_and_lowers_loss(calib, mode):
    from ifprune.eval.scorer import text_nll
    from ifprune.compress.sparsity import calibration_chunks

    lm = small_lm(seed=4)
    cfg = CompressConfig(method="wanda", calibration=calib, calib_tokens=512, seq_len=64)
    comp = compress(lm, cfg)
    before = {n: lm.model.get_submodule(n).weight.detach().clone() for n in comp.linears}
    grads = {n: p.requires_grad for n, p in lm.model.named_parameters()}
    text = [lm.tokenizer.decode(c[0]) for c in calibration_chunks(lm.tokenizer, calib, 512, 64)]
    nll0 = text_nll(lm, text)
    from ifprune.compress.recovery import RecoveryConfig, recover

    rec = recover(lm, comp, RecoveryConfig(data=calib, steps=12, lr=1e-2, rank=4, alpha=8, batch_size=2, seq_len=64,
                                           warmup_steps=2, mode=mode))
    assert rec["steps"] == 12 and rec["tokens"] == 12 * 2 * 64 and rec["loss_last"] < rec["loss_first"]
    assert text_nll(lm, text) < nll0
    changed = 0
    for n in comp.linears:
        w = lm.model.get_submodule(n).weight
        assert torch.equal(w != 0, before[n] != 0), n  # the same non-zero positions: still 2:4, same density
        changed += int(not torch.equal(w, before[n]))
    assert changed == len(comp.linears)
    assert {n: p.requires_grad for n, p in lm.model.named_parameters()} == grads  # no adapters left, flags restored
    for i, n in enumerate(comp.down_names):  # "regather" keeps the dense down consistent with the model
        w = lm.model.get_submodule(n).weight
        torch.testing.assert_close(w, comp.down_dense[i] * (w != 0))
    plan = Plan.from_scores(torch.rand(2, 64, generator=torch.Generator().manual_seed(5)), 24)
    compact = comp.compact(lm, plan)
    assert all(is_2_4(layer.down.weight) for layer in compact.compact_layout.layers)


def test_recovery_inside_compress_runs_before_quantization(calib, tmp_path):
    from ifprune.compress.pipeline import load_compressed, save_compressed

    lm = small_lm(seed=5)
    comp = compress(lm, CompressConfig(method="wanda", calibration=calib, calib_tokens=512, seq_len=64, quant="int8",
                                       recover_steps=3, recover_data=calib, recover_lr=1e-3, recover_rank=2,
                                       recover_batch_size=1, recover_seq_len=32))
    assert comp.recovery["steps"] == 3 and comp.pattern(lm.model)["all_2_4"]
    manifest = save_compressed(lm, comp, tmp_path / "c")
    assert manifest["recovery"]["tokens"] == 96
    lm2, comp2 = load_compressed(tmp_path / "c")
    assert comp2.config.recover_steps == 3 and comp2.pattern(lm2.model)["all_2_4"]


def test_recovery_bad_input(calib, tmp_path):
    from ifprune.compress.recovery import RecoveryConfig, recover

    with pytest.raises(IfpruneError, match="for 2:4-pruned models"):
        CompressConfig(sparsity=None, quant="int8", recover_steps=5, recover_data=calib).validate()
    with pytest.raises(IfpruneError, match="recovery text not found"):
        CompressConfig(calibration=calib, recover_steps=5, recover_data=str(tmp_path / "nope.txt")).validate()
    with pytest.raises(IfpruneError, match="unknown recovery mode"):
        RecoveryConfig(data=calib, mode="dense").validate()
    with pytest.raises(IfpruneError, match="learning rate"):
        RecoveryConfig(data=calib, lr=-1.0).validate()
    lm = small_lm()
    comp = compress(lm, CompressConfig(sparsity=None, quant="int8"))
    with pytest.raises(IfpruneError, match="2:4-pruned"):
        recover(lm, comp, RecoveryConfig(data=calib, steps=1))
