"""One answer segment on a token-feeding engine: the loop both runtimes' decoders share.

An engine holds its own KV cache and takes tokens: `truncate(n)` keeps the first n positions, `feed(tokens)`
reads tokens after them and returns the last position's logits, `n` is how many positions it holds. llama.cpp's
context (runtime.llamacpp) and the torch decoder (runtime.lean) are both engines, so sampling, end-of-turn and
streaming are written once, here, and answer as `transformers.generate` would.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.errors import IfpruneError


def pick(logits, seq: list[int], sampling) -> int:
    """The next token: argmax when greedy, else the same processors `transformers.generate` applies."""
    if sampling.temperature == 0 and sampling.repetition_penalty == 1.0:
        return int(logits.argmax())
    seen = torch.tensor(seq)  # the tokens so far, which the processors read (built only when they run)
    from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                              TopKLogitsWarper, TopPLogitsWarper)

    procs = LogitsProcessorList()
    if sampling.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
    scores = torch.as_tensor(np.asarray(logits, dtype=np.float32) if isinstance(logits, np.ndarray)
                             else logits.float()).reshape(1, -1)
    scores = procs(seen.view(1, -1), scores)
    if sampling.temperature == 0:
        return int(scores.argmax())
    warp = LogitsProcessorList([TemperatureLogitsWarper(sampling.temperature)])
    if sampling.top_k:
        warp.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1.0:
        warp.append(TopPLogitsWarper(sampling.top_p))
    probs = torch.softmax(warp(seen.view(1, -1), scores), dim=-1)
    return int(torch.multinomial(probs, 1))


def run_segment(engine, ids: torch.Tensor, n: int, sampling, eos: list[int], streamer=None, keep: int = 0,
                stop: list[str] | None = None, tokenizer=None) -> torch.Tensor:
    """`ids` [1, T] then up to `n` new tokens, as `transformers.generate` would return them; stops at an
    end-of-turn token unless `sampling.ignore_eos` (then, as `min_new_tokens` does, they are never picked), and
    once the new tokens' text holds one of the `stop` strings (`tokenizer` decodes them; the caller cuts there).
    The model reads `ids` after the first `keep` positions of its KV cache (0: all of them, a pruned prefill; a
    dense prefill keeps the prompt the caller put there)."""
    if stop and tokenizer is None:
        raise IfpruneError("internal: stop strings need the tokenizer that decodes the new tokens")
    engine.truncate(keep)
    if keep and engine.n != keep:
        raise IfpruneError(f"internal: the KV cache holds {engine.n} positions, {keep} expected")
    seq = ids[0].tolist()
    if streamer is not None:
        streamer.put(ids.cpu())
    logits = engine.feed(seq[keep:])
    ends = set() if sampling.ignore_eos else set(eos)
    banned = list(eos) if sampling.ignore_eos else []
    for i in range(n):
        if banned:
            logits[banned] = -float("inf")  # (each feed returns a fresh array)
        tok = pick(logits, seq, sampling)
        seq.append(tok)
        if streamer is not None:
            streamer.put(torch.tensor([tok]))
        if tok in ends or i == n - 1 or (stop and _holds(tokenizer, seq[len(seq) - i - 1:], stop)):
            break
        logits = engine.feed([tok])
    if streamer is not None:
        streamer.end()
    return torch.tensor([seq])


def _holds(tokenizer, new: list[int], stop: list[str]) -> bool:
    """Whether the text of `new` holds a stop string (only its last tokens can have completed one)."""
    tail = tokenizer.decode(new[-(max(map(len, stop)) + 8):], skip_special_tokens=True)
    return any(s in tail for s in stop)
