"""GGUF export: transformers' own GGUF loader (what ifprune itself uses for the default model) reads the
file back, with `feed_forward_length = k`, and gives the compact model's logits."""

from __future__ import annotations

import json
import subprocess
import sys

import gguf
import pytest
import torch

from ifprune.core.errors import IfpruneError
from ifprune.core.tiny import tiny_lm
from ifprune.export.gguf import export_gguf, rotary_permute
from ifprune.selection.selectors import make_selector

IDS = torch.tensor([[5, 17, 42, 99, 7, 250, 3, 64, 128, 12]])


def pre_tokenizer(scheme):
    """Hugging Face's spelling of the byte-level pre-tokenizers llama.cpp knows by name."""
    from tokenizers import Regex, pre_tokenizers as pt

    from ifprune.export.gguf import SPLIT_PRE

    if scheme == "gpt-2":
        return pt.ByteLevel(add_prefix_space=False)
    if scheme == "smollm":
        return pt.Sequence([pt.Digits(individual_digits=True), pt.ByteLevel(add_prefix_space=False)])
    regex = next(r for r, name in SPLIT_PRE.items() if name == scheme and r.startswith("(?i:"))
    return pt.Sequence([pt.Split(Regex(regex), behavior="isolated"), pt.ByteLevel(add_prefix_space=False, use_regex=False)])


def tiny_name(tokenizer: str, arch: str) -> str:
    """The source name a tiny test model exports under (GGUF general.name). Not the architecture's own name:
    llama.cpp treats a model named "phi3" as Phi-3 and looks up special tokens these vocabularies lack."""
    return f"tiny-{tokenizer}-{arch.replace('phi3', 'p3')}"


def bpe_lm(arch="llama", pre="gpt-2", **kw):
    """A tiny random model with a real byte-level BPE tokenizer (what GGUF vocabularies describe)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    lm = tiny_lm(arch, vocab=320, **kw)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog " * 4, "def f(x):\n    return x + 1\n",
                             "I'll pay 12345 dollars, it's 2024.\n\n"] * 8, trainer)
    # a pad token, as real tokenizers have (transformers' phi3 GGUF reader otherwise keeps Phi-3's pad id 32000)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", bos_token="<|im_start|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = lm.tokenizer.chat_template
    lm.tokenizer = fast
    lm.source = tiny_name("bpe", arch)
    return lm


BPE_TEXT = "I'll pay 12345 dollars, OK?\n\nThe  cat's   toys;\tdone. caf\u00e9 42 1000000\n    return x"


@pytest.mark.parametrize("scheme", ["gpt-2", "smollm", "llama-bpe", "qwen2"])
def test_gguf_export_names_the_byte_level_pre_tokenizer(tmp_path, scheme):
    """tokenizer.ggml.pre tells llama.cpp how to split text before merging; with the right name it
    gives the same tokens as the model's own tokenizer (checked where the llamacpp extra is installed)."""
    lm = bpe_lm(pre=scheme, hidden=64, d_ffn=96)
    export_gguf(lm, make_selector("random").select(lm, None, 64), tmp_path / "m.gguf", qtype="f32")
    assert gguf.GGUFReader(tmp_path / "m.gguf").fields["tokenizer.ggml.pre"].contents() == scheme
    try:
        import llama_cpp
    except ImportError:
        return
    llm = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), n_ctx=64, n_threads=1, verbose=False, vocab_only=True)
    assert llm.tokenize(BPE_TEXT.encode(), add_bos=False, special=False) == lm.tokenizer(BPE_TEXT, add_special_tokens=False).input_ids


