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

COMMANDS = ["generate", "export", "train", "serve", "bench", "bench_kernels", "compress", "eval", "compare", "cache"]  # module names under ifprune.commands, in --help order


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


def _unknown(parser: argparse.ArgumentParser, args, extra: list[str]) -> None:
    """An unknown argument: the sub-command's own usage, with the nearest flag it has (argparse alone prints the
    top-level usage and no suggestion)."""
    import difflib

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
    flags = [o for a in sub._actions for o in a.option_strings]
    bad = next((x.split("=", 1)[0] for x in extra if x.startswith("-")), None)
    near = difflib.get_close_matches(bad, flags, n=1) if bad else []
    sub.error(f"unrecognized arguments: {' '.join(extra)}" + (f" (did you mean {near[0]}?)" if near else ""))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _unknown(parser, args, extra)
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
