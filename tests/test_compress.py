"""Compressed models on disk (compressed-tensors format): ifprune reloads them exactly (plans
included), stock transformers + compressed-tensors loads them without ifprune, every command takes
one as --model, corrupted or mismatched files are refused; the CLI."""

import json

import pytest
import torch

from ifprune.cli import main
from ifprune.compress.pipeline import (
    EXTRA, MANIFEST, CompressConfig, compress, load_compressed, save_compressed,
)
from ifprune.core.errors import IfpruneError
from ifprune.core.plan import Plan
from ifprune.compress.sparsity import is_2_4
from ifprune.core.tiny import tiny_lm
from ifprune.eval.scorer import text_nll

IDS = torch.randint(10, 100, (1, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def calib(data_dir):
    return str(data_dir / "pretrain" / "llamafactory" / "c4_demo.jsonl")


def make(calib, tmp_path, **recipe):
    lm = tiny_lm("llama", hidden=64, d_ffn=64, layers=2)
    comp = compress(lm, CompressConfig(calibration=calib, calib_tokens=512, seq_len=64, group_size=32, **recipe))
    out = tmp_path / "m"
    save_compressed(lm, comp, out)
    return lm, comp, out


@pytest.mark.parametrize("recipe", [dict(), dict(quant="int8"), dict(quant="int4"),
                                    dict(quant="int4", down="reprune"), dict(sparsity=None, quant="int4")])
def test_roundtrip_with_plans(calib, tmp_path, recipe):
    lm, comp, out = make(calib, tmp_path, **recipe)
    lm2, comp2 = load_compressed(out)
    with torch.no_grad():
        torch.testing.assert_close(lm2.model(IDS).logits, lm.model(IDS).logits, rtol=0, atol=1e-6)
        plan = Plan.from_scores(torch.rand(2, 64, generator=torch.Generator().manual_seed(1)), 20)
        a = comp.compact(lm, plan).model(IDS).logits
        c2 = comp2.compact(lm2, plan)
        torch.testing.assert_close(c2.model(IDS).logits, a, rtol=0, atol=1e-6)
    if recipe.get("sparsity", "2:4"):
        assert all(is_2_4(layer.down.weight) for layer in c2.compact_layout.layers)
        assert comp2.pattern(lm2.model)["all_2_4"]


def test_stock_transformers_loads_the_dense_format(calib, tmp_path):
    from transformers import AutoModelForCausalLM

    lm, comp, out = make(calib, tmp_path)
    stock = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        torch.testing.assert_close(stock(IDS).logits, lm.model(IDS).logits, rtol=0, atol=1e-6)
    assert comp.pattern(stock)["all_2_4"]


_STOCK = """
import sys, torch
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
ids = torch.tensor([[{ids}]])
with torch.no_grad():
    torch.save(m(ids).logits, sys.argv[2])
assert not any(k.startswith("ifprune") for k in sys.modules), "ifprune was imported"
"""


@pytest.mark.parametrize("recipe", [dict(sparsity=None, quant="int8"), dict(sparsity=None, quant="int4"),
                                    dict(quant="int4"), dict(quant="int8", down="reprune")])
def test_stock_transformers_with_compressed_tensors_loads_it_without_ifprune(calib, tmp_path, recipe):
    """The format llm-compressor writes: config.json's quantization_config (pack-quantized), packed int
    weights; a fresh interpreter with transformers + compressed-tensors only gives ifprune's logits."""
    import subprocess
    import sys

    lm, comp, out = make(calib, tmp_path, **recipe)
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "compressed-tensors" and cfg["format"] == "pack-quantized"
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    some = next(iter(comp.qweights))
    assert f"{some}.weight_packed" in keys and f"{some}.weight" not in keys  # stored packed, not dense
    script = _STOCK.replace("{ids}", ", ".join(map(str, IDS[0].tolist())))
    r = subprocess.run([sys.executable, "-c", script, str(out), str(tmp_path / "logits.pt")], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with torch.no_grad():
        ref = lm.model(IDS).logits  # ifprune's dequantised reference
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), ref, rtol=0, atol=1e-5)


def test_every_command_takes_a_compressed_directory_as_model(calib, tmp_path, capsys):
    lm, comp, out = make(calib, tmp_path, quant="int4")
    assert main(["generate", "--model", str(out), "--selector", "griffin", "--keep", "0.5", "--max-new-tokens", "4",
                 "--json", "hello there"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] is not None
    from ifprune.core.loading import load_model

    with torch.no_grad():  # what --model DIR runs is the compressed model's weights, not random ones
        torch.testing.assert_close(load_model(str(out)).model(IDS).logits, lm.model(IDS).logits, rtol=0, atol=1e-6)


def test_corrupted_and_mismatched_files_are_refused(calib, tmp_path):
    _, _, out = make(calib, tmp_path, quant="int4")
    extra = out / EXTRA
    data = bytearray(extra.read_bytes())
    data[-5] ^= 0xFF
    extra.write_bytes(bytes(data))
    with pytest.raises(IfpruneError, match="checksum"):
        load_compressed(out)
    _, _, out2 = make(calib, tmp_path / "b", quant="int4")
    mf = json.loads((out2 / MANIFEST).read_text())
    name = next(iter(mf["quantized"]))
    mf["quantized"][name]["shape"] = [999, 64]
    (out2 / MANIFEST).write_text(json.dumps(mf))
    with pytest.raises(IfpruneError, match="does not match its manifest"):
        load_compressed(out2)
    (out2 / MANIFEST).unlink()
    with pytest.raises(IfpruneError, match="not an ifprune compressed model"):
        load_compressed(out2)


def test_text_nll_is_the_models_own_mean_token_nll():
    """Compressed models are scored by eval's scorer (eval.scorer.text_nll): the model's own NLL per token."""
    lm = tiny_lm("llama")
    texts = ["hello world, this is text", "more text here", "x"]
    total = count = 0
    for t in texts[:2]:
        ids = lm.tokenizer(t, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = lm.model(ids).logits[0, :-1].float()
        total += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
        count += ids.shape[1] - 1
    assert text_nll(lm, texts) == pytest.approx(total / count, rel=1e-5)
    with pytest.raises(IfpruneError, match="no text to score"):
        text_nll(lm, ["x"])


def test_cli_compress_and_errors(calib, tmp_path, capsys):
    lm = tiny_lm("llama", hidden=64, d_ffn=64, layers=2)
    src = tmp_path / "src"
    lm.model.save_pretrained(src)
    lm.tokenizer.save_pretrained(src)
    out = tmp_path / "out"
    rc = main(["compress", "--model", str(src), "--method", "wanda", "--quant", "int8", "--calibration", calib,
               "--calib-tokens", "512", "--seq-len", "64", "--out", str(out)])
    assert rc == 0
    info = json.loads(capsys.readouterr().out)
    assert info["all_2_4"] and info["density"] == 0.5 and (out / MANIFEST).is_file()
    assert main(["compress", "--model", str(src), "--calibration", calib, "--out", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["compress", "--model", str(src), "--out", str(tmp_path / "x")]) == 2
    assert "calibration" in capsys.readouterr().err
    assert main(["compress", "--model", str(src), "--sparsity", "none", "--quant", "int4", "--group-size", "48",
                 "--out", str(tmp_path / "y")]) == 2
    assert "group size" in capsys.readouterr().err
    assert main(["compress", "--model", str(src), "--sparsity", "1:8", "--out", str(tmp_path / "z")]) == 2
    assert "unsupported sparsity" in capsys.readouterr().err
    assert main(["compress", "--model", str(src), "--sparsity", "none", "--quant", "int8", "--recover-steps", "3",
                 "--recover-data", calib, "--out", str(tmp_path / "r")]) == 2
    assert "for 2:4-pruned models" in capsys.readouterr().err
    rc = main(["compress", "--model", str(src), "--method", "wanda", "--calibration", calib, "--calib-tokens", "512",
               "--seq-len", "64", "--recover-steps", "2", "--recover-data", calib, "--recover-batch-size", "1",
               "--recover-seq-len", "32", "--out", str(tmp_path / "rec")])
    assert rc == 0
    info = json.loads(capsys.readouterr().out)
    assert info["all_2_4"] and info["density"] == 0.5 and info["recovery"]["steps"] == 2


@pytest.mark.integration
def test_default_model_2_4_int4_keeps_it_usable(default_lm, data_dir, tmp_path):
    """Real model: Wanda 2:4 + int4 on a small calibration slice; pattern everywhere, NLL finite and
    worse than dense but not destroyed (bounded run: 256 calibration tokens, 2 texts)."""
    from ifprune.core.loading import load_model
    from ifprune.eval import make_suite, run_suite
    from ifprune.eval.scorer import Scorer
    from ifprune.selection.selectors import make_selector

    def suite_nll(lm):  # eval's own held-out NLL suite, on 2 examples
        res = run_suite(make_suite("nll", data_dir=data_dir), Scorer(lm, make_selector("dense"), lm.d_ffn), limit=2,
                        progress=False)
        return res.metrics["nll_per_token"]["value"]

    dense = suite_nll(default_lm)
    lm = load_model()
    comp = compress(lm, CompressConfig(method="wanda", quant="int4", group_size=64, calib_tokens=256, seq_len=128,
                                       calibration=str(data_dir / "pretrain" / "llamafactory" / "c4_demo.jsonl")))
    assert comp.pattern(lm.model)["all_2_4"] and len(comp.linears) == 7 * 30
    nll = suite_nll(lm)
    assert dense < nll < dense + 3.0
