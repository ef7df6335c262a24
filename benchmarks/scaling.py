"""What each ifprune command costs on a bigger model, run as a user runs it: wall time and peak resident memory
of every step, as separate `ifprune` processes (so each peak is that step's own), on one checkpoint.

Rows: dense generate (load + decode), GRIFFIN keep 1/2 without compensation (selection on a ~200-token prompt,
plan load, decode), the same with compensation from an empty cache (the statistics pass, then a refit) and again
from the cache (a refit only), per-task export to HF and to GGUF. Decode rows at each --threads. Writes JSON
with the command lines, the machine and every raw measurement, and a markdown table.

    python benchmarks/make_shapes.py --shape llama-3.2-1b --out /tmp/shapes/llama-3.2-1b
    python benchmarks/scaling.py --model /tmp/shapes/llama-3.2-1b --threads 1 2 --out results/scaling/llama-3.2-1b
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROMPT = ("Summarise the following notes for a colleague who missed the meeting. The team reviewed the quarterly "
          "plan, agreed to move the database migration to the second week of the month, and asked for a written "
          "rollback procedure before any production change. Two open questions remain: whether the staging "
          "cluster can be shared with the analytics group, and who owns the on-call rota during the holidays. "
          "The budget for new hardware was approved with a ten percent reserve. Marketing wants a short demo of "
          "the search feature by Friday, with screenshots and a one-page description. Security reported that "
          "two service accounts still use passwords older than a year and must be rotated. Finally, the next "
          "planning session moves to Thursday afternoon because of the public holiday on Monday.")
TASK = "Summarise meeting notes into a short, clear update for a colleague."


def run(cmd: list[str], env: dict) -> dict:
    """One ifprune process: wall seconds, peak RSS (GNU time), its JSON output when it printed one."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        p = subprocess.run(["/usr/bin/time", "-o", t.name, "-f", "%e %M", *cmd], env=env, capture_output=True,
                           text=True)
        wall, kb = t.read().split()[-2:]
    out = {"command": " ".join(cmd), "returncode": p.returncode, "wall_s": float(wall), "peak_rss_gb": int(kb) / 1e6}
    if p.returncode != 0:
        out["stderr_tail"] = p.stderr[-2000:]
        print(f"FAILED ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}", file=sys.stderr)
        return out
    text = p.stdout.strip()
    try:
        out["json"] = json.loads(text[text.index("{"):])  # (export prints log lines before its JSON)
    except ValueError:
        out["stdout_tail"] = text[-2000:]
    return out


