"""Find the FFN of every transformer layer by the model's module structure, never by its name.

An FFN *channel* i is one intermediate unit: row i of each up-like projection (gate and up, or the
fused gate_up, or the single up of a non-gated MLP, with its bias) and column i of the down
projection. Everything that prunes, masks or gathers channels goes through `FFNLayout`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import IfpruneError

try:  # GPT-2 family stores weights transposed ([in, out]) in Conv1D modules.
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers always ships it today
    Conv1D = ()


@dataclass(frozen=True)
class FFNFamily:
    """A module pattern: child names of the MLP block and the config field that sets its width."""

    name: str
    examples: str
    up: tuple[str, ...]
    down: str
    fused: bool = False
    width_attr: str = "intermediate_size"


FAMILIES: tuple[FFNFamily, ...] = (
    FFNFamily("gated", "Llama, Mistral, Qwen2, Qwen3, SmolLM2, Gemma 1/2/3", ("gate_proj", "up_proj"), "down_proj"),
    FFNFamily("fused-gated", "Phi-3", ("gate_up_proj",), "down_proj", fused=True),
    FFNFamily("plain", "GPT-NeoX, Pythia", ("dense_h_to_4h",), "dense_4h_to_h"),
    FFNFamily("plain-conv1d", "GPT-2", ("c_fc",), "c_proj", width_attr="n_inner"),
)


def supported_families() -> str:
    return "; ".join(f"{f.name} ({f.examples})" for f in FAMILIES)


@dataclass(frozen=True)
class ChannelTensor:
    """One tensor that carries FFN channels along `dim` (`fused`: [gate; up] halves, both sliced)."""

    module: nn.Module
    attr: str
    dim: int
    fused: bool = False

    @property
    def tensor(self) -> torch.Tensor:
        return getattr(self.module, self.attr)

    def rows_for(self, channels: torch.Tensor, d_ffn: int) -> torch.Tensor:
        return torch.cat([channels, channels + d_ffn]) if self.fused else channels


@dataclass
class FFNLayer:
    index: int
    name: str  # qualified module name of the MLP block
    mlp: nn.Module
    up: tuple[nn.Module, ...]
    down: nn.Module
    family: FFNFamily
    block: nn.Module | None = None  # the decoder block that holds the MLP (early exit reads its output)

    def channel_tensors(self) -> list[ChannelTensor]:
        out = []
        for mod in self.up:
            out.append(ChannelTensor(mod, "weight", 1 if isinstance(mod, Conv1D) else 0, self.family.fused))
            if getattr(mod, "bias", None) is not None:
                out.append(ChannelTensor(mod, "bias", 0, self.family.fused))
        out.append(ChannelTensor(self.down, "weight", 0 if isinstance(self.down, Conv1D) else 1))
        return out


def _in_features(mod: nn.Module) -> int:
    if not hasattr(mod, "weight"):  # quantized.Int8Linear
        return mod.in_features
    return mod.weight.shape[0] if isinstance(mod, Conv1D) else mod.weight.shape[1]


@dataclass
class FFNLayout:
    """The FFN blocks of one model, in layer order, with their shared width `d_ffn`."""

    family: FFNFamily
    layers: list[FFNLayer]
    d_ffn: int

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def params_per_channel(self) -> int:
        """Parameters removed from one layer when one channel is dropped."""
        layer = self.layers[0]
        return sum(ct.tensor.numel() for ct in layer.channel_tensors()) // self.d_ffn

    def ffn_param_names(self, model: nn.Module) -> set[str]:
        ids = {id(ct.tensor) for layer in self.layers for ct in layer.channel_tensors()}
        return {n for n, p in model.named_parameters(remove_duplicate=False) if id(p) in ids}


def _decoder_layer_lists(model: nn.Module, num_layers: int | None):
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and (num_layers is None or len(mod) == num_layers):
            yield name, mod


def _find_mlp(block: nn.Module, fam: FFNFamily):
    for name, mod in block.named_modules():
        if all(isinstance(getattr(mod, c, None), nn.Module) for c in (*fam.up, fam.down)):
            return name, mod
    return None


def discover(model: nn.Module) -> FFNLayout:
    """Locate every layer's FFN; raises IfpruneError naming the supported families if none fits."""
    cfg = getattr(model, "config", None)
    text_cfg = cfg.get_text_config() if cfg is not None and hasattr(cfg, "get_text_config") else cfg
    num_layers = getattr(text_cfg, "num_hidden_layers", None) or getattr(text_cfg, "n_layer", None)
    for list_name, blocks in _decoder_layer_lists(model, num_layers):
        for fam in FAMILIES:
            found = [_find_mlp(b, fam) for b in blocks]
            if not all(found):
                continue
            layers = []
            for i, (mlp_name, mlp) in enumerate(found):
                up = tuple(getattr(mlp, c) for c in fam.up)
                down = getattr(mlp, fam.down)
                qual = ".".join(p for p in (list_name, str(i), mlp_name) if p)
                layers.append(FFNLayer(i, qual, mlp, up, down, fam, blocks[i]))
            widths = {_in_features(layer.down) for layer in layers}
            if len(widths) != 1:
                raise IfpruneError(
                    f"FFN widths differ across layers ({sorted(widths)}); ifprune needs one width for all layers"
                )
            return FFNLayout(fam, layers, widths.pop())
    arch = type(model).__name__
    raise IfpruneError(
        f"unsupported architecture {arch}: no FFN block of a known family was found in its layers. "
        f"Supported families: {supported_families()}"
    )
