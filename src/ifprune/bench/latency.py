"""The paper's latency protocol, dense and compact side by side: batch 1, a long prompt, a fixed
number of new tokens, several samples per query; time split into selection, loading, prefill,
time to first token and per-token decode.

Selection and loading happen once per query (the plan is then reused for every sample, as in the
paper); prefill and decode are measured per sample with `fastdecode.StaticDecoder` for both models,
so the comparison isolates the FFN width. Works on a real model or on random weights of any HF
config shape (e.g. Llama-3.1-8B), built directly on the target device.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from itertools import accumulate
from pathlib import Path

import torch

from ..compensation.calibration import described
from ..core.errors import IfpruneError
from ..runtime.fastdecode import StaticDecoder, sync_device
from ..core.plan import Plan, width_from_keep
from ..selection.selectors import GriffinSelector, make_selector

PRESETS = {  # HF config fields of well-known shapes (random weights; no download)
    "llama-3.1-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         max_position_embeddings=131072, rope_theta=500000.0, tie_word_embeddings=False),
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         max_position_embeddings=131072, rope_theta=500000.0, tie_word_embeddings=True),
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, head_dim=64,
                         max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True),
    "llama-0.3b": dict(model_type="llama", hidden_size=1024, intermediate_size=4096, num_hidden_layers=16,
                       num_attention_heads=16, num_key_value_heads=4, vocab_size=32000,
                       max_position_embeddings=8192, tie_word_embeddings=True),
}


@dataclass
class BenchConfig:
    prompt_tokens: int = 4096
    new_tokens: int = 100
    samples: int = 4
    queries: int = 1
    keep: float | None = None  # None and no width: 0.5 (every command's default), or a trained artifact's own width
    width: int | None = None
    selector: str = "griffin"
    checkpoint: str | None = None  # trained artifact for selector "predictor"
    backbone_layers: int | None = None  # untrained "predictor": read out after this many layers
    compile: bool | None = None  # None: on CUDA only
    seed: int = 0
    refresh: int | None = None  # re-select after this many new tokens; None: the artifact's own default, 0: off
    refresh_every: bool | None = None  # after every R new tokens; None: as generate (selection.refresh.resolve_reselection)
    prefill: str | None = None  # selection.prefill.PREFILLS; None: as generate (selection.refresh.resolve_reselection)

    @classmethod
    def for_device(cls, device: str, **overrides) -> "BenchConfig":
        """The paper's protocol on a GPU; a smaller one on CPU so a run takes minutes, not hours."""
        base = cls() if str(device).startswith("cuda") else cls(prompt_tokens=512, new_tokens=32, samples=4)
        for k, v in overrides.items():
            if v is not None:
                setattr(base, k, v)
        return base

    def validate(self) -> None:
        for name in ("prompt_tokens", "new_tokens", "samples", "queries"):
            if getattr(self, name) < 1:
                raise IfpruneError(f"{name} must be >= 1, got {getattr(self, name)}")
        from ..selection.refresh import check_refresh

        check_refresh(self.refresh)
        if self.prefill is not None:
            from ..selection.prefill import check_prefill

            check_prefill(self.prefill, without_kept="bench's static-cache decoder")


def shape_config(config: str | Path):
    """The HF config of a preset name or of a config.json path (or a directory holding one)."""
    from transformers import AutoConfig

    if str(config) in PRESETS:
        fields = dict(PRESETS[str(config)])
        return AutoConfig.for_model(fields.pop("model_type"), **fields)
    if Path(config).is_file() or (Path(config) / "config.json").is_file():
        return AutoConfig.from_pretrained(str(config))
    raise IfpruneError(f"unknown config {config!r}: use a preset ({', '.join(PRESETS)}) or a config.json path")


