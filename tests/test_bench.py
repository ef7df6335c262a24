"""Latency benchmark and the static-cache decoder, on tiny in-process models."""

from __future__ import annotations

import json

import pytest
import torch

from ifprune.bench.latency import BenchConfig, run_bench, to_markdown
from ifprune.cli import main
from ifprune.core.errors import IfpruneError
from ifprune.runtime.fastdecode import StaticDecoder
from ifprune.selection.selectors import make_selector
from ifprune.core.tiny import tiny_config, tiny_lm


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma2"])
def test_static_decoder_matches_hf_greedy(arch):
    lm = tiny_lm(arch)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    ref = lm.model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=None)[:, 6:]
    out, t = StaticDecoder(lm.model, 32).generate(ids, 10)
    assert out.tolist() == ref.tolist()
    assert t.new_tokens == 10 and t.prefill_s > 0 and t.decode_s > 0
    with pytest.raises(IfpruneError, match="static cache"):
        StaticDecoder(lm.model, 12).generate(ids, 10)


def test_compiled_step_does_not_recompile_when_the_plan_changes():
    import torch._dynamo

    lm = tiny_lm("llama")
    compact = lm.compact(24)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    compact.load(make_selector("random", seed=1).select(lm, None, 24))
    dec = StaticDecoder(compact.model, 32, compile=True, backend="eager")
    first, _ = dec.generate(ids, 8)
    torch._dynamo.config.error_on_recompile = True
    try:
        compact.load(make_selector("random", seed=2).select(lm, None, 24))
        second, _ = dec.generate(ids, 8)  # raises if the new weights forced a recompile
    finally:
        torch._dynamo.config.error_on_recompile = False
    eager, _ = StaticDecoder(compact.model, 32).generate(ids, 8)
    assert second.tolist() == eager.tolist() and second.tolist() != first.tolist()


def test_run_bench_reports_breakdown_side_by_side():
    lm = tiny_lm("llama", layers=2, d_ffn=48)
    res = run_bench(lm, BenchConfig(prompt_tokens=24, new_tokens=6, samples=2, keep=0.25))
    assert res["width"] == 12 and res["device"] == "cpu" and res["device_name"]
    s = res["summary"]
    for name in ("dense", "compact"):
        for k in ("selection_s", "loading_s", "prefill_s", "ttft_s", "per_token_s", "query_s"):
            assert s[name][k] >= 0
    assert s["dense"]["selection_s"] == 0 and s["compact"]["selection_s"] > 0 and s["compact"]["loading_s"] > 0
    assert s["compact"]["ttft_s"] >= s["compact"]["selection_s"] + s["compact"]["loading_s"]
    assert len(res["rows"]) == 2 * 2
    md = to_markdown(res, "ifprune bench")
    assert "| dense |" in md and "| compact |" in md and "TTFT" in md
    with pytest.raises(IfpruneError, match="equals the full FFN width"):
        run_bench(lm, BenchConfig(prompt_tokens=8, new_tokens=2, keep=1.0))
    with pytest.raises(IfpruneError, match="exceed the context"):
        run_bench(lm, BenchConfig(prompt_tokens=250, new_tokens=10))


def test_bench_times_refresh_when_asked_and_counts_it_in_each_answer():
    lm = tiny_lm("llama", layers=2, d_ffn=48)
    plain = run_bench(lm, BenchConfig(prompt_tokens=24, new_tokens=6, samples=2, keep=0.25))
    assert plain["reselection"]["mode"] == "off" and plain["summary"]["compact"]["refresh_s"] == 0
    res = run_bench(lm, BenchConfig(prompt_tokens=24, new_tokens=6, samples=2, keep=0.25, refresh=3))
    c = res["summary"]["compact"]
    assert res["reselection"]["tokens"] == 3 and c["refresh_s"] > 0 and c["refresh_prefill_s"] > 0
    assert c["generation_s"] == pytest.approx(c["prefill_s"] + c["decode_s"] + c["refresh_s"] + c["refresh_prefill_s"])
    assert res["summary"]["dense"]["refresh_s"] == 0 and "re-selection after 3 new tokens" in to_markdown(res)
    short = run_bench(lm, BenchConfig(prompt_tokens=24, new_tokens=3, samples=1, keep=0.25, refresh=3))
    assert short["reselection"]["mode"] == "off"
    with pytest.raises(IfpruneError, match="refresh must be a whole number"):
        BenchConfig(refresh=-1).validate()
    with pytest.raises(IfpruneError, match="prefill must be one of"):
        BenchConfig(prefill="half").validate()


