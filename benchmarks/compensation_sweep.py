"""Output compensation sweep: validation NLL per family for selectors x compensation settings, one
model load, moments gathered once in token-budget snapshots. Appends one JSON line per setting to
OUT (resumes: settings already in OUT are skipped).

    python benchmarks/compensation_sweep.py --out results/compensation/sweep.jsonl \
        --data /tmp/val_sft.jsonl --per-family 12 --threads 2

The data file is the SFT validation slices (`python -m ifprune.training.data_sft --out FILE`), never a
test split. Settings: --grid ridge | budget | prompt | selectors (see GRIDS).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

GRIDS = {
    # (selector, keep, mode, ridge, budget, prompt weight (mode prompt) or shrink (mode calibration))
    "ridge": [("dense", 1.0, "none", 0, 0, 0), ("griffin", 0.5, "none", 0, 0, 0)] + [("griffin", 0.5, "calibration", r, 65536, 0)
                                                     for r in (1e-3, 1e-2, 3e-2, 1e-1, 3e-1)],
    "budget": [("griffin", 0.5, "calibration", r, b, 0) for b in (4096, 8192, 16384, 32768) for r in (1e-3, 1e-2)],
    "prompt": [("griffin", 0.5, "prompt", 1e-2, 65536, w) for w in (0.1, 0.25, 0.5, 1.0)],
    # covariance shrinkage (variance-weighted ridge) at a small and the default budget; key field 5 = shrink
    "shrink": [("griffin", 0.5, "calibration", 1e-3, b, a) for b in (8192, 65536) for a in (0.05, 0.2)],
    # per-task statistics: each family scored with moments from that family's own calibration rows
    # (budget 16384 of them) against the global mix at the same budget
    "task": [("griffin", 0.5, "task", 1e-2, 16384, 0), ("griffin", 0.5, "calibration", 1e-2, 16384, 0)],
}


def rows_of(path: Path, per_family: int) -> list[dict]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    seen: dict[str, int] = {}
    out = []
    for r in rows:
        f = r.get("family", "all")
        if seen.get(f, 0) < per_family:
            out.append(r)
            seen[f] = seen.get(f, 0) + 1
    return out


def markdown(rows: list[dict]) -> str:
    fams = list(dict.fromkeys(f for r in rows for f in r["families"]))
    dense = next((r["nll"] for r in rows if r["selector"] == "dense"), None)
    plain = {r["selector"]: r["nll"] for r in rows if r["mode"] == "none" and r["selector"] != "dense"}
    head = ["selector", "keep", "mode", "ridge", "calibration tokens", "prompt weight or shrink", "nll", "gap closed"] + fams + [
        "load ms (median)"]
    out = ["# Output compensation sweep (validation NLL per response token)", "",
           f"Rows: {rows[0]['examples']} examples of `{rows[0]['data']}` (SFT validation slices, never trained on, "
           f"not in the calibration mix); machine {rows[0]['machine']}, {rows[0]['threads']} threads. "
           "Gap closed = (plain - compensated) / (plain - dense).", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        base = plain.get(r["selector"])
        closed = (f"{(base - r['nll']) / (base - dense):.0%}" if dense is not None and base is not None
                  and r["mode"] != "none" and base != dense else "")
        cells = [r["selector"], f"{r['keep']:.3f}", r["mode"], f"{r['ridge']:g}", str(r["tokens"]),
                 f"{r['prompt_weight']:g}", f"{r['nll']:.3f}", closed] + [f"{r['families'].get(f, float('nan')):.3f}"
                                                                          for f in fams] + [f"{r['load_ms_median']:.0f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--per-family", type=int, default=12)
    p.add_argument("--grid", nargs="+", default=["ridge"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default=None)
    p.add_argument("--markdown", default=None, help="only render OUT's rows as a markdown table to this file")
    a = p.parse_args()
    if a.markdown:
        rows = [json.loads(x) for x in Path(a.out).read_text().splitlines() if x.strip()]
        Path(a.markdown).write_text(markdown(rows))
        return 0
    torch.set_num_threads(a.threads)

    from ifprune.compensation.calibration import (
        DEFAULT_CALIBRATION, CompensationConfig, Compensator, LayerStats, calibration_rows, collect_moments,
        file_sha256, prompt_moments,
    )
    from ifprune.compensation.refit import Moments
    from ifprune.core.loading import load_model
    from ifprune.core.prompting import encode_prompt, response_ids
    from ifprune.selection.selectors import make_selector

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(x)["key"] for x in out.read_text().splitlines() if x.strip()} if out.exists() else set()
    lm = load_model(a.model)
    data = rows_of(Path(a.data), a.per_family)
    settings = [s for g in a.grid for s in GRIDS[g]]

    # moments in budget snapshots, from one pass over the calibration rows
    budgets = sorted({s[4] for s in settings if s[2] not in ("none", "task")})
    snapshots: dict[int, LayerStats] = {}
    if budgets:
        t0 = time.perf_counter()
        rows = calibration_rows(lm.tokenizer, DEFAULT_CALIBRATION, max(budgets), 512)
        run = [Moments.zeros(lm.d_ffn) for _ in range(lm.num_layers)]
        used, start = 0, 0
        for b in budgets:
            end = start
            while end < len(rows) and used < b:
                used += len(rows[end])
                end += 1
            if end > start:
                part = collect_moments(lm, rows[start:end])
                for m, q in zip(run, part):
                    m.outer += q.outer
                    m.total += q.total
                    m.count += q.count
            start = end
            snapshots[b] = LayerStats(torch.stack([m.second_moment() for m in run]).float(),
                                      torch.stack([m.mean() for m in run]).float(), run[0].count,
                                      lm.fingerprint(), file_sha256(DEFAULT_CALIBRATION))
            print(f"moments: {run[0].count} tokens after {time.perf_counter() - t0:.0f} s", flush=True)

    family_stats: dict[str, LayerStats] = {}
    if any(s[2] == "task" for s in settings):
        import tempfile

        src_rows = [json.loads(x) for x in DEFAULT_CALIBRATION.read_text().splitlines() if x.strip()]
        for fam in sorted({r.get("family", "all") for r in data}):
            mine = [r for r in src_rows if r.get("source") == fam]
            with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
                f.write("".join(json.dumps(r) + "\n" for r in mine))
            rows = calibration_rows(lm.tokenizer, f.name, 16384, 512, need=1)
            ms = collect_moments(lm, rows)
            family_stats[fam] = LayerStats(torch.stack([m.second_moment() for m in ms]).float(),
                                           torch.stack([m.mean() for m in ms]).float(), ms[0].count,
                                           lm.fingerprint(), fam)
            print(f"family moments {fam}: {ms[0].count} tokens", flush=True)

    selectors = {}
    for sel, keep, mode, ridge, budget, pw in settings:
        key = f"{sel}|{keep}|{mode}|{ridge}|{budget}|{pw}"
        if key in done:
            continue
        if sel not in selectors:
            selectors[sel] = make_selector(sel, calibration=str(DEFAULT_CALIBRATION))
        selector = selectors[sel]
        width = round(keep * lm.d_ffn)
        lm.set_compensator(None)
        per_family = {}
        if mode == "task":
            cfg = CompensationConfig(mode="calibration", ridge=ridge, max_tokens=budget)
            per_family = {f: Compensator(lm, cfg, st) for f, st in family_stats.items()}
        elif mode != "none":
            cfg = CompensationConfig(mode=mode, ridge=ridge, max_tokens=max(budget, 2048),
                                     prompt_weight=pw if mode == "prompt" else 0.25,
                                     shrink=pw if mode == "calibration" else 0.0)
            lm.set_compensator(Compensator(lm, cfg, snapshots[budget]))
        compact = lm.compact(width)
        fam: dict[str, list[float]] = {}
        t0 = time.perf_counter()
        load_s = []
        for r in data:
            ids = encode_prompt(lm.tokenizer, r["prompt"])
            cont = response_ids(lm.tokenizer, r["prompt"], r["response"])[:384]
            plan = selector.select(lm, r["prompt"], width) if width < lm.d_ffn else None
            pm = prompt_moments(lm, ids) if mode == "prompt" else None
            model = lm.model
            if per_family:
                compact.compensator = per_family[r.get("family", "all")]
                compact.plan = None
            if plan is not None:
                load_s.append(compact.load(plan, prompt=pm))
                model = compact.model
            seq = torch.cat([ids[0], cont]).unsqueeze(0)
            with torch.no_grad():
                logp = torch.log_softmax(model(seq).logits[0, ids.shape[1] - 1:-1].float(), -1)
            nll = -logp.gather(1, cont.unsqueeze(1)).sum().item()
            f = fam.setdefault(r.get("family", "all"), [0.0, 0])
            f[0] += nll
            f[1] += cont.numel()
        tot = [sum(v[0] for v in fam.values()), sum(v[1] for v in fam.values())]
        res = {"key": key, "selector": sel, "keep": keep, "mode": mode, "ridge": ridge, "budget": budget,
               "prompt_weight": pw, "tokens": snapshots[budget].tokens if mode not in ("none", "task") else budget,
               "nll": tot[0] / tot[1], "families": {k: v[0] / v[1] for k, v in fam.items()},
               "examples": len(data), "load_ms_median": 1e3 * sorted(load_s)[len(load_s) // 2] if load_s else 0,
               "wall_s": time.perf_counter() - t0, "threads": a.threads, "machine": platform.platform(),
               "data": a.data, "date": time.strftime("%Y-%m-%d %H:%M")}
        print(json.dumps(res), flush=True)
        with open(out, "a") as f:
            f.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
