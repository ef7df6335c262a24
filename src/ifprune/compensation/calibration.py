"""Output compensation, the lifecycle: calibration text -> per-layer activation moments (cached on
disk) -> a `Compensator` that refits each loaded plan's down projection (maths: compensation.py).

Calibration text is a file the user gives (plain text, or JSONL of prompt/response pairs, which are
chat-formatted exactly as at inference) or the default mix shipped in the package (permissively
licensed training splits; see data/calibration/README.md). The moments are computed once per (model
weights, calibration text, token budget), saved atomically as safetensors with a sha256 manifest, and
never trusted when the manifest does not match (rebuilt, with a warning).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from .refit import Moments, kept_blocks, mean_bias, solve_refit, token_blocks
from ..core.errors import IfpruneError
from ..core.hooks import record_intermediates
from ..core.jsonl import iter_jsonl
from ..core.memory import require_disk, require_memory
from ..core.paths import atomic_path, cache_dir, drop_link, file_sha256
from ..core.precision import cpu_has_fast_bf16

log = logging.getLogger(__name__)

MODES = ("none", "calibration", "prompt", "mean")
DEFAULT_CALIBRATION = Path(__file__).resolve().parents[1] / "data" / "calibration" / "default.jsonl"
STATS_FORMAT = "ifprune-moments/2"  # a folder: manifest.json and one safetensors file per layer
MIN_TOKENS = 256  # smallest budget accepted at all; a model needs at least 2 x d_ffn tokens (calibration_rows)


@dataclass(frozen=True)
class CompensationConfig:
    """What `--compensate`, `--calibration`, `--calibration-tokens` and `--ridge` set."""

    mode: str = "calibration"
    calibration: str | None = None  # file; None = the packaged default mix
    max_tokens: int = 65536
    seq_len: int = 512
    ridge: float = 1e-2  # relative to the kept block's mean diagonal
    prompt_weight: float = 0.25  # mode "prompt": share of the prompt's own moments in the mix
    shrink: float = 0.0  # covariance shrinkage toward diag(G) (a variance-weighted ridge)

    def __post_init__(self):
        if self.mode not in MODES:
            raise IfpruneError(f"unknown compensation mode {self.mode!r}; choose from {', '.join(MODES)}")
        if not self.ridge > 0 or self.ridge != self.ridge:
            raise IfpruneError(f"--ridge must be > 0, got {self.ridge}")
        if not 0 <= self.shrink < 1:
            raise IfpruneError(f"shrink must be in [0, 1), got {self.shrink}")
        if not 0 <= self.prompt_weight <= 1:
            raise IfpruneError(f"prompt weight must be in [0, 1], got {self.prompt_weight}")
        if self.max_tokens < MIN_TOKENS:
            raise IfpruneError(f"--calibration-tokens {self.max_tokens} is too few: use at least {MIN_TOKENS}")
        if self.calibration is not None:
            calibration_file(self.calibration)

    def describe(self) -> dict:
        """Recorded in plan metadata, JSON output and export cards."""
        if self.mode == "none":
            return {"mode": "none"}
        out = {"mode": self.mode, "calibration": Path(self.calibration).name if self.calibration else "default-mix",
               "calibration_tokens": self.max_tokens}
        if self.mode == "mean":  # no refit, so no ridge
            return out
        return {**out, "ridge": self.ridge, **({"shrink": self.shrink} if self.shrink else {}),
                **({"prompt_weight": self.prompt_weight} if self.mode == "prompt" else {})}


# calibration text -> token rows ---------------------------------------------------------------
def calibration_file(path: str | Path | None) -> Path:
    """The calibration file to read (None: the packaged mix), or a clear error if it is missing."""
    path = Path(path) if path is not None else DEFAULT_CALIBRATION
    if not path.is_file():
        raise IfpruneError(f"calibration file not found: {path} (give text or JSONL of prompt/response pairs)")
    return path


def read_calibration_text(path: str | Path, max_chars: int = 2_000_000) -> list[str]:
    """Plain text (one document per blank-line block) or JSONL (field "text", else the first string field)."""
    path = Path(path)
    if not path.is_file():
        raise IfpruneError(f"calibration file not found: {path} (e.g. ../shared/data/pretrain/llamafactory/c4_demo.jsonl)")
    docs: list[str] = []
    total = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        if path.suffix == ".jsonl":
            for _, row in iter_jsonl(path):
                text = row.get("text")
                if not isinstance(text, str):
                    text = next((v for v in row.values() if isinstance(v, str)), None)
                if text:
                    docs.append(text)
                    total += len(text)
                if total >= max_chars:
                    break
        else:
            docs = [b for b in f.read(max_chars).split("\n\n") if b.strip()]
    if not docs:
        raise IfpruneError(f"calibration file {path} holds no text")
    return docs


def calibration_rows(tokenizer, path: str | Path | None, max_tokens: int, seq_len: int,
                     need: int = MIN_TOKENS) -> list[torch.Tensor]:
    """Token rows of at most `seq_len`, `max_tokens` in all. JSONL rows with prompt/response (or
    instruction/output) are chat-formatted as at inference; other text is split into documents."""
    from ..core.prompting import encode_pair

    path = calibration_file(path)
    rows: list[torch.Tensor] = []
    total = 0
    items = _jsonl_items(path) if path.suffix == ".jsonl" else None
    if items:
        for item in items:
            ids = (encode_pair(tokenizer, *item) if isinstance(item, tuple)
                   else tokenizer(item, return_tensors="pt")["input_ids"][0])[:seq_len]
            rows.append(ids)
            total += ids.numel()
            if total >= max_tokens:
                break
    else:
        docs = read_calibration_text(path, max_chars=max(2_000_000, max_tokens * 8))
        ids = tokenizer("\n\n".join(docs), return_tensors="pt")["input_ids"][0][:max_tokens]
        rows = list(ids.split(seq_len))
        total = ids.numel()
    if total < need:
        raise IfpruneError(f"calibration text {path} gives {total} tokens; this model needs at least {need} "
                           f"(2 x its FFN width; the default budget is {CompensationConfig.max_tokens} tokens, "
                           f"about {CompensationConfig.max_tokens * 4 // 1000} KB of text)")
    return rows


def _jsonl_items(path: Path) -> list[tuple[str, str] | str]:
    """(prompt, response) pairs (keys prompt/response or instruction/output) and plain "text" rows."""

    out: list[tuple[str, str] | str] = []
    for _, row in iter_jsonl(path):
        p = row.get("prompt", row.get("instruction"))
        r = row.get("response", row.get("output"))
        if isinstance(p, str) and isinstance(r, str) and p.strip() and r.strip():
            out.append((p, r))
        elif isinstance(row.get("text"), str) and row["text"].strip():
            out.append(row["text"])
    return out


# moments -----------------------------------------------------------------------------------------
@dataclass
class LayerStats:
    """Per layer: second moment G [L, d, d] (None for mode "mean": means only) and mean [L, d] (float32), over
    `tokens` tokens."""

    G: torch.Tensor | None
    mean: torch.Tensor
    tokens: int
    fingerprint: str
    calibration_sha: str
    precision: str = "native"  # of the passes that gathered them (moments_precision)

    def nbytes(self) -> int:
        G = 0 if self.G is None else self.G.numel() * self.G.element_size()
        return G + self.mean.numel() * self.mean.element_size()

    @property
    def kind(self) -> str:
        return "mean" if self.G is None else "moments"


def moments_precision(lm) -> str:
    """"bf16" (autocast) for a float32 model where bf16 matmuls are faster than float32 here, else
    "native" (the model's own dtype). The moments pass is matmul-bound: bf16 ran it 2.7x faster on the
    default model (569 vs 214 tokens/s, one thread), and its moments differ from float32's by ~1%
    (Frobenius), less than two calibration samples of the same text differ."""
    if next(lm.model.parameters()).dtype != torch.float32:
        return "native"
    if lm.device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "native"
    return "bf16" if lm.device.type == "cpu" and cpu_has_fast_bf16() else "native"


def collect_moments(lm, rows: list[torch.Tensor], *, progress: bool = True, batch_tokens: int = 4096,
                    precision: str = "native", out: torch.Tensor | None = None, means_only: bool = False
                    ) -> list[Moments]:
    """Dense forward passes over the rows, summing each layer's FFN intermediate moments (float32 sums of
    per-batch products; with precision "bf16" the passes and the per-batch products run under bf16
    autocast). `out`: an [L, d, d] float32 buffer the second-moment sums go into (no copy of it is made).
    `means_only`: sum the means alone (compensation mode "mean")."""
    from tqdm.auto import tqdm

    from ..core.prompting import length_batches
    from ..core.prompt_pass import decoder_body

    moments = [Moments.zeros(lm.d_ffn, None if out is None else out[i], second=not means_only)
               for i in range(lm.num_layers)]
    pad = lm.tokenizer.pad_token_id or 0
    longest = max(len(r) for r in rows)
    per_batch = max(1, batch_tokens // longest)
    weight: list[torch.Tensor] = []

    def acc(i, x):
        moments[i].add(x, weight[0])

    body = decoder_body(lm.model)
    bar = tqdm(total=sum(len(r) for r in rows), desc="compensation: calibration moments", unit="tok",
               disable=not progress, leave=False)
    autocast = torch.autocast(lm.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.no_grad(), autocast, record_intermediates(lm.layout, acc):
        for _, ids, att in length_batches(rows, pad, per_batch):
            weight[:] = [att.to(lm.device)]
            body(input_ids=ids.to(lm.device), attention_mask=att.to(lm.device), use_cache=False)
            bar.update(int(att.sum()))
    bar.close()
    return [m.mirror() for m in moments]


def stats_path(fingerprint: str, calibration_sha: str, max_tokens: int, seq_len: int, kind: str = "moments") -> Path:
    """The folder that holds one model's statistics (`kind`: "moments", or "mean" alone) for one calibration
    setting."""
    key = f"{fingerprint}|{calibration_sha}|{max_tokens}|{seq_len}|{STATS_FORMAT}" + ("" if kind == "moments" else f"|{kind}")
    key = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "moments" / f"{fingerprint}-{key}"


def _manifest(path: Path) -> Path:
    return path / "manifest.json"


def _layer_file(i: int) -> str:
    return f"layer-{i:03d}.safetensors"


def encode_layer(G: torch.Tensor) -> dict[str, torch.Tensor]:
    """A second moment as float32 root-diagonal s and float16 correlations G / (s s^T): the correlations lie in
    [-1, 1], where float16 keeps ~3.3 significant digits and cannot overflow (a raw G can: massive activations
    square past float16's range), at half the bytes of float32."""
    s = G.diagonal().clamp_min(0).sqrt()
    s = torch.where(s > 0, s, torch.ones_like(s))
    corr = (G / s[:, None]).div_(s[None, :]).to(torch.float16)
    return {"corr": corr, "scale": s.float()}


def decode_layer(corr: torch.Tensor, scale: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """`out` [d, d] float32 := the second moment `encode_layer` stored."""
    out.copy_(corr)
    return out.mul_(scale[:, None]).mul_(scale[None, :])


def save_stats(stats: LayerStats, path: Path) -> None:
    """A folder, written atomically: one safetensors file per layer (float16 correlations, float32 scales and
    mean) and a manifest with each file's sha256. Per layer, so neither writing nor reading holds a second
    copy of all layers' moments."""
    from safetensors.torch import save_file

    meta = {"format": STATS_FORMAT, "kind": stats.kind, "fingerprint": stats.fingerprint,
            "calibration_sha256": stats.calibration_sha, "tokens": str(stats.tokens), "precision": stats.precision,
            "layers": int(stats.mean.shape[0]), "d_ffn": int(stats.mean.shape[-1])}
    drop_link(path, "compensation statistics")
    with atomic_path(path) as tmp:
        tmp.mkdir()
        files = {}
        for i in range(stats.mean.shape[0]):
            f = tmp / _layer_file(i)
            second = {} if stats.G is None else encode_layer(stats.G[i])
            save_file({**second, "mean": stats.mean[i].float().contiguous()}, str(f))
            files[f.name] = {"sha256": file_sha256(f), "bytes": f.stat().st_size}
        _manifest(tmp).write_text(json.dumps({**meta, "files": files}, indent=2) + "\n")


def read_stats(path: Path, fingerprint: str, kind: str = "moments") -> LayerStats | None:
    """The cached statistics if the manifest, every layer's checksum and the model all match; None (with a
    warning naming why) if absent, corrupt, stale or of another model. Layers are read one at a time into
    one float32 buffer."""
    import shutil

    from safetensors import safe_open

    if drop_link(path, "compensation statistics"):
        return None
    if not path.exists():
        return None
    try:
        if not path.is_dir():
            raise ValueError("not a folder (an older format)")
        man = _manifest(path)
        if drop_link(man, "compensation statistics manifest"):
            raise ValueError("its manifest was a link")
        info = json.loads(man.read_text())
        if info.get("format") != STATS_FORMAT:
            raise ValueError(f"format {info.get('format')!r}")
        if info.get("kind", "moments") != kind:
            raise ValueError(f"{info.get('kind')} statistics, not {kind}")
        if info.get("fingerprint") != fingerprint:
            raise ValueError(f"statistics of model {info.get('fingerprint')}, not of this model ({fingerprint})")
        L, d = int(info["layers"]), int(info["d_ffn"])
        G, mean = torch.empty(L, d, d) if kind == "moments" else None, torch.empty(L, d)
        for i in range(L):
            f, want = path / _layer_file(i), info["files"][_layer_file(i)]
            if f.is_symlink() or f.stat().st_size != want["bytes"] or file_sha256(f) != want["sha256"]:
                raise ValueError(f"checksum mismatch in {f.name}")
            with safe_open(str(f), "pt") as t:
                if G is not None:
                    decode_layer(t.get_tensor("corr"), t.get_tensor("scale"), G[i])
                mean[i] = t.get_tensor("mean")
        if not ((G is None or torch.isfinite(G).all()) and torch.isfinite(mean).all()):
            raise ValueError("non-finite values")
        return LayerStats(G, mean, int(info["tokens"]), fingerprint, info["calibration_sha256"],
                          info.get("precision", "native"))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        warnings.warn(f"ifprune: compensation statistics {path} are unusable ({e}); recomputing them", stacklevel=2)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        return None


def layer_stats(lm, config: CompensationConfig, *, progress: bool = True, use_cache: bool = True) -> LayerStats:
    """The model's calibration moments for `config`, from the cache or computed (once) and cached."""
    return stats_at(lm, config, lm.fingerprint(), progress=progress, use_cache=use_cache)


def stats_at(lm, config: CompensationConfig, key: str, path: Path | None = None, *, progress: bool = True,
             use_cache: bool = True) -> LayerStats:
    """The moments of `lm` as it is now, cached under `key` (what the weights are: a model fingerprint, or
    a training run's starting point, whose model's fingerprint is the base one's), at `path` (default:
    the moments cache)."""
    path_in = calibration_file(config.calibration)
    sha = file_sha256(path_in)
    kind = "mean" if config.mode == "mean" else "moments"
    path = path or stats_path(key, sha, config.max_tokens, config.seq_len, kind)
    if use_cache and (cached := read_stats(path, key, kind)) is not None:
        return cached
    t0 = time.perf_counter()
    seq_len = min(config.seq_len, lm.context_length() or config.seq_len)  # rows must fit the positions
    rows = calibration_rows(lm.tokenizer, path_in, config.max_tokens, seq_len,
                            need=MIN_TOKENS if kind == "mean" else 2 * lm.d_ffn)
    precision = moments_precision(lm)
    G = None
    if use_cache:  # before the pass, not after it: a full disk would lose it
        require_disk(stats_disk_bytes(lm, kind), path, f"the compensation statistics ({kind}) for this model",
                     "free space there, point IFPRUNE_CACHE at a disk with room, or use --compensate mean (means "
                     "alone) or none")
    if kind == "moments":
        check_stats_memory(lm)
        G = torch.empty(lm.num_layers, lm.d_ffn, lm.d_ffn)  # summed into in place, then divided: the only copy
    moments = collect_moments(lm, rows, progress=progress, precision=precision, out=G, means_only=G is None)
    count = max(moments[0].count, 1)
    stats = LayerStats(None if G is None else G.div_(count), torch.stack([m.mean() for m in moments]).float(),
                       moments[0].count, key, sha, precision)
    log.info("compensation statistics: %d tokens (%s), %.1f s, %.0f MB", stats.tokens, precision,
             time.perf_counter() - t0, stats.nbytes() / 1e6)
    # what runs is what the cache holds (float16 correlations), on the first run as on every later one
    if use_cache:
        save_stats(stats, path)
        del stats, G, moments  # (the moments are views into G: holding them would keep a second copy alive)
        stats = read_stats(path, key, kind)
        if stats is None:
            raise IfpruneError(f"compensation statistics written to {path} could not be read back: check the disk")
        return stats
    for i in range(0 if G is None else G.shape[0]):
        decode_layer(**encode_layer(G[i]), out=G[i])
    return stats


def stats_bytes(lm) -> int:
    """Memory the statistics need on top of the model: every layer's d_ffn x d_ffn float32 moments, plus one
    layer's float16 copy and the activations of one batch while they are written and gathered."""
    d, L = lm.d_ffn, lm.num_layers
    return L * d * d * 4 + 2 * d * d * 2 + 4096 * d * 4 * 3


def stats_disk_bytes(lm, kind: str = "moments") -> int:
    """What the statistics take on disk: float16 correlations and float32 scales per layer (moments), or the
    float32 means alone."""
    d, L = lm.d_ffn, lm.num_layers
    return L * d * 4 * 2 + (L * d * d * 2 if kind == "moments" else 0)


def check_stats_memory(lm) -> None:
    """A clear error before a statistics pass that would run the machine out of memory."""
    require_memory(stats_bytes(lm), f"compensation statistics for this model ({lm.num_layers} layers x "
                   f"{lm.d_ffn}^2 float32 moments)",
                   "use --compensate mean (means alone) or none, or a machine with more memory")


# the refit at plan-load time ---------------------------------------------------------------------
def down_weight(layer) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A layer's down projection as [hidden, d_ffn] (Conv1D stores it transposed) and its bias."""
    from ..core.ffn import Conv1D

    w = layer.down.weight.detach()
    w = w.T if isinstance(layer.down, Conv1D) else w
    b = getattr(layer.down, "bias", None)
    return w, None if b is None else b.detach()


def layer_chunks(layers: int, k: int, budget: int) -> list[slice]:
    """Slices of layers whose k x k refit blocks (about four float32 copies each: the gathered block, the
    ridged one, its Cholesky factor, the solve) fit `budget` bytes together: one slice for small models, a few
    layers at a time for large ones, so the refit's memory does not grow with the depth."""
    per = max(1, budget // max(1, 16 * k * k))
    return [slice(i, min(i + per, layers)) for i in range(0, layers, per)]


class Compensator:
    """Refits a plan's down projections from calibration moments (optionally mixed with a prompt's
    own); refits are kept per (plan, prompt statistics) so per-task plans pay once. The moments are
    read or computed on the first refit (or by `ensure_stats`), so a dense run never pays for them."""

    REFIT_BYTES = 1 << 30  # working memory of one refit chunk (layer_chunks)

    def __init__(self, lm, config: CompensationConfig, stats: LayerStats | None = None, cache_size: int = 4,
                 progress: bool = True, use_cache: bool = True):
        self.config = config
        self.stats = stats
        self.fingerprint = lm.fingerprint()
        self._lm = lm
        self._layout = lm.layout
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = cache_size
        self._progress, self._use_cache = progress, use_cache
        self._down = None
        self.last_refit_s = 0.0

    def describe(self) -> dict:
        out = self.config.describe()
        if self.stats is not None:
            out["statistics_tokens"] = self.stats.tokens
            out["statistics_precision"] = self.stats.precision
        return out

    def ensure_stats(self) -> LayerStats:
        if self.stats is None:
            if self._lm.fingerprint() != self.fingerprint:
                raise IfpruneError("the model's weights changed after compensation was turned on; turn it on again")
            self.stats = layer_stats(self._lm, self.config, progress=self._progress, use_cache=self._use_cache)
        return self.stats

    def _weights(self):
        """Down weights [L, hidden, d] and biases (float32 copies) and W @ G, computed once per model
        (a refit then only gathers columns of W @ G)."""
        if self._down is None:
            pairs = [down_weight(layer) for layer in self._layout.layers]
            W = torch.stack([w.float().cpu() for w, _ in pairs])
            b = None if pairs[0][1] is None else torch.stack([b.float().cpu() for _, b in pairs])
            self._down = (W, b, W @ self.stats.G, pairs[0][0].dtype)
        return self._down

    def refit(self, plan, prompt: "PromptMoments | None" = None) -> list[tuple[torch.Tensor | None, torch.Tensor | None]]:
        """Per layer (W'_S [hidden, k], b' or None) for `plan`, in the down weight's dtype; W'_S is None where the
        gathered weights stand (mode "mean")."""
        use_prompt = self.config.mode == "prompt" and prompt is not None
        key = (plan.hash, prompt.key if use_prompt else None)
        if key in self._cache:
            self._cache.move_to_end(key)
            self.last_refit_s = 0.0
            return self._cache[key]
        self.ensure_stats()
        t0 = time.perf_counter()
        idx = plan.indices.to(torch.long)
        if self.config.mode == "mean":
            out = self._mean_refit(idx)
        else:
            out = self._least_squares_refit(idx, prompt if use_prompt else None)
        self._cache[key] = out
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        self.last_refit_s = time.perf_counter() - t0
        return out

    def _mean_refit(self, idx: torch.Tensor) -> list[tuple[None, torch.Tensor]]:
        """Mode "mean": the gathered weights stand (None), the dropped channels' mean output becomes the bias. One
        layer's weights at a time, in float32: no copy of every layer's down projection."""
        out = []
        for i, layer in enumerate(self._layout.layers):
            w, b = down_weight(layer)
            out.append((None, mean_bias(w, b, self.stats.mean[i], idx[i]).to(w.dtype)))
        return out

    def _least_squares_refit(self, idx: torch.Tensor, prompt) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        W, b, WG, dtype = self._weights()
        use_prompt = prompt is not None
        out = []
        for sl in layer_chunks(W.shape[0], idx.shape[-1], self.REFIT_BYTES):  # layers are independent
            blocks = kept_blocks(W[sl], self.stats.G[sl], self.stats.mean[sl], idx[sl], WG[sl])
            if use_prompt:
                blocks = blocks.mix(token_blocks(W[sl], prompt.H[sl], idx[sl]), self.config.prompt_weight)
            W_s, b_s = solve_refit(blocks, None if b is None else b[sl], self.config.ridge, W.dtype,
                                   self.config.shrink)
            out += [(W_s[i].to(dtype), None if b_s is None else b_s[i].to(dtype)) for i in range(W_s.shape[0])]
        return out


class PromptMoments:
    """A prompt's own FFN activations H [layers, tokens, d_ffn] (mode "prompt"): kept as tokens, not
    as d x d moments, so mixing them in costs a few small matmuls (compensation.token_blocks)."""

    def __init__(self, H: torch.Tensor, key: str):
        self.H = H
        self.key = key


def prompt_moments(lm, ids: torch.Tensor) -> PromptMoments:
    """One dense pass over the prompt ids [1, T] (decoder body only)."""
    from ..core.prompt_pass import decoder_body

    H = torch.zeros(lm.num_layers, ids.shape[-1], lm.d_ffn)

    def keep(i, x):
        H[i] = x.reshape(-1, x.shape[-1]).float().cpu()

    with torch.no_grad(), record_intermediates(lm.layout, keep):
        decoder_body(lm.model)(input_ids=ids.to(lm.device), use_cache=False)
    return PromptMoments(H, hashlib.sha256(ids.cpu().numpy().tobytes()).hexdigest()[:16])


def described(lm, dense: bool = False) -> dict:
    """What output compensation `lm` runs, for outputs and cards ({"mode": "none"} when off or dense)."""
    comp = getattr(lm, "compensator", None)
    return comp.describe() if comp is not None and not dense else {"mode": "none"}


def default_mode(lm=None) -> str:
    """`calibration` for training-free plans; on weights a trained artifact tuned, what it was trained
    under (recipe `compensate`): `none` for the artifacts trained under plainly gathered masks, where a
    refit on top measured worse (v2 keep 1/2: validation NLL 2.124 plain vs 2.165 refit; v1 2.204 vs
    2.192 but worse on gsm8k; results/training/v2)."""
    if lm is not None and lm.weights().get("tuned_by"):
        return lm.trained_compensation
    return CompensationConfig.mode


def check_holds_bias(lm) -> None:
    """Mode "mean" writes a bias on the down projection: the architecture must have one, or a config switch
    that adds it (Llama's `mlp_bias`), so an export loads in stock runtimes."""
    if lm.layout.layers[0].down.bias is None and not hasattr(lm.model.config.get_text_config(), "mlp_bias"):
        raise IfpruneError(f"--compensate mean adds a bias to the down projection, which {type(lm.model).__name__} "
                           "has no place for: use --compensate calibration or none")


def compensate(lm, config: CompensationConfig | str | None = None, *, progress: bool = True,
               use_cache: bool = True) -> Compensator | None:
    """Turn compensation on for every compact model of `lm` (mode "none": off); returns it. The
    statistics are gathered on the first pruned plan (or call `ensure_stats()` to pay up front)."""
    if config is None or isinstance(config, str):
        config = CompensationConfig(mode=config or CompensationConfig.mode)
    lm.set_compensator(None)
    if config.mode == "none":
        return None
    if config.mode == "mean":
        check_holds_bias(lm)
    comp = Compensator(lm, config, progress=progress, use_cache=use_cache)
    lm.set_compensator(comp)
    return comp
