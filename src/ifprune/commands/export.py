"""`ifprune export --task DESCRIPTION --out DIR`: write a task's pruned model as a standard HF checkpoint,
or with `--format gguf --out FILE.gguf` as one GGUF file for llama.cpp / Ollama."""

from __future__ import annotations

from .common import (add_model_args, add_selector_args, load, plan_weights, print_json, refuse_plan_conflicts,
                     resolve_width, selector_from_args)

# export.gguf.GGUF_TYPES, spelt here so `--help` does not import torch (a test holds them equal)
GGUF_TYPE_NAMES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_k_m", "q5_k_m", "q6_k")


def register(sub) -> None:
    p = sub.add_parser("export", help="save a task-pruned model as a standard Hugging Face checkpoint",
                       description="Select FFN channels once for a task (or take a saved plan) and write a plain "
                                   "transformers checkpoint with config intermediate_size = k.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", help="task description to select channels from")
    src.add_argument("--plan", help="a saved plan file (.json or .safetensors)")
    p.add_argument("--out", required=True,
                   help="output directory (--format hf) or .gguf file (--format gguf); written atomically")
    p.add_argument("--format", choices=("hf", "gguf"), default="hf",
                   help="hf: a transformers checkpoint (safetensors + config); gguf: one file for llama.cpp / "
                        "Ollama (Llama-layout models) (default: hf)")
    p.add_argument("--export-dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                   help="dtype of the weights in an hf export (default auto: the source's own, bf16 for the "
                        "packaged SmolLM2, whose GGUF comes from a bf16 checkpoint)")
    p.add_argument("--gguf-type", choices=GGUF_TYPE_NAMES, default="f16",
                   help="tensor type of the 2-D weights in a GGUF export; norms stay f32; q4_0/q4_1 keep the LM head "
                        "at q8_0; q4_k_m, q5_k_m, q6_k are written by llama.cpp's quantiser (the llamacpp extra) "
                        "(default: f16)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    add_model_args(p)
    add_selector_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..core.errors import IfpruneError
    from ..core.plan import Plan
    from ..export.checkpoint import check_out, export_plan, task_plan
    from ..export.gguf import check_gguf_out, check_supported, export_gguf

    if args.task is not None and not args.task.strip():
        raise IfpruneError("the task description is empty: pass --task \"what the model will be used for\"")
    refuse_plan_conflicts(args)
    gguf = args.format == "gguf"
    if gguf:  # before the model loads, not after
        check_gguf_out(args.out, args.overwrite)
    else:
        check_out(args.out, args.overwrite)
    plan = Plan.load(args.plan) if args.plan else None
    lm = load(args)
    if gguf:
        check_supported(lm, args.gguf_type)
    if plan is not None:
        plan_weights(args, lm, plan)
    else:
        selector = selector_from_args(args, lm)
        plan = task_plan(lm, selector, args.task, resolve_width(args, lm, selector))
        from ..selection.refresh import default_refresh

        if refresh := default_refresh(selector):
            import logging

            logging.getLogger("ifprune").warning(
                "artifact %s runs with re-selection every %d answer tokens and a dense prefill in ifprune (it was "
                "trained under re-selection); an exported model is one plan for the whole answer and reads the "
                "prompt itself, so it runs without either (its quality: the --reselect off rows of the artifact's "
                "results)", selector.artifact.path.name, refresh)
    # the process ends after writing: the full model is shrunk into the compact one in place (no second copy)
    if gguf:
        info = export_gguf(lm, plan, args.out, qtype=args.gguf_type, task=args.task, overwrite=args.overwrite,
                           consume=True)
    else:
        info = export_plan(lm, plan, args.out, task=args.task, overwrite=args.overwrite, dtype=args.export_dtype,
                           consume=True)
    print_json(info.to_dict())
    return 0
