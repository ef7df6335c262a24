"""A trained artifact: everything `ifprune generate` needs on top of the base model.

    DIR/config.json            base model + fingerprint, width, kind, predictor shape, recipe
    DIR/predictor.safetensors  head weights (kind "predictor") or the static scores (kind "static"), bf16
    DIR/llm/                   the LLM change: a peft LoRA adapter (adapter_config.json +
                               adapter_model.safetensors), or llm_delta.safetensors for full tuning

`attach(lm)` refuses a model whose fingerprint is not the recorded base, and otherwise applies the
LLM change in place (LoRA merged by peft), once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.errors import IfpruneError
from ..core.paths import atomic_path
from .heads import PredictorHead, StaticScores

FORMAT = "ifprune-artifact/1"


@dataclass
class Artifact:
    path: Path
    config: dict
    head: PredictorHead | None = None
    static: StaticScores | None = None
    _applied_to: set = field(default_factory=set, repr=False)

    @property
    def kind(self) -> str:
        return self.config["kind"]

    @property
    def width(self) -> int:
        return int(self.config["width"])

    @property
    def backbone_layers(self) -> int | None:
        return self.config.get("backbone_layers")

    def attach(self, lm) -> None:
        """Check `lm` is the base model and apply the LLM change to it in place (idempotent)."""
        if getattr(lm, "_ifprune_artifact", None) == str(self.path.resolve()):
            return
        if getattr(lm, "_ifprune_artifact", None) is not None:
            raise IfpruneError(f"this model already carries artifact {lm._ifprune_artifact}; load the base model "
                               f"again to use {self.path}")
        if getattr(lm, "compensator", None) is not None:
            raise IfpruneError("attach the artifact before turning compensation on: its statistics must be "
                               "those of the tuned weights")
        base = self.config["base_fingerprint"]
        if lm.fingerprint() != base:
            raise IfpruneError(
                f"artifact {self.path} was trained on base model {self.config['base_model']} (weights fingerprint "
                f"{base}); this model ({lm.source}, dtype {next(lm.model.parameters()).dtype}) has fingerprint "
                f"{lm.fingerprint()}: load that base model in float32"
            )
        if self.config["num_layers"] != lm.num_layers or self.config["d_ffn"] != lm.d_ffn:
            raise IfpruneError(f"artifact {self.path} is for {self.config['num_layers']} layers x {self.config['d_ffn']} channels")
        apply_llm_change(lm.model, self.path / "llm", self.config["llm"])
        lm._ifprune_artifact = str(self.path.resolve())
        lm._fingerprint = None  # weights changed: plans cached under the base fingerprint must not be reused
        lm._compact.clear()


def apply_llm_change(model: torch.nn.Module, llm_dir: Path, kind: str) -> None:
    if kind == "lora":
        from peft import PeftModel

        wrapped = PeftModel.from_pretrained(model, str(llm_dir))
        wrapped.merge_and_unload()  # merges in place into `model`'s own Linear modules
    elif kind == "full":
        from safetensors.torch import load_file

        delta = load_file(str(llm_dir / "llm_delta.safetensors"))
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, d in delta.items():
                if name not in params:
                    raise IfpruneError(f"artifact delta names {name}, which this model lacks")
                params[name].add_(d.to(params[name].dtype))


def clean_adapter_dir(llm_dir: Path, base_model: str) -> None:
    """peft records the base model's local path (a cache directory of this machine) and writes an
    empty model card: name the base model instead and drop the card (the artifact's config says it)."""
    cfg_path = llm_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base_model
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (llm_dir / "README.md").unlink(missing_ok=True)


def save_artifact(path: str | Path, *, lm, kind: str, width: int, module: torch.nn.Module,
                  llm: str, peft_model=None, base_state: dict | None = None, recipe: dict,
                  stats: dict | None = None, base_fingerprint: str) -> Path:
    """Write an artifact atomically (weights in bf16). `module`: the PredictorHead or StaticScores."""
    from safetensors.torch import save_file

    path = Path(path)
    cfg = {
        "format": FORMAT, "kind": kind, "base_model": lm.source, "base_fingerprint": base_fingerprint,
        "num_layers": lm.num_layers, "d_ffn": lm.d_ffn, "width": width, "keep": width / lm.d_ffn, "llm": llm,
        "hidden_size": getattr(module, "norm", None).normalized_shape[0] if kind == "predictor" else None,
        "head_hidden": module.fc1.out_features if kind == "predictor" else None,
        "backbone_layers": recipe.get("backbone_layers"), "recipe": recipe, "stats": stats or {},
        "licence_note": "trained on ../shared/data sets (see data/README there); Alpaca and Code Alpaca are "
                        "CC-BY-NC-4.0, so this artifact is for research use",
    }
    with atomic_path(path) as tmp:
        tmp.mkdir()
        state = {k: v.detach().to(torch.bfloat16).contiguous().cpu() for k, v in module.state_dict().items()}
        save_file(state, str(tmp / "predictor.safetensors"), metadata={"kind": kind})
        (tmp / "llm").mkdir()
        if llm == "lora":
            from safetensors.torch import load_file

            peft_model.save_pretrained(str(tmp / "llm"))
            f = tmp / "llm" / "adapter_model.safetensors"
            save_file({k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(f)).items()}, str(f),
                      metadata={"format": "pt"})
            clean_adapter_dir(tmp / "llm", lm.source)
        elif llm == "full":
            cur = dict(peft_model.named_parameters())
            delta = {n: (cur[n].detach().float().cpu() - base_state[n].float()).to(torch.bfloat16).contiguous()
                     for n in base_state}
            save_file(delta, str(tmp / "llm" / "llm_delta.safetensors"))
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return path


def load_artifact(path: str | Path) -> Artifact:
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise IfpruneError(f"no trained artifact at {path} (expected {cfg_path}); train one with `ifprune train CONFIG`")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise IfpruneError(f"{cfg_path}:{e.lineno}: malformed artifact config ({e.msg})") from None
    if cfg.get("format") != FORMAT:
        raise IfpruneError(f"{cfg_path}: not an ifprune artifact (format {cfg.get('format')!r}, expected {FORMAT})")
    from safetensors.torch import load_file

    state = load_file(str(path / "predictor.safetensors"))
    art = Artifact(path, cfg)
    if cfg["kind"] == "predictor":
        art.head = PredictorHead(cfg["hidden_size"], cfg["num_layers"], cfg["d_ffn"], cfg["head_hidden"])
        art.head.load_state_dict({k: v.float() for k, v in state.items()})
        art.head.eval()
    else:
        art.static = StaticScores(cfg["num_layers"], cfg["d_ffn"])
        art.static.load_state_dict({k: v.float() for k, v in state.items()})
    return art
