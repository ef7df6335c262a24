"""The inference path, top to bottom: encode -> select -> load plan -> generate, timed per stage."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, fields, replace
from typing import TextIO

import torch
from transformers import TextStreamer

from ..core.errors import IfpruneError
from ..core.plan import Plan
from ..core.prompting import check_length, encode_prompt, eos_ids
from ..selection.prefill import carried_cache, check_prefill, crop_to, prompt_cache, read_all_of, reads_prompt_dense
from ..selection.refresh import (Reselection, answer_goes_on, check_refresh, prompt_cache_state, refresh_plan,
                                 mode_of, reselect_settings, resolve_reselection, segment_lengths)
from ..selection.selectors import Selector, make_selector
from .lean import LeanDecoder, decode_segment
from .lean import supports as lean_ok
from .segment import run_segment


@dataclass
class SamplingConfig:
    """Greedy when temperature == 0 (the default, for reproducible answers)."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False  # always produce max_new_tokens (benchmarks)

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise IfpruneError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise IfpruneError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise IfpruneError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.repetition_penalty <= 0:
            raise IfpruneError("top_k must be >= 0 and repetition_penalty > 0")

    def generate_kwargs(self) -> dict:
        kw = dict(max_new_tokens=self.max_new_tokens, repetition_penalty=self.repetition_penalty)
        if self.ignore_eos:
            kw["min_new_tokens"] = self.max_new_tokens
        if self.temperature > 0:
            kw.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or None)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw


