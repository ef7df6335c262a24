"""Per-task export as one GGUF file, for llama.cpp / Ollama users on CPUs and edge devices.

The compact model is a stock model with `intermediate_size = k`, so its GGUF is the base
architecture's GGUF with `<arch>.feed_forward_length = k`: every runtime that reads the base model
reads the export. Tensor names come from the `gguf` package's own tensor map; the q/k rows are put
back in llama.cpp's rotary order (transformers' GGUF loader undoes exactly that). The tokenizer is
copied from the source GGUF when the model came from one (the packaged default does), otherwise
built from the model's BPE `tokenizer.json` with the `gguf` package's vocab readers.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.errors import IfpruneError
from ..core.memory import require_disk
from ..core.paths import atomic_path
from ..core.plan import Plan
from .ggml_quants import quantize_rows

log = logging.getLogger(__name__)

# HF model class -> GGUF architecture whose tensor layout it shares (llama.cpp's converter does the same),
# and whether q/k rows go to llama.cpp's interleaved rotary order: only for "llama", whose rope is the
# interleaved kind; qwen2/qwen3 use the NeoX rope, which is HF's own order. Each one is tested by
# reading the export back with transformers' GGUF loader (tests/test_export_gguf.py).
ARCHITECTURES = {"LlamaForCausalLM": ("llama", True), "MistralForCausalLM": ("llama", True),
                 "Qwen2ForCausalLM": ("qwen2", False), "Qwen3ForCausalLM": ("qwen3", False),
                 "Gemma2ForCausalLM": ("gemma2", False), "Gemma3ForCausalLM": ("gemma3", False),
                 "GemmaForCausalLM": ("gemma", False), "Phi3ForCausalLM": ("phi3", False),
                 "GPT2LMHeadModel": ("gpt2", False), "GPTNeoXForCausalLM": ("gptneox", False)}
# FFN layouts llama.cpp reads: separate gate/up, Phi-3's fused gate_up (its ffn_up holds both halves,
# gate first, exactly HF's gate_up_proj rows; the compact model keeps that order), plain MLPs (GPT-NeoX;
# GPT-2's Conv1D)
FAMILIES = ("gated", "fused-gated", "plain", "plain-conv1d")
# GPT-2 keeps Conv1D weights as [in, out]; GGUF (like nn.Linear) wants [out, in]
CONV1D = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")
# Gemma's RMSNorm multiplies by (1 + w): llama.cpp's converter stores 1 + w, readers subtract the 1
NORM_PLUS_ONE = {"gemma", "gemma2", "gemma3"}
# --gguf-type -> (tensor type of 2-D weights, file type recorded in general.file_type)
TYPES = {"f32": ("F32", "ALL_F32"), "f16": ("F16", "MOSTLY_F16"), "bf16": ("BF16", "MOSTLY_BF16"),
         "q8_0": ("Q8_0", "MOSTLY_Q8_0"), "q4_0": ("Q4_0", "MOSTLY_Q4_0"), "q4_1": ("Q4_1", "MOSTLY_Q4_1")}
# 4-bit files keep the token embedding (the LM head when tied) and the LM head at Q8_0, as the packaged
# SmolLM2 Q4_1 file does: every answer token's distribution goes through it
FOUR_BIT = ("q4_0", "q4_1")
# K-quants are written by llama.cpp's own quantiser (llama-cpp-python, the `llamacpp` extra) from an F16 file:
# its mixes (which tensors get which type, and the fallback for rows not a multiple of 256) are the ones
# llama.cpp and Ollama users get from `llama-quantize`
K_QUANTS = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M", "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K"}
GGUF_TYPES = (*TYPES, *K_QUANTS)
LM_HEAD_TENSORS = ("token_embd.weight", "output.weight")


@dataclass
class GGUFTensorReport:
    quantized: int  # tensors stored in the requested type
    kept_wider: list[str]  # 2-D tensors whose rows do not fit the type's block size: stored F16


def rotary_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF's q/k row order (two halves per head) -> llama.cpp's (interleaved pairs per head)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def source_gguf(lm) -> Path | None:
    """The GGUF file the model was loaded from, if any (its tokenizer is copied verbatim)."""
    from ..core.loading import DEFAULT_MODEL, default_gguf_path

    if lm.source == DEFAULT_MODEL:
        return default_gguf_path()
    p = Path(lm.source).expanduser()
    return p if p.suffix == ".gguf" and p.is_file() else None


def check_supported(lm, qtype: str) -> str:
    """The GGUF architecture name, or one clear error (before anything is computed)."""
    if qtype not in GGUF_TYPES:
        raise IfpruneError(f"unknown --gguf-type {qtype!r}; choose one of {', '.join(GGUF_TYPES)}")
    if qtype in K_QUANTS:
        try:
            import llama_cpp
        except ImportError:
            raise IfpruneError(f"--gguf-type {qtype} runs llama.cpp's quantiser: pip install 'ifprune[llamacpp]' "
                               "(a source build, a few minutes), or pick q8_0 / q4_1") from None
        if not hasattr(llama_cpp, K_QUANTS[qtype]):
            raise IfpruneError(f"this llama-cpp-python build has no {qtype}; pick one of "
                               f"{', '.join(k for k, v in K_QUANTS.items() if hasattr(llama_cpp, v))} or q8_0")
    cls = type(lm.model).__name__
    if cls not in ARCHITECTURES:
        raise IfpruneError(f"GGUF export supports {', '.join(sorted(ARCHITECTURES))} so far, "
                           f"not {cls}: export a Hugging Face checkpoint (--format hf) and convert it with "
                           "llama.cpp's convert_hf_to_gguf.py")
    if lm.layout.family.name not in FAMILIES:
        raise IfpruneError(f"GGUF export expects a gated MLP, found the {lm.layout.family.name!r} family")
    return ARCHITECTURES[cls][0]


def _tokenizer_fields(writer, lm, src: Path | None, n_vocab: int) -> str:
    """Write the tokenizer; returns where it came from (for the export record)."""
    import gguf

    if src is not None:
        reader = gguf.GGUFReader(src)
        for key, field in reader.fields.items():
            if not key.startswith("tokenizer."):
                continue
            sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, field.contents(), field.types[0], sub_type=sub)
        return f"copied from {src.name}"
    tok = lm.tokenizer
    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        path = Path(d) / "tokenizer.json"
        spec = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if (spec.get("model") or {}).get("type") == "BPE" and spec["model"].get("byte_fallback"):
            tokens, scores, types = _sentencepiece_tokens(spec)
            kind, pre = "llama", "default"
            writer.add_add_space_prefix(_adds_space_prefix(spec))
        else:
            try:
                vocab = gguf.vocab.BpeVocab(Path(d))
            except Exception as e:  # noqa: BLE001 - the reader raises assorted errors on other tokenizers
                raise IfpruneError(f"GGUF export writes byte-level BPE (Llama 3, SmolLM2, Qwen) and SentencePiece-style "
                                   f"BPE with byte fallback (Llama 2, Mistral, Phi-3, Gemma) tokenizer.json "
                                   f"vocabularies; this model's tokenizer is neither ({e})") from None
            tokens, types = [], []
            for text, _score, ttype in vocab.all_tokens():
                tokens.append(text)
                types.append(ttype)
            scores, kind = None, "gpt2"
            pre = byte_level_pre(spec)
        if len(tokens) > n_vocab:
            raise IfpruneError(f"the tokenizer has {len(tokens)} tokens but the model's embedding only {n_vocab} rows")
        # llama.cpp takes the vocabulary size from the token list: pad it to the embedding's rows (Qwen's
        # embeddings are larger than their tokenizers), as its own converter does
        pad = n_vocab - len(tokens)
        tokens += [f"[PAD{i}]" for i in range(len(tokens), n_vocab)]
        types += [gguf.TokenType.UNUSED] * pad
        writer.add_tokenizer_model(kind)
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        if scores is not None:
            writer.add_token_scores(scores + [-1e9] * pad)
        writer.add_token_types(types)
        special = gguf.SpecialVocab(Path(d), load_merges=kind == "gpt2", n_vocab=len(tokens))
        special.add_to_gguf(writer, quiet=True)
    template = getattr(tok, "chat_template", None)
    if special.chat_template is None and isinstance(template, str) and template:
        writer.add_chat_template(template)
    return f"built from tokenizer.json ({'BPE' if kind == 'gpt2' else 'SentencePiece-style BPE'})"


# Byte-level BPE splits text with a regex before merging; llama.cpp knows the common ones by name
# (tokenizer.ggml.pre). Hugging Face spells them in tokenizer.json's pre_tokenizer:
_CONTRACTIONS = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)", "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])")
_REST = r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}%s| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
SPLIT_PRE = {**{c + _REST % "{1,3}": "llama-bpe" for c in _CONTRACTIONS},  # Llama 3, Mistral Tekken: digits by threes
             **{c + _REST % "": "qwen2" for c in _CONTRACTIONS}}  # Qwen 2 / 2.5 / 3: one digit at a time


def byte_level_pre(spec: dict) -> str:
    """llama.cpp's name for the pre-tokenizer of a byte-level BPE tokenizer.json, or a clear refusal:
    a wrong name would make llama.cpp split text differently from the model's own tokenizer."""
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [st.get("type") for st in steps]
    byte_level = steps[-1] if kinds and kinds[-1] == "ByteLevel" else None
    if byte_level is not None and not byte_level.get("add_prefix_space", False):
        regex = byte_level.get("use_regex", True)
        if kinds == ["ByteLevel"] and regex:
            return "gpt-2"  # GPT-2's split, inside ByteLevel
        if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and regex:
            return "smollm"  # SmolLM / SmolLM2: each digit alone, then GPT-2's split
        if kinds == ["Split", "ByteLevel"] and not regex:
            name = SPLIT_PRE.get((steps[0].get("pattern") or {}).get("Regex"))
            if name is not None and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert"):
                return name
    raise IfpruneError(f"GGUF export: llama.cpp has no name for this tokenizer's pre-tokenizer ({' + '.join(map(str, kinds)) or 'none'}"
                       "; known: GPT-2, SmolLM, Llama 3 and Qwen 2 splits), so it would split text differently: "
                       "export --format hf and convert it with llama.cpp's convert_hf_to_gguf.py")


