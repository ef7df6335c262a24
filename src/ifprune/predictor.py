"""The sparsity predictor: prompt -> [layers, d_ffn] channel scores, and the `predictor` selector.

Backbone (decided for the default model, see docs/training.md): the LLM itself, run dense (no
masks) on the prompt, read out after `backbone_layers` layers (all by default). For a 135M model a
"separate small model" *is* this model, so sharing it costs no memory and no extra weights in the
artifact, and selection is one dense forward of the prompt, as GRIFFIN's is. Any other HF model can
serve as backbone by passing it in (`backbone=`). The backbone is not trained through the
predictor path; it changes only as the LLM itself is fine-tuned, and the predictor always reads the
same (tuned) model at training and at inference.

Pooling: hidden state of the last prompt token. Head: LayerNorm -> d -> 128 (GELU) -> layers*d_ffn,
whose output bias starts at a per-layer standardised prior (magnitude or mean GRIFFIN scores), so
training starts from a sensible mask instead of a random one.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import IfpruneError
from .prompt_pass import prompt_hidden
from .prompting import encode_prompt
from .selectors import Selector, register_selector


class PredictorHead(nn.Module):
    def __init__(self, hidden_size: int, num_layers: int, d_ffn: int, head_hidden: int = 128):
        super().__init__()
        self.num_layers, self.d_ffn = num_layers, d_ffn
        self.norm = nn.LayerNorm(hidden_size)
        self.fc1 = nn.Linear(hidden_size, head_hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(head_hidden, num_layers * d_ffn)
        with torch.no_grad():
            # default-scale weights give per-input deviations of ~0.3 around a unit-spread prior: enough
            # that different prompts start with different masks (a 0.1x scale collapsed them, measured)
            self.fc2.bias.zero_()

    def set_prior(self, prior: torch.Tensor) -> None:
        self.fc2.bias.data.copy_(standardise(prior).reshape(-1))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        z = self.fc2(self.act(self.fc1(self.norm(pooled.float()))))
        return z.view(-1, self.num_layers, self.d_ffn)


class StaticScores(nn.Module):
    """The learned-static baseline: one score matrix for every input."""

    def __init__(self, num_layers: int, d_ffn: int):
        super().__init__()
        self.scores = nn.Parameter(torch.zeros(num_layers, d_ffn))

    def set_prior(self, prior: torch.Tensor) -> None:
        self.scores.data.copy_(standardise(prior))

    def forward(self, batch: int) -> torch.Tensor:
        return self.scores.unsqueeze(0).expand(batch, -1, -1)


def standardise(scores: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit spread per layer, so one SoftTopK epsilon suits every layer and model."""
    s = scores.float()
    return (s - s.mean(-1, keepdim=True)) / s.std(-1, keepdim=True).clamp_min(1e-8)


def encode_batch(tokenizer, texts: list[str], *, chat: bool = True, max_tokens: int = 512):
    """Right-padded ids and attention mask of prompts encoded exactly as at inference."""
    rows = [encode_prompt(tokenizer, t, chat=chat)[0][-max_tokens:] for t in texts]
    return pad_rows(rows, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)


def pad_rows(rows: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [N, T] and attention mask of 1-D token rows (positions stay those of each row)."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    att = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        att[i, : len(r)] = 1
    return ids, att


def length_batches(rows: list[torch.Tensor], pad: int, batch_size: int):
    """(row indices, ids, attention mask) batches, rows grouped by length so little is padding."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        yield (idx, *pad_rows([rows[i] for i in idx], pad))


def pooled_hidden(backbone: nn.Module, ids: torch.Tensor, attention_mask: torch.Tensor,
                  backbone_layers: int | None = None) -> torch.Tensor:
    """[batch, hidden]: the backbone's hidden state at each prompt's last real token (no gradient;
    no LM head, and no layers past `backbone_layers`: see prompt_pass)."""
    return last_token(prompt_hidden(backbone, ids, attention_mask, backbone_layers), attention_mask)


def pool_last(hidden_states, attention_mask: torch.Tensor, backbone_layers: int | None = None) -> torch.Tensor:
    """Hidden state after `backbone_layers` layers (all: None) at each row's last real token."""
    h = hidden_states[-1] if backbone_layers is None else hidden_states[min(backbone_layers, len(hidden_states) - 1)]
    return last_token(h, attention_mask)


def last_token(h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[batch, hidden] float: each right-padded row's state at its last real token."""
    last = attention_mask.sum(1) - 1
    return h[torch.arange(h.shape[0], device=h.device), last.to(h.device)].float()


class PredictorSelector(Selector):
    """Selector "predictor": the trained predictor of an artifact directory (see training.artifact).

    Built by `make_selector("predictor", checkpoint=DIR)`. On first use it checks that the model is
    the artifact's base model (refusing any other) and applies the artifact's LLM change to it in
    place, so the compact model that generation loads is the jointly trained one. A learned-static
    artifact gives one plan for every prompt.
    """

    name = "predictor"

    def __init__(self, checkpoint: str | None = None, chat: bool = True, **kw):
        super().__init__(**kw)
        if checkpoint is None:
            raise IfpruneError("the predictor selector needs a trained artifact: pass checkpoint=DIR "
                               "(e.g. --checkpoint artifacts/smollm2-135m-keep50)")
        from .training.artifact import load_artifact

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
        ids, att = encode_batch(lm.tokenizer, [text], chat=self.chat)
        return self.scores_from_ids(lm, ids.to(lm.device), att.to(lm.device))[0]

    def scores_from_ids(self, lm, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[batch, layers, d_ffn] for already-encoded prompts (the latency benchmark's path)."""
        self.artifact.attach(lm)
        return head_scores(self.artifact.head, lm.model, ids, attention_mask, self.artifact.backbone_layers)


def head_scores(head: PredictorHead, backbone: nn.Module, ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None, backbone_layers: int | None = None) -> torch.Tensor:
    """[batch, layers, d_ffn] scores of a predictor head on the backbone's pooled prompt state."""
    att = torch.ones_like(ids) if attention_mask is None else attention_mask
    pooled = pooled_hidden(backbone, ids, att, backbone_layers)
    with torch.no_grad():
        return head.to(pooled.device)(pooled).float().cpu()


register_selector("predictor", PredictorSelector)
