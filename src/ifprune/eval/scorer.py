"""Runs one selector at one width over benchmark examples: picks each example's plan (per prompt,
per task or static), loads it into the compact model, and scores log-likelihoods or generates.

The compact model (`lm.compact(width).load(plan)`) is what a user would deploy, so the numbers are
the deployed model's; loading a plan is a gather into pre-allocated buffers, cheap per example.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..core.errors import IfpruneError
from ..core.plan import Plan
from ..core.prompting import encode_prompt
from ..selection.prefill import reads_prompt_dense
from ..selection.refresh import segment_lengths
from ..selection.selectors import Selector


@dataclass
class Scorer:
    lm: object
    selector: Selector
    width: int
    task: str | None = None  # per-task mode: one plan from this description for every example
    per_task: bool = False  # per-task mode with the suite's own description of each example's task
    label: str | None = None  # the name results are reported under (default: the selector's name)
    reselect: str | None = None  # off | once | every, as generate's (selection.refresh.from_mode); None: the
    # selector's own (an artifact trained under re-selection runs with it)
    reselect_tokens: int | None = None  # continuation tokens between re-selections; None: the artifact's own, else 32
    refresh: int | None = None  # what runs, resolved from the above (given by a caller: the deprecated spelling)
    refresh_every: bool | None = None  # (likewise)
    prefill: str | None = None  # "dense": the prompt (but its last token) runs through the full model, whose KV
    # cache the compact model attends to (selection.prefill); None: dense when re-selecting every R tokens
    example_task: str | None = field(default=None, repr=False)  # set by run_suite from Suite.task_for
    plans: list = field(default_factory=list, repr=False)  # (example id, plan hash) of per-example plans
    _source: str | None = field(default=None, repr=False)  # what the current plan was selected from
    _prompt_stats: object = field(default=None, repr=False)  # compensation mode "prompt": the current prompt's
    _prefix: tuple | None = field(default=None, repr=False)  # (ids, full model's KV cache of them): the last dense
    # prefix, reused by the next pair with the same one (MC choices, re-selection segments)
    timings: dict = field(default_factory=lambda: {"selection_s": 0.0, "loading_s": 0.0, "model_s": 0.0})

    def __post_init__(self):
        from ..selection.refresh import reselect_settings, resolve_reselection

        R, every = reselect_settings(self.reselect, self.reselect_tokens, self.refresh, self.refresh_every,
                                     self.selector, where="Scorer")
        rs = resolve_reselection(R, every, self.prefill, self.selector)
        self.refresh, self.refresh_every, self.prefill = rs.refresh, rs.every, rs.prefill

    @property
    def dense(self) -> bool:
        return self.width == self.lm.d_ffn

    def config(self) -> dict:
        out = {"selector": self.selector.name, "options": self.selector.options(), "width": self.width,
               "d_ffn": self.lm.d_ffn, "task": self.task, "model": self.lm.fingerprint(),
               "compensation": self.compensation()}
        if self.per_task:
            out["per_task"] = True
        if self.lm.quant is not None:
            from ..core.quantized import PRODUCT_VERSION

            out["quant"] = self.lm.quant
            out["quant_product"] = PRODUCT_VERSION  # (results made by an earlier int8 product are not reused)
            if not self.dense:  # the selector's passes read that type too (LoadedModel.reader)
                out["selection_weights"] = self.lm.quant
        if self.refresh:
            out["refresh"] = self.refresh
            if self.refresh_every and not self.dense:
                out["refresh_every"] = True
        if self.prefill != "pruned" and not self.dense:  # (the full model has nothing to prefill otherwise)
            out["prefill"] = self.prefill
        return out

    def described(self) -> dict:
        """`config()` as results report it: re-selection in the one JSON shape every command has (config() keeps the
        earlier keys, which are part of every cached result's key)."""
        from ..selection.refresh import mode_of

        out = {k: v for k, v in self.config().items() if k not in ("refresh", "refresh_every", "prefill")}
        mode = "off" if self.dense else mode_of(self.refresh, self.refresh_every)  # (the full model never re-selects)
        prefill = self.prefill if self.prefill != "pruned" and not self.dense else "pruned"
        out["reselection"] = {"mode": mode, "tokens": self.refresh if mode != "off" else None, "prefill": prefill}
        return out

    def compensation(self) -> dict:
        """What the compact model's down projections are (recorded with every result)."""
        comp = getattr(self.lm, "compensator", None)
        return comp.config.describe() if comp is not None and not self.dense else {"mode": "none"}

    def plan_for(self, text: str | None) -> Plan | None:
        """None means the full model. Static selectors ignore `text`; the selector caches plans."""
        if self.dense:
            return None
        t0 = time.perf_counter()
        source = self.task if self.task is not None else (self.example_task if self.per_task else text)
        if source is None and self.per_task:
            raise IfpruneError("per-task selection needs a task description: run the suite through run_suite")
        plan = self.selector.select(self.lm, source if self.selector.per_prompt else None, self.width)
        self._source = source
        self._prompt_stats = None
        comp = getattr(self.lm, "compensator", None)
        if comp is not None and comp.config.mode == "prompt" and source is not None:
            from ..compensation.calibration import prompt_moments

            self._prompt_stats = prompt_moments(self.lm, encode_prompt(self.lm.tokenizer, source).to(self.lm.device))
        self.timings["selection_s"] += time.perf_counter() - t0
        return plan

    def model_for(self, plan: Plan | None):
        if plan is None:  # (at --quant: every channel of a full-width compact model of that type)
            model, seconds = self.lm.dense_decoder()
            self.timings["loading_s"] += seconds
            return model
        compact = self.lm.compact(plan.width)
        if compact.compensator is not None:
            compact.compensator.ensure_stats()  # one-off (cached on disk), not per-plan loading time
        self.timings["loading_s"] += compact.load(plan, prompt=self._prompt_stats)
        return compact.model

    # scoring ----------------------------------------------------------------------------------
    def encode(self, text: str, *, chat: bool) -> list[int]:
        if chat:
            return encode_prompt(self.lm.tokenizer, text, chat=True)[0].tolist()
        return self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def refreshed(self, plan: Plan | None, ids: list[int]) -> Plan | None:
        """With `refresh`: the plan for what follows `ids`, the prompt and the first `refresh` tokens after
        it (the plan of the text last given to plan_for, re-selected); else `plan` unchanged."""
        if not self.refresh or plan is None:
            return plan
        from ..selection.refresh import refresh_plan

        t0 = time.perf_counter()
        out = refresh_plan(self.lm, self.selector, self._source, torch.tensor(ids), self.width, self.refresh)
        self.timings["selection_s"] += time.perf_counter() - t0
        return out

    @torch.no_grad()
    def loglikelihoods(self, plan: Plan | None, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, int, bool]]:
        """For each (context ids, continuation ids): (sum log p(continuation), its tokens, greedy?).
        With `refresh` R, a continuation's tokens after its first R are scored under the refreshed plan
        from a fresh prefill of context + those R, as generation runs them.

        One padded batch per call (right padding, so positions are unaffected); contexts are cut from
        the left if context + continuation exceed the model's context length + 1 (the last token is never
        an input), and a continuation that alone fills the context is scored on its first (context
        length) tokens.
        """
        R = self.refresh
        if R and plan is not None and any(len(c) > R for _, c in pairs) and self.prefill == "kept":
            return [self._kept(plan, ctx, cont) for ctx, cont in pairs]
        if R and plan is not None and any(len(c) > R for _, c in pairs):
            out = []
            for ctx, cont in pairs:
                cont = list(cont)
                lp, n, greedy, done, seg = 0.0, 0, True, 0, plan
                for k in segment_lengths(len(cont), R, self.refresh_every):
                    if done:
                        seg = self.refreshed(plan, list(ctx) + cont[:done])
                    dense_to = len(ctx) + (done if self.prefill == "dense-answer" else 0)
                    (s_lp, s_n, s_g), = self._loglikelihoods(seg, [(list(ctx) + cont[:done], cont[done:done + k])],
                                                             prompt_lens=[dense_to])
                    lp, n, greedy, done = lp + s_lp, n + s_n, greedy and s_g, done + k
                out.append((lp, n, greedy))
            return out
        return self._loglikelihoods(plan, pairs)

    def _loglikelihoods(self, plan: Plan | None, pairs, prompt_lens: list[int] | None = None) -> list[tuple[float, int, bool]]:
        """`prompt_lens`: where each pair's prompt ends (default: its context), for a dense prefill."""
        if not pairs:
            return []
        model = self.model_for(plan)
        if reads_prompt_dense(self.prefill) and plan is not None:
            return [self._dense_prefilled(model, ctx, cont, n)
                    for (ctx, cont), n in zip(pairs, prompt_lens or [len(c) for c, _ in pairs])]
        limit = self.lm.context_length() or 10**9
        ctx0 = list(pairs[0][0])
        if len(pairs) > 1 and all(len(c) == 1 and list(x) == ctx0 for x, c in pairs) and 1 <= len(ctx0) <= limit:
            # one context, one-token choices (MMLU's letters): the same numbers from a single forward
            t0 = time.perf_counter()
            logits = model(torch.tensor([ctx0], device=self.lm.device)).logits[0, -1].float()
            self.timings["model_s"] += time.perf_counter() - t0
            logp = torch.log_softmax(logits, dim=-1)
            best = int(logp.argmax())
            return [(float(logp[c[0]]), 1, best == c[0]) for _, c in pairs]
        seqs, spans = [], []
        for ctx, cont in pairs:
            seq, start, _ = self._window(ctx, cont)
            seqs.append(seq)
            spans.append((start, len(seq)))
        pad = self.lm.tokenizer.pad_token_id or 0
        full = torch.full((len(seqs), max(len(s) for s in seqs)), pad, dtype=torch.long)
        att = torch.zeros(len(seqs), full.shape[1] - 1, dtype=torch.long)
        for i, s in enumerate(seqs):
            full[i, : len(s)] = torch.tensor(s)
            att[i, : len(s) - 1] = 1
        ids = full[:, :-1] * att + pad * (1 - att)  # the inputs: every token but each row's last
        t0 = time.perf_counter()
        logits = model(ids.to(self.lm.device), attention_mask=att.to(self.lm.device)).logits.float()
        self.timings["model_s"] += time.perf_counter() - t0
        logp = torch.log_softmax(logits, dim=-1)
        out = []
        for i, (a, b) in enumerate(spans):
            target = full[i, a:b].to(logp.device)
            lp = logp[i, a - 1 : b - 1]
            tok = lp.gather(1, target.unsqueeze(1)).squeeze(1)
            greedy = bool((lp.argmax(-1) == target).all())
            out.append((float(tok.sum()), b - a, greedy))
        return out

    def _dense_prefilled(self, model, ctx, cont, prompt_len: int) -> tuple[float, int, bool]:
        """One pair with the prompt's tokens but its last run by the full model (their KV cache kept) and
        the rest by `model`: every scored token is still predicted by the compact model."""
        seq, start, cut = self._window(ctx, cont)
        P = min(prompt_len - cut, start) - 1  # dense tokens: the prompt's, but its last
        ids = torch.tensor([seq], device=self.lm.device)
        t0 = time.perf_counter()
        cache = self._dense_prefix(ids[:, :P]) if P >= 1 else None
        P = max(P, 0)
        logits = model(ids[:, P:-1], cache=cache, use_cache=cache is not None).logits.float()[0]
        self.timings["model_s"] += time.perf_counter() - t0
        lp = torch.log_softmax(logits[start - 1 - P:], dim=-1)
        target = ids[0, start:]
        tok = lp.gather(1, target.unsqueeze(1)).squeeze(1)
        return float(tok.sum()), len(seq) - start, bool((lp.argmax(-1) == target).all())

    def _kept(self, plan: Plan, ctx, cont) -> tuple[float, int, bool]:
        """One pair as generation runs the "kept" prefill (selection.decoded): the full model's KV cache of the
        prompt but its last token, then each segment of the continuation read once by the compact model of its
        own plan, its cache kept, each re-selection scored from the FFN inputs the compact models read."""
        import copy

        from transformers import DynamicCache

        from ..selection.decoded import KeptReselection
        from ..selection.refresh import prompt_squares

        seq, start, _ = self._window(ctx, cont)
        ids = torch.tensor([seq], device=self.lm.device)
        t0 = time.perf_counter()
        state = self.selector.prompt_state(self.lm, self._source) if self._source is not None else None
        kept = KeptReselection(self.lm, prompt_squares(self.lm, state, ids[:, :start]))
        self.timings["selection_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        cache = (copy.deepcopy(self._dense_prefix(ids[:, :start - 1])) if start > 1
                 else DynamicCache(config=self.lm.model.config))
        self.timings["model_s"] += time.perf_counter() - t0
        lp, greedy, done, seg = 0.0, True, 0, plan
        for k in segment_lengths(len(seq) - start, self.refresh, self.refresh_every):
            if done:
                t0 = time.perf_counter()
                seg = kept.next_plan(self.selector, self._source, self.width, self.refresh, start + done)
                self.timings["selection_s"] += time.perf_counter() - t0
            model = self.model_for(seg)
            t0 = time.perf_counter()
            with kept.record(self.lm.compact(plan.width), first=done == 0):
                logits = model(ids[:, start - 1 + done:start - 1 + done + k], cache=cache, use_cache=True).logits
            self.timings["model_s"] += time.perf_counter() - t0
            logp = torch.log_softmax(logits.float()[0], dim=-1)
            target = ids[0, start + done:start + done + k]
            lp += float(logp.gather(1, target.unsqueeze(1)).sum())
            greedy = greedy and bool((logp.argmax(-1) == target).all())
            done += k
        return lp, len(seq) - start, greedy

    def _dense_prefix(self, ids: torch.Tensor):
        """The full model's KV cache of `ids` [1, P], from the last call when it read the same ids or a prefix
        of them (cropped back to what it read: the compact model's tokens after them are dropped, then the
        rest read), else from one new pass."""
        from ..core.prompt_pass import decoder_body
        from ..selection.prefill import crop_to, dense_prefix_cache

        if self._prefix is not None:
            old, cache = self._prefix
            n = old.shape[1]
            if n <= ids.shape[1] and torch.equal(old, ids[:, :n]):
                crop_to(cache, n)
                if n < ids.shape[1]:
                    decoder_body(self.lm.model)(input_ids=ids[:, n:], cache=cache, use_cache=True)
                    self._prefix = (ids, cache)
                return cache
        cache = dense_prefix_cache(self.lm, ids)
        self._prefix = (ids, cache)
        return cache

    def _window(self, ctx, cont) -> tuple[list[int], int, int]:
        """(sequence, where the continuation starts in it, context tokens cut from the left): contexts are cut
        from the left if context + continuation exceed the context length + 1, a continuation that alone fills
        it is scored on its first (context length) tokens."""
        limit = self.lm.context_length() or 10**9
        if not cont:
            raise IfpruneError("a continuation encodes to zero tokens; nothing to score")
        cont = list(cont)[:limit]
        # the last token is never an input, so `limit` inputs score up to `limit` tokens and keep one
        # more context token than a `limit`-token window would (as lm-eval's own HF model cuts)
        seq = (list(ctx) + cont)[-(limit + 1):]
        start = len(seq) - len(cont)
        if start < 1:
            raise IfpruneError("a continuation needs at least one context token before it")
        return seq, start, len(ctx) + len(cont) - len(seq)

    @torch.no_grad()
    def generate(self, plan: Plan | None, prompt_ids: list[int], *, max_new_tokens: int,
                 stop: list[str] | None = None) -> str:
        """Greedy continuation, cut at the first stop string: runtime.generation.decode_answer, the segment loop
        `generate` runs, with this scorer's re-selection and prefill."""
        from ..runtime.generation import SamplingConfig, decode_answer
        from ..selection.refresh import Reselection

        model = self.model_for(plan)
        limit = self.lm.context_length()
        if limit is not None and len(prompt_ids) + max_new_tokens > limit:
            prompt_ids = prompt_ids[-(limit - max_new_tokens):]
        ids = torch.tensor([prompt_ids], device=self.lm.device)
        t0 = time.perf_counter()
        ans = decode_answer(self.lm, ids, plan, model, self.lm.compact(plan.width) if plan is not None else None,
                            selector=self.selector, text=self._source,
                            source=self._source if self.task is None and not self.per_task else None,
                            rs=Reselection(self.refresh, bool(self.refresh_every), self.prefill),
                            sampling=SamplingConfig(max_new_tokens=max_new_tokens), prompt_stats=self._prompt_stats,
                            stop=stop)
        self.timings["selection_s"] += ans.parts["select"]
        self.timings["loading_s"] += ans.parts["load"]
        self.timings["model_s"] += time.perf_counter() - t0 - ans.parts["select"] - ans.parts["load"]
        return cut_at_stop(self.lm.tokenizer.decode(ans.out[0, ids.shape[1]:], skip_special_tokens=True), stop)


def text_nll(lm, texts: list[str]) -> float:
    """Mean NLL per predicted token of whole plain texts (each its own sequence, scored from its second token) under
    `lm`'s full model, through the scorer every suite uses: how a model changed in place (compressed, recovered) is
    checked on text that is not a prompt and an answer."""
    from ..selection.selectors import make_selector

    scorer = Scorer(lm, make_selector("dense"), lm.d_ffn)
    total, count = 0.0, 0
    for text in texts:
        ids = lm.tokenizer(text)["input_ids"]
        if len(ids) >= 2:
            (lp, n, _), = scorer.loglikelihoods(None, [(ids[:1], ids[1:])])
            total, count = total - lp, count + n
    if not count:
        raise IfpruneError("no text to score: every text encodes to fewer than 2 tokens")
    return total / count


def cut_at_stop(text: str, stop: list[str] | None) -> str:
    cut = len(text)
    for s in stop or []:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]
