"""`ifprune train CONFIG`: run one training stage from a YAML/JSON recipe (see docs/training.md)."""

from __future__ import annotations

from .common import THREADS_HELP

import json


def _override(text: str):
    if "=" not in text:
        import argparse

        raise argparse.ArgumentTypeError(f"--set wants KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        from ..training.config import parse_yaml

        return key, parse_yaml(value)
    except Exception:
        return key, value


def register(sub) -> None:
    p = sub.add_parser("train", help="train the sparsity predictor (or learned-static scores) jointly with the LLM",
                       description="Run one IFPruning training stage (pretrain or sft) from a YAML/JSON config.")
    p.add_argument("config", help="recipe file, e.g. configs/smollm2-keep50-sft.yaml")
    p.add_argument("--set", dest="overrides", action="append", type=_override, default=[], metavar="KEY=VALUE",
                   help="override a config key (dotted for data.*), e.g. --set steps=10 --set data.max_seq_len=256")
    p.add_argument("--output-dir", default=None, help="override output_dir")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training.config import load_config
    from ..training.loop import train
    from .common import set_threads

    set_threads(args.threads)
    overrides = dict(args.overrides)
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    cfg = load_config(args.config, overrides)
    summary = train(cfg)
    print(json.dumps(summary, indent=2))
    return 0