def random_model(config: str | Path, *, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0):
    """A LoadedModel with random weights of a preset name or a config.json path, built on `device`."""
    from transformers import AutoModelForCausalLM

    from ..core.loading import LoadedModel

    cfg = shape_config(config)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return LoadedModel(model.eval(), None, f"random:{config}")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class PromptSelection:
    """What the benchmark times as "selection": prompt token ids -> plan.

    griffin and predictor read the prompt (one dense pass of the decoder body, no LM head; the
    predictor stops after its read-out layer); other selectors are static and ignore it. Without a
    trained artifact, "predictor" is an untrained head of the published shape: the same cost, a
    meaningless plan, so it is labelled a timing stand-in.
    """

    def __init__(self, lm, cfg: "BenchConfig"):
        self.lm, self.cfg, self.label = lm, cfg, cfg.selector
        self.head, self.layers, self.selector = None, cfg.backbone_layers, None
        if cfg.selector == "predictor":
            if cfg.checkpoint:
                from ..selection.predictor import PredictorSelector

                self.selector = PredictorSelector(checkpoint=cfg.checkpoint)
                if self.layers is not None and self.layers != self.selector.artifact.backbone_layers:
                    raise IfpruneError("--backbone-layers is fixed by the artifact; leave it out with --checkpoint")
                self.selector.artifact.attach(lm)  # before any compact model exists: attach resets them
                self.layers = self.selector.artifact.backbone_layers
                self.label = f"predictor ({self.selector.artifact.kind}, {Path(cfg.checkpoint).name})"
            else:
                from ..selection.heads import PredictorHead

                hidden = lm.model.config.get_text_config().hidden_size
                torch.manual_seed(cfg.seed)
                self.head = PredictorHead(hidden, lm.num_layers, lm.d_ffn).to(lm.device).eval()
                self.label = "predictor (untrained head: timing stand-in)"
            if self.layers is not None:
                self.label += f", backbone {self.layers} of {lm.num_layers} layers"
        elif cfg.checkpoint or cfg.backbone_layers is not None:
            raise IfpruneError("--checkpoint and --backbone-layers go with --selector predictor")
        elif cfg.selector != "griffin":
            self.selector = make_selector(cfg.selector, seed=cfg.seed)
            if getattr(self.selector, "per_prompt", False):
                raise IfpruneError(f"selector {cfg.selector!r} needs prompt text, which random-token prompts do "
                                   "not have: use griffin, predictor or a static selector")

    def width(self) -> int:
        art = getattr(self.selector, "artifact", None)
        if art is not None and art.kind == "predictor":
            if self.cfg.keep is None and self.cfg.width is None:
                return art.width
            w = width_from_keep(self.cfg.keep, self.cfg.width, self.lm.d_ffn)
            if w != art.width:
                raise IfpruneError(f"artifact {self.cfg.checkpoint} was trained at width {art.width}, not {w}: "
                                   "leave out --keep/--width")
            return w
        return width_from_keep(0.5 if self.cfg.keep is None and self.cfg.width is None else self.cfg.keep,
                               self.cfg.width, self.lm.d_ffn)

    def scores(self, ids: torch.Tensor) -> torch.Tensor | None:
        """[layers, d_ffn] of a per-prompt selector; None for a static one."""
        if self.cfg.selector == "griffin":
            with torch.inference_mode():
                return GriffinSelector.scores_from_ids(self.lm, ids)
        if self.head is not None:
            from ..selection.predictor import head_scores

            return head_scores(self.head, self.lm.model, ids, None, self.layers)[0]
        if self.cfg.selector == "predictor":
            if self.selector.keeps_prompt_state:  # as PredictorSelector.scores: keep the pass's state
                s, self._state = self.selector.scores_with_state(self.lm, ids)
                return s
            return self.selector.scores_from_ids(self.lm, ids)[0]
        return None

    _state = None

    def __call__(self, ids: torch.Tensor, width: int) -> Plan:
        s = self.scores(ids)
        self._last = (ids, s)
        if s is None:
            return self.selector.select(self.lm, None, width)
        return Plan.from_scores(s, width, {"selector": self.cfg.selector})

    _last = None

    def prefix(self, ids: torch.Tensor):
        """What fills a dense prefill's cache: the selector's own prompt pass when it kept one for `ids` (as
        `generate --prefill dense` copies it), else the full model, run again."""
        state = self._state
        if state is not None and state.ids.numel() == ids.shape[1] and torch.equal(state.ids, ids[0].cpu()):
            return state.cache
        return self.lm.model

    def answer_prefix(self, seen: torch.Tensor):
        """What fills a "dense-answer" prefill after a re-selection over `seen` (prompt + answer so far): that
        pass's own KV cache when it read them all, else the full model, run again."""
        from ..selection.prefill import read_all_of

        return self._state.cache if read_all_of(self._state, seen) else self.lm.model

    def refreshed(self, ids: torch.Tensor, width: int) -> Plan:
        """The re-selection after the first answer tokens (`ids`: prompt + those tokens), timed as the runtime
        pays it: the first selection's scores of the prompt (kept, as Selector.cached_scores keeps them) plus
        GRIFFIN's over everything (selection.refresh)."""
        from ..selection.refresh import combine, seen_scores

        prompt = ids[:, : self.cfg.prompt_tokens]
        last = self._last
        own = last[1] if last is not None and torch.equal(last[0], prompt) else self.scores(prompt)
        if own is None:
            raise IfpruneError("re-selection needs a per-prompt selector (griffin or predictor), not a static one")
        with torch.inference_mode():
            seen = seen_scores(self.lm, ids[0], self._state)
        return Plan.from_scores(combine(own.cpu(), seen.cpu()), width, {"selector": self.cfg.selector, "refresh": True})


