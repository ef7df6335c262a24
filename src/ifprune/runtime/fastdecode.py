"""Fast batch-1 decoding: a static KV cache and a compiled single-token step.

Shapes never change between steps (the cache is pre-allocated to `max_cache_len`), so the step
compiles once; with `mode="reduce-overhead"` on CUDA it is replayed as a CUDA graph. Switching plans
does not recompile: `CompactModel.load` gathers channels *in place* into the same parameter storage,
so the compiled graph (and the graph's captured pointers) simply read the new weights.

CUDA is touched only when the model is on a CUDA device; importing this module never initialises it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..core.errors import IfpruneError


@dataclass
class DecodeTimings:
    prefill_s: float  # prompt forward + first token (time to first token of the generation itself)
    decode_s: float  # the remaining new_tokens - 1 tokens
    new_tokens: int

    @property
    def per_token_s(self) -> float:
        return self.decode_s / max(1, self.new_tokens - 1)


def sync_device(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings mean something (no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StaticDecoder:
    """Greedy generation for one model with a reusable `StaticCache`.

    `compile`: None = compile on CUDA only (CPU inductor compiles slowly and gains little at batch 1);
    `backend`/`mode` are passed to `torch.compile` (tests use backend="eager" to check recompiles).
    """

    def __init__(self, model, max_cache_len: int, *, compile: bool | None = None, backend: str = "inductor",
                 mode: str | None = "reduce-overhead", batch_size: int = 1):
        from transformers import StaticCache

        self.model = model
        self.device = next(model.parameters()).device
        self.max_cache_len = max_cache_len
        self.cache = StaticCache(config=model.config, max_cache_len=max_cache_len)
        self.batch_size = batch_size
        compile = self.device.type == "cuda" if compile is None else compile
        self.compiled = compile
        step = self._step
        if compile:
            kw = {"fullgraph": True, "backend": backend}
            if backend == "inductor" and mode:
                kw["mode"] = mode
            step = torch.compile(step, **kw)
        self.step = step

    def _fill(self, prefix, ids: torch.Tensor) -> None:
        """The cache's first ids.shape[1] positions from `prefix`: a model run over `ids`, or a cache to copy."""
        pos = torch.arange(ids.shape[1], device=self.device)
        if isinstance(prefix, torch.nn.Module):
            from ..core.prompt_pass import decoder_body

            decoder_body(prefix)(input_ids=ids, past_key_values=self.cache, cache_position=pos, use_cache=True)
            return
        n = ids.shape[1]
        for i, layer in enumerate(prefix.layers):
            self.cache.update(layer.keys[:, :, :n], layer.values[:, :, :n], i, {"cache_position": pos})

    def _step(self, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=token, past_key_values=self.cache, cache_position=pos, use_cache=True)
        return out.logits[:, -1].argmax(-1, keepdim=True)

    @torch.inference_mode()
    def generate(self, ids: torch.Tensor, max_new_tokens: int, *, prefix=None,
                 keep: int = 0) -> tuple[torch.Tensor, DecodeTimings]:
        """Greedy tokens after `ids` and their timings. A dense prefill (selection.prefill), timed as prefill:
        `prefix` fills the cache's first T - 1 positions (the prompt but its last token) before this model reads
        the rest: a model to run over them, or a KV cache of them to copy (the selector's own prompt pass).
        `keep`: the first `keep` positions of the last generation's cache stay (a re-selection's prefill after a
        dense one re-runs only what follows the prompt)."""
        if ids.dim() != 2 or ids.shape[0] != self.batch_size:
            raise IfpruneError(f"input ids must be [{self.batch_size}, T], got {tuple(ids.shape)}")
        T = ids.shape[1]
        if T + max_new_tokens > self.max_cache_len:
            raise IfpruneError(f"prompt {T} + {max_new_tokens} new tokens exceed the static cache of "
                               f"{self.max_cache_len}: build the decoder with a larger max_cache_len")
        if not 0 <= keep < T or (keep and prefix is not None):
            raise IfpruneError(f"keep must be in [0, {T}) and goes without a prefix, got {keep}")
        ids = ids.to(self.device)
        if not keep:
            self.cache.reset()
        elif (extra := int(self.cache.get_seq_length()) - keep) > 0:
            self.cache.crop(-extra)  # the next update overwrites what followed `keep`
        elif extra < 0:
            raise IfpruneError(f"keep={keep} but the last generation left only {keep + extra} positions")
        sync_device(self.device)
        t0 = time.perf_counter()
        if prefix is not None and T > 1:
            self._fill(prefix, ids[:, :-1])
            keep = T - 1
        out = self.model(input_ids=ids[:, keep:], past_key_values=self.cache,
                         cache_position=torch.arange(keep, T, device=self.device), use_cache=True)
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        toks = [tok]
        sync_device(self.device)
        t1 = time.perf_counter()
        for i in range(max_new_tokens - 1):
            pos = torch.tensor([T + i], device=self.device)
            tok = self.step(tok, pos)
            if self.compiled and self.device.type == "cuda":
                tok = tok.clone()  # CUDA-graph outputs are overwritten by the next replay
            toks.append(tok)
        sync_device(self.device)
        t2 = time.perf_counter()
        return torch.cat(toks, dim=1), DecodeTimings(t1 - t0, t2 - t1, max_new_tokens)