def test_gguf_export_refuses_a_pre_tokenizer_llama_cpp_cannot_name(tmp_path):
    from tokenizers import Regex, pre_tokenizers as pt

    lm = bpe_lm(hidden=64, d_ffn=96)
    lm.tokenizer.backend_tokenizer.pre_tokenizer = pt.Sequence([pt.Split(Regex(r"\w+|\s+"), behavior="isolated"),
                                                               pt.ByteLevel(add_prefix_space=False, use_regex=False)])
    with pytest.raises(IfpruneError, match="no name for this tokenizer's pre-tokenizer"):
        export_gguf(lm, make_selector("random").select(lm, None, 64), tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()


def sentencepiece_lm(arch="llama", prefix=True, **kw):
    """A tiny random model with a SentencePiece-style BPE tokenizer.json (byte fallback, spaces as "▁"):
    Llama 2 / Mistral / Phi-3 put "▁" before the text (prefix), Gemma does not."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    lm = tiny_lm(arch, vocab=400, **kw)
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    steps = [normalizers.Prepend("\u2581")] if prefix else []
    tok.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     *([decoders.Strip(" ", 1, 0)] if prefix else [])])
    specials = ["<unk>", "<s>", "</s>"]
    trainer = trainers.BpeTrainer(vocab_size=380, special_tokens=specials + [f"<0x{i:02X}>" for i in range(256)],
                                  show_progress=False)
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog " * 4, "def f(x):\n    return x + 1\n"] * 8,
                            trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<unk>")
    fast.chat_template = lm.tokenizer.chat_template
    lm.tokenizer = fast
    lm.source = tiny_name("sp", arch)
    return lm


SP_TEXTS = ["the quick brown fox", "two  spaces, then caf\u00e9 \u2603 and the dog", "def f(x):\n    return x"]


@pytest.mark.parametrize("arch,prefix", [("llama", True), ("gemma2", False)])
def test_gguf_export_writes_sentencepiece_style_tokenizers(tmp_path, arch, prefix):
    """Byte-fallback BPE (Llama 2, Mistral, Phi-3, Gemma) goes out as llama.cpp's "llama" tokenizer:
    transformers reads the export's tokenizer back and splits text as the original does, and
    llama.cpp (where the llamacpp extra is installed) does too; the logits are the compact model's."""
    lm = sentencepiece_lm(arch, prefix, hidden=64, d_ffn=96, **ARCH_KW[arch])
    plan = make_selector("random").select(lm, None, 64)
    info = export_gguf(lm, plan, tmp_path / "m.gguf", qtype="f32")
    assert info.gguf["tokenizer"] == "built from tokenizer.json (SentencePiece-style BPE)"
    r = gguf.GGUFReader(tmp_path / "m.gguf")
    assert r.fields["tokenizer.ggml.model"].contents() == "llama"
    assert bool(r.fields["tokenizer.ggml.add_space_prefix"].contents()) is prefix
    assert len(r.fields["tokenizer.ggml.tokens"].contents()) == 400
    from transformers import AutoTokenizer

    back = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="m.gguf")
    for text in SP_TEXTS:
        want = lm.tokenizer(text, add_special_tokens=False).input_ids
        assert back(text, add_special_tokens=False).input_ids == want, text
    with torch.no_grad():
        got = read_back(tmp_path / "m.gguf")(IDS).logits
    torch.testing.assert_close(got, compact_logits(lm, plan), atol=1e-5 * max(1.0, float(got.abs().max())), rtol=0)
    try:
        import llama_cpp
    except ImportError:
        return
    llm = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), n_ctx=64, n_threads=1, verbose=False, vocab_only=True)
    # leading spaces too (transformers' GGUF tokenizer reader drops one of two leading "▁"; llama.cpp does not)
    for text in [*SP_TEXTS, "  two leading spaces"]:
        assert llm.tokenize(text.encode(), add_bos=False) == lm.tokenizer(text, add_special_tokens=False).input_ids, text