@dataclass(frozen=True)
class RuntimeConfig:
    """Which engine decodes and at which weight type: "torch" (the model in its loaded dtype, or with `weights`
    "int8" the compact model's linears at int8: core.quantized) or "llamacpp" (runtime.llamacpp: the compact model
    as a GGUF of `weights` type in llama.cpp, plans written into it in place; default q8_0)."""

    engine: str = "torch"
    weights: str | None = None  # torch: None (as loaded) or "int8"; llama.cpp: its tensor type (None: q8_0)
    threads: int = 1
    n_ctx: int = 4096

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise IfpruneError(f"--runtime must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.engine == "llamacpp":
            from .llamacpp import check_weights

            object.__setattr__(self, "weights", check_weights(self.weights or "q8_0"))
        else:
            from ..core.quantized import check_quant

            object.__setattr__(self, "weights", check_quant(self.weights))

    def compact(self, lm, width: int):
        from .llamacpp import compact_for

        return compact_for(lm, width, weights=self.weights, threads=self.threads, n_ctx=self.n_ctx)

    def describe(self) -> dict:
        return {"engine": self.engine, "weights": self.weights}


ENGINES = ("torch", "llamacpp")


@dataclass
class GenerationResult:
    text: str
    selector: str
    ffn_width: int
    d_ffn: int
    active_params: int
    total_params: int
    new_tokens: int
    prompt_tokens: int
    plan_hash: str | None
    timings: dict = field(default_factory=dict)
    compensation: dict = field(default_factory=lambda: {"mode": "none"})
    refresh: dict | None = None  # {"after", "plan_hash" (the last), "count", "every"} when re-selected mid-answer
    refresh_after: int | None = None  # the re-selection setting in effect (None: off), reached or not
    refresh_every: bool = False  # re-selection after every `refresh_after` tokens, not once
    prefill: str = "pruned"  # "dense": the full model read the prompt (selection.prefill)
    runtime: dict = field(default_factory=lambda: {"engine": "torch"})  # RuntimeConfig.describe()
    plan: Plan | None = field(default=None, repr=False)
    refresh_plan: Plan | None = field(default=None, repr=False)  # the re-selected plan, when there was one

    @property
    def reselection(self) -> dict:
        """What ran, in the one shape every command reports: mode off|once|every, tokens between re-selections,
        how many ran, the prefill, and (when one ran) the hash of the last re-selected plan."""
        out = {"mode": mode_of(self.refresh_after, self.refresh_every), "tokens": self.refresh_after,
               "count": self.refresh["count"] if self.refresh else 0, "prefill": self.prefill}
        return {**out, "plan_hash": self.refresh["plan_hash"]} if self.refresh else out

    def to_dict(self) -> dict:
        """The JSON of `generate --json`: re-selection only as `reselection` (the attributes `refresh`,
        `refresh_after`, `refresh_every` and `prefill` are its parts)."""
        skip = ("plan", "refresh_plan", "refresh", "refresh_after", "refresh_every", "prefill")
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        out["timings"] = dict(self.timings)
        out["reselection"] = self.reselection
        return out

    def summary(self) -> str:
        t = self.timings
        comp = self.compensation.get("mode", "none")
        timed = self.new_tokens - 1 - (self.refresh["count"] if self.refresh else 0)  # each refresh's prefill makes one
        decode_tps = timed / t["decode_s"] if t["decode_s"] > 0 and timed > 0 else 0.0
        every = f"every {self.refresh_after} tok" if self.refresh_every else f"after {self.refresh_after} tok"
        refreshed = (f", re-selected {every} ({self.refresh['count']}x, {t['refresh_s'] * 1e3:.0f} ms)"
                     if self.refresh else
                     f", re-selection ({every}) not reached" if self.refresh_after else "")
        weights = self.runtime.get("weights")
        engine = (f" llama.cpp {weights}" if self.runtime.get("engine", "torch") != "torch"
                  else f" {weights}" if weights else "")
        return (
            f"[{self.selector}{engine}] active params {self.active_params / 1e6:.1f}M of {self.total_params / 1e6:.1f}M "
            f"({self.active_params / self.total_params:.0%}), FFN width {self.ffn_width}/{self.d_ffn}"
            f"{'' if self.ffn_width == self.d_ffn else ', compensation ' + comp} | "
            f"selection {t['selection_s'] * 1e3:.0f} ms, loading {t['loading_s'] * 1e3:.1f} ms, "
            f"prefill {t['prefill_s'] * 1e3:.0f} ms ({self.prompt_tokens} tok{', dense' if self.prefill == 'dense' else ''}), "
            f"decode {t['decode_s']:.2f} s ({self.new_tokens} tok, {decode_tps:.1f} tok/s){refreshed}"
        )


class _TimingStreamer(TextStreamer):
    """Records when the first new token arrives (end of prefill) and optionally echoes text."""

    def __init__(self, tokenizer, out: TextIO | None):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.out = out
        self.first_token_at: float | None = None
        self._seen_prompt = False

    def put(self, value):
        if self._seen_prompt and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self._seen_prompt = True
        if self.out is not None:  # (nothing to echo: no text to decode either)
            super().put(value)

    def end(self):
        if self.out is not None:
            super().end()

    def on_finalized_text(self, text: str, stream_end: bool = False):
        if self.out is not None:
            self.out.write(text + ("\n" if stream_end and not self.continues else ""))
            self.out.flush()

    continues = False  # a refresh follows: the answer goes on after this segment's end


def resolve_plan(lm, selector: Selector, width: int, prompt: str, task: str | None) -> Plan | None:
    """None means "run the full model": dense selector, or width equal to d_ffn."""
    if width == lm.d_ffn:
        return None
    return selector.select(lm, task if task is not None else prompt, width)


@dataclass
class Decoded:
    """What `decode_answer` produced: the sequence, the plans each re-selection picked, and where the time went."""

    out: torch.Tensor  # [1, prompt + new tokens]
    plans: list  # the re-selected plans, in order
    prefill_s: float  # to the first new token
    decode_s: float  # decoding only: each re-selection, its load and prefill are refresh_s
    refresh_s: float
    parts: dict  # of refresh_s: {"select": the re-selection passes, "load": the plans' loads}
    dense: bool  # whether the full model read the prompt


def decode_answer(lm, ids: torch.Tensor, plan: Plan | None, model, compact, *, selector: Selector, text: str | None,
                  source: str | None, rs: Reselection, sampling: SamplingConfig, llamacpp: bool = False,
                  prompt_stats=None, stream: TextIO | None = None, stop: list[str] | None = None) -> Decoded:
    """The answer to `ids` [1, T] once its plan is chosen and loaded: the one segment loop `generate` and eval's
    scorer share. `plan`: loaded into `compact` (a CompactModel, or a llama.cpp one with `llamacpp`), whose decoder
    `model` is (None, with `model` the full model: no segments, no re-selection). Re-selection (`rs`) re-scores
    `text` with `selector` plus GRIFFIN over the answer so far, from the selector's own pass over `source` (the
    prompt's text; None: a task's plan) where it read these ids. `stop`: strings that end the answer (the caller
    cuts at them)."""
    tok = lm.tokenizer

    def decoder(c):  # what decodes a compact model: the torch module, or its llama.cpp engine
        return c.engine if llamacpp else c.model

    pruned = plan is not None
    refresh, refresh_every = rs.refresh, rs.every
    lengths = segment_lengths(sampling.max_new_tokens, refresh if pruned else None, refresh_every)
    dense = reads_prompt_dense(rs.prefill) and pruned
    carry = rs.prefill == "dense-answer" and pruned  # each re-selection's dense pass fills the answer's cache too
    kept = rs.prefill == "kept" and pruned and len(lengths) > 1  # the answer's cache as decoded (selection.decoded)
    cache = state = kept_state = None
    lean = not llamacpp and lean_ok(model)  # runtime.lean decodes
    engine = []  # with "kept" under runtime.lean: one engine for the whole answer, its cache kept across plans

    def segment(model, cur, n, streamer):
        # positions already in the cache: the full model's (a dense prefill), then with "kept" the answer's too
        keep = (cur.shape[1] if carry or kept else ids.shape[1]) - 1 if dense else 0
        if llamacpp:
            return run_segment(model, cur, n, sampling, eos_ids(lm), streamer, keep=keep, stop=stop, tokenizer=tok)
        if lean and kept:  # (the compact model's modules stay the same objects as plans load into them)
            if not engine:
                engine.append(LeanDecoder(model, ids.shape[1] + sampling.max_new_tokens))
                engine[0].set_prefix(cache, keep)
            with kept_state.record(compact, first=cur is ids, engine=engine[0]):
                return run_segment(engine[0], cur, n, sampling, eos_ids(lm), streamer, keep=keep, stop=stop,
                                   tokenizer=tok)
        if lean:
            return decode_segment(model, cur, n, sampling, eos_ids(lm), cache=cache, keep=keep, streamer=streamer,
                                  stop=stop, tokenizer=tok)
        kw = replace(sampling, max_new_tokens=n).generate_kwargs()
        if stop:
            kw.update(stop_strings=stop, tokenizer=tok)
        with torch.inference_mode(), (kept_state.record(compact, first=cur is ids) if kept
                                      else contextlib.nullcontext()):
            return model.generate(cur, attention_mask=torch.ones_like(cur), streamer=streamer,
                                  pad_token_id=tok.pad_token_id, cache=crop_to(cache, keep), **kw)

    def goes_on(out, start, after):
        """Whether the last segment used all its tokens without ending the answer (end of turn or a stop string)."""
        if not answer_goes_on(lm, out, start, after, ignore_eos=sampling.ignore_eos):
            return False
        return not stop or not _holds_stop(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True), stop)

    streamer = _TimingStreamer(tok, stream)
    streamer.continues = len(lengths) > 1
    t1 = time.perf_counter()
    if dense:  # part of the prefill: it replaces the compact model's pass over the prompt
        if len(lengths) > 1:  # re-selection continues this pass
            cache, state = prompt_cache_state(lm, selector, source, ids, copied=not lean)
            if kept:
                from ..selection.decoded import KeptReselection

                kept_state = KeptReselection(lm, state.squares)
        else:
            cache = prompt_cache(lm, selector, source, ids)
        if llamacpp:
            from .llamacpp import dense_prefix

            model.set_prefix(dense_prefix(lm, cache))
    start, out = ids.shape[1], segment(model, ids, lengths[0], streamer)
    t2 = time.perf_counter()
    first = streamer.first_token_at or t2
    decode_s, refresh_s, plans = t2 - first, 0.0, []
    parts = {"select": 0.0, "load": 0.0}  # of refresh_s: the re-selection pass and the plan's load (the rest: prefill)
    for i, n in enumerate(lengths[1:], 1):
        if not goes_on(out, start, lengths[i - 1]):
            break  # the last segment ended the answer
        t_r = time.perf_counter()
        if kept:  # GRIFFIN over the answer from the FFN inputs the compact model read: no dense pass
            plans.append(kept_state.next_plan(selector, text, plan.width, refresh, out.shape[1]))
        else:
            plans.append(refresh_plan(lm, selector, text, out[0], plan.width, refresh, state))
        t_l = time.perf_counter()
        compact.load(plans[-1], prompt=prompt_stats, **({} if llamacpp else {"reuse": True}))
        if carry:  # the re-selection's pass read `out`: the next segment attends to its KV cache
            if not read_all_of(state, out):
                raise IfpruneError("internal: the re-selection pass did not read the answer so far")
            if llamacpp:  # written into llama.cpp's cache straight from the pass's (no torch copy)
                from .llamacpp import dense_prefix

                decoder(compact).set_prefix(dense_prefix(lm, state.cache, out.shape[1] - 1))
            else:
                cache = state.cache if lean else carried_cache(state, out)  # (lean reads, never writes, it)
        parts["select"] += t_l - t_r
        parts["load"] += time.perf_counter() - t_l
        streamer = _TimingStreamer(tok, stream)
        streamer.continues = i < len(lengths) - 1
        start, out = out.shape[1], segment(decoder(compact), out, n, streamer)
        t3 = time.perf_counter()
        r_s = (streamer.first_token_at or t3) - t_r
        refresh_s += r_s
        decode_s += t3 - t_r - r_s
    if streamer.continues and stream is not None:
        stream.write("\n")  # the answer ended before the segment planned after this one: end its line here
        stream.flush()
    return Decoded(out, plans, first - t1, decode_s, refresh_s, parts, dense)


