"""Tiny randomly initialised models of every supported family, built in-process (no downloads).

Used by the tests and by anyone who wants to try ifprune on an architecture without weights.
"""

from __future__ import annotations

import torch

TINY_ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "gpt_neox", "gpt2")


def tiny_config(arch: str, *, layers: int = 2, hidden: int = 32, d_ffn: int = 48, vocab: int = 128):
    import transformers as tf

    heads = dict(num_attention_heads=4, num_key_value_heads=2)
    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=d_ffn, num_hidden_layers=layers,
                  max_position_embeddings=256,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "llama":
        return tf.LlamaConfig(**common, **heads)
    if arch == "mistral":
        return tf.MistralConfig(**common, **heads, sliding_window=None)
    if arch == "qwen2":
        return tf.Qwen2Config(**common, **heads)
    if arch == "qwen3":
        return tf.Qwen3Config(**common, **heads, head_dim=8)
    if arch == "gemma":
        return tf.GemmaConfig(**common, **heads, head_dim=8)
    if arch == "gemma2":
        return tf.Gemma2Config(**common, **heads, head_dim=8)
    if arch == "gemma3":
        return tf.Gemma3TextConfig(**common, **heads, head_dim=8)
    if arch == "phi3":
        return tf.Phi3Config(**common, num_attention_heads=4, num_key_value_heads=4)
    if arch == "gpt_neox":
        return tf.GPTNeoXConfig(**common, num_attention_heads=4)
    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=vocab, n_embd=hidden, n_inner=d_ffn, n_layer=layers, n_head=4,
                             n_positions=256, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    raise ValueError(f"unknown tiny arch {arch!r}; choose from {TINY_ARCHS}")


def tiny_model(arch: str = "llama", *, seed: int = 0, **kw):
    """A random model in eval mode. Weights are re-drawn with a larger scale than HF's init so that
    different channel choices change the logits visibly."""
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(arch, **kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.2)
    return model.eval()