def read_back(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


def compact_logits(lm, plan):
    compact = lm.compact(plan.width)
    compact.load(plan)
    with torch.no_grad():
        return compact.model(IDS).logits


# transformers' GGUF loader takes qwen3's head_dim and gemma's query_pre_attn_scalar from their config
# defaults (128; 256), not from the file: the tiny models use those values so the read-back can check them
ARCH_KW = {"llama": {}, "mistral": {}, "qwen2": {}, "qwen3": {"head_dim": 128}, "gemma2": {"head_dim": 256},
           "gemma3": {"head_dim": 256}, "phi3": {}}
GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2",
             "gemma3": "gemma3", "phi3": "phi3"}


@pytest.mark.parametrize("arch,qtype,atol", [("llama", "f32", 1e-5), ("llama", "f16", 5e-3), ("mistral", "f32", 1e-5),
                                             ("qwen2", "f32", 1e-5), ("qwen2", "f16", 5e-3), ("qwen3", "f32", 1e-5),
                                             ("gemma2", "f32", 1e-5), ("gemma3", "f32", 1e-5), ("phi3", "f32", 1e-5),
                                             ("phi3", "f16", 5e-3)])
def test_gguf_export_reads_back_with_the_compact_models_logits(tmp_path, arch, qtype, atol):
    lm = bpe_lm(arch, hidden=64, d_ffn=96, **ARCH_KW[arch])
    plan = make_selector("random").select(lm, None, 40)
    info = export_gguf(lm, plan, tmp_path / "m.gguf", qtype=qtype, task="demo")
    assert info.gguf["gguf_type"] == qtype and info.width == 40 and info.gguf["architecture"] == GGUF_ARCH[arch]
    r = gguf.GGUFReader(tmp_path / "m.gguf")
    assert r.fields[f"{GGUF_ARCH[arch]}.feed_forward_length"].contents() == 40
    assert r.fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert r.fields["general.name"].contents().endswith("ifprune FFN 40/96")  # (not the file's name)
    down = next(t for t in r.tensors if t.name == "blk.0.ffn_down.weight")
    assert list(down.shape) == [40, 64]  # GGUF lists dims innermost first: k input channels, hidden outputs
    if arch == "phi3":  # llama.cpp's fused gate/up: both halves in ffn_up, no ffn_gate
        up = next(t for t in r.tensors if t.name == "blk.0.ffn_up.weight")
        assert list(up.shape) == [64, 80] and not any(t.name.endswith("ffn_gate.weight") for t in r.tensors)
    model = read_back(tmp_path / "m.gguf")
    assert model.config.intermediate_size == 40
    with torch.no_grad():
        got = model(IDS).logits
    want = compact_logits(lm, plan)
    torch.testing.assert_close(got, want, atol=atol * max(1.0, float(want.abs().max())), rtol=0)


