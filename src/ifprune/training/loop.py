"""The joint training loop of predictor (or learned-static scores) and LLM, on `accelerate`.

One loop serves both stages and both methods:
- stage "pretrain": blocks of K chunks; the mask predicted from chunk k is the mask under which the
  LLM, reading the whole prefix (chunks 1..k+1), is scored on chunk k+1. The K-1 prefixes of a block
  are K-1 examples of one batch, each with its own mask (per-example masks of MaskedFFN).
- stage "sft": the predictor reads the first user message; the loss is on response tokens only.
- method "static": one learned score matrix for every input, otherwise identical.

Masks are SoftTopK(scores) = lambda * TopK(lambda, k), applied at each layer's down-projection input
by `ifprune.core.hooks.MaskedFFN`, so the loss is differentiable in the predictor's scores.
Data order is a function of (seed, example position), so a resumed run sees the same batches.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..compensation.calibration import CompensationConfig
from ..compensation.refit import reconstruct
from ..core.errors import IfpruneError
from ..core.ffn import discover
from ..core.hooks import MaskedFFN
from ..core.paths import atomic_path, write_json
from ..core.precision import cpu_has_fast_bf16
from ..core.plan import width_from_keep
from ..core.prompting import encode_prompt
from ..selection.heads import PredictorHead, StaticScores, pooled_hidden, standardise
from ..selection.selectors import griffin_columns
from ..core.prompting import encode_batch, length_batches
from ..selection.softtopk import hard_topk_indicator, pairwise_overlap, soft_topk
from .warmstart import topk_agreement
from .config import TrainConfig

log = logging.getLogger(__name__)

GROUP_BATCHES = 16  # batches per length-sorted group (data.group_by_length)


@dataclass
class Batch:
    families: list[str]
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor
    labels: torch.Tensor  # [B, T], -100 where no loss
    pred_ids: torch.Tensor | None  # predictor input (None for static)
    pred_mask: torch.Tensor | None
    on_policy: bool = False  # the responses are the model's own samples: no cross-entropy on them


def _pad(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    T = max(len(r) for r in rows)
    out = torch.full((len(rows), T), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def sft_batch(tokenizer, examples, cfg: TrainConfig) -> Batch:
    from .data_sft import tokenize_sft

    toks = [tokenize_sft(tokenizer, e, max_seq_len=cfg.data.max_seq_len, max_prompt_tokens=cfg.data.max_prompt_tokens)
            for e in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = _pad([t.input_ids for t in toks], pad)
    att = _pad([torch.ones_like(t.input_ids) for t in toks], 0)
    labels = _pad([t.labels for t in toks], -100)
    pids, patt = encode_batch(tokenizer, [e.prompt for e in examples], max_tokens=cfg.data.max_prompt_tokens)
    return Batch([e.family for e in examples], ids, att, labels, pids, patt)


def pretrain_batch(blocks: torch.Tensor, cfg: TrainConfig) -> Batch:
    """Each block of K chunks gives K-1 examples: prefix up to chunk k+1, loss on chunk k+1, mask from chunk k."""
    C, K = cfg.data.chunk_tokens, cfg.data.num_chunks
    ids, labels, pids = [], [], []
    for blk in blocks:
        for k in range(1, K):
            prefix = blk[: (k + 1) * C]
            lab = torch.full_like(prefix, -100)
            lab[k * C:] = prefix[k * C:]
            ids.append(prefix)
            labels.append(lab)
            pids.append(blk[(k - 1) * C: k * C])
    att = _pad([torch.ones_like(r) for r in ids], 0)
    pid = torch.stack(pids)
    return Batch(["pretrain"] * len(ids), _pad(ids, 0), att, _pad(labels, -100), pid, torch.ones_like(pid))


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example summed next-token CE and token counts."""
    lg = logits[:, :-1].float()
    lb = labels[:, 1:]
    ce = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), lb.reshape(-1), ignore_index=-100, reduction="none")
    ce = ce.view(lb.shape)
    return ce.sum(1), (lb != -100).sum(1)


# config keys under which a model rescales or caps its logits after the LM head
_LOGIT_POSTPROCESS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


@dataclass
class LossLogits:
    """Logits at the positions that carry a loss only, flattened: [N, vocab] with each row's example."""

    logits: torch.Tensor
    targets: torch.Tensor  # [N]
    rows: torch.Tensor  # [N] example index of each position
    batch: int

    def losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example summed CE and token counts (as `token_losses`)."""
        ce = F.cross_entropy(self.logits.float(), self.targets, reduction="none")
        sums = torch.zeros(self.batch, dtype=ce.dtype, device=ce.device).index_add_(0, self.rows, ce)
        counts = torch.bincount(self.rows, minlength=self.batch)
        return sums, counts


def split_at_refresh(labels: torch.Tensor, after: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels of each row's first `after` response tokens, labels of the rest), -100 elsewhere."""
    resp = labels != -100
    early = resp & (resp.long().cumsum(1) <= after)
    return labels.masked_fill(~early, -100), labels.masked_fill(early | ~resp, -100)


