"""Model work for the server: resolve a request's plan and run a batch of same-plan requests.

All of it runs on the scheduler's one worker thread. A batch is left-padded, prefilled a chunk at a time and
decoded step by step; each step hands every request its new text, so streaming, per-request `max_tokens`, stop
on EOS and cancellation (client gone) are per row while the matmuls are batched. A batch is a generator
(`batch_job`) that yields after each such unit, so the scheduler interleaves batches; each holds a compact
model of its own while it runs.

With `refresh` R (selection.refresh; the default for an artifact trained that way), a batch decodes R
tokens under its shared plan; each request still going then gets its own re-selected plan and goes on
alone from a fresh prefill of its prompt and those R tokens (`every`: re-selected again after each further
R), as `ifprune generate` runs it. With a dense prefill (selection.prefill) the full model reads the prompts
but their last token and the compact model attends to that cache; a re-selected request keeps its own copy
of it, so each later prefill runs only the answer so far.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from ..core.plan import Plan
from ..core.prompting import eos_ids

log = logging.getLogger(__name__)

DEFAULT_TASKS = {
    "code": "Write correct, efficient Python code with short explanations.",
    "math": "Solve grade-school math word problems step by step and give the final number.",
    "writing": "Write, edit and summarise clear English prose.",
    "qa": "Answer general-knowledge questions accurately and concisely.",
}


@dataclass
class GenRequest:
    """One queued completion. `emit(delta)` receives new text; `finish(reason, usage)` the end."""

    ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    mode: str = "input"  # "input": plan from `select_text`; "task": from `task`; "dense"
    select_text: str | None = None
    task: str | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    top_k: int = 0
    plan: Plan | None = None
    refreshed: Plan | None = None  # the last plan re-selected after `refresh` answer tokens, once there is one
    refreshes: int = 0  # how many re-selections ran
    state: object = None  # the selector's PromptState of this request's prompt (selection.refresh), when it keeps one
    cancelled: threading.Event = field(default_factory=threading.Event)
    events: object = None  # queue.Queue the HTTP thread reads
    arrived: float = 0.0

    solo: bool = False  # runs in a batch of its own (its first batch failed)
    emitted: bool = False  # some text went out: a failed batch cannot rerun this request

    def emit(self, kind: str, *payload) -> None:
        self.emitted = self.emitted or kind == "delta"
        if self.events is not None:
            self.events.put((kind, *payload))


class Engine:
    """Plans (cached per task and per input) and batched decoding on a LoadedModel."""

    def __init__(self, lm, selector, width: int, tasks: dict[str, str] | None = None, plan_cache: int = 256,
                 refresh: int | None = None, every: bool = False, prefill: str = "pruned"):
        self.lm, self.selector, self.width, self.refresh = lm, selector, width, refresh
        self.every, self.prefill = bool(every and refresh), prefill
        self.tasks = dict(DEFAULT_TASKS if tasks is None else tasks)
        self._plans: OrderedDict[tuple, Plan] = OrderedDict()
        self._plan_cache = plan_cache
        self.tokenizer_lock = threading.Lock()  # HF fast tokenizers are not safe to share across threads
        eos = eos_ids(lm)
        self.eos = set(eos)
        self._free: dict[tuple, list] = {}  # compact models no running batch holds, per (width, weights)
        self.pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else (eos[0] if eos else 0)

    # plans ---------------------------------------------------------------------------------
    def resolve_task(self, task: str) -> str:
        """A registered task name maps to its description; any other non-empty text is a description."""
        return self.tasks.get(task, task)

    def selection_text(self, req: GenRequest) -> str:
        return self.resolve_task(req.task) if req.mode == "task" else req.select_text

    def _plan_key(self, req: GenRequest) -> tuple:
        return (req.mode, hashlib.sha256(self.selection_text(req).encode()).digest())  # bounded memory per plan

    def selection_tokens(self, req: GenRequest) -> int:
        """About how many tokens selecting this request's plan reads (0: none, its plan is cached or dense)."""
        if req.mode == "dense" or self.width == self.lm.d_ffn or self._plan_key(req) in self._plans:
            return 0
        if req.mode == "input":
            return len(req.ids)
        with self.tokenizer_lock:
            return len(self.lm.tokenizer(self.selection_text(req), add_special_tokens=False)["input_ids"])

    def plan_for(self, req: GenRequest) -> Plan | None:
        if req.mode == "dense" or self.width == self.lm.d_ffn:
            return None
        text = self.selection_text(req)
        key = self._plan_key(req)
        plan = self._plans.get(key)
        if plan is None:
            with torch.inference_mode():
                plan = self.selector.select(self.lm, text, self.width)
            self._plans[key] = plan
            if len(self._plans) > self._plan_cache:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        # this prompt's own pass, held by the request: the selector keeps only the last prompt's, and batches of
        # other prompts run in between (their selection would replace it)
        get = getattr(self.selector, "prompt_state", None)
        req.state = get(self.lm, text) if callable(get) and req.mode == "input" else None
        return plan

    # generation ----------------------------------------------------------------------------
    def _acquire(self, width: int):
        """A compact model of `width` that no running batch holds: each batch loads its own plans into its own
        (interleaved batches would otherwise overwrite each other's weights). Built on first need and kept; a
        batch's plan often stays loaded for the next batch with it."""
        from ..core.compact import CompactModel

        key = (width, self.lm.fingerprint(), self.lm.quant)
        free = self._free.setdefault(key, [])
        if free:
            return free.pop()
        with torch.inference_mode(False):  # (its buffers are written outside inference mode too)
            return CompactModel(self.lm.model, width, self.lm.layout, self.lm.compensator,
                                quantized=self.lm.quantized_weights())

    def _release(self, compact) -> None:
        self._free.setdefault((compact.width, self.lm.fingerprint(), compact.quant), []).append(compact)

    def _model(self, plan: Plan | None, compact):
        if compact is None or plan is None or plan.is_dense:
            return self.lm.model, 0.0
        return compact.model, compact.load(plan, reuse=True)

    def run_batch(self, reqs: list[GenRequest], plan: Plan | None, abort=lambda: False) -> dict:
        """`batch_job` run to its end in one call."""
        job = self.batch_job(reqs, plan, abort)
        while True:
            try:
                next(job)
            except StopIteration as done:
                return done.value

    @torch.inference_mode()
    def batch_job(self, reqs: list[GenRequest], plan: Plan | None, abort=lambda: False):
        """Generate for `reqs` (all with `plan`) a unit at a time: a generator that yields after each prefill
        chunk, decoding step and re-selection, so the scheduler can run other batches' units in between, and
        returns timing counters for the metrics. A row that fails (sampling, decoding) ends with an error of its
        own; the other rows go on."""
        from ..selection.prefill import carried_cache, crop_to, dense_prefix_cache, prompt_cache, reads_prompt_dense
        from ..selection.refresh import refresh_plan

        pruned = plan is not None and not plan.is_dense
        compact = self._acquire(plan.width) if pruned else None
        try:
            model, load_s = self._model(plan, compact)
            rows = [_Row(r) for r in reqs]
            R = self.refresh if pruned else None
            dense = reads_prompt_dense(self.prefill) and pruned
            carry = self.prefill == "dense-answer" and pruned
            steps = yield from self._decode(model, rows, limit=R, abort=abort, dense=dense)
            refresh_s = 0.0
            for w in rows if R else []:
                r, cache = w.req, None
                while not w.done:
                    yield  # (a re-selection is a unit of its own)
                    t0 = time.perf_counter()
                    try:
                        text = self.selection_text(r)
                        r.refreshed = refresh_plan(self.lm, self.selector, text, torch.tensor(r.ids + w.out_ids),
                                                   plan.width, R, state=r.state)
                        seq = torch.tensor([r.ids + w.out_ids], device=self.lm.device)
                        if carry:  # the full model's cache of the prompt and the answer so far (the pass just made)
                            state = r.state or (self.selector.prompt_state(self.lm, text) if r.mode == "input" else None)
                            cache = carried_cache(state, seq)
                            if cache is None:
                                cache = dense_prefix_cache(self.lm, seq[:, :-1])
                        elif dense and cache is None:  # this request's own copy of the full model's prompt cache
                            cache = prompt_cache(self.lm, self.selector, text if r.mode == "input" else None,
                                                 torch.tensor([r.ids], device=self.lm.device), state=r.state)
                    except Exception as e:  # one request's re-selection must not fail the others
                        log.exception("re-selection failed")
                        w.done, w.reason, w.error = True, "error", f"re-selection failed for this request: {type(e).__name__}"
                        break
                    r.refreshes += 1
                    model, load = self._model(r.refreshed, compact)
                    load_s += load
                    refresh_s += time.perf_counter() - t0
                    steps += yield from self._decode(model, [w], limit=R if self.every else None, abort=abort,
                                                     cache=crop_to(cache, (seq.shape[1] if carry else len(r.ids)) - 1))
            for w in rows:
                self._finish(w)
            return {"load_s": load_s, "steps": steps, "tokens": sum(len(w.out_ids) for w in rows),
                    "refresh_s": refresh_s}
        finally:
            if compact is not None:
                self._release(compact)

    def _prefill(self, model, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache, start: int,
                 logits: bool):
        """Run `model` over the left-padded `ids[:, start:]` after `cache` (holding `start` positions; None: a new
        one), at most `chunk` tokens per call with a yield after each but the last; returns (the last position's
        logits [batch, vocab] or None, the cache). Chunks before the last skip the LM head."""
        from transformers import DynamicCache

        from ..core.prompt_pass import decoder_body

        if cache is None:
            cache = DynamicCache(config=self.lm.model.config)
        T, step = ids.shape[1], self.chunk or ids.shape[1]
        padded = not bool(mask.all())  # (without padding the model's own causal mask is the faster path)
        for s in range(start, T, step):
            e = min(T, s + step)
            if s > start:
                yield
            kw = dict(input_ids=ids[:, s:e], attention_mask=mask[:, :e] if padded else None,
                      position_ids=pos[:, s:e] if padded else None, cache=cache, use_cache=True)
            if e < T or not logits:
                decoder_body(model)(**kw)
            else:
                return self._last_logits(model, kw), cache
        return None, cache

    @staticmethod
    def _last_logits(model, kw: dict) -> torch.Tensor:
        """The LM head over the last position only, where the model's forward can be told so."""
        if _takes_logits_to_keep(type(model)):
            kw = {**kw, "logits_to_keep": 1}
        return model(**kw).logits[:, -1].float().cpu()

    chunk: int | None = None  # prompt tokens per prefill call (None: the whole prompt at once); set by the scheduler

    def _decode(self, model, rows: list["_Row"], *, limit: int | None, abort, dense: bool = False,
                cache=None):
        """Prefill each row's prompt and answer so far, then decode until every row is done or has
        `limit` answer tokens (None: no limit); a generator returning the decoding steps. `dense`: the full model
        prefills the (right-aligned) prompts but their last token; `cache`: one row's prompt but its last token,
        already in the full model's cache (a re-selected request's), so the prefill runs only the rest."""
        from ..selection.prefill import carried_cache

        device = self.lm.device
        seqs = [w.req.ids + w.out_ids for w in rows]
        B, T = len(rows), max(len(s) for s in seqs)
        ids = torch.full((B, T), self.pad, dtype=torch.long)
        mask = torch.zeros((B, T), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, T - len(s):] = torch.tensor(s)
            mask[i, T - len(s):] = 1
        ids, mask = ids.to(device), mask.to(device)
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        steps = 0
        if dense and T > 1 and B == 1 and cache is None:  # the request's own selection pass read this prompt
            cache = carried_cache(rows[0].req.state, ids)
        if dense and T > 1 and cache is None:  # (a one-token prompt has nothing before its last token)
            _, cache = yield from self._prefill(self.lm.model, ids[:, :-1], mask[:, :-1], pos[:, :-1], None, 0,
                                                logits=False)
        P = cache.get_seq_length() if cache is not None else 0
        logits, cache = yield from self._prefill(model, ids, mask, pos, cache, P, logits=True)
        max_steps = max(w.req.max_tokens - len(w.out_ids) for w in rows)
        if limit is not None:
            max_steps = min(max_steps, limit)
        while steps < max_steps and not all(w.done for w in rows):
            if abort():
                for w in rows:
                    if not w.done:
                        w.done, w.reason = True, "aborted"
                break
            steps += 1
            nxt = torch.full((B,), self.pad, dtype=torch.long)
            for i, w in enumerate(rows):
                if w.done:
                    continue
                try:
                    nxt[i] = self._step_row(w, logits[i])
                except Exception as e:  # one poisoned request must not fail its batch
                    log.exception("request failed inside a batch")
                    w.done, w.reason, w.error = True, "error", f"generation failed for this request: {type(e).__name__}"
            if all(w.done for w in rows) or steps == max_steps:
                break  # (at `limit` the next token comes from the re-selected plan's prefill)
            yield
            mask = torch.cat([mask, mask.new_ones((B, 1))], dim=1)
            pos = pos[:, -1:] + 1
            out = model(input_ids=nxt.view(B, 1).to(device), attention_mask=mask, position_ids=pos,
                        cache=cache, use_cache=True)
            cache = out.past_key_values
            logits = out.logits[:, -1].float().cpu()
        return steps

    def _step_row(self, w: "_Row", logits: torch.Tensor) -> int:
        """Pick this row's next token, stream the text it makes visible, and end the row on EOS, a stop
        sequence, max_tokens or cancellation; returns the token fed to the next step."""
        r = w.req
        if r.cancelled.is_set():
            w.done, w.reason = True, "cancelled"
            return self.pad
        tok = sample(logits, r.temperature, r.top_p, r.top_k, w.gen)
        if tok in self.eos:
            w.done, w.reason = True, "stop"
            return self.pad
        w.out_ids.append(tok)
        with self.tokenizer_lock:
            w.text = self.lm.tokenizer.decode(w.out_ids, skip_special_tokens=True)
        if r.stop:
            cut = first_stop(w.text, r.stop, len(w.sent))
            if cut is not None:
                w.text = w.text[:cut]
                w.done, w.reason = True, "stop"
                return self.pad
        if len(w.out_ids) >= r.max_tokens:
            w.done, w.reason = True, "length"
            return self.pad
        if not w.text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its next token
            visible = len(w.text) - held_back(w.text, r.stop)
            if visible > len(w.sent):
                r.emit("delta", w.text[len(w.sent):visible])
                w.sent = w.text[:visible]
        return tok

    def _finish(self, w: "_Row") -> None:
        r = w.req
        if w.reason == "aborted":
            r.emit("error", 503, "the server shut down during generation; retry")
            return
        if w.reason == "error":
            r.emit("error", 500, w.error)
            return
        text = w.text.rstrip("\ufffd")
        if len(text) > len(w.sent) and text.startswith(w.sent):
            r.emit("delta", text[len(w.sent):])
        usage = {"prompt_tokens": len(r.ids), "completion_tokens": len(w.out_ids),
                 "total_tokens": len(r.ids) + len(w.out_ids)}
        r.emit("done", w.reason or "length", usage)