def _sentencepiece_tokens(spec: dict) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types of a SentencePiece-style BPE tokenizer.json (byte fallback, "▁" for
    spaces), as llama.cpp's "llama" tokenizer reads them. Its merge loop joins the adjacent pair whose
    joined token scores highest, so a token's score is minus the rank of the first merge that makes it:
    the same merge order as the BPE merges list."""
    import gguf

    model = spec["model"]
    vocab: dict[str, int] = model.get("vocab") or {}
    merges = model.get("merges") or []
    rank: dict[str, int] = {}
    for i, m in enumerate(merges):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        rank.setdefault(a + b, i)
    added = {t["id"]: t for t in spec.get("added_tokens") or []}
    size = max([*vocab.values(), *added, -1]) + 1
    by_id = {i: t for t, i in vocab.items()}
    unk = model.get("unk_token")
    tokens, scores, types = [], [], []
    for i in range(size):
        if i in added:
            text = added[i]["content"]
            ttype = gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED
            score = 0.0
        elif i in by_id:
            text = by_id[i]
            if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", text):
                ttype = gguf.TokenType.BYTE
            elif text == unk:
                ttype = gguf.TokenType.UNKNOWN
            else:
                ttype = gguf.TokenType.NORMAL
            # single characters are never merged into; tokens no merge makes must never win a merge
            score = -float(rank[text]) if text in rank else (0.0 if len(text) == 1 else -float(len(merges) + 1))
        else:
            text, score, ttype = f"[PAD{i}]", -1e9, gguf.TokenType.UNUSED
        tokens.append(text)
        scores.append(score)
        types.append(ttype)
    return tokens, scores, types


def _adds_space_prefix(spec: dict) -> bool:
    """Whether the tokenizer puts "▁" before the text (Llama 2, Mistral, Phi-3: yes; Gemma: no), which
    llama.cpp reads as tokenizer.ggml.add_space_prefix; refuses a space scheme it cannot express."""
    text = json.dumps([spec.get("normalizer"), spec.get("pre_tokenizer")], ensure_ascii=False)
    if "Prepend" in text:
        return True
    pre = json.dumps(spec.get("pre_tokenizer"))
    if "Metaspace" in pre:
        return '"prepend_scheme": "never"' not in pre and '"add_prefix_space": false' not in pre
    if "\u2581" in text:  # spaces replaced by "▁", nothing prepended (Gemma)
        return False
    raise IfpruneError("GGUF export: this SentencePiece-style tokenizer.json does not turn spaces into '▁' the way "
                       "llama.cpp's tokenizer does: export --format hf and convert it with llama.cpp's converter")


def _tensor(writer, name: str, t: torch.Tensor, qtype: str, report: GGUFTensorReport) -> None:
    import gguf

    a = t.detach().to(torch.float32).cpu().numpy()
    if a.ndim < 2 or qtype == "f32":
        writer.add_tensor(name, a)  # norms (1-D) stay float32, as llama.cpp's converter keeps them
        return
    if qtype == "f16":
        writer.add_tensor(name, a.astype(np.float16))
        report.quantized += 1
        return
    if qtype in FOUR_BIT and name in LM_HEAD_TENSORS:
        qtype = "q8_0"
    kind = getattr(gguf.GGMLQuantizationType, TYPES[qtype][0])
    block = gguf.GGML_QUANT_SIZES[kind][0]
    if a.shape[-1] % block:
        report.kept_wider.append(name)
        writer.add_tensor(name, a.astype(np.float16))
        return
    rows = torch.from_numpy(a.reshape(-1, a.shape[-1]))
    data = quantize_rows(rows, TYPES[qtype][0]).numpy().reshape(*a.shape[:-1], -1)
    writer.add_tensor(name, data, raw_dtype=kind)  # shape from the byte rows
    report.quantized += 1


def _rope_fields(writer, cfg, arch: str, head_dim: int) -> None:
    """Rotary, attention-scale, sliding-window and soft-capping keys, or a clear refusal."""
    import gguf

    rope = getattr(cfg, "rope_parameters", None) or {}
    # some models rotate only part of each head (Phi-4-mini 0.75, GPT-NeoX / Pythia 0.25)
    factor = (rope.get("partial_rotary_factor") if isinstance(rope, dict) else None) or getattr(cfg, "partial_rotary_factor", None)
    writer.add_rope_dimension_count(int(head_dim * float(factor or 1.0)))
    writer.add_key_value(f"{arch}.attention.key_length", head_dim, gguf.GGUFValueType.UINT32)
    writer.add_key_value(f"{arch}.attention.value_length", head_dim, gguf.GGUFValueType.UINT32)
    if isinstance(rope, dict) and "full_attention" in rope:  # per layer type (Gemma 3): llama.cpp's local base is 10000
        local = (rope.get("sliding_attention") or {}).get("rope_theta", 10000.0)
        if float(local) != 10000.0:
            raise IfpruneError(f"GGUF export: sliding-window layers use rope base {local}; llama.cpp assumes 10000 for "
                               f"{arch}: export --format hf instead")
        rope = rope["full_attention"]
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", None)) if isinstance(rope, dict) else None
    if theta is None:
        theta = getattr(cfg, "rope_theta", 10000.0)
    scalar = getattr(cfg, "query_pre_attn_scalar", None)
    if arch in NORM_PLUS_ONE and scalar is not None and scalar != head_dim:
        raise IfpruneError(f"GGUF export: this {arch} model scales attention by query_pre_attn_scalar={scalar}, not its "
                           f"head_dim {head_dim}, which llama.cpp cannot express: export --format hf instead")
    if isinstance(rope, dict) and rope.get("rope_type", "default") not in ("default", None):
        raise IfpruneError(f"GGUF export does not write rope scaling {rope.get('rope_type')!r} yet: export a Hugging "
                           "Face checkpoint (--format hf) and convert it with llama.cpp's convert_hf_to_gguf.py")
    writer.add_rope_freq_base(float(theta))
    if getattr(cfg, "sliding_window", None):
        writer.add_sliding_window(int(cfg.sliding_window))
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if getattr(cfg, key, None) is not None:
            writer.add_key_value(f"{arch}.{key}", float(getattr(cfg, key)), gguf.GGUFValueType.FLOAT32)


def write_gguf(model: torch.nn.Module, lm, out: Path, *, qtype: str, name: str) -> dict:
    """The GGUF of `model` (a stock model of a supported family, usually the compact one) at `out`."""
    import gguf

    arch = check_supported(lm, qtype)
    permute_qk = ARCHITECTURES[type(lm.model).__name__][1]
    cfg = model.config.get_text_config()
    n_layers, n_head = cfg.num_hidden_layers, cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_head
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), n_layers)
    writer = gguf.GGUFWriter(out, arch, use_temp_file=True)
    # each tensor goes to disk as it is encoded (a temporary file beside the output: /tmp may be memory), so writing
    # holds one tensor at a time, not the whole encoded model
    writer.temp_file = tempfile.SpooledTemporaryFile(max_size=1 << 28, dir=Path(out).parent)
    writer.add_type("model")
    writer.add_name(name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(int(getattr(cfg, lm.layout.family.width_attr)))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    if arch == "gpt2":  # learned positions, LayerNorm with biases: no rope keys
        writer.add_layer_norm_eps(float(cfg.layer_norm_epsilon))
    else:
        _rope_fields(writer, cfg, arch, head_dim)
        if arch == "gptneox":
            writer.add_layer_norm_eps(float(cfg.layer_norm_eps))
            writer.add_key_value(f"{arch}.use_parallel_residual", bool(cfg.use_parallel_residual), gguf.GGUFValueType.BOOL)
        else:
            writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(int(getattr(gguf.LlamaFileType, TYPES[qtype][1])))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokenizer = _tokenizer_fields(writer, lm, source_gguf(lm), cfg.vocab_size)

    report = GGUFTensorReport(0, [])
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    for hf_name, t in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reads token_embd for the output when output.weight is absent
        if "rotary_emb" in hf_name:
            continue
        gg = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gg is None:
            raise IfpruneError(f"no GGUF name for tensor {hf_name} of {type(model).__name__} in the gguf package's "
                               f"{arch} map: export --format hf and convert it with llama.cpp's convert_hf_to_gguf.py")
        if arch == "gpt2" and hf_name.endswith(CONV1D):
            t = t.t()
        if arch == "gptneox" and ".attention.query_key_value." in hf_name:
            # HF interleaves q, k, v per head; llama.cpp wants all q rows, then k, then v
            t = t.reshape(n_head, 3, head_dim, *t.shape[1:]).transpose(0, 1).reshape(t.shape)
        if permute_qk and hf_name.endswith("q_proj.weight"):
            t = rotary_permute(t, n_head)
        elif permute_qk and hf_name.endswith("k_proj.weight"):
            t = rotary_permute(t, n_kv)
        if arch in NORM_PLUS_ONE and hf_name.endswith("norm.weight"):
            t = t.float() + 1
        _tensor(writer, gg, t, qtype, report)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if report.kept_wider:
        log.warning("%d tensors stored as F16 instead of %s: their row length is not a multiple of the block size "
                    "(FFN width %d; pick --width as a multiple of 32 to quantise every tensor)",
                    len(report.kept_wider), qtype.upper(), cfg.intermediate_size)
    return {"gguf_type": qtype, "architecture": arch, "tokenizer": tokenizer,
            "tensors_quantized": report.quantized, "tensors_kept_f16": report.kept_wider}


def check_gguf_out(out: str | Path, overwrite: bool) -> Path:
    out = Path(out)
    if out.suffix != ".gguf":
        raise IfpruneError(f"--out {out} must be a .gguf file for --format gguf")
    if out.is_dir():
        raise IfpruneError(f"--out {out} is a directory: give a file name ending in .gguf")
    if out.exists() and not overwrite:
        raise IfpruneError(f"{out} already exists: pick another --out or pass --overwrite")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise IfpruneError(f"--out {out}: {parent} is a file, not a folder; pick an --out under a folder")
    if not out.parent.is_dir():
        raise IfpruneError(f"the folder of --out ({out.parent}) does not exist: create it first")
    return out


BYTES_PER_WEIGHT = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32}


def gguf_disk_bytes(params: int, qtype: str) -> int:
    """Disk an export needs at its peak: each tensor spooled beside the output, then the file (twice the file); a
    K-quant writes an F16 file first (its spool and itself), then llama.cpp's output from it (at most Q8_0's size,
    where the widths make it fall back)."""
    if qtype in K_QUANTS:
        return int(params * max(2 * 2.0, 2.0 + 34 / 32) * 1.05)
    return int(params * 2 * BYTES_PER_WEIGHT[qtype] * 1.05)


def export_gguf(lm, plan: Plan, out: str | Path, *, qtype: str = "f16", task: str | None = None,
                overwrite: bool = False, consume: bool = False):
    """Write the compact model of `plan` as one GGUF file (atomically); returns an ExportInfo. `consume`: shrink
    `lm`'s own model into it (checkpoint.plan_model), for a process that exports and ends."""
    from .checkpoint import ExportInfo, describe, plan_model

    out = check_gguf_out(out, overwrite)
    check_supported(lm, qtype)
    plan.check_shape(lm)
    require_disk(gguf_disk_bytes(lm.active_params(plan.width), qtype), out.parent, f"the {qtype} GGUF export",
                 "free space there or write --out to a disk with room")
    info: ExportInfo = describe(lm, plan, out, task)
    model = plan_model(lm, plan, consume)
    name = gguf_name(info)
    with atomic_path(out) as tmp:
        if qtype in K_QUANTS:
            f16 = tmp.with_name(tmp.name + ".f16")
            info.gguf = write_gguf(model, lm, f16, qtype="f16", name=name)
            info.gguf.update(llama_quantize(f16, tmp, qtype))
            f16.unlink()
        else:
            info.gguf = write_gguf(model, lm, tmp, qtype=qtype, name=name)
        info.gguf["file_bytes"] = tmp.stat().st_size
    return info


def gguf_name(info) -> str:
    """general.name, what llama.cpp and Ollama show: the base model and the width it was pruned to (not the file's
    name, which the user picked for themselves)."""
    base = info.hub_id or Path(str(info.base_model)).name
    for suffix in (".gguf", ".GGUF"):
        base = base.removesuffix(suffix)
    return f"{base} ifprune FFN {info.width}/{info.d_ffn}"


def llama_quantize(src: Path, out: Path, qtype: str, threads: int | None = None) -> dict:
    """`src` (F16 GGUF) quantised to `qtype` by llama.cpp; the record of what it wrote (types and counts)."""
    import collections
    import os

    import gguf
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, K_QUANTS[qtype])
    params.nthread = threads or os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), params) != 0:
        raise IfpruneError(f"llama.cpp could not quantise the export to {qtype}")
    types = collections.Counter(t.tensor_type.name for t in gguf.GGUFReader(out).tensors)
    return {"gguf_type": qtype, "quantiser": f"llama.cpp (llama-cpp-python {llama_cpp.__version__})",
            "tensor_types": dict(types)}