def dense_before(labels: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: the positions a dense prefill reads with every channel before a pass whose first loss
    token is each row's first label: all but the last token before it, which the compact model reads
    itself, as its first input (selection.prefill). A row with no label has every position dense."""
    on = labels != -100
    T = labels.shape[1]
    first = torch.where(on.any(1), on.long().argmax(1), torch.full_like(on[:, 0], T + 1, dtype=torch.long))
    return torch.arange(T, device=labels.device).unsqueeze(0) < (first - 1).unsqueeze(1)


def loss_logits(model, ids: torch.Tensor, att: torch.Tensor, labels: torch.Tensor) -> LossLogits:
    """Run the decoder, then the LM head only where a next-token loss is taken.

    The head is a fifth of SmolLM2-135M's parameters and its [B, T, vocab] output (and its softmax
    backward) dominates a training step's memory; in SFT half the tokens carry no loss, in stage 1
    most do not. Models that post-process logits (soft-capping, scaling) take the full forward.
    """
    from ..core.prompt_pass import decoder_body

    on = labels[:, 1:] != -100
    rows = on.nonzero()[:, 0]
    targets = labels[:, 1:][on]
    inner = getattr(model, "module", model)
    cfg = inner.config.get_text_config() if hasattr(inner.config, "get_text_config") else inner.config
    body, head = decoder_body(model), inner.get_output_embeddings()
    if body is inner or head is None or any(getattr(cfg, k, None) not in (None, 1, 1.0) for k in _LOGIT_POSTPROCESS):
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1][on]
    else:
        h = body(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state
        logits = head(h[:, :-1][on])
    return LossLogits(logits, targets, rows, ids.shape[0])


def kl_to_teacher(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) at each loss position ([N, vocab] logits each -> [N])."""
    s = F.log_softmax(student.float(), -1)
    t = F.log_softmax(teacher.float(), -1)
    return (t.exp() * (t - s)).sum(-1)


def compute_prior(lm, cfg: TrainConfig, texts: list[str] | None, chunk_ids: torch.Tensor | None) -> torch.Tensor:
    """Initial scores: mean GRIFFIN scores over some training inputs, the magnitude scores, or zeros."""
    from ..selection.selectors import GriffinSelector, MagnitudeSelector

    if cfg.prior == "zero":
        return torch.zeros(lm.num_layers, lm.d_ffn)
    if cfg.prior == "magnitude":
        return MagnitudeSelector().scores(lm, None)
    if texts is not None:
        rows = [encode_prompt(lm.tokenizer, t)[0, -cfg.data.max_prompt_tokens:] for t in texts[: cfg.prior_prompts]]
    else:
        rows = list(chunk_ids[: cfg.prior_prompts])
    acc = torch.zeros(lm.num_layers, lm.d_ffn)
    for _, ids, att in length_batches(rows, lm.tokenizer.pad_token_id or 0, batch_size=8):
        acc += GriffinSelector.scores_from_ids(lm, ids.to(lm.device), att.to(lm.device)).sum(0)
    return acc / max(len(rows), 1)


