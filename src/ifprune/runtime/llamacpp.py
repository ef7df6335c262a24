"""The compact model in llama.cpp: one k-wide GGUF that llama.cpp maps, whose FFN bytes a plan rewrites.

GGUF's Q8_0 / Q4_0 / Q4_1 blocks run along each row's input dimension, so a kept channel's gate and up
rows are whole rows of blocks: a plan gathers them as bytes from the full model's rows, quantised once.
The down projection's kept channels are its columns, which cut across blocks, so it is quantised per plan
from the float weights (or from the compensation refit: only what the refit rewrote is re-quantised).

llama.cpp maps the file read-only and shared, and its CPU backend reads weights straight from the mapping
(weight repacking, which would copy them out, is turned off), so bytes written into the file are what
its next decode reads: switching plans re-loads nothing, as `core.compact.CompactModel` refills its
buffers in place. Each instance writes its own file (in /dev/shm when there is one), so two processes never
share a patched model; the file is unlinked once both mappings exist.
"""

from __future__ import annotations

import ctypes
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.errors import IfpruneError
from ..core.plan import Plan

# --quant of this runtime -> the GGUF type of its 2-D tensors (export.gguf.TYPES; 4-bit types keep the
# token embedding / LM head at Q8_0)
WEIGHTS = ("q8_0", "q4_0", "q4_1")
FFN_NAMES = ("ffn_gate", "ffn_up", "ffn_down")


def require_llama_cpp():
    try:
        import llama_cpp
        import llama_cpp.llama  # noqa: F401 - routes llama.cpp's log through the "llama-cpp-python" logger
    except ImportError:
        raise IfpruneError("the llama.cpp runtime needs llama-cpp-python: pip install 'ifprune[llamacpp]' "
                           "(a source build with cmake and a C++ compiler, a few minutes)") from None
    log = logging.getLogger("llama-cpp-python")
    if log.level == logging.NOTSET:  # llama.cpp's load and state messages only when asked for
        log.setLevel(logging.ERROR)
    return llama_cpp


def check_weights(weights: str) -> str:
    if weights not in WEIGHTS:
        raise IfpruneError(f"the llama.cpp runtime runs --quant {', '.join(WEIGHTS)}, not {weights!r}")
    return weights


