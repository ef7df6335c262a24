"""Random-weight checkpoints in the shapes users prune (Llama 3.2 1B / 3B, Llama 3.1 8B), for the scaling
table: bf16 safetensors written one tensor at a time (never a whole model in memory), a config.json of the
real model's shape, and the default model's tokenizer (so the vocabulary is SmolLM2's 49,152 tokens, not
Llama's 128,256: the embedding and LM head are smaller than the real ones; every transformer layer is the
real shape). The weights are N(0, 0.02): what they say is noise, what they cost is real.

    python benchmarks/make_shapes.py --shape llama-3.2-1b --out /tmp/shapes/llama-3.2-1b
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

SHAPES = {  # the published configs' shapes (hidden, layers, heads, kv heads, FFN width, tied embeddings)
    "llama-3.2-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                         intermediate_size=8192, tie_word_embeddings=True),
    "llama-3.2-3b": dict(hidden_size=3072, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
                         intermediate_size=8192, tie_word_embeddings=True),
    "llama-3.1-8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                         intermediate_size=14336, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, tie_word_embeddings=False),  # the tests' own
}
SHARD_BYTES = 2 * 1024**3


def tensors(shape: dict, vocab: int):
    """(name, shape) of every weight, in the order transformers' Llama writes them."""
    h, f = shape["hidden_size"], shape["intermediate_size"]
    hd = h // shape["num_attention_heads"]
    kv = shape["num_key_value_heads"] * hd
    yield "model.embed_tokens.weight", (vocab, h)
    for i in range(shape["num_hidden_layers"]):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (h,)
        yield p + "self_attn.q_proj.weight", (h, h)
        yield p + "self_attn.k_proj.weight", (kv, h)
        yield p + "self_attn.v_proj.weight", (kv, h)
        yield p + "self_attn.o_proj.weight", (h, h)
        yield p + "post_attention_layernorm.weight", (h,)
        yield p + "mlp.gate_proj.weight", (f, h)
        yield p + "mlp.up_proj.weight", (f, h)
        yield p + "mlp.down_proj.weight", (h, f)
    yield "model.norm.weight", (h,)
    if not shape["tie_word_embeddings"]:
        yield "lm_head.weight", (vocab, h)


def write_checkpoint(name: str, out: Path, tokenizer_dir: Path, seed: int = 0) -> dict:
    """Write the checkpoint into `out` (a temporary folder renamed at the end: never half a checkpoint)."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    shape = SHAPES[name]
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    vocab = len(tok)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    shards, current, size, total = [], {}, 0, 0
    for tname, tshape in tensors(shape, vocab):
        t = torch.ones(tshape) if tname.endswith("norm.weight") else torch.randn(tshape, generator=g) * 0.02
        current[tname] = t.to(torch.bfloat16)
        size += current[tname].numel() * 2
        total += current[tname].numel()
        if size >= SHARD_BYTES:
            shards.append(current)
            save_file(current, str(tmp / f"shard-{len(shards)}.safetensors"), metadata={"format": "pt"})
            current, size = {}, 0
            shards[-1] = list(shards[-1])  # names only: the tensors are on disk now
    if current:
        shards.append(current)
        save_file(current, str(tmp / f"shard-{len(shards)}.safetensors"), metadata={"format": "pt"})
        shards[-1] = list(shards[-1])
    n = len(shards)
    weight_map = {}
    for i, names in enumerate(shards, 1):
        final = f"model-{i:05d}-of-{n:05d}.safetensors"
        (tmp / f"shard-{i}.safetensors").rename(tmp / final)
        weight_map.update({k: final for k in names})
    (tmp / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total * 2}, "weight_map": weight_map}, indent=1))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
              "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
              "attention_bias": False, "mlp_bias": False, "vocab_size": vocab, "dtype": "bfloat16",
              "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
              "ifprune_note": f"random N(0, 0.02) weights in the shape of {name}, SmolLM2's tokenizer", **shape}
    (tmp / "config.json").write_text(json.dumps(config, indent=1))
    tok.save_pretrained(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return {"shape": name, "params": total, "bytes": total * 2, "shards": n, "out": str(out)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer", default=None, help="a folder with a tokenizer (default: the default model's)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.tokenizer is None:
        from ifprune.core.loading import load_model

        tok_dir = Path(load_model(None).model.name_or_path)
    else:
        tok_dir = Path(a.tokenizer)
    print(json.dumps(write_checkpoint(a.shape, Path(a.out), tok_dir, a.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