def test_bench_times_re_selection_every_r_tokens_with_a_dense_prefill():
    lm = tiny_lm("llama", layers=2, d_ffn=48)
    cfg = dict(prompt_tokens=24, new_tokens=10, samples=2, keep=0.25, refresh=3)
    once = run_bench(lm, BenchConfig(**cfg))
    every = run_bench(lm, BenchConfig(**cfg, refresh_every=True))
    assert once["reselection"] == {"mode": "once", "tokens": 3, "count": 1, "prefill": "pruned"}
    assert every["reselection"] == {"mode": "every", "tokens": 3, "count": 3, "prefill": "dense-answer"}  # 3, 6, 9
    c = every["summary"]["compact"]
    assert c["generation_s"] == pytest.approx(c["prefill_s"] + c["decode_s"] + c["refresh_s"] + c["refresh_prefill_s"])
    md = to_markdown(every)
    assert "re-selection every 3 new tokens (3 per answer" in md and "dense prefill" in md
    carried = run_bench(lm, BenchConfig(**cfg, refresh_every=True, prefill="dense-answer"))
    assert (carried["reselection"]["count"], carried["reselection"]["prefill"]) == (3, "dense-answer")  # each re-selection's cache copied
    with pytest.raises(IfpruneError, match="turn re-selection on"):
        run_bench(lm, BenchConfig(prompt_tokens=24, new_tokens=10, keep=0.25, refresh_every=True))


def test_static_decoder_dense_prefix_and_kept_positions_match_hf_generate():
    """A dense prefill (the full model's cache of the prompt but its last token, from a model or a copied cache)
    and a later prefill that keeps those positions give HF generate's tokens from the same cache."""
    from ifprune.selection.prefill import dense_prefix_cache

    lm = tiny_lm("llama", layers=2, d_ffn=48)
    compact = lm.compact(24)
    compact.load(make_selector("random", seed=1).select(lm, None, 24))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])

    def hf(seq, n):
        out = compact.model.generate(seq, max_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None,
                                     cache=dense_prefix_cache(lm, ids[:, :-1]))
        return out[:, seq.shape[1]:].tolist()

    dec = StaticDecoder(compact.model, 40)
    a, _ = dec.generate(ids, 6, prefix=lm.model)
    b, _ = dec.generate(ids, 6, prefix=dense_prefix_cache(lm, ids))
    assert a.tolist() == b.tolist() == hf(ids, 6)
    seen = torch.cat([ids, a[:, :3]], dim=1)
    c, _ = dec.generate(seen, 3, keep=ids.shape[1] - 1)
    assert c.tolist() == hf(seen, 3) == a[:, 3:].tolist()
    with pytest.raises(IfpruneError, match="keep must be"):
        dec.generate(seen, 3, keep=2, prefix=lm.model)


def test_cli_bench_random_config(tmp_path, capsys):
    cfg = tiny_config("llama")
    cfg.save_pretrained(tmp_path / "cfg")
    code = main(["bench", "--config", str(tmp_path / "cfg"), "--prompt-tokens", "16", "--new-tokens", "4",
                 "--samples", "1", "--selector", "magnitude", "--out", str(tmp_path / "res"), "--name", "t"])
    assert code == 0
    res = json.loads((tmp_path / "res" / "t.json").read_text())
    assert res["model"].startswith("random:") and res["config"]["selector"] == "magnitude"
    assert (tmp_path / "res" / "t.md").read_text().startswith("# Latency")
    capsys.readouterr()
    assert main(["bench", "--config", "no-such-shape"]) == 2
    assert "unknown config" in capsys.readouterr().err
    assert main(["bench", "--config", "llama-0.3b", "--model", "x"]) == 2
    assert "not both" in capsys.readouterr().err
    assert res["compensation"] == {"mode": "none"}  # random weights: nothing to calibrate on
    assert main(["bench", "--config", "llama-0.3b", "--compensate", "calibration"]) == 2
    assert "compensation needs real weights" in capsys.readouterr().err


