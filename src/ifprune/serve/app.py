"""OpenAI-compatible HTTP server: FastAPI routes on uvicorn, with the model work on the scheduler's
one worker thread.

A request is read with a size and time bound, parsed by `protocol` (pydantic), tokenized in the
thread pool (never on the event loop or the model worker), queued, and answered from the events the
worker sends back (JSON, or server-sent events when `stream` is set). SIGINT and SIGTERM stop new
connections, let running and queued requests finish for up to `drain_s`, then end what is left with
an error event and `[DONE]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core.errors import IfpruneError
from ..core.plan import Plan
from ..core.prompting import chat_ids
from .engine import Engine, GenRequest
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .protocol import ApiError, ChatRequest, parse_body, parse_request
from .scheduler import POLICIES, QueueFull, Scheduler, ShuttingDown
from .transport import make_protocol

log = logging.getLogger(__name__)
access_log = logging.getLogger("ifprune.access")
MODEL_PREFIX = "ifprune"


def full_id(lm) -> str:
    """The served id of `lm` at full width: `ifprune-dense` when its weights are the base model's own, as "dense" means
    everywhere, and `ifprune-full` when a trained artifact tuned them (every channel of the tuned model)."""
    return f"{MODEL_PREFIX}-{'full' if lm.weights()['tuned_by'] else 'dense'}"


_DISCARD_LIMIT = 64 << 20  # oversized bodies up to this size are read away so the client sees the 413


@dataclass
class ServeConfig:
    """Server limits and behaviour (docs/serving.md). `width` is the FFN width of every non-dense plan."""

    host: str = "127.0.0.1"
    port: int = 8000
    width: int | None = None  # None: half of d_ffn
    tasks: dict[str, str] | None = None  # alias name -> task description (None: engine.DEFAULT_TASKS)
    max_batch: int = 8
    max_queue: int = 64
    max_running: int = 2  # batches interleaved at once, each on a compact model of its own (memory: one FFN each)
    prefill_chunk: int = 64  # prompt tokens per unit of work: what a short request behind a long one waits per unit
    batch_window_s: float = 0.01
    policy: str = "group"
    max_body_bytes: int = 1 << 20
    # a bound on prompt length (400 beyond): a long prompt's prefill holds the model for every client (one of 4.8k
    # tokens kept a short request waiting 72 s on 2 cores); None: only the model's context minus max_tokens
    max_prompt_tokens: int | None = 2048
    max_tokens_limit: int = 1024
    default_max_tokens: int = 128
    max_task_chars: int = 2000  # a `task` description; selection reads it on the model worker
    request_timeout_s: float = 600.0  # waiting for the model, per event
    header_timeout_s: float = 10.0  # to send a complete request head
    body_timeout_s: float = 30.0  # to send the whole body
    keep_alive_s: int = 5  # an idle keep-alive connection is closed after this
    max_connections: int = 256
    drain_s: float = 30.0  # on shutdown, how long running and queued requests may still take
    api_key: str | None = None  # when set, /v1/* needs "Authorization: Bearer <key>"
    reselect: str | None = None  # off | once | every; None: the selector's own (as generate, selection.refresh)
    reselect_tokens: int | None = None  # answer tokens between re-selections; None: the artifact's own, else 32
    prefill: str | None = None  # selection.prefill.PREFILLS; None: as generate (selection.refresh.resolve_reselection)
    refresh: int | None = None  # deprecated spelling of reselect / reselect_tokens (a FutureWarning)
    refresh_every: bool | None = None  # deprecated

    def validate(self) -> None:
        if self.policy not in POLICIES:
            raise IfpruneError(f"unknown batching policy {self.policy!r}: use one of {', '.join(POLICIES)}")
        for name in ("max_batch", "max_queue", "max_running", "prefill_chunk", "max_body_bytes", "max_tokens_limit", "default_max_tokens",
                     "max_task_chars", "keep_alive_s", "max_connections"):
            if getattr(self, name) < 1:
                raise IfpruneError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("request_timeout_s", "header_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise IfpruneError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_prompt_tokens is not None and (isinstance(self.max_prompt_tokens, bool)
                                                   or not isinstance(self.max_prompt_tokens, int)
                                                   or self.max_prompt_tokens < 1):
            raise IfpruneError(f"max_prompt_tokens must be a whole number >= 1 (or none: the model's context), "
                               f"got {self.max_prompt_tokens!r}")
        if not self.drain_s >= 0:
            raise IfpruneError(f"drain_s must be >= 0, got {self.drain_s}")
        if not 0 <= self.port <= 65535:
            raise IfpruneError(f"port {self.port} is out of range 0..65535")
        from ..selection.refresh import check_refresh

        check_refresh(self.refresh)
        if self.prefill is not None:
            from ..selection.prefill import check_prefill

            check_prefill(self.prefill, without_kept="the server's batched decode")
        if self.api_key is not None and not self.api_key.strip():
            raise IfpruneError("the API key is empty: give a non-empty --api-key or leave it out")


class _Events:
    """The worker thread's events for one request, handed to the event loop thread-safely."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.queue = loop, asyncio.Queue()

    def put(self, event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening any more
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)


