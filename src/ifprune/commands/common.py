"""Flags shared by several sub-commands, and how they turn into library objects."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from ..core.errors import IfpruneError
from ..core.plan import width_from_keep
from ..selection.prefill import PREFILLS
from ..selection.refresh import RESELECT_MODES


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="HF id, local directory, .gguf file, or gemma3-270m (the gemma extra) (default: the packaged "
                        "SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", default="auto",
                   help="auto (default: bfloat16 for a checkpoint stored in bfloat16, else float32), float32, bfloat16 "
                        "or float16")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--runtime", choices=("torch", "llamacpp"), default="torch",
                   help="torch: the model in --dtype (default); llamacpp: the compact (or dense) model as a quantised GGUF "
                        "in llama.cpp, each plan written into it in place (needs the llamacpp extra)")
    g.add_argument("--quant", choices=("none", "int8", "q8_0", "q4_0", "q4_1"), default=None,
                   help="the weight type that decodes. --runtime torch: int8 (the default on the CPU: the model's linears, "
                        "LM head included, at int8 per row; the selector's passes and a dense prefill read the loaded "
                        "weights) or none (the loaded weights); --runtime llamacpp: q8_0 (default), q4_0 or q4_1 (4-bit, "
                        "LM head at Q8_0)")
    p.set_defaults(quant_default="int8")


def add_quant_arg(p: argparse.ArgumentParser, default: str) -> None:
    """--quant for commands that run the torch runtime only (generate's runtime group has its own). `default`: what
    answers by default ("int8": generate and serve) or "none" (eval and bench measure the loaded weights unless told)."""
    p.add_argument("--quant", choices=("none", "int8"), default=None,
                   help="int8: the model's linears, LM head included, at int8 per row; the selector's passes and a dense "
                        "prefill read the loaded weights. none: the loaded weights (default: "
                        + ("int8 on the CPU" if default == "int8" else "none") + ")")
    p.set_defaults(quant_default=default)


def torch_quant(args) -> str | None:
    """The torch runtime's weight type the flags ask for: --quant, else the command's default (int8 only where this
    device and torch build run it)."""
    from ..core.quantized import check_quant, default_quant

    if args.quant is not None:
        return check_quant(args.quant)
    return default_quant(getattr(args, "device", "cpu")) if getattr(args, "quant_default", "none") == "int8" else None


def runtime_from_args(args):
    """The RuntimeConfig the flags ask for (threads: --threads, else torch's)."""
    import torch

    from ..runtime.generation import RuntimeConfig

    torch_types = ("int8", "none")
    if args.quant is not None and (args.quant in torch_types) != (args.runtime == "torch"):
        raise IfpruneError(f"--quant {args.quant} is a weight type of the "
                           f"{'torch' if args.quant in torch_types else 'llama.cpp'} runtime; --runtime {args.runtime} "
                           f"runs {'int8 or none' if args.runtime == 'torch' else 'q8_0, q4_0 or q4_1'}")
    weights = torch_quant(args) if args.runtime == "torch" else args.quant
    return RuntimeConfig(args.runtime, weights, args.threads or torch.get_num_threads())


def add_reselection_args(p: argparse.ArgumentParser, refresh_help: str, every_note: str = "",
                         prefill_note: str = "") -> None:
    """--reselect off|once|every, --reselect-tokens N and --prefill: one meaning and one default in every command
    (selection.refresh.resolve_reselection); --refresh R and --refresh-every, their earlier spelling, still work for
    one release with a deprecation warning (`reselection_args`)."""
    g = p.add_argument_group("re-selection (after every N answer tokens, a new plan from the answer so far)")
    g.add_argument("--reselect", choices=RESELECT_MODES, default=None,
                   help="off: one plan per answer; once: re-select after the first N answer tokens; every: after every N "
                        "(default: the artifact's own, every 32 for the shipped ones, which were trained under it; off "
                        "for other selectors)")
    g.add_argument("--reselect-tokens", type=int, default=None, metavar="N",
                   help="answer tokens between re-selections (default: the artifact's own, else 32)")
    g.add_argument("--prefill", choices=PREFILLS, default=None,
                   help="dense: the full model reads the prompt (reusing the selector's own pass when it has one) and "
                        "the compact model attends to it, so a re-selection re-runs only the answer so far, not the "
                        "prompt; every answer token is still the compact model's. dense-answer: as dense, and each "
                        "re-selection's full-model pass over the answer so far is kept as its cache too (nothing is "
                        "re-run). kept: as dense, and no full-model pass over the answer at all: each answer token's "
                        "cache is the compact model's that read it, and re-selection scores the FFN inputs the compact "
                        "model saw (torch runtime only). pruned: the whole sequence through the compact model, as an "
                        "export runs (default: dense-answer when re-selecting every N tokens, else pruned)" + prefill_note)
    g.add_argument("--refresh", type=int, default=None, metavar="R",
                   help="deprecated: --reselect once --reselect-tokens R (0: --reselect off). " + refresh_help)
    g.add_argument("--refresh-every", action=argparse.BooleanOptionalAction, default=None,
                   help="deprecated: --reselect every (--no-refresh-every: --reselect once)" + every_note)


def reselection_args(args, selector) -> tuple[str | None, int | None]:
    """(reselect, reselect_tokens) as the library takes them, from --reselect / --reselect-tokens (checked here,
    before anything runs) or from the deprecated --refresh / --refresh-every (their old meaning, with a warning)."""
    from ..selection.refresh import from_mode, to_mode

    mode, tokens = getattr(args, "reselect", None), getattr(args, "reselect_tokens", None)
    refresh, every = getattr(args, "refresh", None), getattr(args, "refresh_every", None)
    if mode is None and tokens is None:
        if refresh is not None or every is not None:
            print("ifprune: --refresh / --refresh-every are deprecated and go in the next release: use --reselect "
                  "off|once|every and --reselect-tokens N", file=sys.stderr)
            return to_mode(refresh, every, selector)
        return None, None
    if refresh is not None or every is not None:
        raise IfpruneError("--reselect/--reselect-tokens and the deprecated --refresh/--refresh-every set the same "
                           "thing: give only --reselect and --reselect-tokens")
    from_mode(mode, tokens, selector, flag="--reselect")  # (its errors name the flags)
    return mode, tokens


def add_selector_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("channel selection")
    g.add_argument("--selector", default=None,
                   help="auto (the default), dense, random, magnitude, wanda, griffin, predictor. auto: predictor with "
                        "--checkpoint; else the shipped artifact when the loaded weights are the ones it was trained on "
                        "(the packaged model in float32, however named); else griffin")
    g.add_argument("--checkpoint", default=None, help="trained IFPruning artifact directory (predictor selector)")
    size = g.add_mutually_exclusive_group()
    size.add_argument("--keep", type=float, default=None, help="fraction of FFN channels kept, in (0, 1]")
    size.add_argument("--width", type=int, default=None, help="FFN channels kept per layer")
    g.add_argument("--seed", type=int, default=None, help="seed for the random selector and for sampling")
    add_compensation_args(p)


def add_compensation_args(p: argparse.ArgumentParser) -> None:
    from ..compensation.calibration import CompensationConfig, MODES

    d = CompensationConfig()
    g = p.add_argument_group("output compensation (refit the kept channels' down projection)")
    g.add_argument("--compensate", choices=MODES, default=None,
                   help=f"none: plain gathering (the pre-compensation behaviour); calibration: least-squares refit "
                        f"from calibration-text statistics; prompt: those mixed with the prompt's own; "
                        f"mean: only the dropped channels' mean output, as a bias (means alone: for models whose "
                        f"d_ffn x d_ffn statistics do not fit in memory) (default: {d.mode}; on a trained artifact's weights, what it was trained under: its "
                        f"recipe's compensate, none for the shipped artifacts)")
    g.add_argument("--calibration", default=None,
                   help="calibration text or JSONL (prompt/response pairs) for compensation and the wanda selector "
                        "(default: the mix shipped in the package)")
    g.add_argument("--calibration-tokens", type=int, default=d.max_tokens,
                   help=f"calibration tokens the statistics are gathered over (default: {d.max_tokens})")
    g.add_argument("--ridge", type=float, default=d.ridge,
                   help=f"refit ridge toward the original weights, relative to the mean diagonal (default: {d.ridge})")


def _names_the_packaged_model(lm) -> bool:
    """Whether `lm` was named as the packaged default model (by name, Hub id or its GGUF's path)."""
    import os

    from ..core.loading import DEFAULT_HUB_ID, DEFAULT_MODEL, default_gguf_path

    if lm.source in (DEFAULT_MODEL, DEFAULT_HUB_ID):
        return True
    try:
        return os.path.samefile(os.path.expanduser(lm.source), default_gguf_path())
    except (OSError, IfpruneError):
        return False


def auto_from_weights(lm, keep: float | None, width: int | None) -> tuple[str, str | None]:
    """`--selector auto` on a loaded model (artifacts.auto_selection): (selector, artifact or None); where the
    packaged model was named and its artifact still cannot run, says why on stderr."""
    from ..artifacts import auto_selection

    selector, checkpoint, why = auto_selection(lm, keep=keep, width=width)
    if selector != "predictor" and _names_the_packaged_model(lm):
        print(f"ifprune: selector auto -> {selector}: {why}", file=sys.stderr)
    return selector, checkpoint


def _selector_name(args, lm=None) -> str:
    """--selector, with auto (or none given) resolved: by the loaded weights' fingerprint when `lm` is given
    (artifacts.auto_selection, said on stderr when it is not the shipped artifact), else by the model's name."""
    if args.selector in (None, "auto"):
        if getattr(args, "checkpoint", None):
            args.selector = "predictor"
        elif lm is not None:
            args.selector, args.checkpoint = auto_from_weights(lm, getattr(args, "keep", None),
                                                               getattr(args, "width", None))
        else:
            from ..artifacts import default_selection

            args.selector, args.checkpoint = default_selection(
                getattr(args, "model", None), getattr(args, "dtype", "float32"),
                keep=getattr(args, "keep", None), width=getattr(args, "width", None))
    return args.selector


def load(args):
    """Validate the compensation flags (before the model loads), then load the model."""
    from ..core.loading import load_model

    if hasattr(args, "compensate"):
        compensation_config(args)
    keep = getattr(args, "keep", None)
    if keep is not None and not 0 < keep <= 1:  # needs no model: checked before it loads (a width's range does)
        width_from_keep(keep, None, 1)
    set_threads(getattr(args, "threads", None))

    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    if hasattr(args, "quant") and getattr(args, "runtime", "torch") == "torch":
        lm.set_quant(torch_quant(args))
    return lm


def refuse_plan_conflicts(args, also: tuple[str, ...] = ()) -> None:
    """A saved plan fixes the channels: selection flags given with it would be silently ignored."""
    if not getattr(args, "plan", None):
        return
    given = [f"--{n.replace('_', '-')}" for n in ("selector", "keep", "width", *also) if getattr(args, n, None) is not None]
    if given:
        raise IfpruneError(f"--plan fixes the channels, so {', '.join(given)} would be ignored: drop "
                           f"{'it' if len(given) == 1 else 'them'}, or drop --plan to select anew "
                           "(--checkpoint with --plan runs the plan on that artifact's tuned weights)")


def plan_weights(args, lm, plan) -> None:
    """With --plan: the base weights, unless --checkpoint names the artifact whose tuned weights the
    plan was made for; a plan whose metadata names an artifact warns when run on the base weights."""
    import logging

    if getattr(args, "checkpoint", None):
        from ..selection.artifact import load_artifact

        load_artifact(args.checkpoint).attach(lm)
    else:
        made_by = plan.meta.get("checkpoint")
        if made_by and "model" not in plan.meta:  # an older plan, without the fingerprint check_model reads
            logging.getLogger("ifprune").warning(
                "plan %s was made by the trained artifact %s (tuned weights); running it on the base weights. "
                "Pass --checkpoint %s to run the weights it was made for", args.plan, made_by, made_by)
    plan.check_model(lm, f"plan {args.plan}")
    compensation_from_args(args, lm)


def resolve_width(args, lm, selector=None) -> int:
    """--keep/--width, else the trained artifact's width, else keep 0.5 (dense: every channel)."""
    keep, width = args.keep, args.width
    artifact = getattr(selector, "artifact", None)
    if keep is None and width is None and artifact is not None:
        width = int(artifact.config["width"])
    if keep is None and width is None and _selector_name(args) != "dense":
        keep = 0.5
    resolved = width_from_keep(keep, width, lm.d_ffn)
    if artifact is not None and resolved != int(artifact.config["width"]):
        import logging

        logging.getLogger("ifprune").warning(
            "the trained artifact %s was trained at width %s of %d; running it at %d is untested (quality unknown): "
            "drop --keep/--width to run it as trained, or use --selector griffin for a training-free selection at "
            "any keep", artifact.path.name, artifact.config["width"], lm.d_ffn, resolved)
    return resolved


def selector_from_args(args, lm=None):
    """The selector the flags name; a trained artifact is attached to `lm` at once (its LLM change
    applies even when the model then runs dense, and before any plan is cached)."""
    from ..selection.selectors import make_selector

    selector = make_selector(_selector_name(args, lm), seed=args.seed if args.seed is not None else 0,
                         calibration=args.calibration, checkpoint=getattr(args, "checkpoint", None))
    if lm is not None and getattr(selector, "artifact", None) is not None:
        selector.artifact.attach(lm)
    if lm is not None:
        compensation_from_args(args, lm)
    return selector


def compensation_config(args, lm=None):
    """The CompensationConfig the flags name (validated before any model loads)."""
    from ..compensation.calibration import CompensationConfig, default_mode

    return CompensationConfig(mode=args.compensate or default_mode(lm), calibration=args.calibration,
                              max_tokens=args.calibration_tokens, ridge=args.ridge)


def compensation_from_args(args, lm):
    """Install the compensator on `lm` (after any artifact is attached: the statistics are those of the
    weights that run). Statistics are computed lazily, on the first pruned plan."""
    from ..compensation.calibration import compensate

    return compensate(lm, compensation_config(args, lm))


THREADS_HELP = ("torch CPU threads (default: the CPUs this process may use minus those other processes keep busy "
                "(1-minute load average), at least 1: torch's own default oversubscribes a busy machine)")


def default_threads(cpus: int | None = None, load: float | None = None) -> int:
    """CPUs not already busy: torch's default (every core) collapses decode on a loaded machine
    (measured on 2 cores with another job running: 0.5 tok/s with torch's default, 17.6 with 1 thread)."""
    import os

    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    return max(1, min(cpus, cpus - int(load + 0.5)))


def set_threads(threads: int | None) -> int:
    """--threads: torch's CPU thread count (None: `default_threads()`); returns the count set."""
    import logging

    import torch

    if threads is None:
        threads = default_threads()
        logging.getLogger("ifprune").info("using %d CPU thread(s) (--threads to choose)", threads)
    elif threads < 1:
        raise IfpruneError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads


def report(res: dict, render, *, command_name: str, out: str | None, stem: str) -> None:
    """Print `render(res)`; with --out also save it as JSON + markdown, recording the command line
    when the CLI was really invoked as `ifprune COMMAND_NAME ...`."""
    command = ("ifprune " + " ".join(shlex.quote(a) for a in sys.argv[1:])
               if command_name in sys.argv[1:3] else None)
    if out:
        from ..core.paths import save_report

        json_path, md_path = save_report(res, out, stem, render, command)
        print(f"ifprune: wrote {json_path} and {md_path}", file=sys.stderr)
    print(render(res, command))


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")
