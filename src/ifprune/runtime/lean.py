"""The torch decoder: a Llama-family model read as an engine (runtime.segment) with a preallocated KV cache.

At batch one on a CPU, `transformers.generate` spends a large share of each token outside the matmuls (its
cache grows by concatenation, masks and rotary tables are rebuilt every step, logits processors and stopping
criteria run as objects). This engine calls the model's own modules (so int8 linears, compensation and module
hooks behave as they do under `generate`; `--prefill kept` records through `record`, not hooks) in one plain loop
over the layers: keys and values go into tensors sized once per answer, the rotary tables are computed once, and
the attention is one `scaled_dot_product_attention` over the filled positions. Architectures outside `LEAN_TYPES`
(or with sliding windows) decode through `generate`; `supports` says which.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.errors import IfpruneError

LEAN_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def supports(model) -> bool:
    """Whether `model` (a causal LM) is one this engine reads exactly as its own forward does."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "model_type", None) not in LEAN_TYPES:
        return False
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or ()):
        return False  # (Qwen's sliding-window layers)
    if cfg.model_type == "mistral" and getattr(cfg, "sliding_window", None):
        return False  # (Mistral's attention reads its window from the config)
    return all(getattr(layer.self_attn, "sliding_window", None) is None for layer in model.model.layers)


class LeanDecoder:
    """One model's KV cache of up to `max_len` positions and a `feed` that reads tokens into it."""

    def __init__(self, model, max_len: int):
        if not supports(model):
            raise IfpruneError(f"internal: the lean decoder reads {', '.join(LEAN_TYPES)} models without sliding "
                               f"windows, not {type(model).__name__}")
        body = model.model
        self.model, self.embed, self.layers, self.norm, self.head = model, body.embed_tokens, body.layers, \
            body.norm, model.lm_head
        attn = self.layers[0].self_attn
        cfg = model.config
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, attn.head_dim
        dtype, self.device = self.embed.weight.dtype, self.embed.weight.device
        shape = (len(self.layers), self.kv_heads, max_len, self.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=self.device)
        self.values = torch.zeros(shape, dtype=dtype, device=self.device)
        with torch.no_grad():
            cos, sin = body.rotary_emb(torch.zeros(1, dtype=dtype, device=self.device),
                                       torch.arange(max_len, device=self.device)[None])
        self.cos, self.sin = cos[0], sin[0]  # [max_len, head_dim]
        self.max_len = max_len
        self.n = 0

    def truncate(self, n: int) -> None:
        """Keep the first n positions (what follows is overwritten by the next feed)."""
        self.n = min(self.n, n)

    def set_prefix(self, cache, n: int) -> None:
        """The first `n` positions from a transformers KV cache (a dense prefill: the full model's keys and values
        of the prompt, and under re-selection of the answer so far)."""
        if n > self.max_len or cache.get_seq_length() < n:
            raise IfpruneError(f"internal: a prefix of {n} positions does not fit (cache {cache.get_seq_length()}, "
                               f"room {self.max_len})")
        for i, layer in enumerate(cache.layers):
            self.keys[i, :, :n] = layer.keys[0, :, :n]
            self.values[i, :, :n] = layer.values[0, :, :n]
        self.n = n

    record = None  # callable(layer, FFN input, down-projection input) while "kept" re-selection records

    def _recorded_mlp(self, i: int, mlp, h: torch.Tensor) -> torch.Tensor:
        """The gated MLP these architectures share, its two inputs handed to `record` (no module hooks per token)."""
        a = mlp.act_fn(mlp.gate_proj(h)) * mlp.up_proj(h)
        self.record(i, h, a)
        return mlp.down_proj(a)

    def _norm(self, norm, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:  # (the modules' own float32 arithmetic, fused)
            return F.rms_norm(x, (x.shape[-1],), norm.weight, norm.variance_epsilon)
        return norm(x)

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    @torch.no_grad()  # (not inference_mode: the caller may edit the logits it returns)
    def feed(self, tokens) -> torch.Tensor:
        """Read `tokens` after the cache's positions; the logits of the last one (float32, [vocab])."""
        ids = torch.as_tensor(tokens, dtype=torch.long, device=self.device).view(1, -1)
        T, start = ids.shape[1], self.n
        end = start + T
        if end > self.max_len:
            raise IfpruneError(f"internal: {end} positions exceed the decoder's {self.max_len}")
        H, KV, D = self.heads, self.kv_heads, self.head_dim
        cos, sin = self.cos[start:end], self.sin[start:end]
        mask = None if T == 1 else torch.ones(T, end, dtype=torch.bool, device=self.device).tril(start)
        x = self.embed(ids)[0]  # [T, hidden]
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = self._norm(layer.input_layernorm, x)
            q = attn.q_proj(h).view(T, H, D)
            k = attn.k_proj(h).view(T, KV, D)
            if hasattr(attn, "q_norm"):  # (Qwen3: per-head norms before the rotation)
                q, k = attn.q_norm(q), attn.k_norm(k)
            q = self._rotate(q.transpose(0, 1), cos, sin)
            self.keys[i, :, start:end] = self._rotate(k.transpose(0, 1), cos, sin)
            self.values[i, :, start:end] = attn.v_proj(h).view(T, KV, D).transpose(0, 1)
            o = F.scaled_dot_product_attention(q[None], self.keys[i, None, :, :end], self.values[i, None, :, :end],
                                               attn_mask=mask, scale=attn.scaling, enable_gqa=H != KV)
            x = x + attn.o_proj(o[0].transpose(0, 1).reshape(T, H * D))
            h = self._norm(layer.post_attention_layernorm, x)
            x = x + (layer.mlp(h) if self.record is None else self._recorded_mlp(i, layer.mlp, h))
        self.n = end
        return self.head(self._norm(self.norm, x[-1:]))[0].float().cpu()


def decode_segment(model, ids: torch.Tensor, n: int, sampling, eos: list[int], *, cache=None, keep: int = 0,
                   streamer=None, stop: list[str] | None = None, tokenizer=None) -> torch.Tensor:
    """One segment (runtime.segment.run_segment) of `model` on a fresh engine: `ids` [1, T] then up to `n` new
    tokens; `cache` (a transformers KV cache of at least `keep` positions, the full model's) fills the first `keep`."""
    from .segment import run_segment

    engine = LeanDecoder(model, ids.shape[1] + n)
    if cache is not None and keep:
        engine.set_prefix(cache, keep)
    return run_segment(engine, ids, n, sampling, eos, streamer, keep=keep if cache is not None else 0, stop=stop,
                       tokenizer=tokenizer)