class IfpruneServer:
    """`start()` serves in a background thread (tests); `serve_forever()` blocks with SIGINT/SIGTERM
    draining (CLI); `close()` drains and releases the port."""

    def __init__(self, lm, selector, config: ServeConfig | None = None):
        self.config = config or ServeConfig()
        self.config.validate()
        self.lm = lm
        width = self.config.width or max(1, lm.d_ffn // 2)
        if not 1 <= width <= lm.d_ffn:
            raise IfpruneError(f"width {width} is out of range 1..{lm.d_ffn} (this model's FFN width)")
        self.metrics = Metrics()
        from ..selection.refresh import Reselection, reselect_settings, resolve_reselection

        c = self.config
        R, every = reselect_settings(c.reselect, c.reselect_tokens, c.refresh, c.refresh_every, selector,
                                     where="ServeConfig")
        rs = resolve_reselection(R, every, c.prefill, selector) if width < lm.d_ffn else Reselection.off(c.prefill)
        self.engine = Engine(lm, selector, width, c.tasks, refresh=rs.refresh, every=rs.every, prefill=rs.prefill)
        self.created = int(time.time())
        self._sock = _listen(self.config.host, self.config.port)
        self.scheduler = Scheduler(self.engine, self.metrics, max_batch=self.config.max_batch,
                                   max_queue=self.config.max_queue, batch_window_s=self.config.batch_window_s,
                                   policy=self.config.policy, max_running=self.config.max_running,
                                   prefill_chunk=self.config.prefill_chunk)
        import uvicorn

        ucfg = uvicorn.Config(create_app(self), http=make_protocol(self.config.header_timeout_s, self.config.max_connections),
                              lifespan="off", log_config=None, access_log=False, server_header=False,
                              timeout_keep_alive=self.config.keep_alive_s,
                              timeout_graceful_shutdown=int(self.config.drain_s) + 15)
        self._uvicorn = _Uvicorn(ucfg, on_signal=self._on_signal)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._drainer: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def full_id(self) -> str:
        return full_id(self.lm)

    def model_ids(self) -> list[str]:
        return [MODEL_PREFIX, self.full_id()] + [f"{MODEL_PREFIX}-{t}" for t in self.engine.tasks]

    def model_card(self, model_id: str) -> dict:
        """What a served model id runs (extra fields of /v1/models; clients ignore them): which weights
        (the base model's own, or tuned by a trained artifact: then the full width is ifprune-full),
        the FFN width and the output compensation."""
        dense = model_id == self.full_id() or self.engine.width == self.lm.d_ffn
        from ..compensation.calibration import described

        return {"weights": self.lm.weights(), "ffn_width": self.lm.d_ffn if dense else self.engine.width,
                "d_ffn": self.lm.d_ffn,
                "selector": self.full_id()[len(MODEL_PREFIX) + 1:] if dense else getattr(self.engine.selector, "name", "?"),
                "quant": None if dense else self.lm.quant,  # (the dense model reads the loaded weights)
                "compensation": described(self.lm, dense),
                "reselection": self.reselection(dense)}

    def reselection(self, dense: bool, count: int | None = None, last: Plan | None = None) -> dict:
        """The one JSON shape of re-selection (as `generate --json`): mode, tokens, count (per response), prefill,
        and the last re-selected plan's hash when one ran."""
        from ..selection.refresh import mode_of

        e = self.engine
        mode = mode_of(None if dense else e.refresh, e.every)
        out = {"mode": mode, "tokens": None if mode == "off" else e.refresh, "prefill": "pruned" if dense else e.prefill}
        if count is not None:
            out["count"] = count
        return out if last is None else {**out, "plan_hash": last.hash}

    # lifecycle ----------------------------------------------------------------------------------
    def start(self) -> "IfpruneServer":
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [self._sock]},
                                        name="ifprune-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._uvicorn.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._uvicorn.started:
            raise IfpruneError("the HTTP server did not start; see the log above")
        return self

    def serve_forever(self) -> None:
        """Serve in this (main) thread until SIGINT/SIGTERM, then drain (bounded) and return."""
        try:
            self._uvicorn.run(sockets=[self._sock])
        finally:
            self.close()

    def _on_signal(self, signum: int) -> None:
        log.warning("shutting down on %s (running and queued requests get up to %g s)",
                    signal.Signals(signum).name, self.config.drain_s)
        self._drainer = threading.Thread(target=self.scheduler.stop, args=(self.config.drain_s,),
                                         name="ifprune-drain", daemon=True)
        self._drainer.start()

    def close(self, drain_s: float | None = None) -> None:
        """Stop accepting, finish (up to `drain_s`) what is queued or running, end the rest with an error
        and [DONE], release the port. Idempotent."""
        if self._closed:
            return
        self._closed = True
        drain = self.config.drain_s if drain_s is None else drain_s
        self._uvicorn.should_exit = True
        if self._drainer is not None:
            self._drainer.join(drain + 15)
        self.scheduler.stop(drain)
        if self._thread is not None:
            self._thread.join(drain + 30)
        self._sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # request building (thread pool) -------------------------------------------------------------
    def build_request(self, body: dict, chat: bool) -> tuple[GenRequest, str, bool]:
        """A JSON object -> a queued-to-be GenRequest, the model id and whether usage is streamed."""
        r = parse_request(body, chat)
        model, task = r.model, r.task
        if task is not None and not task.strip():
            raise ApiError(400, "'task' must be a non-empty task description or task name", param="task")
        if task is not None and len(task) > self.config.max_task_chars:
            raise ApiError(400, f"'task' is {len(task)} characters; the limit is {self.config.max_task_chars}: "
                                "describe the task in short (or register it with --task-alias)", param="task")
        if model in (MODEL_PREFIX, self.lm.source):
            mode = "task" if task else "input"
        elif model == self.full_id():
            if task:
                raise ApiError(400, f"model {model} does not prune: drop the 'task' field", param="task")
            mode = "dense"
        elif model in (f"{MODEL_PREFIX}-dense", f"{MODEL_PREFIX}-full"):
            tuned = self.lm.weights()["tuned_by"]
            why = (f"this server's weights are tuned by {tuned}: their full width is {self.full_id()}, and the base "
                   "model (ifprune-dense) is not loaded" if tuned else
                   "ifprune-full is a tuned model at full width; this server runs the base weights: ifprune-dense")
            raise ApiError(404, f"unknown model {model!r}: {why}", param="model", code="model_not_found")
        elif model.startswith(f"{MODEL_PREFIX}-") and model[len(MODEL_PREFIX) + 1:] in self.engine.tasks:
            if task:
                raise ApiError(400, f"model {model} already names a task: drop the 'task' field", param="task")
            mode, task = "task", model[len(MODEL_PREFIX) + 1:]
        else:
            raise ApiError(404, f"unknown model {model!r}; GET /v1/models lists the served models "
                                f"({', '.join(self.model_ids())})", param="model", code="model_not_found")
        name, max_tokens = "max_tokens", r.max_tokens
        if chat and r.max_completion_tokens is not None:
            name, max_tokens = "max_completion_tokens", r.max_completion_tokens
        max_tokens = self.config.default_max_tokens if max_tokens is None else max_tokens
        if max_tokens > self.config.max_tokens_limit:
            raise ApiError(400, f"'{name}' must be an integer in [1, {self.config.max_tokens_limit}], got {max_tokens}",
                           param=name)
        tok = self.lm.tokenizer
        if isinstance(r, ChatRequest):
            msgs = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in r.messages]
            named = [i for i, m in enumerate(r.messages) if m.name is not None]
            if named:  # nothing is ignored silently: a name goes where the template puts it, or is refused
                template = getattr(tok, "chat_template", None) or ""
                if not re.search(r"""message\s*(\[\s*['"]name['"]\s*\]|\.name\b)""", template):
                    raise ApiError(400, f"'messages[{named[0]}].name' is not used by this model's chat template: put the "
                                        "name in the message's content, or drop it", param=f"messages[{named[0]}].name")
                for i in named:
                    msgs[i]["name"] = r.messages[i].name
            users = [m["content"] for m in msgs if m["role"] == "user"]
            select_text = users[-1] if users else msgs[-1]["content"]
            with self.engine.tokenizer_lock:
                if getattr(tok, "chat_template", None):
                    ids = chat_ids(tok, msgs)  # special-token text in a message stays text
                else:
                    ids = tok("\n".join(m["content"] for m in msgs))["input_ids"]
        else:
            select_text = r.prompt_text()
            with self.engine.tokenizer_lock:
                ids = tok(select_text)["input_ids"]
        ids = list(ids)
        if not ids or (mode == "input" and not select_text.strip()):
            raise ApiError(400, "the prompt is empty: give some text to respond to", param="messages" if chat else "prompt")
        limit, context = self.config.max_prompt_tokens, self.lm.context_length()
        if limit is not None and len(ids) > limit:
            raise ApiError(400, f"prompt is {len(ids)} tokens; this server accepts at most {limit}: shorten it",
                           code="context_length_exceeded")
        if context is not None and len(ids) + max_tokens > context:
            raise ApiError(400, f"prompt of {len(ids)} tokens plus max_tokens {max_tokens} exceeds the model's "
                                f"context of {context} tokens: shorten the prompt or lower max_tokens",
                           code="context_length_exceeded")
        req = GenRequest(ids=ids, max_tokens=max_tokens, temperature=float(r.temperature or 0.0),
                         top_p=float(1.0 if r.top_p is None else r.top_p), top_k=max(0, r.top_k or 0), stop=r.stops(),
                         mode=mode, select_text=select_text, task=task, seed=r.seed)
        usage_chunk = bool(r.stream_options and r.stream_options.include_usage)
        if r.stream_options is not None and not r.stream:
            raise ApiError(400, "'stream_options' needs 'stream': true", param="stream_options")
        return req, model, usage_chunk


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        sock = socket.socket(infos[0][0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(infos[0][4])
        sock.listen(2048)
    except OSError as e:
        raise IfpruneError(f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port or --host") from None
    sock.set_inheritable(True)
    return sock


class _Uvicorn:
    """uvicorn's Server with our signal handling: the first SIGINT/SIGTERM starts a bounded drain and
    the process then returns normally (uvicorn would re-raise the signal, killing it with -15); a second
    SIGINT forces the exit."""

    def __new__(cls, config, on_signal):
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                old = {s: signal.signal(s, self._on_exit) for s in (signal.SIGINT, signal.SIGTERM)}
                try:
                    yield
                finally:
                    for s, h in old.items():
                        signal.signal(s, h)

            def _on_exit(self, signum, frame):
                if self.should_exit:
                    self.force_exit = signum == signal.SIGINT
                    return
                self.should_exit = True
                on_signal(signum)

        return Server(config)


def _error(e: ApiError, close: bool = False) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers={"connection": "close"} if close else None)


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and int(length) > limit:
        if int(length) <= _DISCARD_LIMIT:  # read it away so the client sees the 413, not a broken pipe
            async for _ in request.stream():
                pass
        raise ApiError(413, f"request body of {int(length)} bytes exceeds the limit of {limit}")
    parts, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def create_app(server: IfpruneServer) -> FastAPI:
    cfg, metrics = server.config, server.metrics
    app = FastAPI(title="ifprune", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return _error(e)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, e: StarletteHTTPException):
        if e.status_code == 405:
            msg = f"{request.method} is not allowed on {request.url.path}"
            allowed = (e.headers or {}).get("Allow")
            msg += f": use {allowed}" if allowed else ""
        elif e.status_code == 404:
            msg = (f"no route {request.method} {request.url.path}; try POST /v1/chat/completions, POST "
                   "/v1/completions, GET /v1/models, /health or /metrics")
        else:
            msg = str(e.detail)
        body = ApiError(e.status_code, msg, code="not_found" if e.status_code == 404 else None).body()
        return JSONResponse(body, status_code=e.status_code, headers=e.headers)

    @app.exception_handler(Exception)
    async def _internal(request, e: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(ApiError(500, "internal server error; see the server log", kind="server_error").body(),
                            status_code=500)

    app.add_middleware(_Gate, api_key=cfg.api_key, metrics=metrics)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": server.lm.source, "queue": server.scheduler.waiting(),
                "ffn_width": server.engine.width, "d_ffn": server.lm.d_ffn}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": m, "object": "model", "created": server.created,
                                            "owned_by": "ifprune", **server.model_card(m)} for m in server.model_ids()]}

    async def complete(request: Request, chat: bool):
        metrics.inc("requests_total")
        try:
            try:
                raw = await asyncio.wait_for(_read_body(request, cfg.max_body_bytes), cfg.body_timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(408, f"the request body did not arrive within {cfg.body_timeout_s:g} s",
                               code="request_timeout") from None
            body = parse_body(raw)
            req, model, usage_chunk = await run_in_threadpool(server.build_request, body, chat)
            req.events = _Events(asyncio.get_running_loop())
            server.scheduler.submit(req)
        except ApiError as e:
            metrics.inc("responses_total", code=str(e.status))
            return _error(e, close=e.status in (408, 413))
        except QueueFull:
            metrics.inc("rejected_queue_full_total")
            metrics.inc("responses_total", code="429")
            return _error(ApiError(429, "the request queue is full; retry after a short wait", kind="rate_limit_error",
                                   code="queue_full"))
        except ShuttingDown:
            metrics.inc("responses_total", code="503")
            return _error(ApiError(503, "the server is shutting down; retry on another instance", kind="server_error"),
                          close=True)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        request.state.req = req
        if body.get("stream"):
            request.state.stream = True
            metrics.inc("responses_total", code="200")
            return StreamingResponse(_stream(request, req, rid, model, chat, usage_chunk), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache"})
        return await _complete(request, req, rid, model, chat)

    async def _next(req: GenRequest):
        try:
            return await asyncio.wait_for(req.events.queue.get(), cfg.request_timeout_s)
        except asyncio.TimeoutError:
            req.cancelled.set()
            return ("error", 504, "generation timed out")

    async def _complete(request: Request, req: GenRequest, rid: str, model: str, chat: bool):
        async def watch():  # a client that goes away cancels its generation
            while (await request.receive())["type"] != "http.disconnect":
                pass
            req.cancelled.set()
            metrics.inc("client_disconnects_total")

        watcher = asyncio.create_task(watch())
        parts, first, t0 = [], None, request.state.t0
        try:
            while True:
                ev = await _next(req)
                if ev[0] == "delta":
                    first = first or time.perf_counter()
                    parts.append(ev[1])
                elif ev[0] == "error":
                    metrics.inc("responses_total", code=str(ev[1]))
                    return _error(ApiError(ev[1], ev[2], kind="server_error"))
                else:
                    reason, usage = ev[1], ev[2]
                    break
        finally:
            watcher.cancel()
        _observe(t0, first)
        request.state.tokens = (usage or {}).get("completion_tokens", 0)
        text = "".join(parts)
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason} if chat
                  else {"index": 0, "text": text, "logprobs": None, "finish_reason": reason})
        metrics.inc("responses_total", code="200")
        return JSONResponse({"id": rid, "object": "chat.completion" if chat else "text_completion",
                             "created": int(time.time()), "model": model, "choices": [choice], "usage": usage,
                             "ifprune": {"plan_hash": req.plan.hash if req.plan else None,
                                         "ffn_width": req.plan.width if req.plan else server.lm.d_ffn,
                                         "reselection": server.reselection(req.plan is None, req.refreshes,
                                                                           req.refreshed)}})

    async def _stream(request: Request, req: GenRequest, rid: str, model: str, chat: bool, usage_chunk: bool):
        created, t0, first, status, usage = int(time.time()), request.state.t0, None, 200, None
        kind = "chat.completion.chunk" if chat else "text_completion"

        def sse(obj) -> bytes:
            return f"data: {json.dumps(obj)}\n\n".encode()

        def chunk(delta: str | None, reason: str | None) -> bytes:
            if chat:
                choice = {"index": 0, "delta": {} if delta is None else {"content": delta}, "finish_reason": reason}
            else:
                choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": reason}
            return sse({"id": rid, "object": kind, "created": created, "model": model, "choices": [choice]})

        finished = False
        try:
            if chat:
                yield sse({"id": rid, "object": kind, "created": created, "model": model,
                           "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
            while True:
                ev = await _next(req)
                if ev[0] == "delta":
                    first = first or time.perf_counter()
                    yield chunk(ev[1], None)
                elif ev[0] == "error":
                    status = ev[1]
                    yield sse({"error": {"message": ev[2], "type": "server_error", "code": ev[1]}})
                    break
                else:  # as OpenAI streams it: usage once, in a last chunk without choices, and only when asked
                    usage = ev[2]
                    yield chunk(None, ev[1])
                    if usage_chunk:
                        yield sse({"id": rid, "object": kind, "created": created, "model": model, "choices": [],
                                   "usage": usage})
                    break
            _observe(t0, first)
            yield b"data: [DONE]\n\n"
            finished = True
        finally:
            if not finished:  # the client went away (or the server cut the stream)
                req.cancelled.set()
                metrics.inc("client_disconnects_total")
            request.state.tokens = (usage or {}).get("completion_tokens", 0)
            _log_access(request, status if finished else 499, t0)

    def _observe(t0: float, first: float | None) -> None:
        now = time.perf_counter()
        metrics.observe("request_seconds", now - t0)
        if first is not None:
            metrics.observe("ttft_seconds", first - t0)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, chat=False)

    return app


class _Gate:
    """Pure ASGI middleware (streams pass through untouched): the optional API key on /v1/*, and the
    access log line of every response that is not a stream (a stream logs its own when it ends)."""

    def __init__(self, app, api_key: str | None, metrics=None):
        self.app, self.expected = app, None if api_key is None else api_key.encode()
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        state["t0"] = time.perf_counter()
        request = Request(scope, receive)
        if self.expected is not None and scope["path"].startswith("/v1/"):
            # exactly one Authorization header (two are ambiguous: refused, not "the last wins"); the scheme name
            # is case-insensitive (RFC 7235), the key is compared in constant time
            got = [v for k, v in scope["headers"] if k == b"authorization"]
            scheme, _, key = (got[0] if len(got) == 1 else b"").strip().partition(b" ")
            if len(got) != 1 or scheme.lower() != b"bearer" or not hmac.compare_digest(key.strip(), self.expected):
                why = ("send one Authorization header, not several" if len(got) > 1
                       else "missing or wrong API key: send 'Authorization: Bearer <key>'")
                await _error(ApiError(401, why, kind="authentication_error", code="invalid_api_key"))(scope, receive, send)
                _log_access(request, 401, state["t0"])
                if self.metrics is not None:  # a refused key leaves a trace: counted like every other response
                    self.metrics.inc("requests_total")
                    self.metrics.inc("responses_total", code="401")
                return
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, send_status)
        if not state.get("stream"):
            _log_access(request, status, state["t0"])


def _log_access(request: Request, status: int, t0: float) -> None:
    """One line per request: client, method, path, status, completion tokens, latency, plan."""
    req = getattr(request.state, "req", None)
    plan = req.plan.hash[:12] if req is not None and req.plan is not None else "-"
    if req is not None and req.refreshed is not None:
        plan += f"+{req.refreshed.hash[:12]}"  # the last plan re-selected after --refresh tokens
    client = f"{request.client.host}:{request.client.port}" if request.client else "-"
    access_log.info('%s "%s %s" %d tokens=%s latency=%.3fs plan=%s', client, request.method, request.url.path,
                    status, getattr(request.state, "tokens", "-"), time.perf_counter() - t0, plan)
