"""Training recipes as typed dataclasses, read from YAML or JSON with unknown keys refused.

One `TrainConfig` is one stage ("pretrain" = stage 1, "sft" = stage 2) of one method ("predictor"
= IFPruning, "static" = the learned-static baseline trained by the same loop on the same data).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import IfpruneError


def default_data_dir() -> Path:
    """`$IFPRUNE_DATA`, else the project's shared data folder next to the repository."""
    if env := os.environ.get("IFPRUNE_DATA"):
        return Path(env)
    return Path(__file__).resolve().parents[4] / "shared" / "data"


@dataclass
class DataConfig:
    data_dir: str | None = None  # None: default_data_dir()
    # stage 1: packed documents of num_chunks x chunk_tokens tokens (training text only: WikiText-2's
    # test split, which earlier recipes read, is an evaluation set and is no longer a default)
    pretrain_files: list[str] = field(default_factory=lambda: [
        "pretrain/llamafactory/c4_demo.jsonl", "pretrain/openai_evals/text_compression_samples.jsonl",
        "pretrain/llamafactory/wiki_demo.txt", "pretrain/openai_evals/owt_5.jsonl",
        "pretrain/openai_evals/wikipedia_5.jsonl", "pretrain/sotu/sotu.jsonl"])
    local_text_chars: int = 2_000_000  # text gathered from installed Python sources and Debian docs (0: none)
    chunk_tokens: int = 64
    num_chunks: int = 4
    pretrain_val_docs: int = 16
    # stage 2: SFT mixture
    families: list[str] = field(default_factory=lambda: ["gsm8k", "math", "mbpp", "code", "general", "t0"])
    max_per_family: int = 2000
    val_per_family: int = 24
    eval_per_family: int = 8  # eval_every's in-loop validation: the first N of each family's held-out slice
    max_seq_len: int = 384
    max_prompt_tokens: int = 256
    group_by_length: bool = False  # SFT: sort runs of 16 batches by length (less padding; another data order)
    exclude_eval_prompts: bool = True  # keep `ifprune eval nll`'s validation mix out of training
    # first data position of this stage: a stage continuing an earlier one on the same data (init_from)
    # sets it to the examples that one read (steps x batch_size x grad_accum), so it reads new ones
    start_example: int = 0
    # leave out each family's first K training examples (all a run with max_per_family <= K could read):
    # a continuation on data no earlier stage read once those are used up (start_example then 0)
    skip_per_family: int = 0
    # sequence-level distillation: a folder of the dense model's own answers (python -m ifprune.training.teacher);
    # each training prompt's response becomes the teacher's greedy answer (prompts without a finished one are
    # left out). Validation keeps the reference answers. None: the data set's answers
    teacher: str | None = None
    # leave out teacher answers that repeat one sentence or line three times (training.teacher.repeats_itself)
    teacher_drop_repeats: bool = False

    def root(self) -> Path:
        return Path(self.data_dir) if self.data_dir else default_data_dir()


