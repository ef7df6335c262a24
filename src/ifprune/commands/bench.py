"""`ifprune bench`: the paper's latency breakdown (selection, loading, prefill, TTFT, decode), dense vs compact."""

from __future__ import annotations

from .common import add_compensation_args, add_model_args, add_quant_arg, add_reselection_args


def register(sub) -> None:
    p = sub.add_parser("bench", help="latency breakdown, dense and compact side by side",
                       description="Batch-1 latency per the paper's protocol (GPU defaults: 4096-token prompt, 100 new "
                                   "tokens, 4 samples; CPU defaults: 512, 32, 4).")
    add_model_args(p)
    add_quant_arg(p, "none")
    from ..bench.latency import PRESETS

    p.add_argument("--config", default=None,
                   help=f"random weights of this shape instead of --model: a preset ({', '.join(PRESETS)}) or a "
                        "config.json path")
    p.add_argument("--prompt-tokens", type=int, default=None)
    p.add_argument("--new-tokens", type=int, default=None)
    p.add_argument("--samples", type=int, default=None, help="samples per query (selection/loading once per query)")
    p.add_argument("--queries", type=int, default=None)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--keep", type=float, default=None, help="fraction of FFN channels kept (default: a trained artifact's width, else 0.5, as every command)")
    size.add_argument("--width", type=int, default=None)
    p.add_argument("--selector", default=None,
                   help="griffin, predictor, or a static selector (magnitude, random, ...) (default, as every command: "
                        "predictor with the shipped artifact on the packaged default model in float32, else griffin)")
    p.add_argument("--checkpoint", default=None,
                   help="trained artifact for --selector predictor (default width: the artifact's); without it the "
                        "predictor is an untrained head of the same shape, timed as a stand-in")
    p.add_argument("--backbone-layers", type=int, default=None,
                   help="untrained predictor: read the prompt's hidden state after this many layers (stops there)")
    add_reselection_args(p, "time re-selection after R new tokens too (default: the artifact's own, every 32 tokens "
                            "for the shipped ones; otherwise off; 0: off)")
    compile_ = p.add_mutually_exclusive_group()
    compile_.add_argument("--compile", dest="compile", action="store_true", default=None,
                          help="torch.compile the decode step (default: on CUDA only)")
    compile_.add_argument("--no-compile", dest="compile", action="store_false")
    add_compensation_args(p)
    p.add_argument("--out", default=None, help="directory for <name>.json and <name>.md (default: print only)")
    p.add_argument("--name", default=None, help="file stem (default: derived from model and device)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..bench.latency import BenchConfig, random_model, run_bench, to_markdown
    from ..core.errors import IfpruneError
    from ..core.loading import _dtype
    from .common import report, set_threads

    if args.config and args.model:
        raise IfpruneError("give either --model (real weights) or --config (random weights), not both")
    if args.config and args.compensate not in (None, "none"):
        raise IfpruneError("compensation needs real weights and calibration text: drop --compensate with --config")
    auto = args.selector in (None, "auto") and args.checkpoint is None and not args.config
    if auto:  # by the model's name until it loads (the flags are checked first), then by its weights
        from ..artifacts import default_selection

        args.selector, args.checkpoint = default_selection(args.model, args.dtype, keep=args.keep, width=args.width)
    new_flags = args.reselect is not None or args.reselect_tokens is not None
    if args.config or not new_flags:  # (no artifact's own default to read: random weights, or the old flags as given)
        from ..selection.refresh import from_mode
        from .common import reselection_args

        args.refresh, args.refresh_every = from_mode(*reselection_args(args, args.selector), args.selector)
    cfg = BenchConfig.for_device(args.device, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens,
                                 samples=args.samples, queries=args.queries, selector=args.selector,
                                 compile=args.compile, checkpoint=args.checkpoint,
                                 backbone_layers=args.backbone_layers, refresh=args.refresh,
                                 refresh_every=args.refresh_every, prefill=args.prefill)
    if args.keep is not None or args.width is not None:
        cfg.keep, cfg.width = args.keep, args.width
    cfg.validate()
    set_threads(args.threads)
    if args.config:
        lm = random_model(args.config, dtype=_dtype("float32" if args.dtype == "auto" else args.dtype),
                          device=args.device)
        from .common import torch_quant

        lm.set_quant(torch_quant(args))
    else:
        from .common import compensation_from_args, load

        lm = load(args)
        if auto:
            from .common import auto_from_weights

            cfg.selector, cfg.checkpoint = auto_from_weights(lm, args.keep, args.width)
        if new_flags:  # the artifact's own default, now that the selector is known
            from ..selection.refresh import from_mode
            from ..selection.selectors import make_selector
            from .common import reselection_args

            sel = make_selector(cfg.selector, checkpoint=cfg.checkpoint) if cfg.selector == "predictor" else cfg.selector
            cfg.refresh, cfg.refresh_every = from_mode(*reselection_args(args, sel), sel)
            cfg.validate()
        if cfg.selector == "predictor" and cfg.checkpoint:
            from ..selection.artifact import load_artifact

            load_artifact(cfg.checkpoint).attach(lm)  # statistics are those of the weights that run
        comp = compensation_from_args(args, lm)
        if comp is not None:
            comp.ensure_stats()  # one-off and cached on disk: not part of any timed stage
    res = run_bench(lm, cfg)
    stem = args.name or f"{(args.config or lm.source).replace('/', '_').replace(':', '_')}-{res['device'].split(':')[0]}"
    report(res, to_markdown, command_name="bench", out=args.out, stem=stem)
    return 0
