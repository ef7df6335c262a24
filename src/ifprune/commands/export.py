"""`ifprune export --task DESCRIPTION --out DIR`: write a task's pruned model as a standard HF checkpoint."""

from __future__ import annotations

from .common import (add_model_args, add_selector_args, load, plan_weights, print_json, refuse_plan_conflicts,
                     resolve_width, selector_from_args)


def register(sub) -> None:
    p = sub.add_parser("export", help="save a task-pruned model as a standard Hugging Face checkpoint",
                       description="Select FFN channels once for a task (or take a saved plan) and write a plain "
                                   "transformers checkpoint with config intermediate_size = k.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", help="task description to select channels from")
    src.add_argument("--plan", help="a saved plan file (.json or .safetensors)")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    add_model_args(p)
    add_selector_args(p, trained_default=True)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..core.errors import IfpruneError
    from ..export.checkpoint import check_out, export_plan, export_task
    from ..core.plan import Plan

    if args.task is not None and not args.task.strip():
        raise IfpruneError("the task description is empty: pass --task \"what the model will be used for\"")
    refuse_plan_conflicts(args)
    check_out(args.out, args.overwrite)  # before the model loads, not after
    plan = Plan.load(args.plan) if args.plan else None
    lm = load(args)
    if plan is not None:
        plan_weights(args, lm, plan)
        info = export_plan(lm, plan, args.out, overwrite=args.overwrite)
    else:
        selector = selector_from_args(args, lm)
        info = export_task(lm, selector, args.task, resolve_width(args, lm, selector), args.out,
                           overwrite=args.overwrite)
    print_json(info.to_dict())
    return 0
