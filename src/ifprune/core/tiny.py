"""Tiny randomly initialised models of every supported family, built in-process (no downloads).

Used by the tests and by anyone who wants to try ifprune on an architecture without weights.
"""

from __future__ import annotations

import torch

TINY_ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "gpt_neox", "gpt2")


def tiny_config(arch: str, *, layers: int = 2, hidden: int = 32, d_ffn: int = 48, vocab: int = 128, head_dim: int = 8):
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
        return tf.Qwen3Config(**common, **heads, head_dim=head_dim)
    if arch == "gemma":
        return tf.GemmaConfig(**common, **heads, head_dim=8)
    if arch == "gemma2":
        return tf.Gemma2Config(**common, **heads, head_dim=head_dim, query_pre_attn_scalar=head_dim)
    if arch == "gemma3":
        return tf.Gemma3TextConfig(**common, **heads, head_dim=head_dim, query_pre_attn_scalar=head_dim)
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


_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer(vocab: int = 128):
    """A character-level fast tokenizer (printable ASCII) with a chat template, built in-process."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    tokens = (specials + chars)[:vocab]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", additional_special_tokens=specials[4:])
    fast.chat_template = _CHAT_TEMPLATE
    return fast


def tiny_lm(arch: str = "llama", *, seed: int = 0, **kw):
    """A LoadedModel (model + tokenizer + layout) around a tiny random model."""
    from .loading import LoadedModel

    return LoadedModel(tiny_model(arch, seed=seed, **kw), tiny_tokenizer(kw.get("vocab", 128)), f"tiny-{arch}")
