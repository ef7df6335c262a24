"""Latency benchmark and the static-cache decoder, on tiny in-process models."""

from __future__ import annotations

import json

import pytest
import torch

from ifprune.bench import BenchConfig, run_bench, to_markdown
from ifprune.cli import main
from ifprune.errors import IfpruneError
from ifprune.fastdecode import StaticDecoder
from ifprune.selectors import make_selector
from ifprune.tiny import tiny_config, tiny_lm


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


def test_bench_times_an_untrained_predictor_head_and_its_early_exit():
    lm = tiny_lm("llama", layers=4, d_ffn=48)
    cfg = BenchConfig(prompt_tokens=16, new_tokens=3, samples=1, selector="predictor", backbone_layers=2)
    res = run_bench(lm, cfg)
    assert res["width"] == 12 and "timing stand-in" in res["selection"] and "backbone 2 of 4" in res["selection"]
    c = res["summary"]["compact"]
    assert c["selection_s"] > 0 and c["loading_share_of_generation"] == pytest.approx(
        c["loading_s"] / c["generation_s"])
    assert "per-task plan" in to_markdown(res)
    with pytest.raises(IfpruneError, match=r"backbone_layers must be in 1\.\.4"):
        run_bench(lm, BenchConfig(prompt_tokens=16, new_tokens=2, selector="predictor", backbone_layers=9))
    with pytest.raises(IfpruneError, match="go with --selector predictor"):
        run_bench(lm, BenchConfig(prompt_tokens=16, new_tokens=2, selector="griffin", backbone_layers=2))
