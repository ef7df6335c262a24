"""Paired NLL difference of two rows of an `ifprune eval compare` nll run, overall and per family, with
a 95% bootstrap interval over examples. Both rows score the same tokens of the same examples, so the
per-example difference removes the example-to-example spread that each row's own interval carries.

    python benchmarks/paired_nll.py results/refresh/compare75/results.json ifpruning ifpruning+refresh32 \
        --out results/refresh/paired75.json

`--pool OTHER/results.json` (repeatable) adds the same two rows of other compares on other examples (e.g.
a second held-out slice): one paired difference over all of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def example_copy(result: dict, results_json: Path) -> Path:
    """Where a row's per-example results are committed next to results.json: examples/<label>.jsonl."""
    label = result["selector"].replace("/", "_").replace("[", "_").replace("]", "").replace("+", "_")
    return results_json.parent / "examples" / f"{label}.jsonl"


def example_file(result: dict, results_json: Path) -> Path:
    """A row's per-example results: the eval cache it was written to, else the copy committed next to
    results.json (`example_copy`, as results/refresh/ keeps them)."""
    path = Path(result["cache_file"])
    if path.is_file():
        return path
    copy = example_copy(result, results_json)
    if copy.is_file():
        return copy
    raise SystemExit(f"error: the per-example results of row {result['selector']} are neither at {path} nor at "
                     f"{copy}: rerun the compare")


def rows(result: dict, results_json: Path) -> dict[str, dict]:
    path = example_file(result, results_json)
    out = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        out[r["id"]] = r
    return out


def main() -> int:
    from ifprune.eval.statistics import bootstrap_ci, ratio

    p = argparse.ArgumentParser()
    p.add_argument("results", type=Path, help="results.json of an nll compare")
    p.add_argument("a", help="row label (the reference)")
    p.add_argument("b", help="row label (the change)")
    p.add_argument("--pool", type=Path, action="append", default=[],
                   help="another compare's results.json with the same two rows on other examples, pooled in")
    p.add_argument("--b-from", type=Path, action="append", default=[],
                   help="row b comes from this results.json instead (once per results file, in order: the "
                        "positional one, then each --pool), for two compares over the same examples")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    paths = [a.results, *a.pool]
    if a.b_from and len(a.b_from) != len(paths):
        print(f"error: give --b-from once per results file ({len(paths)}), got {len(a.b_from)}", file=sys.stderr)
        return 2
    ra, rb = {}, {}
    for k, path in enumerate(paths):
        for name, src, into in ((a.a, path, ra), (a.b, a.b_from[k] if a.b_from else path, rb)):
            rep = json.loads(src.read_text())
            by = {r["selector"]: r for r in rep["results"] if r["suite"] == "nll"}
            if name not in by:
                print(f"error: no nll row {name!r} in {src} (rows: {', '.join(by)})", file=sys.stderr)
                return 2
            into.update({(k, i): r for i, r in rows(by[name], src).items()})
    ids = [i for i in ra if i in rb]
    if any(ra[i]["den"] != rb[i]["den"] for i in ids):
        print("error: the rows scored different tokens; they are not paired", file=sys.stderr)
        return 2
    out = {"results": str(a.results), **({"pooled_with": [str(x) for x in a.pool]} if a.pool else {}),
           **({"b_from": [str(x) for x in a.b_from]} if a.b_from else {}),
           "a": a.a, "b": a.b, "examples": len(ids), "families": {}}
    fams = sorted({ra[i]["family"] for i in ids})
    for fam in ["all", *fams]:
        sel = [i for i in ids if fam == "all" or ra[i]["family"] == fam]
        na, nb = [ra[i]["num"] for i in sel], [rb[i]["num"] for i in sel]
        den = [ra[i]["den"] for i in sel]
        diff = [y - x for x, y in zip(na, nb)]
        lo, hi = bootstrap_ci(diff, den)
        out["families"][fam] = {"n": len(sel), "nll_a": ratio(na, den), "nll_b": ratio(nb, den),
                                "b_minus_a": ratio(diff, den), "ci95": [lo, hi],
                                "b_better_examples": sum(d < 0 for d in diff)}
    for fam, r in out["families"].items():
        print(f"{fam:8s} n={r['n']:3d}  {a.a} {r['nll_a']:.4f}  {a.b} {r['nll_b']:.4f}  "
              f"diff {r['b_minus_a']:+.4f} [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]  b better on {r['b_better_examples']}")
    if a.out:
        a.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