def test_gguf_q8_0_quantises_what_fits_and_keeps_odd_widths_f16(tmp_path, caplog):
    lm = bpe_lm(hidden=64, d_ffn=96)
    info = export_gguf(lm, make_selector("random").select(lm, None, 64), tmp_path / "a.gguf", qtype="q8_0")
    assert info.gguf["tensors_kept_f16"] == []
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "a.gguf").tensors}
    assert types["blk.0.ffn_down.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
    # width 40 is not a multiple of Q8_0's 32-value blocks: the down projection stays F16, with a warning
    info = export_gguf(lm, make_selector("random").select(lm, None, 40), tmp_path / "b.gguf", qtype="q8_0")
    assert "blk.0.ffn_down.weight" in info.gguf["tensors_kept_f16"]
    assert "multiple of 32" in caplog.text
    model = read_back(tmp_path / "a.gguf")  # Q8_0 dequantises on load; close to the float logits
    with torch.no_grad():
        got = model(IDS).logits
    want = compact_logits(lm, make_selector("random").select(lm, None, 64))
    assert float((got - want).abs().max()) < 0.05 * float(want.abs().max())


def test_rotary_permute_is_what_transformers_undoes():
    w = torch.arange(8 * 6 * 3, dtype=torch.float32).reshape(8 * 6, 3)
    p = rotary_permute(w, 6)
    # undo: llama.cpp pairs (2i, 2i+1) per head back to HF's halves
    back = p.reshape(6, w.shape[0] // 6 // 2, 2, 3).swapaxes(1, 2).reshape(w.shape)
    assert torch.equal(back, w) and not torch.equal(p, w)


def test_gguf_export_refuses_what_it_cannot_write(tmp_path):
    lm = bpe_lm()
    plan = make_selector("random").select(lm, None, 16)
    with pytest.raises(IfpruneError, match="must be a .gguf file"):
        export_gguf(lm, plan, tmp_path / "m.bin")
    with pytest.raises(IfpruneError, match="unknown --gguf-type"):
        export_gguf(lm, plan, tmp_path / "m.gguf", qtype="q3")
    (tmp_path / "m.gguf").write_text("x")
    with pytest.raises(IfpruneError, match="already exists"):
        export_gguf(lm, plan, tmp_path / "m.gguf")
    assert (tmp_path / "m.gguf").read_text() == "x"
    bloom_like = tiny_lm("gpt_neox")  # every tiny family is exportable now: rename one to a class the table lacks
    bloom_like.model.__class__ = type("BloomForCausalLM", (type(bloom_like.model),), {})
    with pytest.raises(IfpruneError, match="GGUF export supports"):
        export_gguf(bloom_like, make_selector("random").select(bloom_like, None, 16), tmp_path / "g.gguf")
    char = tiny_lm("llama")  # a character-level WordLevel tokenizer: no BPE vocabulary to write
    with pytest.raises(IfpruneError, match="tokenizer is neither"):
        export_gguf(char, make_selector("random").select(char, None, 16), tmp_path / "c.gguf")
    assert not (tmp_path / "c.gguf").exists() and not list(tmp_path.glob(".c.gguf*"))


@pytest.mark.integration
@pytest.mark.slow
def test_cli_gguf_export_of_the_default_model(tmp_path):
    """The packaged default: tokenizer copied from its GGUF, read back by transformers (model and
    tokenizer) with the compact model's logits."""
    from transformers import AutoTokenizer

    from ifprune.core.loading import load_model

    out = tmp_path / "m.gguf"
    r = subprocess.run([sys.executable, "-m", "ifprune.cli", "export", "--task", "Answer geography questions.",
                        "--selector", "griffin", "--keep", "0.5", "--compensate", "none", "--format", "gguf",
                        "--gguf-type", "f32", "--out", str(out), "--threads", "2"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads(r.stdout)
    assert info["gguf"]["tokenizer"].startswith("copied from") and info["width"] == 768
    tok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=out.name)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    model = read_back(out)
    lm = load_model()
    plan = make_selector("griffin").select(lm, "Answer geography questions.", 768)
    compact = lm.compact(768)
    compact.load(plan)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, compact.model(ids).logits, atol=1e-3, rtol=0)


def test_gguf_export_of_gpt2_writes_its_plain_mlp(tmp_path):
    """GPT-2: Conv1D weights transposed to GGUF's [out, in], learned positions, LayerNorm biases, and
    feed_forward_length = k (transformers' GGUF reader ignores that key for gpt2, so llama.cpp checks
    the logits: test_llama_cpp_runs_the_export)."""
    lm = bpe_lm("gpt2", hidden=64, d_ffn=96)
    export_gguf(lm, make_selector("random").select(lm, None, 40), tmp_path / "m.gguf", qtype="f32")
    r = gguf.GGUFReader(tmp_path / "m.gguf")
    assert r.fields["gpt2.feed_forward_length"].contents() == 40
    shapes = {t.name: list(t.shape) for t in r.tensors}
    assert shapes["blk.0.ffn_up.weight"] == [64, 40] and shapes["blk.0.ffn_down.weight"] == [40, 64]
    assert shapes["blk.0.attn_qkv.weight"] == [64, 192] and shapes["blk.0.ffn_up.bias"] == [40]
    assert "position_embd.weight" in shapes and "output.weight" not in shapes  # tied: llama.cpp reuses token_embd


@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi3", "gpt2", "gemma", "gpt_neox"])
def test_llama_cpp_runs_the_export(tmp_path, arch):
    """llama.cpp itself (llama-cpp-python, the `llamacpp` extra: a source build) loads the export and
    gives the compact model's next-token logits. Skipped where the extra is not installed."""
    llama_cpp = pytest.importorskip("llama_cpp")
    lm = bpe_lm(arch, hidden=64, d_ffn=96)
    plan = make_selector("random").select(lm, None, 64)
    export_gguf(lm, plan, tmp_path / "m.gguf", qtype="f32")
    llm = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), n_ctx=64, n_threads=1, logits_all=True, verbose=False,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)  # an F32 KV cache (default F16)
    llm.eval(IDS[0].tolist())
    got = torch.tensor(llm.scores[: IDS.shape[1]])
    want = compact_logits(lm, plan)[0]
    torch.testing.assert_close(got, want, atol=1e-3 * max(1.0, float(want.abs().max())), rtol=0)


