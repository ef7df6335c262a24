"""A trained artifact: everything `ifprune generate` needs on top of the base model.

    DIR/config.json            base model + fingerprint, width, kind, predictor shape, recipe
    DIR/predictor.safetensors  head weights (kind "predictor") or the static scores (kind "static"), bf16
    DIR/llm/                   the LLM change: a peft LoRA adapter (adapter_config.json +
                               adapter_model.safetensors), or llm_delta.safetensors for full tuning

`attach(lm)` refuses a model whose fingerprint is not the recorded base, and otherwise applies the
LLM change in place (LoRA merged by peft), once.

Nothing in an artifact is trusted unchecked: config.json records a sha256 of every other file (its
markdown card aside) and of its own content (`files`, `config_sha256`), every field is validated, weights must be finite and of
the recorded shapes, and the LoRA is read from the artifact's own folder only (never the Hub).
`python -m ifprune.selection.artifact seal DIR` adds the checksums to an artifact made before them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.errors import IfpruneError
from ..core.paths import atomic_path, file_sha256
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

    @property
    def refresh(self) -> int | None:
        return recipe_refresh(self.config)

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
        lm.weights_changed()  # plans cached under the base fingerprint must not be reused
        lm.trained_compensation = recipe_compensate(self.config)
        if lm.trained_compensation != "none":  # weights trained under compensated plans run that way, also from
            from ..compensation.calibration import compensate  # the library (compensate(lm, "none") turns it off)

            compensate(lm, lm.trained_compensation)


def recipe_refresh(config: dict) -> int | None:
    """Re-selection after this many answer tokens when the artifact (its config.json) was trained that
    way (recipe `refresh`): how it runs by default, since its weights learned the re-selected masks."""
    return int((config.get("recipe") or {}).get("refresh") or 0) or None


def recipe_compensate(config: dict) -> str:
    """The compensation an artifact's weights (its config.json) were trained under (recipe `compensate`,
    default none): how its plans run by default."""
    return str((config.get("recipe") or {}).get("compensate") or "none")


def apply_llm_change(model: torch.nn.Module, llm_dir: Path, kind: str) -> None:
    if kind == "lora":
        from peft import PeftModel
        from safetensors.torch import load_file

        for name in ("adapter_config.json", "adapter_model.safetensors"):
            if not (llm_dir / name).is_file():  # peft would look for it on the Hub
                raise IfpruneError(f"artifact adapter file {llm_dir / name} is missing")
        _finite(load_file(str(llm_dir / "adapter_model.safetensors")), "LoRA", llm_dir.parent)
        wrapped = PeftModel.from_pretrained(model, str(llm_dir), local_files_only=True)
        wrapped.merge_and_unload()  # merges in place into `model`'s own Linear modules
    elif kind == "full":
        from safetensors.torch import load_file

        delta = load_file(str(llm_dir / "llm_delta.safetensors"))
        _finite(delta, "LLM delta", llm_dir.parent)
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
                  llm: str, peft_model=None, base_state: dict | None = None, llm_from: Path | None = None,
                  recipe: dict, stats: dict | None = None, base_fingerprint: str) -> Path:
    """Write an artifact atomically (weights in bf16). `module`: the PredictorHead or StaticScores.
    `llm_from`: an earlier artifact's llm/ directory to copy as is (a stage that froze the LLM)."""
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
        if llm_from is not None:
            shutil.copytree(llm_from, tmp / "llm")
        elif llm == "lora":
            from safetensors.torch import load_file

            (tmp / "llm").mkdir()
            peft_model.save_pretrained(str(tmp / "llm"))
            f = tmp / "llm" / "adapter_model.safetensors"
            save_file({k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(f)).items()}, str(f),
                      metadata={"format": "pt"})
            clean_adapter_dir(tmp / "llm", lm.source)
        elif llm == "full":
            (tmp / "llm").mkdir()
            cur = dict(peft_model.named_parameters())
            delta = {n: (cur[n].detach().float().cpu() - base_state[n].float()).to(torch.bfloat16).contiguous()
                     for n in base_state}
            save_file(delta, str(tmp / "llm" / "llm_delta.safetensors"))
        else:
            (tmp / "llm").mkdir()
        seal_config(tmp, cfg)
    return path