def _optimizer_to_safetensors(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        meta["state"][str(pid)] = []
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{pid}.{key}"] = val.detach().cpu().contiguous()
                meta["state"][str(pid)].append(key)
    return tensors, meta


def _optimizer_from_safetensors(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    state = {int(pid): {k: tensors[f"{pid}.{k}"] for k in keys} for pid, keys in meta["state"].items()}
    opt.load_state_dict({"state": state, "param_groups": groups})


def _read_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:
        raise IfpruneError(f"checkpoint file {path} is unreadable ({str(e).splitlines()[0]}); restore it, "
                           "or set resume: false to start over") from None


class Trainer:
    """Builds everything from a config; `run()` trains, checkpoints, and writes the artifact."""

    def __init__(self, cfg: TrainConfig, *, lm=None, sft_data=None, pretrain_blocks=None):
        from accelerate import Accelerator

        from ..core.loading import load_model

        self.cfg = cfg.validate()
        torch.manual_seed(cfg.seed)
        if lm is None:
            from accelerate import PartialState

            # on the device the Accelerator below trains on (this rank's GPU under a launcher), so the warm
            # start and the prior's dense passes run there too
            lm = load_model(cfg.model, device=str(PartialState(cpu=not torch.cuda.is_available()).device))
        self.lm = lm
        self.width = width_from_keep(cfg.keep if cfg.width is None else None, cfg.width, lm.d_ffn)
        self.base_fingerprint = lm.fingerprint()
        self.out = Path(cfg.output_dir)
        self.ckpt = self.out / "checkpoint"
        self.log_path = self.out / "log.jsonl"
        self._perms: dict[int, torch.Tensor] = {}  # the data order's shuffle, per pass (_example)

        # data
        self.val = []
        if cfg.stage == "pretrain" and cfg.eval_every:
            from .data_sft import sft_splits

            _, self.val = sft_splits(cfg.data.root(), cfg.data.families, max_per_family=1,
                                     val_per_family=cfg.data.val_per_family, seed=cfg.seed)
        if cfg.stage == "sft":
            if sft_data is None:
                from .data_sft import sft_splits

                sft_data, self.val = sft_splits(cfg.data.root(), cfg.data.families, max_per_family=cfg.data.max_per_family,
                                                skip_per_family=cfg.data.skip_per_family,
                                                val_per_family=cfg.data.val_per_family, seed=cfg.seed,
                                                exclude_eval_prompts=cfg.data.exclude_eval_prompts)
            if cfg.data.teacher is not None:
                from ..core.loading import default_gguf_path
                from .teacher import with_teacher

                sft_data = with_teacher(sft_data, cfg.data.teacher, default_gguf_path() if cfg.model is None else None,
                                        drop_repeats=cfg.data.teacher_drop_repeats)
            if not sft_data:
                raise IfpruneError("the SFT training set is empty: check data.families and data.max_per_family")
            self.train_set = sft_data
        else:
            if pretrain_blocks is None:
                from .data_pretrain import pretrain_corpus

                pretrain_blocks, _ = pretrain_corpus(
                    lm.tokenizer, cfg.data.root(), cfg.data.pretrain_files, local_text_chars=cfg.data.local_text_chars,
                    num_chunks=cfg.data.num_chunks, chunk_tokens=cfg.data.chunk_tokens,
                    val_docs=cfg.data.pretrain_val_docs, seed=cfg.seed)
            need = cfg.data.num_chunks * cfg.data.chunk_tokens
            if pretrain_blocks.dim() != 2 or pretrain_blocks.shape[1] != need:
                raise IfpruneError(f"pre-training blocks must be [N, {need}] (num_chunks x chunk_tokens)")
            self.train_set = pretrain_blocks

        # predictor (or static scores), with its prior
        init = None
        if cfg.init_from:
            init = self._init_artifact("init_from", cfg.init_from)
            if init.kind != cfg.method:
                raise IfpruneError(f"init_from artifact {cfg.init_from} is a {init.kind} artifact; this run trains {cfg.method}")
        hidden = lm.model.config.get_text_config().hidden_size
        if cfg.method == "predictor":
            self.predictor = PredictorHead(hidden, lm.num_layers, lm.d_ffn, cfg.head_hidden)
        else:
            self.predictor = StaticScores(lm.num_layers, lm.d_ffn)
        self.warmstart = None
        if init is not None:
            self.predictor.load_state_dict((init.head or init.static).state_dict())
        elif cfg.warmstart_prompts and not (cfg.resume and (self.ckpt / "state.json").is_file()):
            self.warmstart = self._warm_start()
        elif cfg.prior != "zero":
            # the first inputs in data order: the same ones a predictor warm start would read
            first = range(min(cfg.prior_prompts, len(self.train_set)))
            texts = [self._example(i).prompt for i in first] if cfg.stage == "sft" else None
            chunks = None if cfg.stage == "sft" else self.train_set[:, : cfg.data.chunk_tokens]
            self.predictor.set_prior(compute_prior(lm, cfg, texts, chunks))

        # the LLM: LoRA (peft), full, or frozen. An init_from artifact's own LLM change is carried into
        # this stage's artifact: a LoRA continues as LoRA, a full delta (or a LoRA merged) is measured from
        # the base weights, frozen copies the change unchanged
        self.peft = None
        self.base_state = None
        self.teacher = None
        self.carried_llm = None
        llm_init = init
        if cfg.init_llm_from == "base":
            llm_init = None
        elif cfg.init_llm_from:
            llm_init = self._init_artifact("init_llm_from", cfg.init_llm_from)
        if cfg.distill and (cfg.teacher_from or cfg.llm == "full"):
            # a frozen dense copy, taken before LoRA wraps, or a full change alters, the base modules: the
            # base itself under full fine-tuning (as LoRA's disabled adapter is), or teacher_from's tuned model
            teacher = self._init_artifact("teacher_from", cfg.teacher_from) if cfg.teacher_from else None
            self.teacher = copy.deepcopy(lm.model).eval().requires_grad_(False)
            if teacher is not None and teacher.config["llm"] != "none":
                from ..selection.artifact import apply_llm_change

                apply_llm_change(self.teacher, teacher.path / "llm", teacher.config["llm"])
        init_llm = llm_init.config["llm"] if llm_init is not None else "none"
        if cfg.llm == "lora" and init_llm == "full":
            raise IfpruneError(f"init artifact {llm_init.path} stores full-weight changes, which a LoRA "
                               "adapter cannot carry: continue it with llm: full (or frozen)")
        if cfg.llm == "lora":
            from peft import LoraConfig, get_peft_model

            names = {n.rsplit(".", 1)[-1] for n, _ in lm.model.named_modules()}
            targets = [t for t in cfg.lora_targets if t in names]
            if not targets:
                raise IfpruneError(f"none of lora_targets {cfg.lora_targets} is a module of this model")
            if llm_init is not None and llm_init.config["llm"] == "lora":
                adapter = json.loads((llm_init.path / "llm" / "adapter_config.json").read_text())
                if adapter.get("r", cfg.lora_r) != cfg.lora_r:
                    raise IfpruneError(f"init artifact {llm_init.path} holds a LoRA of rank {adapter['r']}; this run's "
                                       f"lora_r is {cfg.lora_r}: set lora_r: {adapter['r']} to continue it")
                targets = adapter["target_modules"]
            self.model = get_peft_model(lm.model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                              target_modules=sorted(targets)))
            if llm_init is not None and llm_init.config["llm"] == "lora":
                from peft import set_peft_model_state_dict
                from safetensors.torch import load_file

                sd = load_file(str(llm_init.path / "llm" / "adapter_model.safetensors"))
                set_peft_model_state_dict(self.model, {k: v.float() for k, v in sd.items()})
            self.peft = self.model
        else:
            if cfg.llm == "full":  # before init's change: the saved delta must hold it too
                self.base_state = {n: p.detach().clone().cpu() for n, p in lm.model.named_parameters()}
            if init_llm != "none":
                from ..selection.artifact import apply_llm_change

                apply_llm_change(lm.model, llm_init.path / "llm", init_llm)
                if cfg.llm == "frozen":
                    self.carried_llm = (init_llm, llm_init.path / "llm")
            self.model = lm.model
            for p in self.model.parameters():
                p.requires_grad_(cfg.llm == "full")
        self.model.train()
        self.masked = MaskedFFN(discover(self.model))
        self.compensation = None
        if cfg.compensate != "none":
            comp = CompensationConfig()
            self.compensation = self._compensation_stats(comp)
            G = self.compensation.G.to(self.lm.device)
            self.masked.compensate = lambda i, x, keep: reconstruct(x, keep, G[i], comp.ridge)

        llm_params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [{"params": list(self.predictor.parameters()), "lr": cfg.lr_predictor}]
        if llm_params:
            groups.append({"params": llm_params, "lr": cfg.lr_llm})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        from transformers import get_cosine_schedule_with_warmup

        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, cfg.warmup_steps, cfg.steps)
        cuda = torch.cuda.is_available()
        if cuda:  # the fp32 parts (the predictor's prompt pass) on tensor cores too
            torch.backends.cuda.matmul.allow_tf32 = True
        from accelerate import DataLoaderConfiguration

        # split_batches: the loop deals each global batch out to the ranks itself (micro_batch), so the
        # LR schedule must advance once per optimizer step, not once per rank
        self.acc = Accelerator(gradient_accumulation_steps=cfg.grad_accum, cpu=not cuda,
                               mixed_precision="bf16" if (cuda and cfg.bf16) else "no",
                               dataloader_config=DataLoaderConfiguration(split_batches=True))
        self.model, self.predictor, self.opt, self.sched = self.acc.prepare(
            self.model, self.predictor, self.optimizer, self.scheduler)
        if not cfg.bf16:
            self.precision = "fp32"
        elif cuda or cpu_has_fast_bf16():
            self.precision = "bf16"
        else:
            self.precision = "fp32"
            log.warning("bf16 autocast skipped: bf16 matmuls are not faster than float32 on this CPU (no native bf16, "
                        "or AVX-512 BF16 without AMX: measured slower here); training in float32")
        self.step = 0
        self.tokens = 0
        self.elapsed = 0.0
        self.last_good = None
        self._lengths: dict[int, int] = {}

    def _init_artifact(self, key: str, path: str):
        """An artifact this run starts from; one trained on another base model would load silently wrong."""
        from ..selection.artifact import load_artifact

        art = load_artifact(path)
        if art.config["base_fingerprint"] != self.base_fingerprint:
            raise IfpruneError(f"{key} artifact {path} was trained on another base model "
                               f"(fingerprint {art.config['base_fingerprint']}, this one {self.base_fingerprint})")
        return art

    def _compensation_stats(self, config: CompensationConfig):
        """Calibration moments of the weights this run starts from (base + init_from's change), gathered
        once and kept in the run directory, so a resumed run refits with the very same statistics."""
        from ..compensation.calibration import down_weight, stats_at

        if any(down_weight(layer)[1] is not None for layer in self.lm.layout.layers):
            raise IfpruneError("compensate: calibration trains under the refit of bias-free down projections; "
                               "this model's down projections have a bias: use compensate: none")
        start = hashlib.sha256(f"{self.base_fingerprint}|{self.cfg.init_from}|{self.cfg.init_llm_from}".encode()
                               ).hexdigest()[:16]
        was = self.model.training
        self.model.eval()
        stats = stats_at(self.lm, config, f"run-start-{start}", self.out / "compensation" / "moments",
                         progress=self.cfg.progress)
        self.model.train(was)
        return stats

    def _warm_start(self) -> dict:
        """Fit the head to GRIFFIN's scores of the first training inputs in data order (training.warmstart)."""
        from .warmstart import collect_targets, fit_head

        cfg, lm = self.cfg, self.lm
        n = min(cfg.warmstart_prompts, len(self.train_set))
        if cfg.stage == "sft":
            rows = [encode_prompt(lm.tokenizer, self._example(i).prompt)[0][-cfg.data.max_prompt_tokens:]
                    for i in range(n)]
        else:
            rows = [self._example(i)[: cfg.data.chunk_tokens] for i in range(n)]
        t0 = time.perf_counter()
        pooled, targets = collect_targets(lm, rows, backbone_layers=cfg.backbone_layers, progress=cfg.progress)
        stats = fit_head(self.predictor, pooled, targets, width=self.width, epochs=cfg.warmstart_epochs,
                         lr=cfg.warmstart_lr, seed=cfg.seed)
        stats["wall_s"] = round(time.perf_counter() - t0, 1)
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "warmstart.json", stats)
        return stats

    # data order ------------------------------------------------------------------------------
    def _example(self, pos: int):
        n = len(self.train_set)
        epoch, i = divmod(pos, n)
        perm = self._perms.get(epoch)
        if perm is None:  # one shuffle per pass, kept: a batch reads hundreds of positions (length grouping)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.seed * 100003 + epoch))
            self._perms = {epoch: perm}
        return self.train_set[int(perm[i])]

    def _positions(self, start: int) -> list[int]:
        """Data positions of the batch that starts at `start`. With `data.group_by_length` (SFT), each
        run of GROUP_BATCHES batches is sorted by token length and cut into batches, visited in a
        seeded order: less padding, and still a pure function of (seed, position)."""
        B = self.cfg.batch_size
        if self.cfg.stage != "sft" or not self.cfg.data.group_by_length:
            return list(range(start, start + B))
        M = B * GROUP_BATCHES
        mega = start // M * M
        pos = sorted(range(mega, mega + M), key=lambda p: (self._length(p), p))
        order = torch.randperm(GROUP_BATCHES, generator=torch.Generator().manual_seed(self.cfg.seed * 7919 + mega))
        b = int(order[(start - mega) // B])
        return pos[b * B:(b + 1) * B]

    def _length(self, pos: int) -> int:
        from .data_sft import tokenize_sft

        d = self.cfg.data
        ex = self._example(pos)
        key = id(ex)
        if key not in self._lengths:
            self._lengths[key] = len(tokenize_sft(self.lm.tokenizer, ex, max_seq_len=d.max_seq_len,
                                                  max_prompt_tokens=d.max_prompt_tokens).input_ids)
        return self._lengths[key]

    def micro_batch(self, step: int, micro: int) -> Batch:
        B = self.cfg.batch_size
        start = self.cfg.data.start_example + (step * self.cfg.grad_accum + micro) * B
        rank, world = self.acc.process_index, self.acc.num_processes
        positions = self._positions(start)
        items = [self._example(positions[j]) for j in range(rank, B, world)]
        if self.cfg.stage == "sft":
            if self.on_policy_step(step, micro):
                return dataclasses.replace(sft_batch(self.lm.tokenizer, self.own_answers(items, step, micro), self.cfg),
                                           on_policy=True)
            return sft_batch(self.lm.tokenizer, items, self.cfg)
        return pretrain_batch(torch.stack(items), self.cfg)

    def on_policy_step(self, step: int, micro: int) -> bool:
        """Whether this micro-batch is on-policy: a pure function of (seed, step, micro), so resuming agrees."""
        if not self.cfg.on_policy:
            return False
        g = torch.Generator().manual_seed(self.cfg.seed * 1000003 + step * 131 + micro)
        return bool(torch.rand((), generator=g) < self.cfg.on_policy)

    @torch.no_grad()
    def own_answers(self, items: list, step: int, micro: int) -> list:
        """`items` with each response replaced by the pruned model's own sample: the current weights under the hard
        top-k masks of the predictor's prompt scores (no re-selection while sampling), one left-padded batch,
        seeded per micro-batch."""
        tok, cfg, dev = self.lm.tokenizer, self.cfg, self.acc.device
        pb = sft_batch(tok, items, cfg)
        was = self.model.training
        self.model.eval()
        try:
            z = self.scores(pb)
            masks = torch.zeros_like(z).scatter_(-1, z.topk(self.width, dim=-1).indices, 1.0)
            rows = [encode_prompt(tok, e.prompt)[0, -cfg.data.max_prompt_tokens:] for e in items]
            T = max(len(r) for r in rows)
            pad = tok.pad_token_id if tok.pad_token_id is not None else 0
            ids = torch.full((len(rows), T), pad, dtype=torch.long)
            att = torch.zeros_like(ids)
            for i, r in enumerate(rows):
                ids[i, T - len(r):], att[i, T - len(r):] = r, 1
            room = max(1, min(cfg.on_policy_tokens, cfg.data.max_seq_len - min(len(r) for r in rows)))
            kw = (dict(do_sample=True, temperature=cfg.on_policy_temperature, top_p=None, top_k=None)
                  if cfg.on_policy_temperature > 0 else dict(do_sample=False, temperature=None, top_p=None, top_k=None))
            with torch.random.fork_rng(), self.autocast(), self.masked.apply(masks):
                torch.manual_seed(cfg.seed * 7777 + step * 97 + micro * 13)
                model = getattr(self.model, "module", self.model)  # (DDP wraps the model; generate is on it)
                gen = model.generate(input_ids=ids.to(dev), attention_mask=att.to(dev), max_new_tokens=room,
                                     pad_token_id=pad, **kw)
            out = []
            for i, e in enumerate(items):
                text = tok.decode(gen[i, T:], skip_special_tokens=True)
                out.append(dataclasses.replace(e, response=text if text.strip() else e.response))
            return out
        finally:
            self.model.train(was)

    # one micro-batch --------------------------------------------------------------------------
    def scores(self, batch: Batch) -> torch.Tensor:
        dev = self.acc.device
        if self.cfg.method == "static":
            return self.predictor(batch.input_ids.shape[0])
        if self.cfg.stage == "pretrain":
            pooled = pooled_hidden(self.model, batch.pred_ids.to(dev), batch.pred_mask.to(dev), self.cfg.backbone_layers)
            return self.predictor(pooled)
        pooled = pooled_hidden(self.model, batch.pred_ids.to(dev), batch.pred_mask.to(dev), self.cfg.backbone_layers)
        return self.predictor(pooled)

    def forward(self, batch: Batch):
        dev = self.acc.device
        was = self.model.training
        self.model.eval()  # the backbone reads the prompt dense and deterministic
        z = self.scores(batch)
        self.model.train(was)
        masks = soft_topk(z, self.width, eps=self.cfg.eps, iterations=self.cfg.iterations)
        ids, att, labels = batch.input_ids.to(dev), batch.attention_mask.to(dev), batch.labels.to(dev)
        record, oracle = None, None
        if self.cfg.oracle_weight:
            tokens = att.bool()  # prompt and response: without the first tokens the target drops channels
            oracle = torch.zeros(z.shape, device=z.device)  # the model leans on (benchmarks/oracle_masks.py)

            def record_example(i, x):
                oracle[:, i] = griffin_columns(x, tokens)

            record = record_example

        head, tail = (labels, None) if not self.cfg.refresh else split_at_refresh(labels, self.cfg.refresh)
        with self.autocast(), self.masked.apply(masks, record=record, dense=self.dense_positions(labels, None)):
            out = loss_logits(self.model, ids, att, head)
        sums, counts = out.losses()
        later = self.refreshed_logits(z, ids, att, labels, tail,
                                      lambda s: soft_topk(s, self.width, eps=self.cfg.eps, iterations=self.cfg.iterations))
        if later is not None:
            more = later.losses()
            sums, counts = sums + more[0], counts + more[1]
        # each rank holds part of the global batch: normalise by the token count of the whole batch (all
        # ranks) and undo DDP's mean over ranks, so the gradient is the single-process one exactly
        world = self.acc.num_processes
        total = self.acc.reduce(counts.sum().float(), "sum") if world > 1 else counts.sum()
        ce_weight = 0.0 if batch.on_policy else self.cfg.ce_weight  # never fit the model's own samples
        loss = ce_weight * sums.sum() * world / total.clamp_min(1)
        kl = None
        if self.cfg.distill:
            with torch.no_grad(), self.autocast():
                if self.teacher is not None:
                    t_out = loss_logits(self.teacher, ids, att, labels)
                elif self.peft is not None:
                    with self.peft.disable_adapter():
                        t_out = loss_logits(self.model, ids, att, labels)
                else:
                    t_out = loss_logits(self.model, ids, att, labels)
            # the teacher's rows are every response position in order; the student's come as the head
            # (first R tokens) then, under re-selection, the tail
            if later is None:  # the head is every response position
                kl = kl_to_teacher(out.logits, t_out.logits).mean()
            else:
                first = (head[:, 1:] != -100)[labels[:, 1:] != -100]
                kl = torch.cat([kl_to_teacher(out.logits, t_out.logits[first]),
                                kl_to_teacher(later.logits, t_out.logits[~first])]).mean()
            loss = loss + self.cfg.distill_weight * kl
        aux = {}
        if oracle is not None:
            target = standardise(oracle)
            mse = F.mse_loss(z.float(), target)
            loss = loss + self.cfg.oracle_weight * mse
            aux = {"oracle_mse": float(mse.detach()), "oracle_agreement": topk_agreement(z.detach().float(), target, self.width)}
        if kl is not None:
            aux["kl"] = float(kl.detach())
        return loss, masks, sums.detach(), counts, aux

    def dense_positions(self, labels: torch.Tensor, tail: torch.Tensor | None) -> torch.Tensor | None:
        """The positions the full model reads under `prefill` before the first masked pass (`tail` None) or
        the re-selected one (`tail`: its labels), or None when every position is masked."""
        if self.cfg.prefill == "pruned":
            return None
        return dense_before(tail if tail is not None and self.cfg.prefill == "dense-answer" else labels)

    def refreshed_scores(self, z: torch.Tensor, ids: torch.Tensor, att: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The re-selected scores of `refresh`, as inference computes them (selection.refresh): `combine` of
        z and GRIFFIN's over the prompt and the first R response tokens, with every channel. The tokens
        after those are left out of that forward too; causal attention means they change nothing."""
        from ..selection.refresh import combine
        from ..selection.selectors import GriffinSelector

        known = att.bool() & ((labels != -100).long().cumsum(1) <= self.cfg.refresh)
        was = self.model.training
        self.model.eval()
        with self.autocast():
            seen = GriffinSelector.scores_from_ids(self.lm, ids, known.long())
        self.model.train(was)
        return combine(z, seen.to(z.device))

    def refreshed_logits(self, z, ids, att, labels, tail, select) -> LossLogits | None:
        """The logits at the response tokens after the first R under masks `select`ed from the re-selected
        scores, or None when `refresh` is off or no row has such tokens."""
        if tail is None or not bool((tail != -100).any()):
            return None
        masks = select(self.refreshed_scores(z, ids, att, labels))
        with self.autocast(), self.masked.apply(masks, dense=self.dense_positions(labels, tail)):
            return loss_logits(self.model, ids, att, tail)

    def _sync_llm_grads(self) -> None:
        """Average the LLM's gradients over ranks. DDP cannot: the loss and the prompt pass call the
        decoder body directly (no LM head over every position), past the wrapper's forward, so its
        gradient hooks never arm. Averaging already-averaged gradients again changes nothing, so
        models that do go through the wrapper stay correct."""
        if self.acc.num_processes == 1 or not self.acc.sync_gradients:
            return
        grads = [p.grad for p in self.acc.unwrap_model(self.model).parameters() if p.requires_grad and p.grad is not None]
        if grads:
            import torch.distributed as dist

            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= self.acc.num_processes
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

    def autocast(self):
        """bf16 autocast (CPU with native bf16, or CUDA). Accelerate's own autocast wraps the model's
        forward only, and the loss path calls the decoder body past it."""
        if self.precision == "bf16":
            return torch.autocast(self.acc.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def eval_examples(self) -> list:
        """The first `data.eval_per_family` held-out examples of each family."""
        seen: dict[str, int] = {}
        out = []
        for e in self.val:
            seen[e.family] = seen.get(e.family, 0) + 1
            if seen[e.family] <= self.cfg.data.eval_per_family:
                out.append(e)
        return out

    def validate(self, val: list | None = None) -> dict[str, float]:
        """Validation NLL per family under hard top-k masks of the current scores (what inference
        runs; with `compensate`, its refit too), on the held-out SFT slice; bf16 autocast as in training."""
        val = self.eval_examples() if val is None else val
        was = self.model.training
        self.model.eval()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        dev = self.acc.device
        with torch.no_grad():
            for chunk in (val[i:i + 8] for i in range(0, len(val), 8)):
                batch = sft_batch(self.lm.tokenizer, chunk, self.cfg)
                z = self.scores(batch).float()
                masks = hard_topk_indicator(z, self.width)
                ids, att, labels = batch.input_ids.to(dev), batch.attention_mask.to(dev), batch.labels.to(dev)
                head, tail = (labels, None) if not self.cfg.refresh else split_at_refresh(labels, self.cfg.refresh)
                with self.autocast(), self.masked.apply(masks, dense=self.dense_positions(labels, None)):
                    losses = loss_logits(self.model, ids, att, head).losses()
                later = self.refreshed_logits(z, ids, att, labels, tail, lambda s: hard_topk_indicator(s, self.width))
                if later is not None:
                    more = later.losses()
                    losses = (losses[0] + more[0], losses[1] + more[1])
                for f, si, ci in zip(batch.families, *(x.tolist() for x in losses)):
                    sums[f] = sums.get(f, 0.0) + si
                    counts[f] = counts.get(f, 0) + ci
        self.model.train(was)
        res = {f: sums[f] / max(counts[f], 1) for f in sorted(sums)}
        res["all"] = sum(sums.values()) / max(sum(counts.values()), 1)
        return res

    # checkpoints -----------------------------------------------------------------------------
    def _trainable_state(self) -> dict:
        pred = self.acc.unwrap_model(self.predictor)
        out = {f"predictor.{k}": v.detach().cpu().contiguous() for k, v in pred.state_dict().items()}
        model = self.acc.unwrap_model(self.model)
        for n, p in model.named_parameters():
            if p.requires_grad:
                out[f"llm.{n}"] = p.detach().cpu().contiguous()
        return out

    def save_checkpoint(self) -> None:
        from safetensors.torch import save_file

        if not self.acc.is_main_process:
            return
        with atomic_path(self.ckpt) as tmp:
            tmp.mkdir()
            save_file(self._trainable_state(), str(tmp / "trainable.safetensors"))
            tensors, meta = _optimizer_to_safetensors(self.optimizer)
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            state = {"step": self.step, "tokens": self.tokens, "elapsed_s": self.elapsed,
                     "scheduler": self.scheduler.state_dict(), "optimizer": meta, "config": self.cfg.to_dict()}
            (tmp / "state.json").write_text(json.dumps(state, default=str) + "\n")
        self.last_good = self.step

    def load_checkpoint(self) -> bool:
        files = ("state.json", "trainable.safetensors", "optimizer.safetensors")
        if not self.ckpt.exists():
            if self.log_path.is_file() and self.log_path.stat().st_size:
                raise IfpruneError(
                    f"{self.out} holds an earlier run's log ({self.log_path.name}) but no checkpoint ({self.ckpt} is "
                    "missing), so it cannot be continued: restore the checkpoint, use another output_dir, or set "
                    "resume: false to start over (the old log is replaced)")
            return False
        missing = [f for f in files if not (self.ckpt / f).is_file()]
        if missing:
            raise IfpruneError(f"checkpoint {self.ckpt} is incomplete: {', '.join(missing)} missing; restore it, "
                               "or set resume: false to start over")
        try:
            state = json.loads((self.ckpt / "state.json").read_text())
            for key in ("step", "tokens", "elapsed_s", "scheduler", "optimizer", "config"):
                state[key]
        except (ValueError, KeyError, TypeError) as e:
            raise IfpruneError(f"checkpoint {self.ckpt}/state.json is unreadable ({e.__class__.__name__}: {e}); "
                               "restore it, or set resume: false to start over") from None
        old = state["config"]
        made = {**old, "data.start_example": (old.get("data") or {}).get("start_example", 0),
                "compensate": old.get("compensate", "none"),  # checkpoints from before the fields: plain masks,
                "teacher_from": old.get("teacher_from")}  # the base as teacher
        for key in ("stage", "method", "llm", "keep", "width", "batch_size", "seed", "data.start_example", "compensate",
                    "teacher_from"):
            now = self.cfg.data.start_example if key == "data.start_example" else getattr(self.cfg, key)
            if made.get(key) != now:
                raise IfpruneError(f"checkpoint in {self.ckpt} was made with {key}={made.get(key)!r}, the config says "
                                   f"{now!r}: use another output_dir or set resume: false")
        tensors = _read_safetensors(self.ckpt / "trainable.safetensors")
        pred = self.acc.unwrap_model(self.predictor)
        pred.load_state_dict({k[len("predictor."):]: v for k, v in tensors.items() if k.startswith("predictor.")})
        params = dict(self.acc.unwrap_model(self.model).named_parameters())
        with torch.no_grad():
            for k, v in tensors.items():
                if k.startswith("llm."):
                    params[k[4:]].copy_(v)
        _optimizer_from_safetensors(self.optimizer, _read_safetensors(self.ckpt / "optimizer.safetensors"),
                                    state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.tokens, self.elapsed = state["step"], state["tokens"], state["elapsed_s"]
        self.last_good = self.step
        return True

    def data_span(self, steps: int | None = None) -> tuple[int, int]:
        """[first, end) data positions `steps` steps (default: all planned) read; position p is example
        p mod N of pass p // N + 1."""
        first = self.cfg.data.start_example
        return first, first + (self.cfg.steps if steps is None else steps) * self.cfg.grad_accum * self.cfg.batch_size

    # the loop --------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        resumed = cfg.resume and self.load_checkpoint()
        if not resumed and self.log_path.exists():
            self.log_path.unlink()
        bar = None
        if cfg.progress and self.acc.is_main_process:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"{cfg.stage}/{cfg.method}", unit="step")
        t_start = time.perf_counter() - self.elapsed
        first, end = self.data_span()
        n = len(self.train_set)
        if end > n:
            reread = max(first, n)  # the first position past the first pass
            log.warning("this run reads data positions %d..%d and the training set holds %d examples: positions from "
                        "%d on are pass %d (or later) over it (examples already read, in a new order)", first, end - 1,
                        n, reread, reread // n + 1)
        stopped_early = False
        collapse_warned = False
        while self.step < cfg.steps:
            fam_sum, fam_cnt = {}, {}
            loss_total, aux_total, overlap, lam = 0.0, {}, [], []
            for micro in range(cfg.grad_accum):
                batch = self.micro_batch(self.step, micro)
                with self.acc.accumulate(self.model, self.predictor):
                    loss, masks, sums, counts, aux = self.forward(batch)
                    if not torch.isfinite(loss):
                        where = (f"the last good checkpoint is {self.ckpt} (step {self.last_good})"
                                 if self.last_good is not None else "no checkpoint was written yet")
                        self._log({"step": self.step + 1, "event": "nan_loss", "loss": str(float(loss.detach()))})
                        raise IfpruneError(f"loss became {float(loss.detach())} at step {self.step + 1}: training stopped; {where}. "
                                           "Lower the learning rates (lr_predictor, lr_llm) or check the data")
                    self.acc.backward(loss)
                    self._sync_llm_grads()
                    if self.acc.sync_gradients and cfg.max_grad_norm > 0:
                        self.acc.clip_grad_norm_(
                            [p for g in self.optimizer.param_groups for p in g["params"]], cfg.max_grad_norm)
                    self.opt.step()
                    self.sched.step()
                    self.opt.zero_grad()
                for k, v in aux.items():
                    aux_total[k] = aux_total.get(k, 0.0) + v / cfg.grad_accum
                if "kl" in aux:
                    loss_total += cfg.distill_weight * aux["kl"] / cfg.grad_accum
                rows = list(zip(batch.families, sums.tolist(), counts.tolist()))
                ntok = int(batch.attention_mask.sum())
                if self.acc.num_processes > 1:  # the log covers the whole global batch, every rank's part
                    from accelerate.utils import gather_object

                    rows, ntok = gather_object(rows), sum(gather_object([ntok]))
                loss_total += cfg.ce_weight * sum(r[1] for r in rows) / max(sum(r[2] for r in rows), 1) / cfg.grad_accum
                for f, s, c in rows:
                    fam_sum[f] = fam_sum.get(f, 0.0) + s
                    fam_cnt[f] = fam_cnt.get(f, 0) + c
                self.tokens += ntok
                overlap.append(pairwise_overlap(masks))
                lam.append(masks.detach()[masks.detach() != 0])
            self.step += 1
            kept = torch.cat(lam)
            ov = float(sum(overlap) / len(overlap))
            rec = {"step": self.step, "loss": loss_total,
                   "family_loss": {f: fam_sum[f] / max(fam_cnt[f], 1) for f in sorted(fam_sum)},
                   "lr_predictor": self.optimizer.param_groups[0]["lr"],
                   "lr_llm": self.optimizer.param_groups[1]["lr"] if len(self.optimizer.param_groups) > 1 else 0.0,
                   "mask_overlap": ov, "lambda_mean": float(kept.mean()), "lambda_min": float(kept.min()),
                   "lambda_frac_above_0.9": float((kept > 0.9).float().mean()),
                   "tokens": self.tokens, "elapsed_s": round(time.perf_counter() - t_start, 2)}
            rec.update(aux_total)  # kl (distill); oracle_mse, oracle_agreement (oracle_weight)
            if cfg.method == "predictor" and ov > cfg.collapse_threshold:
                rec["warning"] = "mask_collapse"
                if not collapse_warned:
                    log.warning("masks are collapsing: mean pairwise overlap %.3f > %.2f at step %d (every input gets "
                                "nearly the same mask)", ov, cfg.collapse_threshold, self.step)
                    collapse_warned = True
            self._log(rec)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_total:.3f}", overlap=f"{ov:.2f}")
            if cfg.eval_every and self.val and (self.step % cfg.eval_every == 0 or self.step == cfg.steps):
                t_val = time.perf_counter()
                val = self.eval_examples()
                val_nll = self.validate(val)
                self._log({"step": self.step, "event": "validation", "tokens": self.tokens, "val_nll": val_nll,
                           "examples": len(val), "val_s": round(time.perf_counter() - t_val, 2)})
            self.elapsed = time.perf_counter() - t_start
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()
            if cfg.max_minutes is not None and self.elapsed > cfg.max_minutes * 60 and self.step < cfg.steps:
                stopped_early = True
                self.save_checkpoint()
                log.warning("stopping at step %d of %d: max_minutes=%s reached", self.step, cfg.steps, cfg.max_minutes)
                break
        if bar is not None:
            bar.close()
        summary = {"steps": self.step, "planned_steps": cfg.steps, "stopped_early": stopped_early,
                   "data_positions": list(self.data_span(self.step)),
                   "training_examples": n,
                   "tokens": self.tokens, "wall_s": round(self.elapsed, 1), "width": self.width,
                   "d_ffn": self.lm.d_ffn, "device": str(self.acc.device), "precision": self.precision}
        if (self.out / "warmstart.json").is_file():
            ws = json.loads((self.out / "warmstart.json").read_text())
            summary["warmstart"] = {k: v for k, v in ws.items() if k != "history"}
        if self.acc.is_main_process:
            self.save_artifact(summary)
        return summary

    def _log(self, rec: dict) -> None:
        if self.acc.is_main_process:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")

    def save_artifact(self, stats: dict) -> Path:
        from ..selection.artifact import save_artifact

        recipe = self.cfg.to_dict()
        path = self.out / "artifact"
        save_artifact(path, lm=self.lm, kind=self.cfg.method, width=self.width,
                      module=self.acc.unwrap_model(self.predictor),
                      llm=self.carried_llm[0] if self.carried_llm else "none" if self.cfg.llm == "frozen" else self.cfg.llm,
                      llm_from=self.carried_llm[1] if self.carried_llm else None,
                      peft_model=self.acc.unwrap_model(self.model), base_state=self.base_state, recipe=recipe,
                      stats=stats, base_fingerprint=self.base_fingerprint)
        return path


def train(cfg: TrainConfig, **kw) -> dict:
    """Run one stage from a config; returns a summary (steps, tokens, wall time, artifact path)."""
    trainer = Trainer(cfg, **kw)
    summary = trainer.run()
    summary["artifact"] = str(Path(cfg.output_dir) / "artifact")
    summary["log"] = str(trainer.log_path)
    return summary
