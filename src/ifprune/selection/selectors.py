"""Selectors turn a prompt (or a task description) into a plan. All share one interface:
`scores(lm, text) -> [layers, d_ffn]`, and `select(lm, text, width)` keeps each layer's top-k.

Static selectors ignore the text and compute their scores once per model; per-prompt selectors
(GRIFFIN, the trained predictor) read it. `select` caches plans by (model, text, width), which is
what per-task use needs: one plan from a task description, reused for many prompts.
"""

from __future__ import annotations

import importlib
import inspect
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch

from ..core.errors import IfpruneError
from ..core.hooks import record_intermediates
from ..core.plan import Plan, check_width
from ..core.prompt_pass import decoder_body, paced_pass, pacing
from ..core.prompting import encode_prompt


class Selector:
    name = "base"
    per_prompt = False

    def __init__(self, cache_size: int = 256):
        self._plans: OrderedDict = OrderedDict()
        self._cache_size = cache_size
        self._static: dict = {}
        self._recent: OrderedDict = OrderedDict()  # the last few prompts' scores, for re-selection

    RECENT = 8  # scores kept for re-selection (30 x 1536 floats each on SmolLM2: 184 kB)

    def cached_scores(self, lm, text: str | None) -> torch.Tensor:
        """`scores`, reusing those of a recent `select` of the same text (a re-selection needs the first
        selection's scores again: no second prompt pass)."""
        key = (lm.fingerprint(), lm.quant, text if self.per_prompt else None)
        s = self._recent.get(key)
        if s is None:
            s = self._remember(key, self.scores(lm, text))
        return s

    def prompt_state(self, lm, text: str | None):
        """What this selector's own pass over `text` left for a re-selection (selection.refresh.PromptState);
        None: a re-selection runs GRIFFIN over everything."""
        return None

    def forget(self) -> None:
        """Drop every cached plan, score and prompt state (a benchmark times each selection afresh)."""
        self._plans.clear()
        self._recent.clear()
        self._static.clear()
        if hasattr(self, "_state"):
            self._state = None

    def _remember(self, key, scores: torch.Tensor) -> torch.Tensor:
        self._recent[key] = scores
        self._recent.move_to_end(key)
        while len(self._recent) > self.RECENT:
            self._recent.popitem(last=False)
        return scores

    def scores(self, lm, text: str | None) -> torch.Tensor:
        raise NotImplementedError

    def options(self) -> dict:
        """What, besides the name, determines the plans (recorded in plan metadata)."""
        return {}

    def select(self, lm, text: str | None, width: int) -> Plan:
        check_width(width, lm.d_ffn)
        key = (lm.fingerprint(), lm.quant, text if self.per_prompt else None, width)
        plan = self._plans.get(key)
        if plan is None:
            if self.per_prompt and text is not None and not text.strip():
                raise IfpruneError("the prompt is empty: give some text to select channels from")
            scores = self._remember((lm.fingerprint(), lm.quant, text if self.per_prompt else None), self.scores(lm, text))
            plan = Plan.from_scores(scores, width, {"selector": self.name, **self.options(), "model": lm.fingerprint()})
            self._plans[key] = plan
            if len(self._plans) > self._cache_size:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        return plan

    def _static_scores(self, lm, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        key = lm.fingerprint()
        if key not in self._static:
            self._static[key] = compute()
        return self._static[key]


class DenseSelector(Selector):
    """Keeps every channel (width must be d_ffn); the reference point."""

    name = "dense"

    def scores(self, lm, text):
        return torch.ones(lm.num_layers, lm.d_ffn)

    def select(self, lm, text, width):
        if width != lm.d_ffn:
            raise IfpruneError(f"the dense selector keeps all {lm.d_ffn} channels; drop --keep/--width or pick another selector")
        return Plan.dense(lm.num_layers, lm.d_ffn)


class RandomSelector(Selector):
    """Uniform random channels per layer, fixed by the seed (static)."""

    name = "random"

    def __init__(self, seed: int = 0, **kw):
        super().__init__(**kw)
        self.seed = seed

    def options(self):
        return {"seed": self.seed}

    def scores(self, lm, text):
        g = torch.Generator().manual_seed(self.seed)
        return torch.rand(lm.num_layers, lm.d_ffn, generator=g)


def _channel_weight_norms(lm) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer and channel: L2 norm of its up-like rows (gate and up together) and of its down column."""
    ups, downs = [], []
    d = lm.d_ffn
    for layer in lm.layout.layers:
        up_sq = torch.zeros(d)
        for ct in layer.channel_tensors():
            t = ct.tensor.detach().float().cpu()
            if ct.module is layer.down:
                down = t.norm(dim=1 - ct.dim) if t.dim() == 2 else t.abs()
                continue
            if ct.attr == "bias":
                continue
            sq = t.pow(2).sum(dim=1 - ct.dim)
            up_sq += sq.view(2, d).sum(0) if ct.fused else sq
        ups.append(up_sq.sqrt())
        downs.append(down)
    return torch.stack(ups), torch.stack(downs)


class MagnitudeSelector(Selector):
    """Static: norm of a channel's gate/up rows times norm of its down column."""

    name = "magnitude"

    def scores(self, lm, text):
        def compute():
            up, down = _channel_weight_norms(lm)
            return up * down

        return self._static_scores(lm, compute)


class WandaSelector(Selector):
    """Static, activation-aware: ||down column j|| x RMS of channel j's activation on calibration text.

    The RMS is the square root of the diagonal of the same calibration moments that output
    compensation uses (compensation.calibration.layer_stats), so both share one cached pass over the text."""

    name = "wanda"

    def __init__(self, calibration: str | Path | None = None, max_tokens: int | None = None, **kw):
        super().__init__(**kw)
        from ..compensation.calibration import CompensationConfig, calibration_file

        self.calibration = calibration_file(calibration)
        self.max_tokens = max_tokens or CompensationConfig.max_tokens

    def options(self):
        return {"calibration": self.calibration.name, "max_tokens": self.max_tokens}

    def scores(self, lm, text):
        def compute():
            from ..compensation.calibration import CompensationConfig, layer_stats

            stats = layer_stats(lm, CompensationConfig(calibration=str(self.calibration), max_tokens=self.max_tokens))
            rms = stats.G.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt()
            _, down = _channel_weight_norms(lm)
            return down * rms

        return self._static_scores(lm, compute)


def griffin_columns(x: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """GRIFFIN's channel scores [batch, d_ffn] from FFN activations [batch, tokens, d_ffn]: each token's
    activation vector unit-normalised, then the L2 norm of each channel over the tokens `token_mask`
    ([batch, tokens], 1 = counted) keeps (all tokens: None)."""
    return griffin_squares(x, token_mask).sqrt()


def griffin_squares(x: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """`griffin_columns` squared: a sum over tokens, so two stretches of one sequence add up."""
    x = x.float()
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if token_mask is not None:
        x = x * token_mask.to(x.device, x.dtype).unsqueeze(-1)
    return x.pow(2).sum(1)


class GriffinSelector(Selector):
    """Per prompt, training-free (GRIFFIN): run the dense model on the prompt, unit-normalise each
    token's FFN activation vector, score channel j by the L2 norm of column j over prompt tokens."""

    name = "griffin"
    per_prompt = True

    def __init__(self, chat: bool = True, **kw):
        super().__init__(**kw)
        self.chat = chat

    def scores(self, lm, text):
        if text is None:
            raise IfpruneError("griffin selects per prompt: give a prompt or a task description")
        ids = encode_prompt(lm.tokenizer, text, chat=self.chat).to(lm.device)
        return self.scores_from_ids(lm, ids)

    @staticmethod
    def scores_from_ids(lm, ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                        hidden_states: bool = False):
        """Batched form: [batch, layers, d_ffn] for a batch, padding excluded via attention_mask.
        With hidden_states=True also the forward's hidden states (the predictor's warm start reads
        both from one pass)."""
        batch = ids.shape[0]
        out = torch.zeros(batch, lm.num_layers, lm.d_ffn)
        keep = attention_mask.to(ids.device) if attention_mask is not None else None

        def acc(i, x):
            out[:, i] = griffin_columns(x, keep).cpu()

        model, layout = lm.reader()
        if not hidden_states and pacing(ids, attention_mask):  # (the server: a chunk at a time, summing squares)
            def add(i, x):
                out[:, i] += griffin_squares(x).cpu()

            paced_pass(model, ids, hooks=lambda: record_intermediates(layout, add))
            return out[0].sqrt() if attention_mask is None else out.sqrt()
        with torch.no_grad(), record_intermediates(layout, acc):  # no LM head, no cache: prompt_pass
            res = decoder_body(model)(input_ids=ids, attention_mask=attention_mask,
                                         output_hidden_states=hidden_states, use_cache=False)
        scores = out[0] if batch == 1 and attention_mask is None else out
        return (scores, res.hidden_states) if hidden_states else scores


SELECTORS: dict[str, Callable[..., Selector]] = {
    "dense": DenseSelector,
    "random": RandomSelector,
    "magnitude": MagnitudeSelector,
    "wanda": WandaSelector,
    "griffin": GriffinSelector,
}


# selectors defined in modules with heavier imports, loaded on first use (they call register_selector)
_PLUGINS = {"predictor": "ifprune.selection.predictor"}


def register_selector(name: str, factory: Callable[..., Selector]) -> None:
    """Plug in another selector (the trained predictor registers itself this way)."""
    SELECTORS[name] = factory


def _params(factory) -> set[str]:
    """Keyword options a selector factory takes (`**kw` forwards to Selector's own, e.g. cache_size)."""
    sig = inspect.signature(factory).parameters
    names = {n for n, p in sig.items() if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values()):
        names |= {n for n in inspect.signature(Selector.__init__).parameters if n != "self"}
    return names


def make_selector(name: str, **options) -> Selector:
    """Build a selector by name. An option no selector takes is an error (a misspelling must not be
    dropped); one that another selector takes, or that is None, is ignored, so a CLI can pass all of
    its selector flags through whichever selector is chosen."""
    if name not in SELECTORS and name in _PLUGINS:
        importlib.import_module(_PLUGINS[name])
    if name not in SELECTORS:
        raise IfpruneError(f"unknown selector {name!r}; choose from {', '.join(sorted({*SELECTORS, *_PLUGINS}))}")
    factory = SELECTORS[name]
    params = _params(factory)
    if unknown := set(options) - params:
        for module in _PLUGINS.values():
            importlib.import_module(module)
        known = set().union(*(_params(f) for f in SELECTORS.values()))
        if typos := sorted(unknown - known):
            import difflib

            hints = [f"{t!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(t, known, 1)) else "")
                     for t in typos]
            raise IfpruneError(f"selector {name!r}: unknown option(s) {', '.join(hints)}; "
                               f"{name} takes {', '.join(sorted(params)) or 'no options'}")
    accepted = {k: v for k, v in options.items() if v is not None and k in params}
    return factory(**accepted)

