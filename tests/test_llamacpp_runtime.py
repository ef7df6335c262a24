"""The llama.cpp runtime: row quantisers equal the gguf package's, a plan written into the mapped model
equals a fresh export of that plan, the dense prefill's KV cache reaches llama.cpp, and bad input is
refused before anything is built. llama.cpp parts skip where the `llamacpp` extra is not installed."""

from __future__ import annotations

import sys

import gguf
import numpy as np
import pytest
import torch

from ifprune.core.errors import IfpruneError
from ifprune.core.plan import Plan
from ifprune.export.ggml_quants import quantize_rows
from ifprune.export.gguf import export_gguf
from ifprune.selection.selectors import make_selector

from test_export_gguf import IDS, bpe_lm


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1"])
def test_row_quantiser_writes_the_gguf_packages_bytes(qtype):
    torch.manual_seed(0)
    w = torch.randn(40, 96) * 0.05
    w[0, :32] = 0  # an all-zero block: scale 0
    w[1, 32:64] = 0.5  # a flat block
    w[2, :32] = torch.linspace(-1, 1, 32)  # exact halves after scaling
    want = gguf.quants.quantize(w.numpy(), getattr(gguf.GGMLQuantizationType, qtype))
    assert np.array_equal(quantize_rows(w, qtype).numpy(), want)


def test_row_quantiser_refuses_rows_it_cannot_block():
    with pytest.raises(IfpruneError, match="multiple of 32"):
        quantize_rows(torch.zeros(4, 40), "Q8_0")
    with pytest.raises(IfpruneError, match="no row quantiser"):
        quantize_rows(torch.zeros(4, 32), "Q5_K")


def rplan(lm, seed, width):
    g = torch.Generator().manual_seed(seed)
    return Plan.from_scores(torch.rand(lm.num_layers, lm.d_ffn, generator=g), width, {"selector": "random"})


def logits_after(engine, ids):
    engine.truncate(0)
    return engine.feed(ids).copy()


@pytest.mark.parametrize("weights", ["q8_0", "q4_1"])
def test_a_plan_written_in_place_equals_a_fresh_export(tmp_path, weights):
    """Two plans in turn: after each load, the mapped model's logits are the export's of that plan, bit for bit
    (gate/up gathered as bytes, down re-quantised: the same bytes the export writes)."""
    pytest.importorskip("llama_cpp")
    from ifprune.runtime.llamacpp import Engine, LlamaCppCompact

    lm = bpe_lm("llama", hidden=64, d_ffn=128)
    compact = LlamaCppCompact(lm, 64, weights=weights, threads=1, n_ctx=64)
    ids = IDS[0].tolist()
    for seed in (1, 2):
        plan = rplan(lm, seed, 64)
        assert compact.load(plan) > 0 and compact.load(plan) == 0.0  # the second load of the same plan is free
        export_gguf(lm, plan, tmp_path / f"{seed}.gguf", qtype=weights)
        ref = Engine(tmp_path / f"{seed}.gguf", threads=1, n_ctx=64)
        assert np.array_equal(logits_after(compact.engine, ids), logits_after(ref, ids))
        ref.close()


def test_a_written_plan_tracks_the_float_model():
    """Q8_0 logits of the compact model stay near the float compact model's (quantisation error only)."""
    pytest.importorskip("llama_cpp")
    from ifprune.runtime.llamacpp import LlamaCppCompact

    lm = bpe_lm("qwen2", hidden=64, d_ffn=128)
    plan = make_selector("random").select(lm, None, 96)
    compact = LlamaCppCompact(lm, 96, weights="q8_0", threads=1, n_ctx=64)
    compact.load(plan)
    got = torch.from_numpy(logits_after(compact.engine, IDS[0].tolist()))
    ref = lm.compact(96)
    ref.load(plan)
    with torch.no_grad():
        want = ref.model(IDS).logits[0, -1]
    assert float((got - want).abs().max()) < 0.05 * float(want.abs().max())


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_dense_prefill_reaches_llama_cpp(arch):
    """The full model's KV cache of the prompt, set as llama.cpp's state, gives the next-token logits of the
    torch compact model attending to that same cache (llama: keys re-ordered to the interleaved rope)."""
    pytest.importorskip("llama_cpp")
    from ifprune.runtime.llamacpp import LlamaCppCompact, dense_prefix
    from ifprune.selection.prefill import dense_prefix_cache

    lm = bpe_lm(arch, hidden=64, d_ffn=128)
    plan = make_selector("random").select(lm, None, 64)
    cache = dense_prefix_cache(lm, IDS[:, :-1])
    compact = LlamaCppCompact(lm, 64, weights="q8_0", threads=1, n_ctx=64)
    compact.load(plan)
    compact.engine.set_prefix(dense_prefix(lm, cache))
    got = torch.from_numpy(compact.engine.feed(IDS[0, -1:].tolist()).copy())
    ref = lm.compact(64)
    ref.load(plan)
    with torch.no_grad():
        want = ref.model(IDS[:, -1:], past_key_values=cache, use_cache=True).logits[0, -1]
        pruned = ref.model(IDS).logits[0, -1]  # what a pruned prefill would give: further away
    err = float((got - want).abs().max())
    assert err < 0.05 * float(want.abs().max())
    assert err < float((pruned - want).abs().max())


