"""Compare selection methods by validation NLL per task family at one keep ratio; write JSON + markdown.

    python -m ifprune.training.report --predictor DIR --static DIR --keep 0.5 --out results/training

Dense, GRIFFIN and magnitude run on the base model; each artifact is attached to a fresh copy of
the base model (its LLM change applied), so every number is the shipped configuration's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from ..core.paths import write_json, write_text
from ..core.plan import width_from_keep
from .data_sft import sft_splits
from .evaluate import family_nll, overlap_by_family, task_text


def run_report(*, predictor: str | None, static: str | None, keep: float, families: list[str], val_per_family: int,
               max_seq_len: int, max_prompt_tokens: int, seed: int = 0, data_dir: str | None = None) -> dict:
    from ..core.loading import load_model
    from ..selection.selectors import make_selector
    from .config import DataConfig

    root = Path(data_dir) if data_dir else DataConfig().root()
    _, val = sft_splits(root, families, max_per_family=1, val_per_family=val_per_family, seed=seed)
    kw = dict(max_seq_len=max_seq_len, max_prompt_tokens=max_prompt_tokens)
    results, timing, overlaps = {}, {}, {}

    def timed(name, fn):
        t0 = time.perf_counter()
        results[name] = fn()
        timing[name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {results[name]['all']:.4f} ({timing[name]} s)", file=sys.stderr)

    lm = load_model()
    width = width_from_keep(keep, None, lm.d_ffn)
    timed("dense", lambda: family_nll(lm, val, lambda e: None, **kw))
    mag = make_selector("magnitude")
    timed("magnitude", lambda: family_nll(lm, val, lambda e: mag.select(lm, None, width), **kw))
    gri = make_selector("griffin")
    timed("griffin", lambda: family_nll(lm, val, lambda e: gri.select(lm, e.prompt, width), **kw))
    overlaps["griffin"] = overlap_by_family([gri.select(lm, e.prompt, width) for e in val], [e.family for e in val])
    if predictor:
        lm = load_model()
        sel = make_selector("predictor", checkpoint=predictor)
        sel.artifact.attach(lm)
        timed("dense_tuned", lambda: family_nll(lm, val, lambda e: None, **kw))
        timed("ifpruning_per_input", lambda: family_nll(lm, val, lambda e: sel.select(lm, e.prompt, width), **kw))
        timed("ifpruning_per_task", lambda: family_nll(lm, val, lambda e: sel.select(lm, task_text(e.family), width), **kw))
        overlaps["ifpruning_per_input"] = overlap_by_family([sel.select(lm, e.prompt, width) for e in val],
                                                            [e.family for e in val])
    if static:
        lm = load_model()
        st = make_selector("predictor", checkpoint=static)
        st.artifact.attach(lm)
        timed("learned_static", lambda: family_nll(lm, val, lambda e: st.select(lm, None, width), **kw))
    return {"keep": keep, "width": width, "d_ffn": lm.d_ffn, "val_examples": len(val),
            "val_per_family": val_per_family, "nll": results, "eval_seconds": timing, "mask_overlap": overlaps,
            "artifacts": {"predictor": predictor, "static": static}}


def machine() -> dict:
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def markdown(rep: dict, command: str) -> str:
    nll = rep["nll"]
    fams = [f for f in nll["dense"] if f != "all"] + ["all"]
    lines = [f"# Validation NLL per task family at keep {rep['keep']} (width {rep['width']}/{rep['d_ffn']})", "",
             f"Command: `{command}`", "", f"Machine: {json.dumps(rep['machine'])}", "",
             f"{rep['val_examples']} held-out validation examples ({rep['val_per_family']} per family, from training "
             "splits only); response-token NLL (nats/token), lower is better.", "",
             "| method | " + " | ".join(fams) + " |", "|---|" + "---|" * len(fams)]
    for m, r in nll.items():
        lines.append(f"| {m} | " + " | ".join(f"{r[f]:.3f}" for f in fams) + " |")
    lines += ["", "Mean pairwise mask overlap (fraction of kept channels shared):", "",
              "| method | within family | across families | random masks |", "|---|---|---|---|"]
    for m, o in rep["mask_overlap"].items():
        lines.append(f"| {m} | {o['within_mean']:.3f} | {o['across_mean']:.3f} | {o['random_expectation']:.3f} |")
    if "training" in rep:
        lines += ["", "Training (from each artifact's config.json stats):", "", "```",
                  json.dumps(rep["training"], indent=1), "```"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--predictor", default=None)
    p.add_argument("--static", default=None)
    p.add_argument("--keep", type=float, default=0.5)
    p.add_argument("--families", default="gsm8k,math,mbpp,code,general,t0")
    p.add_argument("--val-per-family", type=int, default=8)
    p.add_argument("--max-seq-len", type=int, default=160)
    p.add_argument("--max-prompt-tokens", type=int, default=128)
    p.add_argument("--out", default="results/training")
    p.add_argument("--name", default="keep50")
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rep = run_report(predictor=a.predictor, static=a.static, keep=a.keep, families=a.families.split(","),
                     val_per_family=a.val_per_family, max_seq_len=a.max_seq_len, max_prompt_tokens=a.max_prompt_tokens)
    rep["machine"] = machine()
    training = {}
    for key, d in (("predictor", a.predictor), ("static", a.static)):
        if d:
            cfg = json.loads((Path(d) / "config.json").read_text())
            training[key] = {"stats": cfg.get("stats"), "init_from": cfg["recipe"].get("init_from")}
            init = cfg["recipe"].get("init_from")
            if init and (Path(init) / "config.json").is_file():
                training[key]["stage1_stats"] = json.loads((Path(init) / "config.json").read_text()).get("stats")
    rep["training"] = training
    command = "python -m ifprune.training.report " + " ".join(argv if argv is not None else sys.argv[1:])
    rep["command"] = command
    out = Path(a.out)
    write_json(out / f"{a.name}.json", rep)
    write_text(out / f"{a.name}.md", markdown(rep, command))
    print(markdown(rep, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