@dataclass
class _Row:
    """One request's decoding state inside a batch."""

    req: GenRequest
    out_ids: list[int] = field(default_factory=list)
    text: str = ""  # the decoded completion so far (cut at a stop sequence)
    sent: str = ""  # the prefix of `text` already streamed
    done: bool = False
    reason: str | None = None
    error: str = ""
    gen: torch.Generator | None = None

    def __post_init__(self):
        self.done = self.req.cancelled.is_set()
        self.reason = "cancelled" if self.done else None
        if self.req.seed is not None:
            self.gen = torch.Generator().manual_seed(self.req.seed)


GREEDY_BELOW = 1e-5  # temperatures under this sample greedily (their limit); see docs/serving.md


def sample(logits: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0,
           gen: torch.Generator | None = None) -> int:
    """One token from a row of logits. Works in float64 after subtracting the max, so a tiny positive
    temperature gives (nearly) greedy sampling instead of inf/NaN probabilities."""
    if temperature < GREEDY_BELOW:
        return int(logits.argmax())
    z = (logits.double() - logits.max().double()) / temperature
    if top_k and top_k > 0 and top_k < z.numel():
        z[z < z.topk(top_k).values[-1]] = float("-inf")
    p = torch.softmax(z, -1)
    if top_p < 1:
        sp, si = p.sort(descending=True)
        sp[sp.cumsum(0) - sp > top_p] = 0
        p = torch.zeros_like(p).scatter_(0, si, sp)
    if not torch.isfinite(p).all() or p.sum() <= 0:
        raise ValueError("sampling probabilities are not finite")
    return int(torch.multinomial(p, 1, generator=gen))


def first_stop(text: str, stops: list[str], searched: int) -> int | None:
    """Where the earliest stop sequence starts in `text`, looking only where a new match can be (the
    text before `searched` minus the longest stop was already checked)."""
    start = max(0, searched - max(map(len, stops)) + 1)
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None


def held_back(text: str, stops: list[str]) -> int:
    """Length of the longest end of `text` that could still grow into a stop sequence: not streamed yet."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


@functools.lru_cache(maxsize=None)
def _takes_logits_to_keep(cls) -> bool:
    return "logits_to_keep" in inspect.signature(cls.forward).parameters
