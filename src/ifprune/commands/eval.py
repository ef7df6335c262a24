"""`ifprune eval SUITE ...` and `ifprune eval compare ...`: benchmark pruned models from the local
data copies; per-example results are cached so an interrupted run resumes."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from .common import (
    add_model_args, add_quant_arg, add_reselection_args, add_selector_args, compensation_config, load, print_json, reselection_args,
    resolve_width,
    selector_from_args,
)

SUITE_CHOICES = ("nll", "gsm8k", "math500", "humaneval", "mbpp", "ifeval", "mc")


def _common(p) -> None:
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples (mc: per task)")
    p.add_argument("--data-dir", default=None, help="benchmark data directory (default: $IFPRUNE_DATA or ../shared/data)")
    p.add_argument("--strict", action="store_true", help="fail on a malformed data row (with its line number) instead of skipping it")
    p.add_argument("--max-new-tokens", type=int, default=None, help="generation budget per example (suite default otherwise)")
    p.add_argument("--mc-tasks", nargs="+", default=None, help="mc sub-tasks (default: all of mmlu arc_easy arc_challenge piqa winogrande boolq openbookqa)")
    p.add_argument("--cache-dir", default=None, help="per-example result cache (default: $IFPRUNE_CACHE/eval)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the per-example cache")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def register(sub) -> None:
    p = sub.add_parser("eval", help="run benchmark suites, or compare selectors (`eval compare`)",
                       description="Evaluate a pruned model on a suite: " + ", ".join(SUITE_CHOICES)
                       + "; or `ifprune eval compare` for a table over suites x selectors x keep ratios.")
    p.add_argument("suite", help=f"one of {', '.join(SUITE_CHOICES)}, or 'compare'")
    add_model_args(p)
    add_quant_arg(p, "none")
    add_selector_args(p)
    p.add_argument("--data", default=None, help="suite data file instead of the default (nll: JSONL of prompt/response/family)")
    p.add_argument("--task", default=None, help="per-task mode: select one plan from this description for all examples")
    add_reselection_args(p, "re-select after R answer tokens (as `generate --reselect once --reselect-tokens R`; default: the artifact's own, "
                            "off unless it was trained under re-selection; 0: off); in compare: NAME+reselect-onceN",
                         every_note="; in compare: NAME+reselect-everyN",
                         prefill_note="; in compare: NAME+dense-prefill or NAME+pruned-prefill")
    _common(p)
    g = p.add_argument_group("compare")
    g.add_argument("--suites", nargs="+", default=None, help="suites to compare (compare only)")
    g.add_argument("--selectors", nargs="+", default=None, help="selectors to compare (compare only); a trained artifact as predictor:DIR (per input, or its one plan if learned-static) or predictor-task:DIR (per task description); NAME+reselect-everyN re-selects after every N answer tokens, NAME+reselect-onceN once after N, NAME+reselect-off never (N left out: the artifact's own, else 32), e.g. predictor+reselect-once32:DIR (an artifact trained under re-selection re-selects every N with a dense-answer prefill by default); +dense-prefill or +pruned-prefill last in the name: who reads the prompt")
    g.add_argument("--keeps", nargs="+", type=float, default=None, help="keep ratios to compare, e.g. 0.5 0.333")
    g.add_argument("--limits", nargs="+", default=None, metavar="SUITE=N",
                   help="per-suite limits for compare, e.g. gsm8k=10 nll=100 (overrides --limit)")
    g.add_argument("--compensations", nargs="+", default=None, metavar="MODE",
                   help="compare: compensation modes, each its own row (default: --compensate, else the default mode)")
    g.add_argument("--out", default=None, help="compare: output directory for results.json/.md and plots")
    g.add_argument("--no-plots", action="store_true", help="compare: skip the PNG plots")
    p.set_defaults(func=run)


def _cache_dir(args):
    if args.no_cache:
        return None
    if args.cache_dir:
        return args.cache_dir
    from ..core.paths import cache_dir

    return str(cache_dir() / "eval")


def run(args) -> int:
    from ..core.errors import IfpruneError

    if args.suite == "compare":
        if (args.refresh is not None or args.refresh_every is not None or args.prefill is not None
                or args.reselect is not None or args.reselect_tokens is not None):
            raise IfpruneError("compare takes re-selection and prefill per selector: write NAME+reselect-everyN, "
                               "NAME+reselect-onceN, NAME+reselect-off or NAME+dense-prefill in --selectors (e.g. "
                               "predictor+reselect-once32:DIR), not --reselect / --reselect-tokens / --prefill")
        return run_compare(args)
    if args.suite not in SUITE_CHOICES:
        raise IfpruneError(f"unknown suite {args.suite!r}; choose from {', '.join(SUITE_CHOICES)} or 'compare'")
    from ..eval import Scorer, make_suite, run_suite

    suite = make_suite(args.suite, data_dir=args.data_dir, data=args.data, strict=args.strict,
                       max_new_tokens=args.max_new_tokens, tasks=args.mc_tasks)
    lm = load(args)
    selector = selector_from_args(args, lm)
    mode, tokens = reselection_args(args, selector)
    scorer = Scorer(lm, selector, resolve_width(args, lm, selector), task=args.task, reselect=mode,
                    reselect_tokens=tokens, prefill=args.prefill)
    res = run_suite(suite, scorer, limit=args.limit, cache_dir=_cache_dir(args), progress=not args.no_progress)
    if args.json:
        print_json(res.to_dict())
        return 0
    tuned = lm.weights()["tuned_by"]
    print(f"model {lm.source}, {f'weights tuned by {Path(tuned).name}' if tuned else 'base weights'}")
    print(f"{res.suite}: {res.selector} keep {res.keep:.3f} ({res.width}/{res.d_ffn}), "
          f"compensation {res.options.get('compensation', {}).get('mode', 'none')}, "
          f"re-selection {_reselection_text(res.options.get('reselection') or {})}, "
          f"{res.options['quant'] + ' weights, ' if res.options.get('quant') else ''}"
          f"active params {res.active_params / 1e6:.1f}M of {res.total_params / 1e6:.1f}M, "
          f"{res.examples} examples ({res.cached} from cache, {res.skipped_rows} malformed rows skipped), {res.wall_s:.1f} s")
    for name, m in res.metrics.items():
        print(f"  {name:28s} {m['value']:.4f}  95% CI [{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}]  n={m['n']}")
    if res.examples < FEW_EXAMPLES:
        print(f"note: {res.examples} examples: intervals this wide separate only large differences; raise --limit, "
              "and compare two rows with `ifprune compare` (it pairs them on the same examples)", file=sys.stderr)
    return 0


FEW_EXAMPLES = 30  # below this, a suite's 95% interval is too wide to tell most pairs of rows apart


def _reselection_text(rs: dict) -> str:
    if rs.get("mode", "off") == "off":
        return "off"
    when = f"every {rs['tokens']} tok" if rs["mode"] == "every" else f"after {rs['tokens']} tok"
    return when + (f", {rs['prefill']} prefill" if rs.get("prefill", "pruned") != "pruned" else "")


def _limits(args) -> dict:
    from ..core.errors import IfpruneError

    limits = {s: args.limit for s in args.suites}
    for item in args.limits or []:
        name, _, n = item.partition("=")
        if name not in SUITE_CHOICES or not n.isdigit() or int(n) < 1:
            raise IfpruneError(f"bad --limits entry {item!r}: use SUITE=N with N >= 1, e.g. gsm8k=10")
        limits[name] = int(n)
    return limits


def run_compare(args) -> int:
    from ..core.errors import IfpruneError
    from ..eval.compare import CompareConfig, run_compare as compare, write_report

    if not (args.suites and args.selectors and args.keeps and args.out):
        raise IfpruneError("compare needs suites, rows (--selectors), keeps and --out: give them in a grid file "
                           "(`ifprune compare GRID.yaml`) or as flags")
    for s in args.suites:
        if s not in SUITE_CHOICES:
            raise IfpruneError(f"unknown suite {s!r}; choose from {', '.join(SUITE_CHOICES)}")
    cfg = CompareConfig(suites=args.suites, selectors=args.selectors, keeps=args.keeps, limits=_limits(args),
                        data_dir=args.data_dir, calibration=args.calibration, seed=args.seed or 0,
                        max_new_tokens=args.max_new_tokens, mc_tasks=args.mc_tasks, cache_dir=_cache_dir(args),
                        nll_data=args.data,
                        compensations=args.compensations or [compensation_config(args).mode],
                        calibration_tokens=args.calibration_tokens, ridge=args.ridge,
                        command="ifprune " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    cfg.validate()
    lm = load(args)

    def show(r, partial):
        write_report(partial, args.out)
        m = r["metrics"][r["primary"]]
        print(f"{r['suite']:10s} {r['selector']:10s} keep {r['keep']:.3f}  {r['primary']} {m['value']:.4f} "
              f"[{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}] n={m['n']} ({r['wall_s']:.0f} s)", file=sys.stderr, flush=True)

    report = compare(lm, cfg, progress=not args.no_progress, on_result=show, load_fresh=lambda: load(args))
    js, md = write_report(report, args.out)
    if not args.no_plots:
        report["plots"] = [str(p) for p in emit_plots(lm, report, cfg, args.out, load_fresh=lambda: load(args))]
        write_report(report, args.out)
    if args.json:
        print_json(report)
    else:
        print(md.read_text())
        print(f"wrote {js} and {md}", file=sys.stderr)
    return 0


def emit_plots(lm, report, cfg, out, load_fresh=None) -> list:
    """Metric vs active params for every suite; plan-overlap plots for each per-prompt selector, on
    the prompts of the nll validation mix (train data), 12 prompts per family."""
    from pathlib import Path

    from ..eval.families import validation_mix
    from ..eval.data import default_data_dir
    from ..eval.plots import family_plans, overlap_analysis, plot_heatmap, plot_metric_vs_params, plot_overlap
    from ..core.paths import write_json
    from ..core.plan import width_from_keep
    from ..eval.compare import build_selector, configurations

    out = Path(out)
    paths = plot_metric_vs_params(report, out)
    # as many prompts per family as the run's limits allow (the nll suite's, else the smallest), at most 12
    limits = [v for v in (cfg.limits or {}).values() if v]
    per_family = min(12, (cfg.limits or {}).get("nll") or (min(limits) if limits else 12))
    prompts: dict[str, list[str]] = {}
    for row in validation_mix(Path(cfg.data_dir) if cfg.data_dir else default_data_dir(), per_family=per_family):
        prompts.setdefault(row["family"], []).append(row["prompt"])
    from tqdm.auto import tqdm

    for spec, width in configurations(cfg, lm.d_ffn):
        selector, model = build_selector(spec, lm, cfg, load_fresh)
        if not selector.per_prompt or spec.per_task or width == lm.d_ffn:
            continue
        if not spec.checkpoint and width != width_from_keep(min(cfg.keeps), None, lm.d_ffn):
            continue  # one overlap analysis per training-free selector, at the smallest keep
        sel = spec.label()
        with tqdm(total=sum(map(len, prompts.values())), desc=f"overlap plots: {sel} plans", unit="prompt") as bar:
            analysis = overlap_analysis(family_plans(model, selector, width, prompts, progress=bar.update))
        write_json(out / f"overlap_{sel}.json", analysis)
        paths.append(plot_overlap(analysis, out / f"overlap_{sel}_per_layer.png",
                                  f"{sel} plans (keep {width}/{lm.d_ffn}): overlap per layer"))
        paths.append(plot_heatmap(analysis, out / f"overlap_{sel}_families.png", f"{sel}: overlap across families"))
    return paths