def run_bench(lm, cfg: BenchConfig) -> dict:
    """Measure dense and compact; returns a JSON-ready dict with per-sample raw timings and medians."""
    cfg.validate()
    from ..selection.prefill import reads_prompt_dense
    from ..selection.refresh import mode_of, resolve_reselection, segment_lengths

    select = PromptSelection(lm, cfg)
    width = select.width()
    rs = resolve_reselection(cfg.refresh, cfg.refresh_every, cfg.prefill, select.selector)
    refresh, every, prefill = rs.refresh, rs.every, rs.prefill
    if refresh is not None and refresh >= cfg.new_tokens:
        refresh = None  # the answer ends before any re-selection
    starts = list(accumulate(segment_lengths(cfg.new_tokens, refresh, every)))[:-1]  # answer tokens before each
    # re-selection: [R] once, [R, 2R, ...] with `every`
    dense, carry = reads_prompt_dense(prefill), prefill == "dense-answer"
    if width == lm.d_ffn:
        raise IfpruneError("the compact width equals the full FFN width: pass --keep below 1 or --width below d_ffn")
    ctx = lm.context_length()
    if ctx is not None and cfg.prompt_tokens + cfg.new_tokens > ctx:
        raise IfpruneError(f"prompt {cfg.prompt_tokens} + {cfg.new_tokens} new tokens exceed the context of {ctx}: "
                           "lower --prompt-tokens")
    device = lm.device
    vocab = lm.model.config.get_text_config().vocab_size
    g = torch.Generator().manual_seed(cfg.seed)
    max_len = cfg.prompt_tokens + cfg.new_tokens
    compact = lm.compact(width)
    dense_model, _ = lm.dense_decoder()  # (at --quant: the same weight type as the compact model)
    dense_dec = StaticDecoder(dense_model, max_len, compile=cfg.compile)
    compact_dec = StaticDecoder(compact.model, max_len, compile=cfg.compile)

    # warm-up: compile / allocate once on a throwaway plan and prompt (not timed)
    warm = torch.randint(3, vocab, (1, cfg.prompt_tokens), generator=g).to(device)
    select(warm, width)  # warms the selection path too (first-call allocations are not selection)
    compact.load(make_selector("random", seed=cfg.seed + 999).select(lm, None, width))
    for dec in (dense_dec, compact_dec):
        dec.generate(warm, min(cfg.new_tokens, 4))

    rows = []
    for q in range(cfg.queries):
        ids = torch.randint(3, vocab, (1, cfg.prompt_tokens), generator=g).to(device)
        sync_device(device)
        t0 = time.perf_counter()
        plan = select(ids, width)
        sync_device(device)
        selection_s = time.perf_counter() - t0
        compact.plan = None  # force the gather even if the plan repeats
        loading_s = compact.load(plan)
        refresh_s = refresh_prefill_s = 0.0
        if starts:  # once per query (each sample's answer would pay it): per re-selection, re-select, load and
            # prefill the prompt and the answer so far (after a dense prefill: the answer so far only)
            answer = torch.randint(3, vocab, (1, starts[-1]), generator=g).to(device)
            if dense:
                compact_dec.generate(ids, 1, prefix=select.prefix(ids))  # the prompt's cache the answer attends to
            for done in starts:
                seen = torch.cat([ids, answer[:, :done]], dim=1)
                sync_device(device)
                t0 = time.perf_counter()
                plan2 = select.refreshed(seen, width)
                compact.plan = None
                compact.load(plan2)
                sync_device(device)
                refresh_s += time.perf_counter() - t0
                if carry:  # the re-selection's pass filled the answer's cache: copied, not re-run
                    _, t = compact_dec.generate(seen, 1, prefix=select.answer_prefix(seen))
                else:
                    _, t = compact_dec.generate(seen, 1, keep=ids.shape[1] - 1 if dense else 0)
                refresh_prefill_s += t.prefill_s
            compact.load(plan)
        for s in range(cfg.samples):
            for name, dec in (("dense", dense_dec), ("compact", compact_dec)):
                _, t = dec.generate(ids, cfg.new_tokens, prefix=select.prefix(ids) if dense and name == "compact"
                                    else None)
                extra = selection_s + loading_s if name == "compact" and s == 0 else 0.0
                rows.append({"query": q, "sample": s, "model": name, "prefill_s": t.prefill_s,
                             "ttft_s": t.prefill_s + extra, "decode_s": t.decode_s, "per_token_s": t.per_token_s,
                             "selection_s": selection_s if name == "compact" else 0.0,
                             "loading_s": loading_s if name == "compact" else 0.0,
                             "refresh_s": refresh_s if name == "compact" else 0.0,
                             "refresh_prefill_s": refresh_prefill_s if name == "compact" else 0.0})
    summary = {}
    for name in ("dense", "compact"):
        rs = [r for r in rows if r["model"] == name]
        med = {k: statistics.median(r[k] for r in rs) for k in ("prefill_s", "decode_s", "per_token_s")}
        first = [r for r in rs if r["sample"] == 0]
        med["ttft_s"] = statistics.median(r["ttft_s"] for r in first)
        med["selection_s"] = statistics.median(r["selection_s"] for r in first)
        med["loading_s"] = statistics.median(r["loading_s"] for r in first)
        # re-selection: every answer pays, per re-selection, a selection + loading + prefill of what it re-runs
        med["refresh_s"] = statistics.median(r["refresh_s"] for r in first)
        med["refresh_prefill_s"] = statistics.median(r["refresh_prefill_s"] for r in first)
        gen = med["prefill_s"] + med["decode_s"] + med["refresh_s"] + med["refresh_prefill_s"]
        med["generation_s"] = gen
        med["query_s"] = med["selection_s"] + med["loading_s"] + cfg.samples * gen
        med["selection_loading_share_of_generation"] = (med["selection_s"] + med["loading_s"]) / gen
        med["selection_loading_share_of_query"] = (med["selection_s"] + med["loading_s"]) / med["query_s"]
        med["loading_share_of_generation"] = med["loading_s"] / gen  # per-task plan: selection cached
        summary[name] = med
    summary["decode_speedup"] = summary["dense"]["per_token_s"] / summary["compact"]["per_token_s"]
    summary["prefill_speedup"] = summary["dense"]["prefill_s"] / summary["compact"]["prefill_s"]
    summary["query_speedup"] = summary["dense"]["query_s"] / summary["compact"]["query_s"]
    return {
        "model": lm.source, "device": str(device), "device_name": device_name(device),
        "dtype": str(next(lm.model.parameters()).dtype).replace("torch.", ""), "quant": lm.quant,
        "platform": platform.platform(), "cpu_count": torch.get_num_threads() if device.type == "cpu" else None,
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "config": asdict(cfg), "width": width, "d_ffn": lm.d_ffn, "num_layers": lm.num_layers,
        "total_params": lm.total_params(), "active_params": lm.active_params(width),
        "selection": select.label,
        "reselection": {"mode": mode_of(refresh, bool(starts) and every), "tokens": refresh, "count": len(starts),
                        "prefill": prefill},
        "compiled": dense_dec.compiled, "summary": summary, "rows": rows,
        "compensation": described(lm),
    }


