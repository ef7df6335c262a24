"""`ifprune compress --sparsity 2:4 --quant int4 --calibration FILE --out DIR`: one-shot 2:4 pruning
and/or weight-only quantization, written as a directory ifprune loads (and, for its dense-format
parts, stock transformers loads)."""

from __future__ import annotations

from .common import add_model_args, load, print_json


def register(sub) -> None:
    p = sub.add_parser("compress", help="2:4-prune and/or quantize a model and save it",
                       description="One-shot 2:4 semi-structured pruning (Wanda or SparseGPT, calibrated on a local "
                                   "text file) and/or int8/int4 weight-only quantization. The result composes with "
                                   "plans: down projections are made 2:4 again after any plan.")
    add_model_args(p)
    p.add_argument("--sparsity", default="2:4", help="2:4 (default) or none")
    p.add_argument("--method", default="sparsegpt", help="sparsegpt (default, with weight update) or wanda")
    p.add_argument("--down", default="regather",
                   help="how down stays 2:4 under plans: regather (default; keeps dense down + saliency) or "
                        "reprune (re-groups the pruned columns; smaller, less accurate)")
    p.add_argument("--quant", default="none", help="none (default), int8 (per row) or int4 (group-wise)")
    p.add_argument("--group-size", type=int, default=64, help="int4 group size: 32, 64 (default; divides SmolLM2's 576), 128 or 256")
    p.add_argument("--calibration", default=None, help="local text or JSONL file for 2:4 pruning "
                                                       "(e.g. ../shared/data/pretrain/llamafactory/c4_demo.jsonl)")
    p.add_argument("--calib-tokens", type=int, default=4096, help="calibration tokens (default 4096)")
    p.add_argument("--seq-len", type=int, default=256, help="calibration chunk length (default 256)")
    p.add_argument("--recover-steps", type=int, default=0,
                   help="LoRA recovery fine-tuning steps after 2:4 pruning, before quantization (default 0 = none); "
                        "the merged update keeps the 2:4 pattern")
    p.add_argument("--recover-data", default=None, help="local text or JSONL file for recovery (e.g. "
                                                         "../shared/data/pretrain/llamafactory/wiki_demo.txt)")
    p.add_argument("--recover-lr", type=float, default=2e-4, help="recovery learning rate (default 2e-4)")
    p.add_argument("--recover-rank", type=int, default=16, help="LoRA rank, alpha = 2 x rank (default 16)")
    p.add_argument("--recover-mode", default="masked",
                   help="masked (default: delta masked to the pattern while training) or peft (masked at merge)")
    p.add_argument("--recover-batch-size", type=int, default=4, help="sequences per step (default 4)")
    p.add_argument("--recover-seq-len", type=int, default=256, help="tokens per sequence (default 256)")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    p.set_defaults(func=run)


def run(args) -> int:
    import time
    from pathlib import Path

    from ..compress.pipeline import CompressConfig, compress, packed_bytes, save_compressed
    from ..core.errors import IfpruneError

    none = lambda v: None if v in (None, "none", "") else v  # noqa: E731
    cfg = CompressConfig(sparsity=none(args.sparsity), method=args.method, down=args.down, quant=none(args.quant),
                         group_size=args.group_size, calibration=args.calibration, calib_tokens=args.calib_tokens,
                         seq_len=args.seq_len, recover_steps=args.recover_steps, recover_data=args.recover_data,
                         recover_lr=args.recover_lr, recover_rank=args.recover_rank, recover_mode=args.recover_mode,
                         recover_batch_size=args.recover_batch_size,
                         recover_seq_len=args.recover_seq_len).validate()
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise IfpruneError(f"{out} exists and is not empty: pass --overwrite or choose another --out")
    lm = load(args)
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(desc="pruning", unit="layer", disable=not cfg.sparsity)

    def progress(done, total):
        bar.total = total
        bar.update(done - bar.n)

    comp = compress(lm, cfg, progress=progress)
    bar.close()
    seconds = time.perf_counter() - t0
    manifest = save_compressed(lm, comp, out, overwrite=args.overwrite)
    report = comp.pattern(lm.model)
    print_json({"out": str(out), "recipe": manifest["config"], "seconds": round(seconds, 1),
                "linears": report["layers"], "all_2_4": report["all_2_4"] if cfg.sparsity else None,
                "density": round(report["density"], 4), "files_bytes": manifest["bytes"],
                "packed": packed_bytes(comp, lm.model), "recovery": comp.recovery})
    return 0
