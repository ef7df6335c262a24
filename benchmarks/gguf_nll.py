"""Held-out NLL of GGUF files from llama.cpp's own logits: what a quantisation type and a per-task export cost in
quality, as llama.cpp / Ollama users would run them.

Examples: the SFT mix's validation slices (`--per-family` each, never trained on), the reference answer teacher-forced
after the chat-templated prompt (the default model's tokenizer); NLL per answer token. Every file after the first is
also compared with the first, paired per example (95% bootstrap intervals).

    python benchmarks/gguf_nll.py --gguf "dense Q4_1=packaged.gguf" --gguf "keep 3/4 Q4_K_M=code.gguf" \
        --families mbpp code_alpaca --threads 1 --out results/speed/kquants/nll.json
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

from ifprune.core.loading import load_model
from ifprune.core.paths import write_json
from ifprune.core.prompting import encode_prompt, response_ids
from ifprune.eval.families import SFT_TASKS
from ifprune.eval.statistics import summarise
from ifprune.runtime.llamacpp import Engine
from ifprune.training.config import default_data_dir
from ifprune.training.data_sft import sft_splits


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--families", nargs="+", default=list(SFT_TASKS), choices=list(SFT_TASKS))
    ap.add_argument("--per-family", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=1024, help="prompt + answer tokens kept per example")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    files = [g.split("=", 1) for g in args.gguf]
    for name, path in files:
        if not os.path.isfile(path):
            sys.exit(f"gguf_nll: {name}: no file at {path}")
    _, val = sft_splits(default_data_dir(), args.families, max_per_family=1, val_per_family=args.per_family)
    tok = load_model(None).tokenizer
    examples = []
    for ex in val:
        p = encode_prompt(tok, ex.prompt)[0].tolist()
        ids = (p + response_ids(tok, ex.prompt, ex.response).tolist())[: args.max_tokens]
        if len(ids) > len(p):
            examples.append((ex.family, ids, len(ids) - len(p)))
    per: dict[str, list[dict]] = {}
    for name, path in files:
        eng = Engine(path, threads=args.threads, n_ctx=args.max_tokens)
        try:
            per[name] = [{"family": fam, "nll": float(-eng.logprobs(ids)[-n:].sum()), "tokens": n}
                         for fam, ids, n in examples]
        finally:
            eng.close()
        print(f"{name}: done", file=sys.stderr)
    ref_name = files[0][0]
    rows = []
    for name, path in files:
        xs, ref = per[name], per[ref_name]
        row = {"name": name, "path": path, "bytes": os.path.getsize(path), "families": {}}
        for fam in ["all", *args.families]:
            pick = [j for j, x in enumerate(xs) if fam == "all" or x["family"] == fam]
            den = [xs[j]["tokens"] for j in pick]
            row["families"][fam] = summarise([xs[j]["nll"] for j in pick], den)
            if name != ref_name:
                row["families"][fam]["minus_first"] = summarise([xs[j]["nll"] - ref[j]["nll"] for j in pick], den)
        rows.append(row)
    write_json(Path(args.out), {
        "command": "python benchmarks/gguf_nll.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
        "examples": len(examples), "per_family": args.per_family, "rows": rows, "per_example": per})
    for r in rows:
        a = r["families"]["all"]
        d = a.get("minus_first")
        print(f"{r['name']}: {r['bytes'] / 1e6:.1f} MB, NLL {a['value']:.3f}"
              + (f", minus {ref_name} {d['value']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" if d else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