@dataclass
class TrainConfig:
    stage: str = "sft"  # "pretrain" (stage 1) or "sft" (stage 2)
    method: str = "predictor"  # "predictor" (IFPruning) or "static" (learned-static baseline)
    model: str | None = None  # load_model spec; None: the packaged default model
    keep: float | None = 0.5
    width: int | None = None
    llm: str = "lora"  # "lora", "full" or "frozen"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    lr_predictor: float = 1e-3
    lr_llm: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 10
    steps: int = 100
    batch_size: int = 8
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    seed: int = 0
    eps: float = 0.1  # SoftTopK epsilon (scores are standardised per layer)
    iterations: int = 20  # SoftTopK coordinate-descent rounds
    prior: str = "griffin"  # initial scores: "griffin" (mean over training prompts), "magnitude", "zero"
    prior_prompts: int = 64
    warmstart_prompts: int = 0  # predictor: first fit the head to GRIFFIN's scores on this many training prompts
    warmstart_epochs: int = 30
    warmstart_lr: float = 1e-3
    backbone_layers: int | None = None  # None: last layer
    head_hidden: int = 128
    distill: bool = False  # add KL to the frozen dense model's logits
    distill_weight: float = 1.0
    # artifact dir whose LLM change, applied to the base and run with every channel, is the distillation
    # teacher instead of the base itself: a dense model fine-tuned on the same data knows its format, so
    # the KL then teaches what pruning lost rather than pulling back towards the base model's answers
    # (Minitron's "teacher correction"). None: the frozen base
    teacher_from: str | None = None
    # weight of the cross-entropy on the data's responses; 0 (with distill): pure distillation, the pruned
    # model learns to match the dense model rather than the data's answers (keeps the base model's ways,
    # e.g. its answer lengths, where the SFT data differ from what it was tuned on)
    ce_weight: float = 1.0
    # on-policy distillation (GKD): this fraction of SFT batches (chosen per step from the seed, so a resumed run
    # makes the same choice) replaces each response with the pruned model's own sample (hard top-k masks from the
    # predictor's prompt scores, `on_policy_temperature`, at most `on_policy_tokens` new tokens), trained by
    # the KL to the teacher alone: the model learns where its own answers go wrong, loops included. 0: off
    on_policy: float = 0.0
    on_policy_temperature: float = 1.0
    on_policy_tokens: int = 128
    # predictor: also regress the head's scores (MSE, standardised per layer) onto the GRIFFIN scores of
    # the whole example (prompt and response), read from the training forward's FFN activations before
    # the mask: the channels the answer used, a target for every channel (SoftTopK's gradient reaches
    # only the kept ones near the threshold). 0: off
    oracle_weight: float = 0.0
    # predictor, SFT: train as `--refresh R` runs: each response's first R tokens under the predictor's
    # masks, the rest under masks re-selected from the predictor's scores plus GRIFFIN's over the prompt
    # and those R tokens (selection.refresh; a second masked forward). 0: off
    refresh: int = 0
    # predictor, SFT: which model reads what comes before each masked pass's first loss token, as
    # `--prefill` runs it (selection.prefill): "pruned" masks every position; "dense" keeps every channel
    # over the prompt; "dense-answer" also over the R response tokens re-selection read (so the second
    # pass attends to the full model's keys and values of them, as inference's default does)
    prefill: str = "pruned"
    # train under compensated plans: the down projection reads the full activation the refit of
    # compensation implies from the kept channels (compensation.refit.reconstruct), with moments of
    # the packaged calibration mix gathered once on the weights the run starts from; the artifact then
    # runs with calibration compensation by default, as it was trained. "none": plain masks
    compensate: str = "none"
    init_from: str | None = None  # artifact dir of an earlier stage to continue from
    # artifact dir whose LLM change (LoRA or full) this run starts from instead of init_from's; the head or
    # static scores still come from init_from. For "fine-tune dense first, then prune": a dense SFT run's
    # LLM under an earlier pruning run's predictor. "base": the base model's own weights (a new LoRA or full
    # change from zero), keeping init_from's head: distillation then starts from the dense model's behaviour
    # rather than from what an earlier stage's fine-tuning taught it
    init_llm_from: str | None = None
    output_dir: str = "runs/train"
    resume: bool = True
    checkpoint_every: int = 50
    eval_every: int = 0  # validation NLL (hard top-k masks, the held-out SFT slice) every N steps; 0: never
    max_minutes: float | None = None  # stop (checkpoint + artifact) after this much wall time
    collapse_threshold: float = 0.98
    bf16: bool = True  # bf16 autocast where the hardware has bf16 (GPU; CPU with AVX-512 BF16 or AMX), else float32
    progress: bool = True
    data: DataConfig = field(default_factory=DataConfig)

    def validate(self) -> "TrainConfig":
        def bad(msg):
            raise IfpruneError(f"config: {msg}")

        if self.stage not in ("pretrain", "sft"):
            bad(f"stage must be 'pretrain' or 'sft', got {self.stage!r}")
        if self.method not in ("predictor", "static"):
            bad(f"method must be 'predictor' or 'static', got {self.method!r}")
        if self.llm not in ("lora", "full", "frozen"):
            bad(f"llm must be 'lora', 'full' or 'frozen', got {self.llm!r}")
        if self.prior not in ("griffin", "magnitude", "zero"):
            bad(f"prior must be 'griffin', 'magnitude' or 'zero', got {self.prior!r}")
        if self.keep is not None and self.width is not None:
            bad("give keep or width, not both")
        if self.keep is not None and not 0 < self.keep <= 1:
            bad(f"keep {self.keep} is out of range: use a fraction in (0, 1]")
        if self.width is not None and self.width < 1:
            bad(f"width {self.width} must be >= 1")
        if self.warmstart_prompts < 0 or self.warmstart_epochs < 1:
            bad("warmstart_prompts must be >= 0 and warmstart_epochs >= 1")
        if self.warmstart_prompts and self.method != "predictor":
            bad("warmstart_prompts fits the predictor head: it applies to method 'predictor' only "
                "(the static baseline starts from the griffin prior, the mean of the same scores)")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                bad(f"{f.name} must be a finite number, got {v}")
        if self.oracle_weight and self.method != "predictor":
            bad("oracle_weight trains the predictor head to foresee the response's channels: it applies to method "
                "'predictor' only (a static mask has no input to read)")
        if self.refresh < 0:
            bad(f"refresh must be >= 0 (0: off), got {self.refresh}")
        if self.refresh and (self.method != "predictor" or self.stage != "sft"):
            bad("refresh re-selects after the first response tokens: it applies to method 'predictor' in stage 'sft'")
        from ..selection.prefill import PREFILLS

        trained = [p for p in PREFILLS if p != "kept"]  # kept keeps each plan's own KV cache: not trained yet
        if self.prefill not in trained:
            bad(f"prefill must be {', '.join(trained[:-1])} or {trained[-1]} (kept is not trained yet), got {self.prefill!r}")
        if self.prefill != "pruned" and (self.method != "predictor" or self.stage != "sft"):
            bad("prefill reads the prompt with every channel: it applies to method 'predictor' in stage 'sft'")
        if self.prefill != "pruned" and self.oracle_weight:
            bad("prefill is not combined with oracle_weight yet: use one of them")
        if self.refresh and self.oracle_weight:
            bad("refresh is not combined with oracle_weight yet: use one of them")
        if self.data.teacher is not None and self.stage != "sft":
            bad("data.teacher replaces SFT answers: it needs stage: sft")
        if self.data.teacher_drop_repeats and self.data.teacher is None:
            bad("data.teacher_drop_repeats filters teacher answers: give data.teacher too (or drop it)")
        if self.teacher_from and not self.distill:
            bad("teacher_from names a distillation teacher: set distill: true too (or drop teacher_from)")
        if self.init_llm_from and not self.init_from:
            bad("init_llm_from replaces init_from's LLM change: give init_from too (the artifact whose head or "
                "static scores the run starts from)")
        if self.compensate not in ("none", "calibration"):
            bad(f"compensate must be 'none' or 'calibration', got {self.compensate!r}")
        if self.on_policy and not (self.distill and self.stage == "sft"):
            bad("on_policy trains the model's own samples by the KL to the teacher: it needs stage: sft and distill: true")
        if not 0 <= self.on_policy <= 1 or self.on_policy_temperature < 0 or self.on_policy_tokens < 1:
            bad("on_policy is a fraction in [0, 1], on_policy_temperature >= 0 (0: greedy), on_policy_tokens >= 1")
        if self.ce_weight == 0 and not self.distill:
            bad("ce_weight 0 leaves nothing to train on: set distill: true (pure distillation) or ce_weight > 0")
        for name in ("lr_predictor", "lr_llm", "weight_decay", "warmstart_lr", "oracle_weight", "distill_weight",
                     "ce_weight"):
            if getattr(self, name) < 0:
                bad(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("steps", "batch_size", "grad_accum", "iterations", "lora_r", "checkpoint_every", "head_hidden"):
            if getattr(self, name) < 1:
                bad(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.eval_every < 0:
            bad(f"warmup_steps and eval_every must be >= 0, got {self.warmup_steps} and {self.eval_every}")
        if not self.eps > 0:
            bad(f"eps must be > 0, got {self.eps}")
        d = self.data
        if d.num_chunks < 2:
            bad(f"data.num_chunks must be >= 2 (chunk k predicts the mask for chunk k+1), got {d.num_chunks}")
        for name in ("start_example", "skip_per_family"):
            if getattr(d, name) < 0:
                bad(f"data.{name} must be >= 0, got {getattr(d, name)}")
        if d.chunk_tokens < 1 or d.max_seq_len < 8 or d.val_per_family < 0 or d.max_per_family < 1:
            bad("data sizes must be positive (chunk_tokens >= 1, max_seq_len >= 8, max_per_family >= 1)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls, obj: dict, where: str):
    if not isinstance(obj, dict):
        raise IfpruneError(f"config{where}: expected a mapping, got {type(obj).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(obj) - set(fields))
    if unknown:
        raise IfpruneError(f"config{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(fields)}")
    kw = {}
    for k, v in obj.items():
        if k == "data" and cls is TrainConfig:
            kw[k] = _build(DataConfig, v, ".data")
        else:
            kw[k] = v
    try:
        return cls(**kw)
    except TypeError as e:
        raise IfpruneError(f"config{where}: {e}") from None


def config_from_dict(obj: dict) -> TrainConfig:
    cfg = _build(TrainConfig, obj, "")
    _check_types(cfg)
    return cfg.validate()


def _check_types(cfg: TrainConfig) -> None:
    for obj, where in ((cfg, ""), (cfg.data, "data.")):
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            t = str(f.type)
            if f.name == "data":
                continue
            if v is None:
                if "None" not in t:
                    raise IfpruneError(f"config: {where}{f.name} should be {t}, got null")
                continue
            ok = True
            if t.startswith("int"):
                ok = isinstance(v, int) and not isinstance(v, bool)
            elif t.startswith("float"):
                ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            elif t.startswith("bool"):
                ok = isinstance(v, bool)
            elif t.startswith("str"):
                ok = isinstance(v, str)
            elif t.startswith("list"):
                ok = isinstance(v, list)
            if not ok:
                raise IfpruneError(f"config: {where}{f.name} should be {t}, got {v!r}")


def parse_yaml(text: str):
    """YAML with YAML 1.2's floats: PyYAML (YAML 1.1) reads `5e-5` as a string, which a learning rate
    written the way every paper writes it must not be."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
    return yaml.load(text, Loader=Loader)


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> TrainConfig:
    """Read a YAML (.yaml/.yml) or JSON recipe; `overrides` (dotted keys allowed) win over the file."""
    path = Path(path)
    if not path.is_file():
        raise IfpruneError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            obj = parse_yaml(text)
        else:
            obj = json.loads(text)
    except Exception as e:
        raise IfpruneError(f"cannot parse config {path}: {str(e).splitlines()[0]}") from None
    if obj is None or obj == {}:
        raise IfpruneError(f"config {path} is empty: a recipe names at least its stage and method "
                           "(see configs/ and docs/training.md); every default is not a recipe")
    if not isinstance(obj, dict):
        raise IfpruneError(f"config {path}: expected a mapping of keys to values, got {type(obj).__name__}")
    for key, value in (overrides or {}).items():
        node = obj
        parts = key.split(".")
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise IfpruneError(f"override {key}={value!r}: {'.'.join(parts[:i + 1])} is a value ({node!r}), not a "
                                   "section; only data.* keys are dotted (e.g. --set data.max_seq_len=256)")
        node[parts[-1]] = value
    return config_from_dict(obj)