def to_markdown(res: dict, command: str | None = None) -> str:
    s, cfg, rs = res["summary"], res["config"], res["reselection"]
    ms = lambda v: f"{v * 1e3:.1f}"  # noqa: E731
    lines = [
        f"# Latency: {res['model']} on {res['device_name']} ({res['device']}, {res['dtype']}"
        f"{', ' + res['quant'] + ' weights' if res.get('quant') else ''})",
        "",
        f"Batch 1, {cfg['prompt_tokens']}-token prompt, {cfg['new_tokens']} new tokens, {cfg['samples']} samples "
        f"per query, {cfg['queries']} quer{'y' if cfg['queries'] == 1 else 'ies'}; compact FFN width "
        f"{res['width']}/{res['d_ffn']} ({res['active_params'] / 1e6:.1f}M of {res['total_params'] / 1e6:.1f}M "
        f"params), selector {res.get('selection', cfg['selector'])}, compensation "
        f"{res.get('compensation', {}).get('mode', 'none')}; static KV cache, compiled: {res['compiled']}. Medians.",
        "",
        "| model | selection ms | loading ms | prefill ms | TTFT ms | decode ms/token | generation s | query s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("dense", "compact"):
        m = s[name]
        lines.append(f"| {name} | {ms(m['selection_s'])} | {ms(m['loading_s'])} | {ms(m['prefill_s'])} | "
                     f"{ms(m['ttft_s'])} | {ms(m['per_token_s'])} | {m['generation_s']:.2f} | {m['query_s']:.2f} |")
    c = s["compact"]
    lines += ["", f"- decode speed-up {s['decode_speedup']:.2f}x, prefill {s['prefill_speedup']:.2f}x, "
                  f"whole query {s['query_speedup']:.2f}x",
              f"- selection + loading = {c['selection_loading_share_of_generation']:.1%} of one generation, "
              f"{c['selection_loading_share_of_query']:.1%} of the query ({cfg['samples']} samples); with a per-task plan "
              f"(selection cached) loading alone = {c['loading_share_of_generation']:.1%} of one generation",
              *([f"- re-selection {'every' if rs['mode'] == 'every' else 'after'} {rs['tokens']} new tokens "
                 f"({rs['count']} per answer; --reselect off: none): each compact answer pays "
                 f"{ms(c['refresh_s'])} ms re-selecting and loading plus {ms(c['refresh_prefill_s'])} ms of prefill "
                 f"({'the answer so far' if rs['prefill'] == 'dense' else 'prompt + the answer so far'}), counted "
                 "in its generation and query times"] if rs["mode"] != "off" else []),
              *(["- dense prefill: the compact model's prefill reads the full model's KV cache of the prompt but its "
                 "last token (copied from the selector's own pass when it keeps one, else one more pass of the full "
                 "model, counted in the compact prefill)"] if rs["prefill"] in ("dense", "dense-answer") else []),
              f"- machine: {res['platform']}, torch {res['torch']}, threads {res['cpu_count']}, "
              f"1-min load average at the end {res.get('load_average_1m')}, {res['date']}"]
    if command:
        lines.append(f"- command: `{command}`")
    return "\n".join(lines) + "\n"


def load_result(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