def _checksum_config(cfg: dict) -> str:
    import hashlib

    body = {k: v for k, v in cfg.items() if k != "config_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def seal_config(path: Path, cfg: dict) -> None:
    """Write config.json with the sha256 of every other file in the artifact and of itself."""
    files = sorted(q for q in path.rglob("*") if q.is_file() and q.name != "config.json" and q.suffix != ".md")
    cfg = {**cfg, "files": {str(q.relative_to(path)): file_sha256(q) for q in files}}
    cfg["config_sha256"] = _checksum_config(cfg)
    (path / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def _check_config(path: Path, cfg: dict) -> None:
    def bad(msg: str):
        raise IfpruneError(f"artifact {path}: {msg}; the artifact is damaged or was edited: use an intact copy "
                           "(or retrain it)")

    def pos_int(name: str, v) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            bad(f"{name} must be a positive integer, got {v!r}")
        return v

    if "config_sha256" not in cfg or "files" not in cfg:
        raise IfpruneError(f"artifact {path} has no checksums (made before they were recorded): seal it once with "
                           f"`python -m ifprune.selection.artifact seal {path}` if you trust this copy")
    if cfg["config_sha256"] != _checksum_config(cfg):
        bad("config.json does not match its recorded checksum")
    if not isinstance(cfg["files"], dict):
        bad("'files' must map file names to sha256 digests")
    for rel, digest in cfg["files"].items():
        q = (path / rel).resolve()
        if path.resolve() not in q.parents:
            bad(f"file entry {rel!r} points outside the artifact")
        if not q.is_file():
            bad(f"{rel} is missing")
        if file_sha256(q) != digest:
            bad(f"{rel} does not match its recorded sha256")
    for q in path.rglob("*"):
        if q.is_file() and q.suffix in (".safetensors", ".json", ".bin") and q.name != "config.json" \
                and str(q.relative_to(path)) not in cfg["files"]:
            bad(f"{q.relative_to(path)} is not one of the artifact's recorded files")
    if cfg.get("kind") not in ("predictor", "static"):
        bad(f"kind must be 'predictor' or 'static', got {cfg.get('kind')!r}")
    if cfg.get("llm") not in ("lora", "full", "none"):
        bad(f"llm must be 'lora', 'full' or 'none', got {cfg.get('llm')!r}")
    layers, d_ffn, width = pos_int("num_layers", cfg.get("num_layers")), pos_int("d_ffn", cfg.get("d_ffn")), \
        pos_int("width", cfg.get("width"))
    if width > d_ffn:
        bad(f"width {width} exceeds d_ffn {d_ffn}")
    if cfg["kind"] == "predictor":
        pos_int("hidden_size", cfg.get("hidden_size"))
        pos_int("head_hidden", cfg.get("head_hidden"))
    bl = cfg.get("backbone_layers")
    if bl is not None and (pos_int("backbone_layers", bl) > layers):
        bad(f"backbone_layers {bl} exceeds num_layers {layers}")
    if not isinstance(cfg.get("base_fingerprint"), str):
        bad("base_fingerprint is missing")
    need = {"lora": {"llm/adapter_config.json", "llm/adapter_model.safetensors"},
            "full": {"llm/llm_delta.safetensors"}, "none": set()}[cfg["llm"]]
    have = {k for k in cfg["files"] if k.startswith("llm/")}
    if not need <= have or (cfg["llm"] == "none" and have):
        bad(f"llm is {cfg['llm']!r} but llm/ holds {sorted(have) or 'nothing'}")
    if "predictor.safetensors" not in cfg["files"]:
        bad("predictor.safetensors is not recorded")
    recipe = cfg.get("recipe")
    if recipe is not None and not isinstance(recipe, dict):
        bad("recipe must be a mapping")
    refresh = (recipe or {}).get("refresh")
    if refresh is not None and (isinstance(refresh, bool) or not isinstance(refresh, int) or refresh < 0):
        bad(f"recipe refresh must be a whole number of tokens >= 0, got {refresh!r}")
    if refresh and cfg["kind"] != "predictor":
        bad("recipe refresh re-selects with the predictor: a static artifact cannot carry it")
    if (recipe or {}).get("compensate", "none") not in ("none", "calibration"):
        bad(f"recipe compensate must be 'none' or 'calibration', got {recipe.get('compensate')!r}")


def _finite(tensors: dict, where: str, path: Path) -> None:
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise IfpruneError(f"artifact {path}: {where} tensor {k} holds NaN or inf: the artifact is damaged")


def load_artifact(path: str | Path) -> Artifact:
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise IfpruneError(f"no trained artifact at {path} (expected {cfg_path}); train one with `ifprune train CONFIG`")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise IfpruneError(f"{cfg_path}:{e.lineno}: malformed artifact config ({e.msg})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        got = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise IfpruneError(f"{cfg_path}: not an ifprune artifact (format {got!r}, expected {FORMAT})")
    _check_config(path, cfg)
    from safetensors.torch import load_file

    state = load_file(str(path / "predictor.safetensors"))
    _finite(state, "predictor", path)
    art = Artifact(path, cfg)
    try:
        if cfg["kind"] == "predictor":
            art.head = PredictorHead(cfg["hidden_size"], cfg["num_layers"], cfg["d_ffn"], cfg["head_hidden"])
            art.head.load_state_dict({k: v.float() for k, v in state.items()})
            art.head.eval()
        else:
            art.static = StaticScores(cfg["num_layers"], cfg["d_ffn"])
            art.static.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as e:
        raise IfpruneError(f"artifact {path}: predictor.safetensors does not fit the recorded shape "
                           f"({str(e).splitlines()[0]})") from None
    return art


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m ifprune.selection.artifact",
                                description="Record checksums in an artifact made before they existed.")
    sub = p.add_subparsers(dest="cmd", required=True)
    seal = sub.add_parser("seal", help="add sha256 of every file to config.json (for a copy you trust)")
    seal.add_argument("path")
    a = p.parse_args(argv)
    path = Path(a.path)
    cfg = json.loads((path / "config.json").read_text())
    cfg.pop("files", None)
    cfg.pop("config_sha256", None)
    seal_config(path, cfg)
    load_artifact(path)
    print(f"sealed {path}: {len(json.loads((path / 'config.json').read_text())['files'])} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
