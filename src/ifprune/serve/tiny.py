"""A tiny tokenizer and LoadedModel built in-process, so the server and export can be exercised
end to end (tests, demos) without downloading anything."""

from __future__ import annotations

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_CORPUS = [
    "the quick brown fox jumps over the lazy dog", "translate english to french", "write a python function",
    "solve the math problem step by step", "summarize the following text", "def add(a, b): return a + b",
    "1 + 2 = 3, 12 * 7 = 84", "hello world, how are you today?", "The answer is 42.",
]


def tiny_tokenizer(vocab_size: int = 320):
    """A byte-level BPE tokenizer (any text encodes) with a chat template; pad/bos/eos ids 0/1/2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_lm(arch: str = "llama", *, seed: int = 0, layers: int = 2, d_ffn: int = 48):
    """A LoadedModel of a random tiny model of `arch` with `tiny_tokenizer()`."""
    from ..loading import LoadedModel
    from ..tiny import tiny_model

    tok = tiny_tokenizer()
    model = tiny_model(arch, seed=seed, layers=layers, d_ffn=d_ffn, vocab=len(tok))
    return LoadedModel(model, tok, f"tiny-{arch}")
