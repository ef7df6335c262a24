"""Turn a user prompt into model input ids, the same way for selection and for generation."""

from __future__ import annotations

import torch

from .errors import IfpruneError


def encode_prompt(tokenizer, prompt: str, *, chat: bool = True, system: str | None = None) -> torch.Tensor:
    """[1, T] input ids; the chat template is applied when the tokenizer has one and `chat` is set."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise IfpruneError("the prompt is empty: give some text to respond to")
    if chat and getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        ids = torch.tensor([chat_ids(tokenizer, messages)], dtype=torch.long)
    else:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    if ids.shape[1] == 0:
        raise IfpruneError("the prompt encodes to zero tokens")
    return ids


_MARK = "\ue000{}\ue001"  # private-use characters: where a message's content goes in the rendered template


def chat_ids(tokenizer, messages: list[dict], *, add_generation_prompt: bool = True) -> list[int]:
    """Token ids of a chat rendered by the tokenizer's template, where the template's own role markers are control
    tokens and every special-token string inside a message's content stays text: a user who writes
    "<|im_start|>system" gets those characters read, not a forged system turn. Content without such strings
    tokenizes exactly as the whole rendered text always did."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
    plain = [tokenizer(m["content"], add_special_tokens=False)["input_ids"] for m in messages]
    split = [tokenizer(m["content"], add_special_tokens=False, split_special_tokens=True)["input_ids"] for m in messages]
    if plain == split:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    marks = [_MARK.format(i) for i in range(len(messages))]
    rest = tokenizer.apply_chat_template([{**m, "content": mk} for m, mk in zip(messages, marks)],
                                         add_generation_prompt=add_generation_prompt, tokenize=False)
    ids: list[int] = []
    for mk, content in zip(marks, split):
        before, found, rest = rest.partition(mk)
        if not found:
            raise IfpruneError("this chat template changes message contents, so a content holding control-token text "
                               "cannot be kept as text: remove the special-token strings from the message")
        ids += tokenizer(before, add_special_tokens=False)["input_ids"] + content
    return ids + tokenizer(rest, add_special_tokens=False)["input_ids"]


def response_ids(tokenizer, prompt: str, response: str, *, chat: bool = True) -> torch.Tensor:
    """[T] ids of `response` as it follows `prompt` in a chat (closed by the template's end-of-turn)."""
    if chat and getattr(tokenizer, "chat_template", None):
        msgs = [{"role": "user", "content": prompt}]
        head = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(msgs + [{"role": "assistant", "content": response}], tokenize=False)
        tail = full[len(head):] if full.startswith(head) else response
    else:
        tail = " " + response + (tokenizer.eos_token or "")
    return tokenizer(tail, add_special_tokens=False, return_tensors="pt")["input_ids"][0]


def encode_pair(tokenizer, prompt: str, response: str, *, chat: bool = True) -> torch.Tensor:
    """[T] ids of a prompt and its response as the model sees them (prompt as `encode_prompt`)."""
    return torch.cat([encode_prompt(tokenizer, prompt, chat=chat)[0], response_ids(tokenizer, prompt, response, chat=chat)])


def eos_ids(lm) -> list[int]:
    """Token ids that end an answer: the generation config's, then the tokenizer's (first = the main one)."""
    eos = lm.model.generation_config.eos_token_id
    out = [eos] if isinstance(eos, int) else list(eos or [])
    if lm.tokenizer.eos_token_id is not None:
        out.append(lm.tokenizer.eos_token_id)
    return list(dict.fromkeys(out))


def check_length(n_prompt: int, max_new_tokens: int, context: int | None) -> None:
    if context is not None and n_prompt + max_new_tokens > context:
        raise IfpruneError(
            f"prompt of {n_prompt} tokens plus {max_new_tokens} new tokens exceeds the model's context of "
            f"{context} tokens: shorten the prompt or lower --max-new-tokens"
        )


def encode_batch(tokenizer, texts: list[str], *, chat: bool = True, max_tokens: int = 512):
    """Right-padded ids and attention mask of prompts encoded exactly as at inference."""
    rows = [encode_prompt(tokenizer, t, chat=chat)[0][-max_tokens:] for t in texts]
    return pad_rows(rows, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)


def pad_rows(rows: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [N, T] and attention mask of 1-D token rows (positions stay those of each row)."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    att = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        att[i, : len(r)] = 1
    return ids, att


def length_batches(rows: list[torch.Tensor], pad: int, batch_size: int):
    """(row indices, ids, attention mask) batches, rows grouped by length so little is padding."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        yield (idx, *pad_rows([rows[i] for i in idx], pad))
