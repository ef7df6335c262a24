"""The sparsity predictor: prompt -> [layers, d_ffn] channel scores, and the `predictor` selector.

Backbone (decided for the default model, see docs/training.md): the LLM itself, run dense (no
masks) on the prompt, read out after `backbone_layers` layers (all by default). For a 135M model a
"separate small model" *is* this model, so sharing it costs no memory and no extra weights in the
artifact, and selection is one dense forward of the prompt, as GRIFFIN's is. Any other HF model can
serve as backbone by passing it in (`backbone=`). The backbone is not trained through the
predictor path; it changes only as the LLM itself is fine-tuned, and the predictor always reads the
same (tuned) model at training and at inference.

The head and the pooling are in `heads` (what the artifact stores and training updates).
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import IfpruneError
from .heads import PredictorHead, last_token, pooled_hidden
from ..core.prompting import encode_batch
from .selectors import Selector, register_selector


class PredictorSelector(Selector):
    """Selector "predictor": the trained predictor of an artifact directory (see selection.artifact).

    Built by `make_selector("predictor", checkpoint=DIR)`. On first use it checks that the model is
    the artifact's base model (refusing any other) and applies the artifact's LLM change to it in
    place, so the compact model that generation loads is the jointly trained one. A learned-static
    artifact gives one plan for every prompt.
    """

    name = "predictor"
    WINDOW = 512  # prompt tokens (the last ones) a predictor that keeps no prompt state reads

    def __init__(self, checkpoint: str | None = None, chat: bool = True, **kw):
        super().__init__(**kw)
        if checkpoint is None:
            raise IfpruneError("the predictor selector needs a trained artifact: pass checkpoint=DIR "
                               "(e.g. --checkpoint artifacts/smollm2-135m-keep50)")
        from .artifact import load_artifact

        self.artifact = load_artifact(checkpoint)
        self.per_prompt = self.artifact.kind == "predictor"
        self.chat = chat

    def options(self):
        return {"checkpoint": str(self.artifact.path), "kind": self.artifact.kind}

    def scores(self, lm, text):
        art = self.artifact
        art.attach(lm)
        if art.kind == "static":
            return art.static.scores.detach().float().cpu()
        if text is None:
            raise IfpruneError("the predictor selects per prompt: give a prompt or a task description")
        # a re-selecting artifact's pass is also the dense prefill's and re-selection's, which need the whole prompt:
        # it reads all of it (a window would make them read the prompt again); others read its last WINDOW tokens
        window = (lm.context_length() or 1 << 30) if self.keeps_prompt_state else self.WINDOW
        ids, att = encode_batch(lm.tokenizer, [text], chat=self.chat, max_tokens=window)
        ids, att = ids.to(lm.device), att.to(lm.device)
        if self.keeps_prompt_state:
            scores, state = self.scores_with_state(lm, ids, att)
            self._state = ((lm.fingerprint(), lm.quant, text), state)  # the last prompt's only (its KV cache is large)
            return scores
        return self.scores_from_ids(lm, ids, att)[0]

    @property
    def keeps_prompt_state(self) -> bool:
        """An artifact that re-selects keeps its prompt pass's PromptState (its scores read the model's last
        layer, so that pass is a whole dense pass a re-selection can continue)."""
        return bool(self.artifact.refresh) and self.artifact.backbone_layers is None

    def scores_with_state(self, lm, ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """One prompt's scores [layers, d_ffn] and the PromptState its pass leaves (selection.refresh)."""
        from .refresh import prompt_pass

        self.artifact.attach(lm)
        att = torch.ones_like(ids) if attention_mask is None else attention_mask
        hidden, state = prompt_pass(lm, ids, att)
        with torch.no_grad():
            return self.artifact.head.to(hidden.device)(last_token(hidden, att)).float().cpu()[0], state

    _state = None

    def prompt_state(self, lm, text):
        """The PromptState of `text` when the last prompt pass was over it (see selection.refresh)."""
        if self._state is not None and self._state[0] == (lm.fingerprint(), lm.quant, text):
            return self._state[1]
        return None

    def scores_from_ids(self, lm, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[batch, layers, d_ffn] for already-encoded prompts (the latency benchmark's path)."""
        self.artifact.attach(lm)
        return head_scores(self.artifact.head, lm.reader()[0], ids, attention_mask, self.artifact.backbone_layers)


def head_scores(head: PredictorHead, backbone: nn.Module, ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None, backbone_layers: int | None = None) -> torch.Tensor:
    """[batch, layers, d_ffn] scores of a predictor head on the backbone's pooled prompt state."""
    att = torch.ones_like(ids) if attention_mask is None else attention_mask
    pooled = pooled_hidden(backbone, ids, att, backbone_layers)
    with torch.no_grad():
        return head.to(pooled.device)(pooled).float().cpu()


register_selector("predictor", PredictorSelector)
