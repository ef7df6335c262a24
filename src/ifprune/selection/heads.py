"""The predictor's trainable parts: the head (pooled prompt state -> [layers, d_ffn] scores), the
learned-static scores, and the last-token pooling both training and selection read.

Pooling: hidden state of the last prompt token. Head: LayerNorm -> d -> 128 (GELU) -> layers*d_ffn,
whose output bias starts at a per-layer standardised prior (magnitude or mean GRIFFIN scores), so
training starts from a sensible mask instead of a random one.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.prompt_pass import prompt_hidden


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
