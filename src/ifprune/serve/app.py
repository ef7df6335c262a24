"""OpenAI-compatible HTTP server (stdlib `ThreadingHTTPServer`): one thread per connection parses and
validates, the scheduler's single worker thread does all model work, and results flow back through a
per-request queue (JSON body, or SSE chunks with chunked transfer encoding when `stream` is set)."""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..core.errors import IfpruneError
from .engine import Engine, GenRequest
from .metrics import Metrics
from .scheduler import POLICIES, QueueFull, Scheduler, ShuttingDown

log = logging.getLogger(__name__)
MODEL_PREFIX = "ifprune"


@dataclass
class ServeConfig:
    """Server limits and behaviour. `width` is the FFN width of every non-dense plan."""

    host: str = "127.0.0.1"
    port: int = 8000
    width: int | None = None  # None: half of d_ffn
    tasks: dict[str, str] | None = None  # alias name -> task description (None: engine.DEFAULT_TASKS)
    max_batch: int = 8
    max_queue: int = 64
    batch_window_s: float = 0.01
    policy: str = "group"
    max_body_bytes: int = 1 << 20
    max_prompt_tokens: int | None = None  # None: the model's context minus max_tokens
    max_tokens_limit: int = 1024
    default_max_tokens: int = 128
    request_timeout_s: float = 600.0

    def validate(self) -> None:
        if self.policy not in POLICIES:
            raise IfpruneError(f"unknown batching policy {self.policy!r}: use one of {', '.join(POLICIES)}")
        for name in ("max_batch", "max_queue", "max_body_bytes", "max_tokens_limit", "default_max_tokens"):
            if getattr(self, name) < 1:
                raise IfpruneError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise IfpruneError(f"port {self.port} is out of range 0..65535")


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def _num(body: dict, name: str, default, lo, hi, integer: bool = False):
    v = body.get(name)
    if v is None:
        return default
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or not lo <= v <= hi:
        kind = "an integer" if integer else "a number"
        raise ApiError(400, f"'{name}' must be {kind} in [{lo}, {hi}], got {v!r}", param=name)
    return v


def _message_text(content, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(p, str) for p in parts) and len(parts) == len(content):
            return "".join(parts)
    raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts", param="messages")


_DISCARD_LIMIT = 64 << 20  # oversized bodies up to this size are drained before answering 413