def machine() -> dict:
    info = {"platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        info["model"] = next(ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name"))
        flags = next(ln for ln in text.splitlines() if ln.startswith("flags"))
        info["avx512_bf16"], info["amx"] = "avx512_bf16" in flags, "amx_tile" in flags
        mem = Path("/proc/meminfo").read_text().splitlines()[0]
        info["memory_gb"] = int(mem.split()[1]) / 1e6
    except (OSError, StopIteration):
        pass
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--calibration-tokens", type=int, default=None, help="default: ifprune's own default")
    ap.add_argument("--compensate", default=None,
                    help="compensation mode of the compensated rows and the exports (default: ifprune's own; none "
                         "when the stats rows are skipped)")
    ap.add_argument("--gguf-types", nargs="+", default=["q8_0"])
    ap.add_argument("--skip", nargs="*", default=[], help="steps to leave out: decode, stats, export-hf, export-gguf")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ifprune-scaling-"))
    env = {**os.environ, "IFPRUNE_CACHE": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
    ifp = [str(Path(sys.executable).with_name("ifprune"))]
    res = {"command": "python benchmarks/scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
           "model": a.model, "config": json.loads((Path(a.model) / "config.json").read_text()), "rows": []}
    calib = ["--calibration-tokens", str(a.calibration_tokens)] if a.calibration_tokens else []
    calib += ["--compensate", a.compensate] if a.compensate else []
    gen = [*ifp, "generate", "--model", a.model, "--json", "--no-stream", "--max-new-tokens", str(a.new_tokens)]

    def row(name: str, cmd: list[str], **extra) -> dict:
        print(f"{name}: {' '.join(cmd)}", file=sys.stderr)
        r = {"row": name, **extra, **run(cmd, env)}
        res["rows"].append(r)
        (out / "scaling.json").write_text(json.dumps(res, indent=1))
        return r

    try:
        if "decode" not in a.skip:
            for t in a.threads:
                row("dense generate", [*gen, "--selector", "dense", "--threads", str(t), PROMPT], threads=t)
                row(f"griffin keep {a.keep}, no compensation", [*gen, "--selector", "griffin", "--keep", str(a.keep),
                    "--compensate", "none", "--threads", str(t), PROMPT], threads=t)
        t = max(a.threads)
        if "stats" not in a.skip:
            row(f"griffin keep {a.keep}, compensation, empty cache (statistics + refit)",
                [*gen, "--selector", "griffin", "--keep", str(a.keep), *calib, "--threads", str(t), PROMPT], threads=t)
            row(f"griffin keep {a.keep}, compensation, cached statistics (refit)",
                [*gen, "--selector", "griffin", "--keep", str(a.keep), *calib, "--threads", str(t), PROMPT], threads=t)
        comp = [] if "stats" not in a.skip or a.compensate else ["--compensate", "none"]
        export = [*ifp, "export", "--model", a.model, "--task", TASK, "--keep", str(a.keep), "--threads", str(t),
                  *calib, *comp]
        if "export-hf" not in a.skip:
            r = row("export hf", [*export, "--out", str(work / "hf")], threads=t)
            r["disk_bytes"] = sum(f.stat().st_size for f in (work / "hf").rglob("*") if f.is_file())
        if "export-gguf" not in a.skip:
            for q in a.gguf_types:
                r = row(f"export gguf {q}", [*export, "--format", "gguf", "--gguf-type", q,
                                             "--out", str(work / f"model-{q}.gguf")], threads=t)
                f = work / f"model-{q}.gguf"
                r["disk_bytes"] = f.stat().st_size if f.is_file() else None
        stats = list((work / "cache" / "moments").glob("*/manifest.json"))  # (mode mean: the means alone)
        if stats:
            res["statistics_disk_bytes"] = sum(f.stat().st_size for f in stats[0].parent.iterdir())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (out / "scaling.json").write_text(json.dumps(res, indent=1))
    (out / "scaling.md").write_text(render(res))
    print(render(res))
    return 0


def render(res: dict) -> str:
    c, m = res["config"], res["machine"]
    lines = [f"# Scaling: {Path(res['model']).name}\n",
             f"{c.get('num_hidden_layers')} layers, hidden {c.get('hidden_size')}, FFN {c.get('intermediate_size')}, "
             f"stored {c.get('dtype') or c.get('torch_dtype')}; {res['date']}; {m.get('model')} ({m.get('cpus')} CPUs, "
             f"{m.get('memory_gb', 0):.0f} GB, AVX-512 BF16 {m.get('avx512_bf16')}, AMX {m.get('amx')}). "
             f"Command: `{res['command']}`\n",
             "| step | threads | wall s | peak RSS GB | selection s | plan load s | prefill s | decode tok/s | disk |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        j = r.get("json") or {}
        t = j.get("timings") or {}
        tps = (j["new_tokens"] - 1) / t["decode_s"] if t.get("decode_s") and j.get("new_tokens", 0) > 1 else None
        disk = f"{r['disk_bytes'] / 1e9:.2f} GB" if r.get("disk_bytes") else ""
        fmt = lambda k: f"{t[k]:.2f}" if k in t else ""  # noqa: E731
        status = "" if r["returncode"] == 0 else f" (failed: exit {r['returncode']})"
        lines.append(f"| {r['row']}{status} | {r.get('threads', '')} | {r['wall_s']:.1f} | {r['peak_rss_gb']:.2f} | "
                     f"{fmt('selection_s')} | {fmt('loading_s')} | {fmt('prefill_s')} | "
                     f"{'' if tps is None else f'{tps:.2f}'} | {disk} |")
    if res.get("statistics_disk_bytes"):
        lines.append(f"\nCompensation statistics on disk: {res['statistics_disk_bytes'] / 1e9:.2f} GB.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
