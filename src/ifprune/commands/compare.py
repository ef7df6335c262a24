"""`ifprune compare GRID.yaml --out DIR`: one table over suites x rows x keep ratios, the rows written as keys
in a small YAML file (eval.grid) rather than spelt into selector names. `ifprune eval compare` is the same
command with the grid given as flags."""

from __future__ import annotations

from .common import add_compensation_args, add_model_args, add_quant_arg
from .eval import _common


def register(sub) -> None:
    p = sub.add_parser("compare", help="compare dense, selectors and artifacts over suites and keep ratios",
                       description="A table (results.json, results.md, plots) over suites x rows x keep ratios, from "
                       "a YAML grid; flags override the file's keys. Each row: selector (dense, griffin, wanda, "
                       "magnitude, random, predictor), artifact DIR, per_task, reselect off|once|every, tokens N, "
                       "prefill pruned|dense|dense-answer|kept. See eval/grid.py for an example file.")
    p.add_argument("grid", nargs="?", default=None, help="YAML grid file (suites, keeps, limits, compensations, rows)")
    add_model_args(p)
    add_quant_arg(p, "none")
    p.add_argument("--seed", type=int, default=None, help="seed for the random selector")
    add_compensation_args(p)
    p.add_argument("--data", default=None, help="nll data file instead of the default (JSONL of prompt/response/family)")
    _common(p)
    g = p.add_argument_group("the grid (each overrides the file's key)")
    g.add_argument("--suites", nargs="+", default=None, help="suites, e.g. nll mc ifeval")
    g.add_argument("--selectors", nargs="+", default=None, help="rows in eval compare's spelling (see `eval --help`)")
    g.add_argument("--keeps", nargs="+", type=float, default=None, help="keep ratios, e.g. 0.5 0.75")
    g.add_argument("--limits", nargs="+", default=None, metavar="SUITE=N", help="per-suite limits, e.g. nll=120")
    g.add_argument("--compensations", nargs="+", default=None, metavar="MODE",
                   help="compensation modes, each its own row (default: the default mode)")
    p.add_argument("--out", required=True, help="output directory for results.json/.md and plots")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=run, refresh=None, refresh_every=None, prefill=None, reselect=None, reselect_tokens=None)


def run(args) -> int:
    from .eval import run_compare

    if args.grid is not None:
        from ..eval.grid import load_grid

        grid = load_grid(args.grid)
        for key in ("suites", "selectors", "keeps", "limits", "compensations"):
            if getattr(args, key) is None:
                setattr(args, key, grid[key] or None)
    return run_compare(args)
