"""llama.cpp's decode speed and greedy answer for a few GGUF files, as a user runs them (llama-cpp-python):
the same chat prompt, the same thread count, rows interleaved in every repeat, medians.

    python benchmarks/gguf_decode.py --gguf "dense=a.gguf" --gguf "pruned=b.gguf" --threads 1 --out speed.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from ifprune.core.paths import write_json


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--prompt", default="Write a Python function that returns the factorial of n.")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--raw", action="store_true", help="complete the prompt as plain text (a base model without a "
                                                        "chat template), not as a chat message")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        from llama_cpp import Llama
    except ImportError:
        raise SystemExit("needs llama-cpp-python: pip install 'ifprune[llamacpp]'") from None
    rows = []
    for spec in args.gguf:
        name, sep, path = spec.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"--gguf takes NAME=PATH of an existing file, got {spec!r}")
        llm = Llama(model_path=path, n_threads=args.threads, n_ctx=1024, verbose=False)
        rows.append({"row": name, "path": path, "bytes": os.path.getsize(path), "llm": llm, "runs": []})
    messages = [{"role": "user", "content": args.prompt}]
    for r in range(args.repeats):
        for row in rows:
            llm = row["llm"]
            llm.reset()
            t = time.perf_counter()
            if args.raw:
                out = llm(args.prompt, max_tokens=args.new_tokens, temperature=0.0, top_k=1, seed=0)
            else:
                out = llm.create_chat_completion(messages=messages, max_tokens=args.new_tokens, temperature=0.0,
                                                 top_k=1, seed=0)
            wall = time.perf_counter() - t
            n = out["usage"]["completion_tokens"]
            row["runs"].append({"seconds": wall, "tokens": n, "tok_s": n / wall if n else 0.0})
            choice = out["choices"][0]
            row["text"] = choice["text"] if args.raw else choice["message"]["content"]
        print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr)
    res = {"command": "python benchmarks/gguf_decode.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": platform.platform(), "threads": args.threads, "prompt": args.prompt,
           "rows": [{k: v for k, v in row.items() if k != "llm"} | {"median_tok_s": statistics.median(
               x["tok_s"] for x in row["runs"])} for row in rows]}
    write_json(Path(args.out), res)
    for row in res["rows"]:
        print(f"{row['row']:24s} {row['bytes'] / 1e6:7.1f} MB {row['median_tok_s']:7.1f} tok/s  {row['text'][:60]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
