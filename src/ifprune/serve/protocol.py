"""The OpenAI request shapes as pydantic models, and the checks around them that pydantic cannot do.

Nothing here touches a model, so request parsing is pure and fuzzable: `parse_body` turns raw bytes
into a JSON object (or an `ApiError`), `parse_request` turns that object into a validated
`CompletionRequest`/`ChatRequest`. Unsupported OpenAI fields are accepted only at their neutral value
(e.g. `frequency_penalty: 0`, which many clients send by default) and otherwise answered with a 400
naming the field; unknown fields are refused too: nothing a client asks for is ignored silently.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_JSON_DEPTH = 64  # OpenAI bodies nest 5 levels; deep nesting is an attack, not a request
MAX_STOP = 4  # as OpenAI
MAX_STOP_CHARS = 256


class ApiError(Exception):
    """An HTTP error answered with OpenAI's error body."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# fields OpenAI defines that this server does not implement: the values that mean "off" are accepted
NEUTRAL: dict[str, tuple] = {
    "frequency_penalty": (0,), "presence_penalty": (0,), "repetition_penalty": (1,), "min_p": (0,),
    "logit_bias": ({},), "logprobs": (False, 0), "top_logprobs": (0,), "echo": (False,), "best_of": (1,),
    "suffix": ("",), "tools": ([],), "tool_choice": ("none",), "functions": ([],), "function_call": ("none",),
    "parallel_tool_calls": (), "response_format": ({"type": "text"},), "modalities": (["text"],), "audio": (),
    "prediction": (), "store": (False,), "metadata": ({},), "service_tier": ("auto", "default"),
    "reasoning_effort": (), "web_search_options": (), "logprob_start_len": (),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool = False


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart]
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, v):
        if isinstance(v, list) and any(not isinstance(p, dict) or p.get("type") != "text" for p in v):
            raise ValueError("only text content parts ({\"type\": \"text\", \"text\": ...}) are supported")
        if not isinstance(v, (str, list)):
            raise ValueError("content must be a string or a list of text parts")
        return v

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class _Sampling(_Strict):
    model: str = "ifprune"
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    user: str | None = None  # an end-user id for the operator's logs; changes nothing
    task: str | None = None  # ifprune: select the plan from this task (a registered name or a description)

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, v):
        if v is not None and v < -1:
            raise ValueError("top_k must be -1 or 0 (off) or a positive integer")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences, got {len(stops)}")
        if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"stop sequences must be non-empty and at most {MAX_STOP_CHARS} characters")
        return v

    @field_validator("n")
    @classmethod
    def _n(cls, v):
        if v not in (None, 1):
            raise ValueError(f"only n=1 is supported, got n={v}: send one request per sample")
        return v

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionRequest(_Sampling):
    prompt: str | list[str]

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, v):
        if not isinstance(v, (str, list)) or isinstance(v, list) and not all(isinstance(x, str) for x in v):
            raise ValueError("'prompt' must be a string (token-id prompts are not supported)")
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("'prompt' must be one string (batches of prompts: send one request each)")
        return v

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


def parse_body(raw: bytes) -> dict:
    """Bytes -> a JSON object, refusing invalid UTF-8/JSON, nesting deeper than MAX_JSON_DEPTH and
    lone surrogates (valid JSON escapes that no tokenizer can encode)."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise ApiError(400, f"request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    stack = [(body, "", 1)]
    while stack:  # iterative: the check itself must not recurse on hostile input
        node, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ApiError(400, f"request body nests deeper than {MAX_JSON_DEPTH} levels")
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in items:
            where = f"{path}.{k}" if isinstance(node, dict) and path else (str(k) if isinstance(node, dict) else f"{path}[{k}]")
            for s in ((k, v) if isinstance(node, dict) else (v,)):
                if isinstance(s, str):
                    try:
                        s.encode("utf-8")
                    except UnicodeEncodeError as e:
                        raise ApiError(400, f"{where} holds a lone UTF-16 surrogate (U+{ord(s[e.start]):04X}): "
                                            "send valid Unicode text", param=where.split(".")[0].split("[")[0]) from None
            if isinstance(v, (dict, list)):
                stack.append((v, where, depth + 1))
    return body


def parse_request(body: dict, chat: bool) -> CompletionRequest | ChatRequest:
    """A JSON object -> a validated request, or an ApiError naming the field."""
    body = dict(body)
    for name, neutral in NEUTRAL.items():
        if name not in body:
            continue
        v = body.pop(name)
        if _neutral(v, neutral):
            continue
        raise ApiError(400, f"'{name}' is not supported by this server (got {_short(v)}); remove it or send "
                            "its neutral value", param=name, code="unsupported_parameter")
    try:
        return (ChatRequest if chat else CompletionRequest).model_validate(body)
    except ValidationError as e:
        raise ApiError(400, _explain(e.errors()[0]), param=_param(e.errors()[0])) from None


def _neutral(v, neutral: tuple) -> bool:
    """None, or equal to a neutral value without bool/number confusion (`logprobs: false` is off,
    `frequency_penalty: false` is not a number)."""
    return v is None or any(type(v) is type(n) and v == n or isinstance(v, float) and type(n) is int and v == n
                            for n in neutral)


def _short(v) -> str:
    s = json.dumps(v, ensure_ascii=True) if not isinstance(v, str) else repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _param(err: dict) -> str | None:
    loc = err.get("loc") or ()
    return str(loc[0]) if loc else None


def _explain(err: dict) -> str:
    loc = [str(x) for x in err.get("loc", ()) if not str(x).startswith(("function-", "str", "list[", "union["))]
    where = ".".join(loc) or "request"
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return f"'{where}' is not a field this server knows; remove it (supported: see docs/serving.md)"
    if kind == "missing":
        return f"'{where}' is required"
    msg = err.get("msg", "invalid").removeprefix("Value error, ")
    return f"'{where}': {msg} (got {_short(err.get('input'))})"