@pytest.mark.parametrize("prefill", ["dense", "dense-answer"])
def test_generate_runs_in_llama_cpp_and_says_so(prefill):
    pytest.importorskip("llama_cpp")
    from ifprune.runtime.generation import RuntimeConfig, SamplingConfig, generate

    lm = bpe_lm("llama", hidden=64, d_ffn=128)
    rt = RuntimeConfig("llamacpp", "q8_0", threads=1, n_ctx=128)
    kw = dict(selector="griffin", width=64, chat=False, refresh=4, refresh_every=True, prefill=prefill,
              sampling=SamplingConfig(max_new_tokens=12, ignore_eos=True))
    out = generate(lm, "the quick brown fox", runtime=rt, **kw)  # (a random model's near-flat logits: Q8_0 picks
    # other tokens than float32 would, so only the run's shape is compared)
    assert out.runtime == {"engine": "llamacpp", "weights": "q8_0"} and "llama.cpp q8_0" in out.summary()
    assert out.new_tokens == 12 and out.refresh["count"] == 2 and out.prefill == prefill
    dense = generate(lm, "the quick brown fox", selector="dense", runtime=rt, chat=False,
                     sampling=SamplingConfig(max_new_tokens=5, ignore_eos=True))
    assert dense.new_tokens == 5 and dense.ffn_width == lm.d_ffn


def test_bad_runtime_input_is_refused_before_building(monkeypatch):
    from ifprune.runtime.generation import RuntimeConfig
    from ifprune.runtime.llamacpp import LlamaCppCompact

    with pytest.raises(IfpruneError, match="--runtime must be one of"):
        RuntimeConfig("onnx")
    with pytest.raises(IfpruneError, match="q8_0, q4_0, q4_1"):
        RuntimeConfig("llamacpp", "q2_k")
    lm = bpe_lm("llama", hidden=64, d_ffn=128)
    with pytest.raises(IfpruneError, match="not a multiple of 32; pick --width 32 or 64"):
        LlamaCppCompact(lm, 40)
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(IfpruneError, match=r"pip install 'ifprune\[llamacpp\]'"):
        LlamaCppCompact(lm, 64)


def test_cli_refuses_quant_without_the_llama_cpp_runtime(capsys):
    from ifprune.cli import main

    assert main(["generate", "hi", "--quant", "q4_0"]) != 0
    assert "--quant q4_0 is a weight type of the llama.cpp runtime" in capsys.readouterr().err
    assert main(["generate", "hi", "--runtime", "llamacpp", "--quant", "int8"]) != 0
    assert "--quant int8 is a weight type of the torch runtime" in capsys.readouterr().err


def test_export_type_choices_are_the_writers():
    from ifprune.commands.export import GGUF_TYPE_NAMES
    from ifprune.export.gguf import GGUF_TYPES

    assert tuple(GGUF_TYPE_NAMES) == tuple(GGUF_TYPES)


@pytest.mark.parametrize("qtype", ["q4_k_m", "q6_k"])
def test_k_quant_export_reads_back_in_llama_cpp_close_to_f16(tmp_path, qtype):
    """llama.cpp's own quantiser writes the K-quant file; llama.cpp reads it and its logits stay near the F16
    export's; the record says the file's size and the tensor types written."""
    pytest.importorskip("llama_cpp")
    from ifprune.runtime.llamacpp import Engine

    lm = bpe_lm("llama", hidden=256, d_ffn=512)
    with torch.no_grad():  # the tiny models' weights (std 0.2) amplify any rounding through the layers: HF's scale
        for p in lm.model.parameters():
            if p.dim() == 2:
                p.mul_(0.1)
    plan = make_selector("random").select(lm, None, 256)
    f16 = export_gguf(lm, plan, tmp_path / "f16.gguf", qtype="f16")
    kq = export_gguf(lm, plan, tmp_path / "k.gguf", qtype=qtype)
    assert kq.gguf["file_bytes"] == (tmp_path / "k.gguf").stat().st_size < f16.gguf["file_bytes"]
    assert kq.gguf["gguf_type"] == qtype and kq.gguf["tensor_types"] and not list(tmp_path.glob("*.f16"))
    export_gguf(lm, make_selector("random", seed=1).select(lm, None, 256), tmp_path / "o.gguf", qtype="f16")
    ids = IDS[0].tolist()
    a, b, c = (Engine(tmp_path / f"{n}.gguf", threads=1, n_ctx=64).feed(ids).copy() for n in ("f16", "k", "o"))
    assert np.corrcoef(a, b)[0, 1] > 0.95 and np.abs(a - b).mean() < 0.5 * np.abs(a - c).mean()


def test_k_quant_export_needs_llama_cpp(monkeypatch):
    from ifprune.export.gguf import check_supported

    lm = bpe_lm("llama", hidden=64, d_ffn=128)
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(IfpruneError, match=r"pip install 'ifprune\[llamacpp\]'"):
        check_supported(lm, "q4_k_m")


def test_an_unknown_kv_state_layout_is_refused_not_guessed():
    from ifprune.runtime.llamacpp import _KVFormat

    with pytest.raises(IfpruneError, match="layout ifprune does not know"):
        _KVFormat.parse(b"\x00" * 64)
    with pytest.raises(IfpruneError, match="use --prefill pruned or --runtime torch"):
        _KVFormat.parse(b"")
