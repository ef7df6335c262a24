"""Model work for the server: resolve a request's plan and run a batch of same-plan requests.

All of it runs on the scheduler's one worker thread. A batch is left-padded, prefilled once and
decoded step by step; each step hands every request its new text, so streaming, per-request
`max_tokens`, stop on EOS and cancellation (client gone) are per row while the matmuls are batched.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from ..core.plan import Plan

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
    plan: Plan | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    events: object = None  # queue.Queue the HTTP thread reads
    arrived: float = 0.0

    def emit(self, kind: str, *payload) -> None:
        if self.events is not None:
            self.events.put((kind, *payload))


class Engine:
    """Plans (cached per task and per input) and batched decoding on a LoadedModel."""

    def __init__(self, lm, selector, width: int, tasks: dict[str, str] | None = None, plan_cache: int = 256):
        self.lm, self.selector, self.width = lm, selector, width
        self.tasks = dict(DEFAULT_TASKS if tasks is None else tasks)
        self._plans: OrderedDict[tuple, Plan] = OrderedDict()
        self._plan_cache = plan_cache
        self.tokenizer_lock = threading.Lock()  # HF fast tokenizers are not safe to share across threads
        eos = lm.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if lm.tokenizer.eos_token_id is not None:
            eos.append(lm.tokenizer.eos_token_id)
        self.eos = set(eos)
        self.pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else (eos[0] if eos else 0)

    # plans ---------------------------------------------------------------------------------
    def resolve_task(self, task: str) -> str:
        """A registered task name maps to its description; any other non-empty text is a description."""
        return self.tasks.get(task, task)

    def plan_for(self, req: GenRequest) -> Plan | None:
        if req.mode == "dense" or self.width == self.lm.d_ffn:
            return None
        text = self.resolve_task(req.task) if req.mode == "task" else req.select_text
        key = (req.mode, text)
        plan = self._plans.get(key)
        if plan is None:
            with torch.inference_mode():
                plan = self.selector.select(self.lm, text, self.width)
            self._plans[key] = plan
            if len(self._plans) > self._plan_cache:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        return plan

    # generation ----------------------------------------------------------------------------
    def model_for(self, plan: Plan | None):
        if plan is None or plan.is_dense:
            return self.lm.model, 0.0
        compact = self.lm.compact(plan.width)
        return compact.model, compact.load(plan)

    @torch.inference_mode()
    def run_batch(self, reqs: list[GenRequest], plan: Plan | None, abort=lambda: False) -> dict:
        """Generate for `reqs` (all with `plan`); returns timing counters for the metrics."""
        model, load_s = self.model_for(plan)
        device = self.lm.device
        B, T = len(reqs), max(len(r.ids) for r in reqs)
        ids = torch.full((B, T), self.pad, dtype=torch.long)
        mask = torch.zeros((B, T), dtype=torch.long)
        for i, r in enumerate(reqs):
            ids[i, T - len(r.ids):] = torch.tensor(r.ids)
            mask[i, T - len(r.ids):] = 1
        ids, mask = ids.to(device), mask.to(device)
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        gens = [torch.Generator().manual_seed(r.seed) if r.seed is not None else None for r in reqs]
        out_ids: list[list[int]] = [[] for _ in reqs]
        sent = [""] * B
        done = [r.cancelled.is_set() for r in reqs]
        reasons: list[str | None] = ["cancelled" if d else None for d in done]
        steps = 0
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        cache = out.past_key_values
        logits = out.logits[:, -1].float()
        max_steps = max(r.max_tokens for r in reqs)
        while steps < max_steps and not all(done):
            if abort():
                for i in range(B):
                    if not done[i]:
                        done[i], reasons[i] = True, "aborted"
                break
            nxt = self._sample(logits, reqs, gens)
            steps += 1
            for i, r in enumerate(reqs):
                if done[i]:
                    nxt[i] = self.pad
                    continue
                if r.cancelled.is_set():
                    done[i], reasons[i] = True, "cancelled"
                    continue
                tok = int(nxt[i])
                if tok in self.eos:
                    done[i], reasons[i] = True, "stop"
                    continue
                out_ids[i].append(tok)
                with self.tokenizer_lock:
                    text = self.lm.tokenizer.decode(out_ids[i], skip_special_tokens=True)
                if not text.endswith("\ufffd") and len(text) > len(sent[i]):
                    r.emit("delta", text[len(sent[i]):])
                    sent[i] = text
                if len(out_ids[i]) >= r.max_tokens:
                    done[i], reasons[i] = True, "length"
            if all(done):
                break
            mask = torch.cat([mask, mask.new_ones((B, 1))], dim=1)
            pos = pos[:, -1:] + 1
            out = model(input_ids=nxt.view(B, 1).to(device), attention_mask=mask, position_ids=pos,
                        past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logits = out.logits[:, -1].float()
        for i, r in enumerate(reqs):
            usage = {"prompt_tokens": len(r.ids), "completion_tokens": len(out_ids[i]),
                     "total_tokens": len(r.ids) + len(out_ids[i])}
            if reasons[i] == "aborted":
                r.emit("error", 503, "the server shut down during generation; retry")
            else:
                r.emit("done", reasons[i] or "length", usage)
        return {"load_s": load_s, "steps": steps, "tokens": sum(len(o) for o in out_ids)}

    @staticmethod
    def _sample(logits: torch.Tensor, reqs: list[GenRequest], gens) -> torch.Tensor:
        nxt = logits.argmax(-1).cpu()
        for i, r in enumerate(reqs):
            if r.temperature <= 0:
                continue
            p = torch.softmax(logits[i].cpu() / r.temperature, -1)
            if r.top_p < 1:
                sp, si = p.sort(descending=True)
                cut = sp.cumsum(0) - sp > r.top_p
                sp[cut] = 0
                p = torch.zeros_like(p).scatter_(0, si, sp)
            nxt[i] = torch.multinomial(p, 1, generator=gens[i]).item()
        return nxt

