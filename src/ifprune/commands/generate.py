"""`ifprune generate PROMPT`: select channels, load the compact model, answer (streamed)."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import (add_model_args, add_reselection_args, add_runtime_args, add_selector_args, load, plan_weights,
                     print_json, refuse_plan_conflicts, reselection_args, resolve_width, runtime_from_args,
                     selector_from_args)


def register(sub) -> None:
    p = sub.add_parser("generate", help="answer a prompt with a prompt-pruned model",
                       description="Pick FFN channels for the prompt, then generate with the physically smaller model.")
    p.add_argument("prompt", help="the user prompt")
    add_model_args(p)
    add_selector_args(p)
    p.add_argument("--task", default=None, help="select from this task description instead of the prompt (with re-selection on, re-selected after N tokens from it and the tokens so far; --reselect off: one plan)")
    p.add_argument("--plan", default=None, help="use a saved plan file (.json or .safetensors) instead of a selector")
    p.add_argument("--save-plan", default=None,
                   help="write the plan used to this file (.json or .safetensors); when the answer was re-selected "
                        "midway, the last re-selected plan goes next to it as NAME.reselected.SUFFIX")
    add_reselection_args(p, "after R answer tokens, re-select from the selector's scores plus GRIFFIN's over the prompt "
                            "and those tokens, then go on under that plan (given alone: once; default: the artifact's "
                            "own, every 32 tokens for the shipped ones, which were trained under re-selection; "
                            "otherwise off; 0: off)",
                         every_note="; with --save-plan the last re-selected plan is saved")
    add_runtime_args(p)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--no-chat", action="store_true", help="do not apply the chat template")
    p.add_argument("--no-stream", action="store_true", help="print the answer only when it is complete")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..core.errors import IfpruneError
    from ..runtime.generation import SamplingConfig, generate
    from ..core.plan import Plan

    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                              top_p=args.top_p, top_k=args.top_k, seed=args.seed)
    sampling.validate()
    if not args.prompt.strip():
        raise IfpruneError("the prompt is empty: give some text to respond to")
    refuse_plan_conflicts(args, also=("task", "refresh", "refresh_every", "reselect", "reselect_tokens"))
    runtime = runtime_from_args(args)
    plan = Plan.load(args.plan) if args.plan else None  # a bad plan file fails before the model loads
    lm = load(args)
    if plan is not None:
        plan_weights(args, lm, plan)
        selector, width = "dense", None
    else:
        selector = selector_from_args(args, lm)
        width = resolve_width(args, lm, selector)
    stream = None if (args.json or args.no_stream) else sys.stdout
    mode, tokens = reselection_args(args, selector)
    result = generate(lm, args.prompt, selector=selector, width=width, plan=plan, task=args.task,
                      sampling=sampling, chat=not args.no_chat, stream=stream, reselect=mode,
                      reselect_tokens=tokens, prefill=args.prefill, runtime=runtime)
    saved = save_plans(args.save_plan, result) if args.save_plan else {}
    if args.json:
        out = result.to_dict()
        out["model"] = lm.source
        out["weights"] = lm.weights()
        if plan is not None:
            out["plan_file"] = args.plan
        if saved:
            out["saved_plans"] = saved
        print_json(out)
    else:
        if stream is None:
            print(result.text)
        tuned = lm.weights()["tuned_by"]
        weights = f"weights tuned by {Path(tuned).name}" if tuned else "base weights"
        print(f"{result.summary()} | {weights}", file=sys.stderr)
        if "reselected" in saved:
            print(f"saved the prompt's plan to {saved['prompt']} and the re-selected one to {saved['reselected']}",
                  file=sys.stderr)
    return 0


def save_plans(path: str, result) -> dict[str, str]:
    """The plan(s) an answer ran under: the prompt's at `path`, a re-selected one beside it."""
    from ..core.errors import IfpruneError
    from ..core.plan import Plan

    def save(plan, dest, **meta) -> str:  # with what it ran under
        return str(Plan(plan.indices, plan.d_ffn, {**plan.meta, "compensation": result.compensation, **meta}).save(dest))

    if result.plan is None:
        raise IfpruneError("no plan to save: the dense model was used (give --keep or --width below 1)")
    out = {"prompt": save(result.plan, path)}
    if result.refresh_plan is not None:
        p = Path(path)
        out["reselected"] = save(result.refresh_plan, p.with_name(f"{p.stem}.reselected{p.suffix}"),
                                 reselected_after=result.refresh["after"])
    return out