def _holds_stop(text: str, stop: list[str]) -> bool:
    return any(s in text for s in stop)


def generate(lm, prompt: str, *, selector: str | Selector = "dense", width: int | None = None,
             plan: Plan | None = None, task: str | None = None, sampling: SamplingConfig | None = None,
             chat: bool = True, stream: TextIO | None = None, reselect: str | None = None,
             reselect_tokens: int | None = None, prefill: str | None = None,
             runtime: RuntimeConfig | None = None, refresh: int | None = None,
             refresh_every: bool | None = None) -> GenerationResult:
    """Answer `prompt` with the compact model that `selector` (or a given `plan`) picks.

    `task`: select from this task description instead of the prompt (per-task use; the plan is cached
    by the selector and reused for every prompt of the task; re-selection, when on, starts from it).
    `reselect` "off" | "once" | "every" and `reselect_tokens` N: after N answer tokens (once, or after every N),
    re-select from the selector's scores plus GRIFFIN's over the tokens so far, and go on under that plan
    (selection.refresh); the same setting, with the same independent defaults, as the CLI's --reselect and
    --reselect-tokens (None: the selector's own: every 32 for the shipped artifacts, else off; a mode alone takes
    the artifact's N, else 32). `refresh` / `refresh_every`: the earlier spelling, deprecated. `prefill="dense"`: the full model reads the prompt (but its last token) and the compact model attends
    to that KV cache (selection.prefill); each re-selection then re-runs only the answer so far under the new
    plan, not the prompt. None: dense when re-selecting every R tokens, else pruned.
    `runtime`: which engine decodes (torch, the default, or llama.cpp; see RuntimeConfig).
    """
    runtime = runtime or RuntimeConfig()
    sampling = sampling or SamplingConfig()
    sampling.validate()
    sel = make_selector(selector) if isinstance(selector, str) else selector
    refresh, refresh_every = reselect_settings(reselect, reselect_tokens, refresh, refresh_every, sel,
                                               where="generate")
    if plan is not None and (check_refresh(refresh) is not None or refresh_every):
        raise IfpruneError("re-selection picks new plans with a selector: it cannot follow a fixed plan file "
                           "(reselect='off')")
    rs = resolve_reselection(refresh, refresh_every, prefill, sel) if plan is None else Reselection.off(prefill)
    refresh, refresh_every = rs.refresh, rs.every
    if runtime.engine == "llamacpp":
        check_prefill(rs.prefill, without_kept="the llama.cpp runtime")
    ids = encode_prompt(lm.tokenizer, prompt, chat=chat)
    check_length(ids.shape[1], sampling.max_new_tokens, lm.context_length())
    ids = ids.to(lm.device)

    llamacpp = runtime.engine == "llamacpp"
    if not llamacpp:  # (before selecting: the selector's passes run at the decode's weight type, LoadedModel.reader)
        lm.set_quant(runtime.weights)
    t0 = time.perf_counter()
    given_plan = plan is not None
    if plan is None:
        width = lm.d_ffn if width is None else width
        plan = resolve_plan(lm, sel, width, prompt, task)
    selection_s = time.perf_counter() - t0

    loading_s = 0.0
    model, compact, prompt_stats = lm.model, None, None
    compensation = {"mode": "none"}
    compact_of = (lambda w: runtime.compact(lm, w)) if llamacpp else lm.compact

    def decoder(compact):  # what decodes a compact model: the torch module, or its llama.cpp engine
        return compact.engine if llamacpp else compact.model

    if llamacpp:  # the dense model too runs in llama.cpp, at the same weight type
        model = decoder(compact_of(plan.width if plan is not None else lm.d_ffn))
    if plan is not None and not plan.is_dense:
        compact = compact_of(plan.width)
        comp = lm.compensator
        if comp is not None:
            comp.ensure_stats()  # a one-off pass over calibration text (cached on disk), not loading time
            if comp.config.mode == "prompt":
                from ..compensation.calibration import prompt_moments

                source = ids if task is None else encode_prompt(lm.tokenizer, task, chat=chat).to(lm.device)
                t_p = time.perf_counter()
                prompt_stats = prompt_moments(lm, source)
                selection_s += time.perf_counter() - t_p
            compensation = comp.describe()
        loading_s = compact.load(plan, prompt=prompt_stats)
        model = decoder(compact)
    elif not llamacpp and lm.quant is not None:  # the dense model at the quantized type: every channel, in a full-width compact model
        model, loading_s = lm.dense_decoder()
    width = plan.width if plan is not None else lm.d_ffn

    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    pruned = plan is not None and not plan.is_dense
    ans = decode_answer(lm, ids, plan if pruned else None, model, compact if pruned else None, selector=sel,
                        text=task if task is not None else prompt, source=prompt if task is None else None, rs=rs,
                        sampling=sampling, llamacpp=llamacpp, prompt_stats=prompt_stats if pruned else None,
                        stream=stream)
    out, plans = ans.out, ans.plans
    refreshed = ({"after": refresh, "plan_hash": plans[-1].hash, "count": len(plans), "every": refresh_every}
                 if plans else None)
    new = out[0, ids.shape[1]:]
    return GenerationResult(
        text=lm.tokenizer.decode(new, skip_special_tokens=True),
        selector=(plan.meta.get("selector", "plan (no metadata)") if given_plan else sel.name) if plan is not None
        else "dense",
        ffn_width=width,
        d_ffn=lm.d_ffn,
        active_params=lm.active_params(width),
        total_params=lm.total_params(),
        new_tokens=int(new.numel()),
        prompt_tokens=int(ids.shape[1]),
        plan_hash=plan.hash if plan is not None else None,
        timings={"selection_s": selection_s, "loading_s": loading_s, "prefill_s": ans.prefill_s,
                 "decode_s": ans.decode_s,
                 **({"refresh_s": ans.refresh_s, "refresh_select_s": ans.parts["select"],
                     "refresh_load_s": ans.parts["load"]} if refreshed else {})},
        compensation=compensation,
        refresh=refreshed,
        refresh_after=refresh if pruned else None,
        refresh_every=bool(refresh_every and refresh and pruned),
        prefill=rs.prefill if ans.dense else "pruned",
        runtime=runtime.describe(),
        plan=plan,
        refresh_plan=plans[-1] if plans else None,
    )
