"""`ifprune` command line: a thin layer over the library. Each sub-command lives in
`ifprune.commands.<name>` and registers itself with `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from . import __version__
from .core.errors import IfpruneError

COMMANDS = ["generate", "export", "train", "serve", "bench", "bench_kernels", "compress", "eval", "cache"]  # module names under ifprune.commands, in --help order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ifprune",
        description="Instruction-following pruning: pick FFN channels per prompt, run a smaller dense model.",
    )
    parser.add_argument("--version", action="version", version=f"ifprune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and library warnings")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"ifprune.commands.{name}").register(sub)
    return parser


def _quiet_libraries(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="ifprune: %(message)s")
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        import warnings

        warnings.filterwarnings("ignore")
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries(args.verbose)
    try:
        return int(args.func(args) or 0)
    except IfpruneError as e:
        print(f"ifprune: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ifprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
