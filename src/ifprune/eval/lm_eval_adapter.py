"""lm-evaluation-harness adapter: `ifprune` as an lm-eval model, so any lm-eval task can score a
pruned model. Importing this module registers the model (lm-eval 0.4 has no plugin entry points),
and `python -m ifprune.eval.lm_eval_adapter ARGS` runs lm-eval's own CLI with it registered:

    python -m ifprune.eval.lm_eval_tasks --out lm_eval_tasks          # offline task configs, once
    python -m ifprune.eval.lm_eval_adapter run --model ifprune --include_path lm_eval_tasks \
        --model_args selector=griffin,keep=0.5 --tasks local_arc_easy --limit 20

model_args: model (spec for `load_model`; default the packaged SmolLM2), selector, keep | width,
seed, calibration, task (per-task mode), dtype, device, chat (apply the chat template in
generate_until), checkpoint (a trained artifact: selector predictor, its width unless keep/width),
compensate (none | calibration | prompt; default as the CLI's: none on an artifact's tuned weights), calibration_tokens, ridge,
reselect (off | once | every) and reselect_tokens (N), as the CLI's --reselect and --reselect-tokens (default as
the CLI's: the artifact's own, every 32 for the shipped ones), prefill (as the CLI's --prefill), quant (int8: as
the CLI's --quant int8); refresh /
refresh_every, their earlier spelling, still work for one release with a FutureWarning.
Per-prompt selectors pick a plan from each request's context; static ones use one plan for the run.
"""

from __future__ import annotations

import sys

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from ..core.errors import IfpruneError


def usable_device(device: str | None) -> str:
    """lm-eval's CLI hands every model a CUDA device unless told otherwise; on a machine without CUDA
    that is not the user's choice, so run on the CPU and say so."""
    import logging

    import torch

    if device is None:
        return "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger("ifprune").warning("device %s asked for but CUDA is not available: running on the CPU", device)
        return "cpu"
    return str(device)


def flag(name: str, value) -> bool | None:
    """A model_args boolean: lm-eval hands over the text of `name=true` unless it parsed it."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise IfpruneError(f"model_args {name}={value!r}: write true or false")


@register_model("ifprune")
class IfpruneLM(LM):
    def __init__(self, model: str | None = None, pretrained: str | None = None, selector: str | None = None,
                 keep: float | None = None, width: int | None = None, seed: int = 0, calibration: str | None = None,
                 task: str | None = None, dtype: str = "float32", device: str = "cpu", chat: bool = False,
                 max_gen_toks: int = 256, checkpoint: str | None = None, compensate: str | None = None,
                 calibration_tokens: int | None = None, ridge: float | None = None, reselect: str | None = None,
                 reselect_tokens: int | None = None, prefill: str | None = None, quant: str | None = None, lm=None,
                 refresh: int | None = None, refresh_every: bool | str | None = None, **_ignored):
        super().__init__()
        from .scorer import Scorer
        from ..core.loading import load_model
        from ..core.plan import width_from_keep
        from ..selection.selectors import make_selector

        self.lm = lm if lm is not None else load_model(model or pretrained, dtype=dtype, device=usable_device(device))
        if selector in (None, "auto"):  # every command's default: the shipped artifact on its own weights, else griffin
            if checkpoint is None:
                from ..artifacts import auto_selection

                selector, checkpoint, _ = auto_selection(self.lm, keep=float(keep) if keep is not None else None,
                                                         width=int(width) if width is not None else None)
            else:
                selector = "predictor"
        sel = make_selector(selector, seed=int(seed), calibration=calibration, checkpoint=checkpoint)
        artifact = getattr(sel, "artifact", None)
        if artifact is not None:
            artifact.attach(self.lm)  # the artifact's LLM change applies to every request
            if keep is None and width is None:
                width = artifact.width
        if keep is None and width is None and selector != "dense":
            keep = 0.5  # every command's default
        w = width_from_keep(float(keep) if keep is not None else None, int(width) if width is not None else None,
                            self.lm.d_ffn)
        from ..compensation.calibration import CompensationConfig, compensate as turn_on, default_mode

        d = CompensationConfig()
        turn_on(self.lm, CompensationConfig(mode=compensate or default_mode(self.lm), calibration=calibration,
                                            max_tokens=int(calibration_tokens or d.max_tokens),
                                            ridge=float(ridge if ridge is not None else d.ridge)))
        self.lm.set_quant(quant)  # (int8: the compact models and the selector passes: LoadedModel.reader)
        self.scorer = Scorer(self.lm, sel, w, task=task, reselect=reselect,
                             reselect_tokens=int(reselect_tokens) if reselect_tokens is not None else None,
                             refresh=int(refresh) if refresh is not None else None,
                             refresh_every=flag("refresh_every", refresh_every), prefill=prefill)
        self.chat, self.max_gen_toks = bool(chat), int(max_gen_toks)

    @property
    def tokenizer_name(self) -> str:
        return self.lm.source.replace("/", "__")

    def _ids(self, text: str) -> list[int]:
        return self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _context_ids(self, context: str) -> list[int]:
        if context:
            return self._ids(context)
        bos = self.lm.tokenizer.bos_token_id
        return [bos if bos is not None else self.lm.tokenizer.eos_token_id]

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        out = []
        for req in requests:
            context, continuation = req.args[0], req.args[1]
            # move trailing spaces of the context onto the continuation, as lm-eval's own models do
            n = len(context) - len(context.rstrip(" "))
            if n:
                context, continuation = context[:-n], context[-n:] + continuation
            plan = self.scorer.plan_for(context or continuation)
            (lp, _, greedy), = self.scorer.loglikelihoods(plan, [(self._context_ids(context), self._ids(continuation))])
            out.append((lp, greedy))
            self.cache_hook.add_partial("loglikelihood", req.args, (lp, greedy))
        return out

    def loglikelihood_rolling(self, requests) -> list[float]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        limit = self.lm.context_length() or 2048
        prefix = self._context_ids("")[0]
        out = []
        for req in requests:
            text = req.args[0]
            plan = self.scorer.plan_for(text)
            windows = [make_disjoint_window(w) for w in
                       get_rolling_token_windows(self._ids(text), prefix_token=prefix, max_seq_len=limit, context_len=1)]
            total = sum(lp for lp, _, _ in self.scorer.loglikelihoods(plan, windows))
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return out

    def generate_until(self, requests) -> list[str]:
        from ..core.prompting import encode_prompt

        out = []
        for req in requests:
            context, kwargs = req.args[0], dict(req.args[1] or {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            plan = self.scorer.plan_for(context)
            ids = encode_prompt(self.lm.tokenizer, context, chat=True)[0].tolist() if self.chat else self._context_ids(context)
            text = self.scorer.generate(plan, ids, max_new_tokens=int(kwargs.get("max_gen_toks", self.max_gen_toks)),
                                        stop=until or None)
            out.append(text)
            self.cache_hook.add_partial("generate_until", req.args, text)
        return out


def main(argv: list[str] | None = None) -> None:
    """lm-eval's CLI, with `ifprune` registered."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":  # pragma: no cover
    main()
