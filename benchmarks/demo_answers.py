"""Real answers of `ifprune generate` for the README: every prompt under every argument set, greedy,
as JSON lines (the generate --json record plus "prompt" and "args"), then one summary line each.

    python benchmarks/demo_answers.py --out results/training/v3/demo.jsonl \
        --prompt "What is the capital of France?" --args "" --args "--keep 0.5"
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--prompt", action="append", required=True)
    p.add_argument("--args", action="append", required=True, help="one generate argument set (may be empty)")
    p.add_argument("--threads", default="2")
    p.add_argument("--max-new-tokens", default="48")
    a = p.parse_args(argv)
    rows = []
    for prompt in a.prompt:
        for args in a.args:
            cmd = [".venv/bin/ifprune", "generate", prompt, *shlex.split(args), "--max-new-tokens", a.max_new_tokens,
                   "--threads", a.threads, "--json"]
            rec = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            rows.append({**rec, "args": args, "prompt": prompt})
    Path(a.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    for d in rows:
        tuned = (d.get("weights") or {}).get("tuned_by") or "base"
        print(f"{d['prompt'][:40]!r} [{d['args'] or 'defaults'}] {d['selector']} {d['ffn_width']}/{d['d_ffn']} "
              f"weights={tuned.split('/')[-1]} comp={d['compensation']['mode']}: {d['text']!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