def test_bench_times_an_untrained_predictor_head_and_its_early_exit():
    lm = tiny_lm("llama", layers=4, d_ffn=48)
    cfg = BenchConfig(prompt_tokens=16, new_tokens=3, samples=1, selector="predictor", backbone_layers=2)
    # the default keep, as every command: 0.5
    res = run_bench(lm, cfg)
    assert res["width"] == 24 and "timing stand-in" in res["selection"] and "backbone 2 of 4" in res["selection"]
    c = res["summary"]["compact"]
    assert c["selection_s"] > 0 and c["loading_share_of_generation"] == pytest.approx(
        c["loading_s"] / c["generation_s"])
    assert "per-task plan" in to_markdown(res)
    with pytest.raises(IfpruneError, match=r"backbone_layers must be in 1\.\.4"):
        run_bench(lm, BenchConfig(prompt_tokens=16, new_tokens=2, selector="predictor", backbone_layers=9))
    with pytest.raises(IfpruneError, match="go with --selector predictor"):
        run_bench(lm, BenchConfig(prompt_tokens=16, new_tokens=2, selector="griffin", backbone_layers=2))


def test_kernel_bench_times_each_format_against_its_reference():
    from ifprune.bench.latency import shape_config
    from ifprune.bench.kernels import KernelBenchConfig, block_shapes, int4_group, run_kernel_bench
    from ifprune.bench.kernels import to_markdown as kernels_md

    config = tiny_config("llama", hidden=64, d_ffn=256)
    shapes, layers, d_ffn = block_shapes(config, 64)
    assert (layers, d_ffn) == (2, 256)
    parts = {s.part for s in shapes}
    assert parts == {"attention", "ffn", "ffn-compact"}
    down = [s for s in shapes if s.part == "ffn-compact" and s.in_features == 64 and s.out_features == 64]
    assert down, "the compact down takes the plan's width as input"
    cfg = KernelBenchConfig(prompt_tokens=4, batches=(1, 2), keep=0.25, budget_s=0.001, min_reps=1)
    res = run_kernel_bench(config, cfg, dtype=torch.float32, source="tiny")
    assert "2:4" in res["unavailable"] and "CUDA" in res["unavailable"]["2:4"]  # never a silent dense run on CPU
    assert not any(r["format"] == "2:4" for r in res["rows"])
    assert {r["format"] for r in res["rows"]} == {"dense", "int8", "int4"}
    assert all(r["ok"] for r in res["rows"]), [r for r in res["rows"] if not r["ok"]]
    assert set(res["summary"]) == {"decode b1", "decode b2", "prefill b1", "prefill b2"}
    assert res["summary"]["decode b1"]["dense"]["speedup"] == pytest.approx(1.0)
    assert res["summary"]["prefill b2"]["int8"]["linears"] == len(shapes)
    md = kernels_md(res)
    assert "| decode b1 | int4 |" in md and "2:4: not measured" in md
    assert int4_group(576, 128) == 64 and int4_group(4096, 128) == 128
    with pytest.raises(IfpruneError, match="no int4 group size"):
        int4_group(100, 128)
    with pytest.raises(IfpruneError, match="unknown format"):
        run_kernel_bench(shape_config("smollm2-135m"), KernelBenchConfig(formats=("fp8",)))


def test_cli_bench_kernels(tmp_path, capsys):
    cfg = tiny_config("llama", hidden=64, d_ffn=128)
    cfg.save_pretrained(tmp_path / "cfg")
    code = main(["bench-kernels", "--config", str(tmp_path / "cfg"), "--dtype", "float32", "--batches", "1",
                 "--prompt-tokens", "2", "--formats", "dense,int8", "--budget", "0.001", "--out",
                 str(tmp_path / "res"), "--name", "k"])
    assert code == 0
    res = json.loads((tmp_path / "res" / "k.json").read_text())
    assert {r["format"] for r in res["rows"]} == {"dense", "int8"} and res["dtype"] == "float32"
    capsys.readouterr()
    assert main(["bench-kernels", "--config", str(tmp_path / "cfg"), "--batches", "1,x"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
    assert main(["bench-kernels", "--config", str(tmp_path / "cfg"), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
