"""`ifprune bench-kernels`: speed of each weight format (dense, 2:4, int8, int4) on a model shape's linears."""

from __future__ import annotations

from .common import THREADS_HELP


def _ints(text: str) -> tuple[int, ...]:
    from ..core.errors import IfpruneError

    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise IfpruneError(f"--batches takes comma-separated integers, e.g. 1,16; got {text!r}") from None


def register(sub) -> None:
    p = sub.add_parser("bench-kernels", help="linear-layer speed by weight format (dense, 2:4, int8, int4)",
                       description="Times one decoder block's linears of a model shape (full FFN width and a "
                                   "plan's width) in each weight format, decode (batch x 1 token) and prefill "
                                   "(batch x prompt tokens). GPU defaults: 4096-token prefill; CPU: 32.")
    p.add_argument("--config", default="llama-3.1-8b",
                   help="a preset (llama-3.1-8b, llama-3.2-1b, smollm2-135m, llama-0.3b) or a config.json path "
                        "(default: llama-3.1-8b; only shapes are used, nothing is downloaded)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="activation/weight dtype (default: bfloat16)")
    p.add_argument("--formats", default=None, help="comma-separated subset of dense,2:4,int8,int4")
    p.add_argument("--batches", default=None, help="batch sizes (default 1,16)")
    p.add_argument("--prompt-tokens", type=int, default=None, help="prefill tokens per sequence")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--keep", type=float, default=None, help="plan width as a fraction (default 0.25)")
    size.add_argument("--width", type=int, default=None)
    p.add_argument("--group-size", type=int, default=None, help="int4 group size (default 128)")
    p.add_argument("--budget", type=float, default=None, help="seconds of timing per measurement (default 0.3)")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--out", default=None, help="directory for <name>.json and <name>.md")
    p.add_argument("--name", default=None, help="file stem (default: kernels-<config>-<device>-<dtype>)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..bench.latency import shape_config
    from ..core.errors import IfpruneError
    from ..bench.kernels import KernelBenchConfig, run_kernel_bench, to_markdown
    from ..core.loading import _dtype
    from .common import report, set_threads

    cfg = KernelBenchConfig.for_device(
        args.device, prompt_tokens=args.prompt_tokens, group_size=args.group_size, budget_s=args.budget,
        batches=_ints(args.batches) if args.batches else None,
        formats=tuple(f.strip() for f in args.formats.split(",") if f.strip()) if args.formats else None)
    if args.keep is not None or args.width is not None:
        cfg.keep, cfg.width = args.keep, args.width
    cfg.validate()
    set_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise IfpruneError(f"--device {args.device}: no CUDA device is available here; use --device cpu")
    dtype = _dtype(args.dtype or "bfloat16")
    config = shape_config(args.config)
    from tqdm.auto import tqdm

    with tqdm(desc="timing", unit="measurement") as bar:
        def progress(message: str) -> None:
            bar.set_postfix_str(message, refresh=False)
            bar.update()

        res = run_kernel_bench(config, cfg, device=args.device, dtype=dtype, source=str(args.config),
                               progress=progress)
    stem = args.name or f"kernels-{str(args.config).replace('/', '_')}-{args.device.split(':')[0]}-{res['dtype']}"
    report(res, to_markdown, command_name="bench-kernels", out=args.out, stem=stem)
    return 0