class IfpruneServer:
    """`start()` serves in a background thread (tests); `serve_forever()` blocks (CLI); `close()` drains."""

    def __init__(self, lm, selector, config: ServeConfig | None = None):
        self.config = config or ServeConfig()
        self.config.validate()
        self.lm = lm
        width = self.config.width or max(1, lm.d_ffn // 2)
        if not 1 <= width <= lm.d_ffn:
            raise IfpruneError(f"width {width} is out of range 1..{lm.d_ffn} (this model's FFN width)")
        self.metrics = Metrics()
        self.engine = Engine(lm, selector, width, self.config.tasks)
        self.scheduler = Scheduler(self.engine, self.metrics, max_batch=self.config.max_batch,
                                   max_queue=self.config.max_queue, batch_window_s=self.config.batch_window_s,
                                   policy=self.config.policy)
        handler = type("Handler", (_Handler,), {"app": self})
        try:
            self.httpd = ThreadingHTTPServer((self.config.host, self.config.port), handler)
        except OSError as e:
            self.scheduler.stop(0)
            raise IfpruneError(f"cannot listen on {self.config.host}:{self.config.port}: {e.strerror}; "
                               "pick another --port") from None
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._closed = False
        self._conns: set = set()  # open client sockets, closed on shutdown so no handler thread lingers
        self._conns_lock = threading.Lock()
        self._inflight = 0  # accepted requests whose response is still being written
        self._inflight_cv = threading.Condition()
        self.created = int(time.time())

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def model_ids(self) -> list[str]:
        return [MODEL_PREFIX, f"{MODEL_PREFIX}-dense"] + [f"{MODEL_PREFIX}-{t}" for t in self.engine.tasks]

    def model_card(self, model_id: str) -> dict:
        """What a served model id runs (extra fields of /v1/models; clients ignore them): which weights
        (the base model's own, or tuned by a trained artifact: then ifprune-dense is NOT the base model),
        the FFN width and the output compensation."""
        dense = model_id == f"{MODEL_PREFIX}-dense" or self.engine.width == self.lm.d_ffn
        comp = getattr(self.lm, "compensator", None)
        return {"weights": self.lm.weights(), "ffn_width": self.lm.d_ffn if dense else self.engine.width,
                "d_ffn": self.lm.d_ffn, "selector": "dense" if dense else getattr(self.engine.selector, "name", "?"),
                "compensation": comp.describe() if comp is not None and not dense else {"mode": "none"}}

    def start(self) -> "IfpruneServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="ifprune-http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self, drain_s: float = 30.0) -> None:
        """Stop accepting connections, finish (up to `drain_s`) what is queued or running, release the port."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.scheduler.stop(drain_s)
        with self._inflight_cv:  # let handlers write the last chunks of finished requests
            self._inflight_cv.wait_for(lambda: self._inflight == 0, timeout=max(1.0, min(drain_s, 10.0)))
        self.httpd.server_close()
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:  # idle keep-alive connections: wake their threads so they exit
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # request parsing --------------------------------------------------------------------------
    def build_request(self, body: dict, chat: bool) -> tuple[GenRequest, str]:
        model = body.get("model", MODEL_PREFIX)
        if not isinstance(model, str):
            raise ApiError(400, "'model' must be a string", param="model")
        task = body.get("task")
        if task is not None and (not isinstance(task, str) or not task.strip()):
            raise ApiError(400, "'task' must be a non-empty task description or task name", param="task")
        if model in (MODEL_PREFIX, self.lm.source):
            mode = "task" if task else "input"
        elif model == f"{MODEL_PREFIX}-dense":
            if task:
                raise ApiError(400, "model ifprune-dense does not prune: drop the 'task' field", param="task")
            mode = "dense"
        elif model.startswith(f"{MODEL_PREFIX}-") and model[len(MODEL_PREFIX) + 1:] in self.engine.tasks:
            if task:
                raise ApiError(400, f"model {model} already names a task: drop the 'task' field", param="task")
            mode, task = "task", model[len(MODEL_PREFIX) + 1:]
        else:
            raise ApiError(404, f"unknown model {model!r}; GET /v1/models lists the served models "
                                f"({', '.join(self.model_ids())})", param="model", code="model_not_found")
        if body.get("n") not in (None, 1):
            raise ApiError(400, f"only n=1 is supported, got n={body['n']!r}: send one request per sample", param="n")
        if body.get("stop") not in (None, [], ""):
            raise ApiError(400, "'stop' sequences are not supported by this server; remove them", param="stop")
        name = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
        max_tokens = _num(body, name, self.config.default_max_tokens, 1, self.config.max_tokens_limit, integer=True)
        temperature = _num(body, "temperature", 0.0, 0.0, 2.0)
        top_p = _num(body, "top_p", 1.0, 1e-6, 1.0)
        seed = _num(body, "seed", None, 0, 2**63 - 1, integer=True)
        if not isinstance(body.get("stream", False), bool):
            raise ApiError(400, "'stream' must be true or false", param="stream")

        tok = self.lm.tokenizer
        if chat:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                raise ApiError(400, "'messages' must be a non-empty list of {role, content} objects", param="messages")
            clean = []
            for i, m in enumerate(msgs):
                if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer"):
                    raise ApiError(400, f"messages[{i}] needs a role of system, user or assistant", param="messages")
                clean.append({"role": "system" if m["role"] == "developer" else m["role"],
                              "content": _message_text(m.get("content"), i)})
            users = [m["content"] for m in clean if m["role"] == "user"]
            select_text = users[-1] if users else clean[-1]["content"]
            with self.engine.tokenizer_lock:
                if getattr(tok, "chat_template", None):
                    ids = tok.apply_chat_template(clean, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
                else:
                    ids = tok("\n".join(m["content"] for m in clean))["input_ids"]
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1:
                prompt = prompt[0]
            if not isinstance(prompt, str):
                raise ApiError(400, "'prompt' must be a string (batches of prompts: send one request each)", param="prompt")
            select_text = prompt
            with self.engine.tokenizer_lock:
                ids = tok(prompt)["input_ids"]
        ids = list(ids)
        if not ids or (mode == "input" and not select_text.strip()):
            raise ApiError(400, "the prompt is empty: give some text to respond to", param="messages" if chat else "prompt")
        limit = self.config.max_prompt_tokens
        context = self.lm.context_length()
        if limit is not None and len(ids) > limit:
            raise ApiError(400, f"prompt is {len(ids)} tokens; this server accepts at most {limit}: shorten it",
                           code="context_length_exceeded")
        if context is not None and len(ids) + max_tokens > context:
            raise ApiError(400, f"prompt of {len(ids)} tokens plus max_tokens {max_tokens} exceeds the model's "
                                f"context of {context} tokens: shorten the prompt or lower max_tokens",
                           code="context_length_exceeded")
        req = GenRequest(ids=ids, max_tokens=max_tokens, temperature=float(temperature), top_p=float(top_p),
                         mode=mode, select_text=select_text, task=task, seed=seed, events=queue.Queue())
        return req, model


class _Handler(BaseHTTPRequestHandler):
    app: IfpruneServer
    protocol_version = "HTTP/1.1"
    server_version = "ifprune"

    def log_message(self, fmt, *args):  # quiet by default; -v shows requests
        log.info("%s %s", self.address_string(), fmt % args)

    def setup(self):
        super().setup()
        with self.app._conns_lock:
            self.app._conns.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.app._conns_lock:
                self.app._conns.discard(self.connection)

    # plumbing ----------------------------------------------------------------------------------
    def _send_json(self, status: int, obj, close: bool = False) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)
        self.app.metrics.inc(f'responses_total{{code="{status}"}}')

    def _error(self, e: ApiError, close: bool = False) -> None:
        self._send_json(e.status, e.body(), close=close)

    def _read_json(self) -> dict:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or length is None:
            raise ApiError(411, "send the request body with a Content-Length header")
        try:
            n = int(length)
        except ValueError:
            raise ApiError(400, f"bad Content-Length {length!r}") from None
        if n > self.app.config.max_body_bytes:
            if n <= _DISCARD_LIMIT:  # read it away so the client sees the 413, not a broken pipe
                left = n
                while left > 0 and (chunk := self.rfile.read(min(left, 1 << 20))):
                    left -= len(chunk)
            raise ApiError(413, f"request body of {n} bytes exceeds the limit of {self.app.config.max_body_bytes}")
        raw = self.rfile.read(n)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        return body

    # routes ------------------------------------------------------------------------------------
    def do_GET(self):
        path = self.path.split("?")[0]
        app = self.app
        if path == "/health":
            self._send_json(200, {"status": "ok", "model": app.lm.source, "queue": app.scheduler.waiting(),
                                  "ffn_width": app.engine.width, "d_ffn": app.lm.d_ffn})
        elif path == "/metrics":
            data = app.metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": app.created, "owned_by": "ifprune", **app.model_card(m)}
                for m in app.model_ids()]})
        else:
            self._error(ApiError(404, f"no route {path}; try /v1/chat/completions, /v1/completions, /v1/models, "
                                      "/health or /metrics", code="not_found"))

    def do_POST(self):
        path = self.path.split("?")[0]
        if path not in ("/v1/chat/completions", "/v1/completions"):
            self._error(ApiError(404, f"no route POST {path}", code="not_found"), close=True)
            return
        chat = path == "/v1/chat/completions"
        self.app.metrics.inc("requests_total")
        try:
            body = self._read_json()
            req, model = self.app.build_request(body, chat)
            self.app.scheduler.submit(req)
        except ApiError as e:
            self._error(e, close=e.status in (411, 413) or e.status == 400 and "Content-Length" in e.message)
            return
        except QueueFull:
            self.app.metrics.inc("rejected_queue_full_total")
            self._error(ApiError(429, "the request queue is full; retry after a short wait", kind="rate_limit_error",
                                 code="queue_full"))
            return
        except ShuttingDown:
            self._error(ApiError(503, "the server is shutting down", kind="server_error"), close=True)
            return
        t0 = time.perf_counter()
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        with self.app._inflight_cv:
            self.app._inflight += 1
        try:
            if body.get("stream"):
                self._stream(req, rid, model, chat, t0)
            else:
                self._complete(req, rid, model, chat, t0)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            req.cancelled.set()
            self.app.metrics.inc("client_disconnects_total")
            self.close_connection = True
        finally:
            with self.app._inflight_cv:
                self.app._inflight -= 1
                self.app._inflight_cv.notify_all()

    def _next(self, req: GenRequest):
        try:
            return req.events.get(timeout=self.app.config.request_timeout_s)
        except queue.Empty:
            req.cancelled.set()
            return ("error", 504, "generation timed out")

    def _complete(self, req, rid, model, chat, t0) -> None:
        parts = []
        first = None
        while True:
            ev = self._next(req)
            if ev[0] == "delta":
                first = first or time.perf_counter()
                parts.append(ev[1])
            elif ev[0] == "error":
                self._error(ApiError(ev[1], ev[2], kind="server_error"))
                return
            else:
                reason, usage = ev[1], ev[2]
                break
        self._observe(t0, first)
        text = "".join(parts)
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason} if chat
                  else {"index": 0, "text": text, "logprobs": None, "finish_reason": reason})
        self._send_json(200, {"id": rid, "object": "chat.completion" if chat else "text_completion",
                              "created": int(time.time()), "model": model, "choices": [choice], "usage": usage,
                              "ifprune": {"plan_hash": req.plan.hash if req.plan else None,
                                          "ffn_width": req.plan.width if req.plan else self.app.lm.d_ffn}})

    def _chunk(self, obj) -> None:
        data = obj if isinstance(obj, bytes) else f"data: {json.dumps(obj)}\n\n".encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _stream(self, req, rid, model, chat, t0) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.app.metrics.inc('responses_total{code="200"}')
        created = int(time.time())

        def chunk(delta: str | None, reason: str | None, usage=None):
            if chat:
                d = {} if delta is None else {"content": delta}
                choice = {"index": 0, "delta": d, "finish_reason": reason}
            else:
                choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": reason}
            obj = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
                   "model": model, "choices": [choice]}
            if usage is not None:
                obj["usage"] = usage
            self._chunk(obj)

        if chat:
            self._chunk({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        first = None
        while True:
            ev = self._next(req)
            if ev[0] == "delta":
                first = first or time.perf_counter()
                chunk(ev[1], None)
            elif ev[0] == "error":
                self._chunk({"error": {"message": ev[2], "type": "server_error", "code": ev[1]}})
                break
            else:
                chunk(None, ev[1], ev[2])
                break
        self._observe(t0, first)
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _observe(self, t0: float, first: float | None) -> None:
        now = time.perf_counter()
        self.app.metrics.observe("request_seconds", now - t0)
        if first is not None:
            self.app.metrics.observe("ttft_seconds", first - t0)
