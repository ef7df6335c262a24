"""Int8 compact execution (core.quantized): gathering commutes with quantization, quantized logits stay near
float32's, the refit re-quantizes only the down projection, and the bad inputs get one-line errors."""

import pytest
import torch

from ifprune.compensation.calibration import CompensationConfig, compensate
from ifprune.core.errors import IfpruneError
from ifprune.core.plan import Plan
from ifprune.core.quantized import Int8Linear, _linear_weight, check_quant, int8_available, quantize_rows
from ifprune.core.tiny import tiny_lm

pytestmark = pytest.mark.skipif(not int8_available(), reason="this torch build has no CPU int8 kernel")

FAMILIES = ["llama", "phi3", "gpt_neox", "gpt2"]  # gated, fused-gated, plain, plain-conv1d


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IFPRUNE_CACHE", str(tmp_path / "cache"))


def _lm(arch):
    # widths that are multiples of 16, so the packed kernel (not only the dequantized product) runs
    return tiny_lm(arch, hidden=32, d_ffn=64)


def _plan(lm, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Plan.from_scores(torch.rand(lm.num_layers, lm.d_ffn, generator=g), width)


def _logits(compact, ids):
    with torch.no_grad():
        return compact.model(ids).logits


IDS = torch.randint(3, 100, (1, 12), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", FAMILIES)
def test_gathered_int8_rows_are_the_gathered_rows_quantized_bit_for_bit(arch):
    lm = _lm(arch)
    plan = _plan(lm, 32)
    lm.set_quant("int8")
    compact = lm.compact(32)
    compact.load(plan)
    d, fused = lm.d_ffn, lm.layout.family.fused
    for fl, cl, rows in zip(lm.layout.layers, compact.compact_layout.layers, plan.indices):
        rr = torch.cat([rows, rows + d]) if fused else rows
        for full, small in zip(fl.up, cl.up):
            q, s = quantize_rows(_linear_weight(full)[rr])
            assert torch.equal(small.qweight, q) and torch.equal(small.scale, s)
            if full.bias is not None:
                assert torch.equal(small.bias, full.bias[rr])
        # the down projection: the full matrix's int8 columns under its per-output-row scales
        q, s = quantize_rows(_linear_weight(fl.down))
        assert torch.equal(cl.down.qweight, q[:, rows]) and torch.equal(cl.down.scale, s)


@pytest.mark.parametrize("arch", FAMILIES)
def test_int8_logits_are_close_to_float32(arch):
    lm = _lm(arch)
    plan = _plan(lm, 32)
    ref = lm.compact(32)
    ref.load(plan)
    want = _logits(ref, IDS)
    lm.set_quant("int8")
    q = lm.compact(32)
    q.load(plan)
    assert type(q.model.get_output_embeddings()) is Int8Linear
    rel = ((_logits(q, IDS) - want).norm() / want.norm()).item()
    assert rel < 0.08, rel  # (random tiny weights: the real model is checked in test_default_model)
    # one token at a time (the packed kernel) agrees with the whole sequence (the dequantized product)
    with torch.no_grad():
        step = q.model(IDS[:, :1]).logits[0, -1]
    whole = _logits(q, IDS)[0, 0]
    assert ((step - whole).norm() / whole.norm()).item() < 0.03  # (bfloat16 products, summed in another order)
    lm.set_quant(None)  # back to float32: the same model as before, nothing rebuilt
    assert lm.compact(32) is ref
    torch.testing.assert_close(_logits(ref, IDS), want)


def test_a_reused_load_moves_int8_rows_and_gives_the_same_logits():
    lm = _lm("llama")
    lm.set_quant("int8")
    a, b = _plan(lm, 32, 0), _plan(lm, 32, 1)
    compact = lm.compact(32)
    compact.load(a)
    compact.load(b, reuse=True)
    moved = _logits(compact, IDS)
    compact.load(a)
    compact.load(b)
    torch.testing.assert_close(moved, _logits(compact, IDS), rtol=1e-4, atol=1e-4)


def test_the_refit_requantizes_the_down_projection_only(tmp_path):
    calib = tmp_path / "calib.txt"
    calib.write_text("The quick brown fox jumps over the lazy dog. 12 + 30 = 42.\n" * 40)
    lm = _lm("llama")
    comp = compensate(lm, CompensationConfig(calibration=str(calib), max_tokens=2048, seq_len=64), progress=False)
    plan = _plan(lm, 32)
    lm.set_quant("int8")
    compact = lm.compact(32)
    compact.load(plan)
    refits = comp.refit(plan)
    for fl, cl, rows, (W_s, _) in zip(lm.layout.layers, compact.compact_layout.layers, plan.indices, refits):
        q, s = quantize_rows(_linear_weight(fl.up[0])[rows])
        assert torch.equal(cl.up[0].qweight, q)  # gate/up: the gathered rows as they are
        q, s = quantize_rows(W_s)
        assert torch.equal(cl.down.qweight, q) and torch.equal(cl.down.scale, s)
    # without the refit, the next plan's down projection is gathered again under the full matrix's scales
    lm.set_compensator(None)
    plain = lm.compact(32)
    plain.load(plan)
    q, s = quantize_rows(_linear_weight(lm.layout.layers[0].down))
    assert torch.equal(plain.compact_layout.layers[0].down.scale, s)


def test_a_width_the_packed_kernel_cannot_take_runs_the_dequantized_product():
    lm = _lm("llama")
    plan = _plan(lm, 24)  # a down projection of 24 input columns: not a multiple of 16
    ref = lm.compact(24)
    ref.load(plan)
    lm.set_quant("int8")
    q = lm.compact(24)
    q.load(plan)
    assert not q.compact_layout.layers[0].down.packed
    with torch.no_grad():
        got = q.model(IDS[:, :1]).logits
        want = ref.model(IDS[:, :1]).logits
    assert ((got - want).norm() / want.norm()).item() < 0.08


def test_bad_weight_types_are_refused_in_one_line():
    with pytest.raises(IfpruneError, match="runs --quant int8"):
        check_quant("int4")
    lm = _lm("llama")
    with pytest.raises(IfpruneError, match="runs --quant int8"):
        lm.set_quant("q4_1")


def test_attaching_new_weights_drops_the_quantized_copy():
    lm = _lm("llama")
    lm.set_quant("int8")
    plan = _plan(lm, 32)
    lm.compact(32).load(plan)
    before = _logits(lm.compact(32), IDS)
    with torch.no_grad():
        for layer in lm.layout.layers:
            layer.down.weight.mul_(2)
    with pytest.raises(IfpruneError, match="lm.weights_changed"):
        lm.compact(32).refresh()  # (its quantized copy is of the old weights)
    lm.weights_changed()
    after = lm.compact(32)
    after.load(plan)
    assert not torch.allclose(_logits(after, IDS), before, atol=1e-3)


def test_generate_runs_int8_and_says_so():
    from ifprune.runtime.generation import RuntimeConfig, SamplingConfig, generate

    lm = _lm("llama")
    out = generate(lm, "hello there", selector="griffin", width=32, runtime=RuntimeConfig("torch", "int8"),
                   sampling=SamplingConfig(max_new_tokens=4))
    assert out.runtime == {"engine": "torch", "weights": "int8"} and out.new_tokens >= 1
    dense = generate(lm, "hello there", selector="dense", runtime=RuntimeConfig("torch", "int8"),
                     sampling=SamplingConfig(max_new_tokens=4))
    assert dense.runtime["weights"] == "int8" and dense.ffn_width == lm.d_ffn


def test_bench_times_both_models_at_int8():
    from ifprune.bench.latency import BenchConfig, run_bench, to_markdown

    lm = _lm("llama")
    lm.set_quant("int8")
    res = run_bench(lm, BenchConfig(prompt_tokens=16, new_tokens=3, samples=1, keep=0.5))
    assert res["quant"] == "int8" and "int8 weights" in to_markdown(res)
    assert res["summary"]["dense"]["decode_s"] > 0 and res["summary"]["compact"]["decode_s"] > 0


def test_the_server_answers_with_int8_compact_models_and_says_so():
    import openai

    from ifprune.selection.selectors import make_selector
    from ifprune.serve.app import IfpruneServer, ServeConfig

    lm = _lm("llama")
    lm.set_quant("int8")
    srv = IfpruneServer(lm, make_selector("griffin"), ServeConfig(port=0, width=32)).start()
    try:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        cards = {m.id: m.model_dump() for m in c.models.list()}
        assert cards["ifprune"]["quant"] == "int8" and cards["ifprune-dense"]["quant"] is None
        out = c.chat.completions.create(model="ifprune", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert out.model_extra["ifprune"]["ffn_width"] == 32 and out.usage.completion_tokens >= 1
        engine_models = [m for models in srv.engine._free.values() for m in models]
        assert engine_models and all(m.quant == "int8" for m in engine_models)
    finally:
        srv.close()


def test_the_scorer_runs_dense_and_pruned_rows_at_int8_and_records_it():
    from ifprune.eval.scorer import Scorer
    from ifprune.selection.selectors import make_selector

    lm = _lm("llama")
    prompt, answer = [5, 6, 7, 8, 9], [10, 11, 12, 13]
    fp32 = Scorer(lm, make_selector("dense"), lm.d_ffn)
    want = fp32.loglikelihoods(None, [(prompt, answer)])[0][0]
    lm.set_quant("int8")
    for width in (lm.d_ffn, 32):
        sc = Scorer(lm, make_selector("griffin"), width)
        assert sc.config()["quant"] == "int8" and sc.described()["quant"] == "int8"
        model = sc.model_for(sc.plan_for("hello"))
        assert type(model.get_output_embeddings()).__name__ == "Int8Linear"
    got = Scorer(lm, make_selector("dense"), lm.d_ffn).loglikelihoods(None, [(prompt, answer)])[0][0]
    assert got != want and abs(got - want) < 0.1 * abs(want)  # the int8 full-width model, near float32's


def test_eval_and_bench_measure_the_loaded_weights_unless_told():
    import argparse

    from ifprune.commands import bench, eval as eval_cmd, serve
    from ifprune.commands.common import torch_quant

    for module, want in ((eval_cmd, None), (bench, None), (serve, "int8")):
        sub = argparse.ArgumentParser().add_subparsers()
        module.register(sub)
        name = next(iter(sub.choices))
        args = sub.choices[name].parse_args(["nll"] if name == "eval" else [])
        assert torch_quant(args) == want, name


@pytest.mark.parametrize("arch", FAMILIES)
def test_every_channel_at_int8_reads_the_quantized_copy_in_place(arch):
    """The full-width int8 model (dense at int8, and what the selectors' passes read) is every linear quantized
    once, bit for bit, and holds no copy of the FFN weights: its modules are the store's tensors."""
    import copy

    from ifprune.core.quantized import is_linear

    lm = _lm(arch)
    want = copy.deepcopy(lm.model)
    for name, mod in list(want.named_modules()):
        if is_linear(mod):
            owner, _, attr = name.rpartition(".")
            setattr(want.get_submodule(owner) if owner else want, attr, Int8Linear.of(mod))
    lm.set_quant("int8")
    model, layout = lm.reader()
    store = lm.quantized_weights()
    assert layout.layers[0].down.qweight is store.ffn[0]["down"][0]
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, want(IDS).logits)


def test_the_selectors_passes_run_at_the_decodes_weight_type():
    """At int8, GRIFFIN's scores come from the int8 model's FFN activations (what a dense prefill at int8 reads),
    and plans made at one type are never served at the other."""
    from ifprune.core.hooks import record_intermediates
    from ifprune.core.prompt_pass import decoder_body
    from ifprune.selection.selectors import GriffinSelector, griffin_columns, make_selector

    lm = _lm("llama")
    fp32 = GriffinSelector.scores_from_ids(lm, IDS)
    lm.set_quant("int8")
    got = GriffinSelector.scores_from_ids(lm, IDS)
    model, layout = lm.reader()
    want = torch.zeros_like(got)

    def acc(i, x):
        want[i] = griffin_columns(x, None)[0]

    with torch.no_grad(), record_intermediates(layout, acc):
        decoder_body(model)(input_ids=IDS, use_cache=False)
    assert torch.equal(got, want) and not torch.equal(got, fp32)
    torch.testing.assert_close(got, fp32, atol=0.05, rtol=0.05)
    sel = make_selector("griffin")
    at_int8 = sel.select(lm, "count to ten", 32)
    lm.set_quant(None)
    at_fp32 = sel.select(lm, "count to ten", 32)
    assert len(sel._plans) == 2 and at_int8 is not at_fp32