def test_llama_cpp_reads_the_mean_compensation_bias(tmp_path, monkeypatch):
    """Mode "mean" gives Llama's down projection a bias (ffn_down.bias, which llama.cpp loads when present)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from ifprune.compensation.calibration import CompensationConfig, compensate

    monkeypatch.setenv("IFPRUNE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "calib.txt").write_text(BPE_TEXT * 40)
    lm = bpe_lm("llama", hidden=64, d_ffn=96)
    compensate(lm, CompensationConfig(mode="mean", calibration=str(tmp_path / "calib.txt"), max_tokens=512,
                                      seq_len=64), progress=False)
    plan = make_selector("random").select(lm, None, 64)
    info = export_gguf(lm, plan, tmp_path / "m.gguf", qtype="f32")
    assert info.compensation["mode"] == "mean"
    names = {t.name for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    assert "blk.0.ffn_down.bias" in names and "blk.0.ffn_up.bias" not in names
    llm = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), n_ctx=64, n_threads=1, logits_all=True, verbose=False,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    llm.eval(IDS[0].tolist())
    got = torch.tensor(llm.scores[: IDS.shape[1]])
    want = compact_logits(lm, plan)[0]
    torch.testing.assert_close(got, want, atol=1e-3 * max(1.0, float(want.abs().max())), rtol=0)
    compensate(lm, "none")
    assert (compact_logits(lm, plan)[0] - want).abs().max() > 1e-4  # the bias is in the file


def test_gguf_export_that_consumes_the_model_writes_the_same_tensors(tmp_path):
    """The CLI's path (`consume`: the full model shrunk in place, tensors spooled to disk as they are encoded)
    writes the tensors the compact model beside the full one gives."""
    plan = make_selector("random").select(bpe_lm(hidden=64, d_ffn=96), None, 64)
    export_gguf(bpe_lm(hidden=64, d_ffn=96), plan, tmp_path / "kept.gguf", qtype="q8_0")
    export_gguf(bpe_lm(hidden=64, d_ffn=96), plan, tmp_path / "spent.gguf", qtype="q8_0", consume=True)
    a, b = (gguf.GGUFReader(tmp_path / f"{n}.gguf") for n in ("kept", "spent"))
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    assert all(bytes(x.data) == bytes(y.data) for x, y in zip(a.tensors, b.tensors))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.gguf", "spent.gguf"]  # no temporary file left


def test_an_export_record_has_only_its_own_format_field(tmp_path):
    lm = bpe_lm("llama", hidden=64, d_ffn=96)
    plan = make_selector("random").select(lm, None, 64)
    info = export_gguf(lm, plan, tmp_path / "m.gguf", qtype="f16").to_dict()
    assert "dtype" not in info and info["gguf"]["gguf_type"] == "f16"  # (was "dtype": null)
