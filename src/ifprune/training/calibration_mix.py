"""Build the default calibration mix that output compensation reads (shipped in the package as
`ifprune/data/calibration/default.jsonl`), reproducibly, from the local data sets.

Training splits only, permissively licensed sources only (the text ships in the package), and every
prompt of a validation slice (`ifprune eval nll`'s mix and the SFT validation slices) left out, so
compensation never sees what it is measured on. Families are interleaved row by row, so any token
budget is balanced across them.

    python -m ifprune.training.calibration_mix --out src/ifprune/data/calibration/default.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from ..core.jsonl import iter_jsonl, read_json_array
from .config import DataConfig
from ..eval.families import reserved_prompts
from .data_sft import load_family, sft_splits

SOURCES = {  # name: (licence, what)
    "gsm8k": ("MIT", "GSM8K train"),
    "math": ("MIT", "MATH problems outside MATH-500"),
    "mbpp": ("CC-BY-4.0", "MBPP train split (task_id 601-974)"),
    "code": ("MIT", "GPTeacher code-generation instructions"),
    "t0": ("Apache-2.0", "T0 / P3 prompted tasks (self-instruct copy)"),
    "general": ("Apache-2.0", "Alpaca / self-instruct seed tasks"),
    "prose": ("public domain", "US State of the Union addresses (plain text, no chat template)"),
}


def _rows(root: Path, name: str) -> list[dict]:
    if name in ("gsm8k", "math", "mbpp", "t0"):
        return [{"prompt": e.prompt, "response": e.response} for e in load_family(root, name)]
    if name == "code":
        return [{"prompt": r["instruction"] + (f"\n\n{r['input']}" if r.get("input", "").strip() else ""),
                 "response": r["response"]}
                for r in read_json_array(root / "instruct/gpteacher/codegen-instruct.json")
                if r.get("response", "").strip()]
    if name == "general":
        out = []
        for _, r in iter_jsonl(root / "instruct/alpaca/seed_tasks.jsonl"):
            for inst in r.get("instances") or []:
                if inst.get("output", "").strip():
                    inp = inst.get("input") or ""
                    out.append({"prompt": r["instruction"] + (f"\n\n{inp}" if inp.strip() else ""),
                                "response": inst["output"]})
        return out
    if name == "prose":  # whole addresses are long: cut them into ~1500-character passages at sentence ends
        out = []
        for _, r in iter_jsonl(root / "pretrain/sotu/sotu.jsonl"):
            text, start = " ".join(str(r.get("text", "")).split()), 0
            while len(text) - start > 500:
                end = text.find(". ", start + 1500)
                end = len(text) if end == -1 else end + 1
                out.append({"text": text[start:end]})
                start = end + 1
        return out
    raise ValueError(name)


def build(root: Path, per_source: int, seed: int = 0) -> list[dict]:
    d = DataConfig()
    _, val = sft_splits(root, d.families, max_per_family=1, val_per_family=d.val_per_family, seed=seed,
                        exclude_eval_prompts=False)
    held_out = {e.prompt for e in val} | reserved_prompts(root)
    per = {}
    for name in SOURCES:
        rows = [r for r in _rows(root, name) if r.get("prompt") not in held_out]
        random.Random(f"calibration:{seed}:{name}").shuffle(rows)
        per[name] = [{**r, "source": name} for r in rows[:per_source]]
    mixed = []
    for i in range(max(len(v) for v in per.values())):
        mixed += [rows[i] for rows in per.values() if i < len(rows)]
    return mixed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write the default calibration mix for output compensation.")
    p.add_argument("--out", required=True)
    p.add_argument("--data-dir", default=None, help="data folder (default: $IFPRUNE_DATA or ../shared/data)")
    p.add_argument("--per-source", type=int, default=160, help="rows per source (7 sources)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    root = Path(a.data_dir) if a.data_dir else DataConfig().root()
    rows = build(root, a.per_source, a.seed)
    from ..core.paths import write_text

    write_text(a.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {len(rows)} rows to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
