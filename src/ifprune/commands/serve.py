"""`ifprune serve`: OpenAI-compatible HTTP server with per-input and per-task plans."""

from __future__ import annotations

import logging
import os
import sys

from .common import add_model_args, add_quant_arg, add_reselection_args, add_selector_args, load, reselection_args, selector_from_args


def register(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible server (/v1/chat/completions, /v1/completions)",
                       description="Serve the model over an OpenAI-compatible API. model 'ifprune' selects per "
                                   "input (or per `task` field), 'ifprune-<task>' uses a cached per-task plan, "
                                   "'ifprune-dense' does not prune.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed)")
    add_model_args(p)
    add_quant_arg(p, "int8")
    add_selector_args(p)
    p.add_argument("--task-alias", action="append", default=None, metavar="NAME=DESCRIPTION",
                   help="serve model ifprune-NAME with a plan selected from DESCRIPTION (repeatable; "
                        "default: code, math, writing, qa)")
    add_reselection_args(p, "after R answer tokens, re-select each request's plan (as `generate --reselect once --reselect-tokens R`; default: "
                            "the artifact's own, every 32 tokens for the shipped ones; otherwise off; 0: off)")
    p.add_argument("--policy", default="group", help="mixed-task batching: group (by plan, default) or fifo")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests beyond this get HTTP 429")
    p.add_argument("--max-running", type=int, default=2,
                   help="batches run at once, interleaved step by step; each holds a compact model (default 2)")
    p.add_argument("--prefill-chunk", type=int, default=64,
                   help="prompt tokens read per unit of work, so a long prompt never holds the model for longer "
                        "(default 64)")
    p.add_argument("--max-tokens-limit", type=int, default=1024)
    p.add_argument("--max-prompt-tokens", type=int, default=2048,
                   help="longest prompt accepted, in tokens (400 beyond): a long prefill holds the model for every "
                        "client (default 2048; 0: up to the model's context)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20)
    p.add_argument("--max-task-chars", type=int, default=2000, help="longest `task` description accepted")
    p.add_argument("--max-connections", type=int, default=256, help="open connections beyond this get HTTP 503")
    p.add_argument("--header-timeout", type=float, default=10.0, help="seconds a client has to send a request head")
    p.add_argument("--body-timeout", type=float, default=30.0, help="seconds a client has to send a request body")
    p.add_argument("--request-timeout", type=float, default=600.0,
                   help="seconds a request may wait for the model between two pieces of output (504 after)")
    p.add_argument("--drain-seconds", type=float, default=30.0,
                   help="on SIGINT/SIGTERM, how long running and queued requests may still take")
    p.add_argument("--api-key", default=os.environ.get("IFPRUNE_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1/* (default: $IFPRUNE_API_KEY, else open)")
    p.add_argument("--no-access-log", dest="access_log", action="store_false",
                   help="do not log a line per request (status, tokens, latency, plan) to stderr")
    p.set_defaults(func=run)


def parse_aliases(items: list[str] | None) -> dict[str, str] | None:
    from ..core.errors import IfpruneError

    if not items:
        return None
    out = {}
    for item in items:
        name, sep, desc = item.partition("=")
        if not sep or not name.strip() or not desc.strip() or not name.replace("-", "").replace("_", "").isalnum():
            raise IfpruneError(f"bad --task-alias {item!r}: use NAME=DESCRIPTION, e.g. code='Write Python code'")
        out[name.strip()] = desc.strip()
    return out


def run(args) -> int:
    from ..core.errors import IfpruneError
    from ..serve import IfpruneServer, ServeConfig

    tasks = parse_aliases(args.task_alias)
    cfg = ServeConfig(host=args.host, port=args.port, tasks=tasks, policy=args.policy, max_batch=args.max_batch,
                      max_queue=args.max_queue, max_running=args.max_running, prefill_chunk=args.prefill_chunk, max_tokens_limit=args.max_tokens_limit,
                      max_body_bytes=args.max_body_bytes, max_task_chars=args.max_task_chars,
                      max_prompt_tokens=args.max_prompt_tokens or None,
                      max_connections=args.max_connections, header_timeout_s=args.header_timeout,
                      body_timeout_s=args.body_timeout, request_timeout_s=args.request_timeout,
                      drain_s=args.drain_seconds, api_key=args.api_key, prefill=args.prefill)
    cfg.validate()
    lm = load(args)
    selector = selector_from_args(args, lm)
    cfg.reselect, cfg.reselect_tokens = reselection_args(args, selector)
    cfg.validate()
    if args.selector == "dense":
        args.keep, args.width = None, lm.d_ffn
    from .common import resolve_width

    cfg.width = resolve_width(args, lm, selector)
    if lm.compensator is not None and cfg.width < lm.d_ffn:
        if lm.compensator.config.mode == "prompt":
            raise IfpruneError("serve supports --compensate calibration or none (prompt mode refits per request)")
        lm.compensator.ensure_stats()  # before the first request, not inside it
    server = IfpruneServer(lm, selector, cfg)
    comp = lm.compensator.config.mode if lm.compensator is not None and cfg.width < lm.d_ffn else "none"
    eng = server.engine
    reselect = f"{'every' if eng.every else 'after'} {eng.refresh} tokens" if eng.refresh else "off"
    print(f"ifprune: serving {lm.source} (FFN width {cfg.width}/{lm.d_ffn}, selector {args.selector}, "
          f"compensation {comp}, re-selection {reselect}, {eng.prefill} prefill) on "
          f"{server.url}/v1; models: {', '.join(server.model_ids())}", file=sys.stderr, flush=True)
    if args.access_log:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        access = logging.getLogger("ifprune.access")
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
    server.serve_forever()  # returns after SIGINT/SIGTERM and a drain of at most --drain-seconds
    return 0