def shm_dir() -> str | None:
    """A RAM-backed folder for the per-process model file (writes never reach a disk), else the temp dir."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class Engine:
    """One llama.cpp model and context for a batch of one, fed token ids (the Hugging Face tokenizer's, so
    both runtimes read the same tokens)."""

    def __init__(self, path: str | Path, *, threads: int, n_ctx: int, n_batch: int = 512):
        L = require_llama_cpp()
        self._L = L
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        mp.use_extra_bufts = False  # repacking copies weights out of the mapping: plans would not reach them
        mp.load_mode = L.LLAMA_LOAD_MODE_MMAP
        self.model = L.llama_model_load_from_file(str(path).encode(), mp)
        if not self.model:
            raise IfpruneError(f"llama.cpp could not load {path}")
        cp = L.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, n_batch, n_batch
        cp.n_threads = cp.n_threads_batch = threads
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            L.llama_model_free(self.model)
            raise IfpruneError(f"llama.cpp could not make a context of {n_ctx} tokens for {path}")
        self.n_ctx, self.n_batch = n_ctx, n_batch
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.n = 0  # positions in the KV cache

    def truncate(self, n: int) -> None:
        """Keep the first `n` positions of the KV cache."""
        if n < self.n:
            self._L.llama_memory_seq_rm(self._L.llama_get_memory(self.ctx), 0, n, -1)
            self.n = n

    def feed(self, ids) -> np.ndarray:
        """Run `ids` after what the cache holds; the logits after the last of them (a copy: a view into
        llama.cpp's buffer would outlive a context freed meanwhile)."""
        ids = [int(i) for i in ids]
        if not ids:
            raise IfpruneError("nothing to feed")
        if self.n + len(ids) > self.n_ctx:
            raise IfpruneError(f"{self.n} + {len(ids)} tokens exceed this llama.cpp context of {self.n_ctx}")
        L = self._L
        for s in range(0, len(ids), self.n_batch):
            chunk = ids[s:s + self.n_batch]
            arr = (L.llama_token * len(chunk))(*chunk)
            if L.llama_decode(self.ctx, L.llama_batch_get_one(arr, len(chunk))) != 0:
                raise IfpruneError("llama.cpp failed to decode a batch")
            self.n += len(chunk)
        return np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,)).copy()

    def feed_all(self, ids) -> np.ndarray:
        """Run `ids` after what the cache holds with every position an output (so no layer skips a token, as
        llama.cpp's last layer otherwise does); the logits of every position [len(ids), vocab]."""
        L = self._L
        ids = [int(i) for i in ids]
        if not ids or self.n + len(ids) > self.n_ctx:
            raise IfpruneError(f"{self.n} + {len(ids)} tokens do not fit this llama.cpp context of {self.n_ctx}")
        batch = L.llama_batch_init(self.n_batch, 0, 1)
        out = []
        try:
            for s in range(0, len(ids), self.n_batch):
                chunk = ids[s:s + self.n_batch]
                batch.n_tokens = len(chunk)
                for j, tok in enumerate(chunk):
                    batch.token[j], batch.pos[j], batch.n_seq_id[j] = tok, self.n + j, 1
                    batch.seq_id[j][0], batch.logits[j] = 0, 1
                if L.llama_decode(self.ctx, batch) != 0:
                    raise IfpruneError("llama.cpp failed to decode a batch")
                self.n += len(chunk)
                out.append(np.ctypeslib.as_array(L.llama_get_logits(self.ctx), shape=(len(chunk), self.n_vocab)).copy())
        finally:
            L.llama_batch_free(batch)
        return np.concatenate(out)

    def logprobs(self, ids) -> np.ndarray:
        """Teacher-forced log-probabilities of ids[1:] given what precedes each, the whole of `ids` read by this
        model from an empty cache (how eval scores a continuation; float64, length len(ids) - 1)."""
        ids = [int(i) for i in ids]
        if len(ids) < 2:
            raise IfpruneError(f"scoring needs at least 2 tokens, got {len(ids)}")
        self.truncate(0)
        lp = self.feed_all(ids[:-1]).astype(np.float64)
        lp -= lp.max(1, keepdims=True)
        lp -= np.log(np.exp(lp).sum(1, keepdims=True))
        return lp[np.arange(len(ids) - 1), ids[1:]]

    def state(self) -> bytes:
        """llama.cpp's state of the sequence in the cache (the KV cache of every position: kv_format reads it)."""
        L = self._L
        size = L.llama_state_seq_get_size(self.ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        L.llama_state_seq_get_data(self.ctx, buf, size, 0)
        return bytes(buf)

    def set_state(self, blob: bytes, positions: int) -> None:
        """Replace the cache with a state of `positions` positions in llama.cpp's layout (set_prefix builds it)."""
        self.truncate(0)
        buf = (ctypes.c_uint8 * len(blob)).from_buffer_copy(blob)
        if self._L.llama_state_seq_set_data(self.ctx, buf, len(blob), 0) != len(blob):
            raise IfpruneError("llama.cpp refused the dense prefill's KV cache")
        self.n = positions

    def set_prefix(self, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Fill the KV cache with another model's keys and values (a dense prefill: selection.prefill), one
        (keys, values) pair [tokens, n_kv_heads * head_dim] per layer, already in llama.cpp's rotary order.
        Written as llama.cpp's own sequence state, whose layout is read off a real one first (kv_format)."""
        fmt = self.kv_format()
        T = int(layers[0][0].shape[0])
        if len(layers) != fmt.n_layer:
            raise IfpruneError(f"a prefix of {len(layers)} layers for a llama.cpp model of {fmt.n_layer}")
        if T + 1 > self.n_ctx:
            raise IfpruneError(f"a prefix of {T} tokens does not fit this llama.cpp context of {self.n_ctx}")
        cells = np.zeros(T, dtype=[("pos", "<i4"), ("n", "<u4"), ("seq", "<i4")])
        cells["pos"], cells["n"] = np.arange(T), 1
        parts = [fmt.head, np.array([1, T], "<u4").tobytes(), cells.tobytes(),
                 np.array([fmt.v_trans, fmt.n_layer], "<u4").tobytes()]
        for k, _ in layers:
            parts += [np.array([fmt.k_type], "<i4").tobytes(), np.array([k.shape[1] * 2], "<u8").tobytes(),
                      k.to(torch.float16).contiguous().numpy().tobytes()]
        for _, v in layers:
            if fmt.v_trans:
                parts += [np.array([fmt.v_type], "<i4").tobytes(), np.array([2, v.shape[1]], "<u4").tobytes(),
                          v.T.to(torch.float16).contiguous().numpy().tobytes()]
            else:
                parts += [np.array([fmt.v_type], "<i4").tobytes(), np.array([v.shape[1] * 2], "<u8").tobytes(),
                          v.to(torch.float16).contiguous().numpy().tobytes()]
        self.set_state(b"".join(parts), T)

    def kv_format(self) -> "_KVFormat":
        """The sequence-state layout of this build and model, read off the state of two evaluated tokens."""
        if getattr(self, "_kv_format", None) is None:
            self.truncate(0)
            self.feed([0, 0])
            blob = self.state()
            self.truncate(0)
            self._kv_format = _KVFormat.parse(blob)
        return self._kv_format

    def close(self) -> None:
        if getattr(self, "ctx", None):
            self._L.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            self._L.llama_model_free(self.model)
            self.model = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


@dataclass
class _KVFormat:
    """What llama.cpp's sequence state of one model holds besides the keys and values (llama-kv-cache.cpp's
    state_write): a header (magic, sequence id), one stream, per cell (position, 1, sequence), then per layer
    the keys' type and rows, then the values' (transposed when flash attention is off)."""

    head: bytes
    n_layer: int
    v_trans: int
    k_type: int
    v_type: int

    F16 = 1  # ggml_type

    @classmethod
    def parse(cls, blob: bytes) -> "_KVFormat":
        """From the state of two cells; a layout this code does not know is refused, never guessed."""
        def u32(o):
            return int(np.frombuffer(blob, "<u4", 1, o)[0])

        try:
            o = 8
            if u32(o) != 1 or u32(o + 4) != 2:
                raise ValueError("streams / cells")
            o += 8
            if any(u32(o + 12 * c + 4) != 1 for c in range(2)):
                raise ValueError("cells")
            o += 24
            v_trans, n_layer = u32(o), u32(o + 4)
            o += 8
            k_type = u32(o)
            for _ in range(n_layer):  # keys: type, row bytes, 2 rows
                row = int(np.frombuffer(blob, "<u8", 1, o + 4)[0])
                o += 12 + 2 * row
            v_type = u32(o)
            for _ in range(n_layer):
                if v_trans:  # type, element size, rows; then n_embd columns of 2 cells
                    o += 12 + 2 * u32(o + 4) * u32(o + 8)
                else:
                    o += 12 + 2 * int(np.frombuffer(blob, "<u8", 1, o + 4)[0])
            if o != len(blob) or k_type != cls.F16 or v_type != cls.F16:
                raise ValueError("size or types")
        except (ValueError, IndexError) as e:
            raise IfpruneError(f"this llama.cpp build keeps its KV cache in a layout ifprune does not know ({e}): "
                               "use --prefill pruned or --runtime torch") from None
        return cls(blob[:8], n_layer, v_trans, k_type, v_type)


@dataclass
class _Slot:
    """Where one FFN tensor of one layer lies in the mapped file, and its type."""

    offset: int
    nbytes: int
    qtype: str


class LlamaCppCompact:
    """The k-wide model of `lm` in llama.cpp; `load(plan)` writes a plan's channels into it (the same verb as
    `CompactModel.load`). Width d_ffn is the dense model (nothing to load)."""

    def __init__(self, lm, width: int, *, weights: str = "q8_0", threads: int = 1, n_ctx: int = 2048):
        import gguf

        from ..core.compact import CompactModel
        from ..export.gguf import check_supported, write_gguf

        check_weights(weights)
        require_llama_cpp()
        check_supported(lm, weights)
        if lm.layout.family.name != "gated":
            raise IfpruneError(f"the llama.cpp runtime rewrites separate gate/up/down projections; this model's FFN is "
                               f"the {lm.layout.family.name!r} family: use --runtime torch")
        if width % 32:
            raise IfpruneError(f"the llama.cpp runtime quantises in blocks of 32 channels: FFN width {width} is not a "
                               f"multiple of 32; pick --width {width // 32 * 32 or 32} or {(width // 32 + 1) * 32}")
        self.lm, self.width, self.weights = lm, width, weights
        self.compensator = lm.compensator
        self.plan: Plan | None = None
        self._loaded_key = None
        fd, path = tempfile.mkstemp(prefix="ifprune-compact-", suffix=".gguf", dir=shm_dir())
        os.close(fd)
        try:
            if width == lm.d_ffn:
                model = lm.model
            else:  # the file's layout (names, offsets, metadata): any plan of this width, gathered plainly
                start = CompactModel(lm.model, width, lm.layout)
                start.load(Plan(torch.arange(width).repeat(lm.num_layers, 1), lm.d_ffn, {"selector": "layout"}))
                model = start.model
            write_gguf(model, lm, Path(path), qtype=weights, name=f"ifprune compact {width}/{lm.d_ffn}")
            del model
            self.engine = Engine(path, threads=threads, n_ctx=n_ctx)
            self._map = np.memmap(path, dtype=np.uint8, mode="r+")
            slots = {t.name: _Slot(int(t.data_offset), int(t.n_bytes), t.tensor_type.name)
                     for t in gguf.GGUFReader(path).tensors}
        finally:
            os.unlink(path)  # llama.cpp's mapping and ours keep it alive; nothing is left behind
        self.file_bytes = int(self._map.shape[0])
        self._slots = [[slots[f"blk.{i}.{n}.weight"] for n in FFN_NAMES] for i in range(lm.num_layers)]
        if width < lm.d_ffn:
            from ..export.ggml_quants import quantize_rows

            # each kept channel is a row of gate and up: quantised once, gathered as bytes by every plan
            self._rows = [tuple(quantize_rows(mod.weight, slot.qtype).numpy() for mod, slot in zip(layer.up, slots_))
                          for layer, slots_ in zip(lm.layout.layers, self._slots)]

    @property
    def model_bytes(self) -> int:
        return self.file_bytes

    def load(self, plan: Plan, prompt=None) -> float:
        """Write `plan`'s channels into the mapped model; seconds (0 if it is loaded already)."""
        from ..export.ggml_quants import quantize_rows

        if plan.width != self.width or plan.d_ffn != self.lm.d_ffn or plan.num_layers != self.lm.num_layers:
            raise IfpruneError(f"plan is {plan.num_layers} layers x {plan.width}/{plan.d_ffn} channels; this llama.cpp "
                               f"model holds {self.lm.num_layers} layers x {self.width}/{self.lm.d_ffn}")
        comp = self.compensator
        key = (plan.hash, getattr(prompt, "key", None) if comp is not None and comp.config.mode == "prompt" else None)
        if self._loaded_key == key or plan.is_dense:
            self.plan, self._loaded_key = plan, key
            return 0.0
        t0 = time.perf_counter()
        refits = comp.refit(plan, prompt) if comp is not None else None
        with torch.no_grad():
            for i, (layer, slots, rows) in enumerate(zip(self.lm.layout.layers, self._slots, self._rows)):
                idx = plan.indices[i].numpy()
                for slot, src in zip(slots[:2], rows):
                    self._write(slot, src[idx])
                if refits is not None and refits[i][1] is not None:
                    raise IfpruneError("the refit writes a down-projection bias (--compensate mean, or a model with one), "
                                       "which the llama.cpp runtime does not carry: use --runtime torch, or "
                                       "--compensate calibration or none")
                down = refits[i][0] if refits is not None else layer.down.weight.index_select(1, plan.indices[i])
                self._write(slots[2], quantize_rows(down, slots[2].qtype).numpy())
        self.plan, self._loaded_key = plan, key
        return time.perf_counter() - t0

    def _write(self, slot: _Slot, data: np.ndarray) -> None:
        if data.nbytes != slot.nbytes:
            raise IfpruneError(f"internal: {data.nbytes} bytes for a {slot.nbytes}-byte tensor")
        self._map[slot.offset:slot.offset + slot.nbytes] = data.reshape(-1)

    def close(self) -> None:
        self.engine.close()
        self._map = None


def compact_for(lm, width: int, *, weights: str, threads: int, n_ctx: int) -> LlamaCppCompact:
    """The llama.cpp model of this width and type for `lm`, built on first use and kept (as `lm.compact`)."""
    models = lm.__dict__.setdefault("_llamacpp", {})
    key = (width, weights, threads, n_ctx)
    if key not in models:
        models[key] = LlamaCppCompact(lm, width, weights=weights, threads=threads, n_ctx=n_ctx)
    return models[key]


def dense_prefix(lm, cache, tokens: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A transformers KV cache of the full model (its first `tokens` positions; None: all) as Engine.set_prefix's
    (keys, values) per layer: heads side by side, keys' rotary halves interleaved where llama.cpp's rope is the
    interleaved kind (export.gguf)."""
    from ..export.gguf import ARCHITECTURES

    interleave = ARCHITECTURES[type(lm.model).__name__][1]
    out = []
    for layer in cache.layers:
        k, v = layer.keys[0, :, :tokens], layer.values[0, :, :tokens]  # [heads, T, head_dim]
        if interleave:
            half = k.shape[-1] // 2
            k = torch.stack([k[..., :half], k[..., half:]], dim=-1).reshape(k.shape)
        out.append(tuple(x.transpose(0, 1).reshape(x.shape[1], -1).float() for x in (k, v)))
    return out
