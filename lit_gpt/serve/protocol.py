"""OpenAI's completion and chat-completion API, as ``lit-gpt serve`` speaks it: request checking and response bodies.

Follows https://platform.openai.com/docs/api-reference (``/v1/completions``, ``/v1/chat/completions``,
``/v1/models``): ``model``, ``prompt`` (a string, a list of one string, or a list of token ids) or ``messages``,
``max_tokens`` (``max_completion_tokens`` for chat), ``temperature`` (0 is greedy), ``top_p``, ``stop`` (a string or
up to four), ``seed``, ``n``, ``stream`` and ``stream_options.include_usage``. Extensions, as vLLM names them:
``top_k`` (-1 or absent means every token) and ``ignore_eos`` (generate ``max_tokens`` tokens whatever they are, for
load tests). A bad request is an ``APIError``, sent as OpenAI's error body
``{"error": {"message", "type", "param", "code"}}`` with a 4xx status. Standard library only.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

MAX_STOPS = 4
UNSUPPORTED = ("logprobs", "top_logprobs", "echo", "best_of", "suffix", "tools", "functions", "logit_bias")
"""Fields whose OpenAI meaning this server does not implement: a request that sets them is refused."""


class APIError(Exception):
    """A request the server refuses: HTTP ``status``, OpenAI's error ``type``, the offending ``param`` and a
    ``code`` (``model_not_found`` ...)."""

    def __init__(
        self, message: str, param: str | None = None, status: int = 400, code: str | None = None, kind: str = ""
    ) -> None:
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        """OpenAI's error body."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Parsed:
    """A checked request: ``prompt`` (text or token ids) or ``messages``, sampling options and how to answer."""

    model: str
    prompt: str | list[int] | None = None
    messages: list[dict] | None = None
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    n: int = 1
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    ignore_eos: bool = False


def parse(raw: bytes, chat: bool, max_n: int) -> Parsed:
    """Check a request body; ``chat`` for ``/v1/chat/completions``. ``n`` may be at most ``max_n``.

    Raises:
        APIError: (400) for a body that is not a JSON object, a missing or mistyped field, or a value out of range.
    """
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise APIError(f"the request body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise APIError("the request body must be a JSON object")
    for name in UNSUPPORTED:
        if body.get(name) not in (None, False, 0, [], {}):
            raise APIError(f"{name} is not supported by this server", name)
    parsed = Parsed(model=_get(body, "model", str, required=True))
    if chat:
        parsed.messages = _messages(body)
        newer = _get(body, "max_completion_tokens", int)
        parsed.max_tokens = _get(body, "max_tokens", int) if newer is None else newer
    else:
        parsed.prompt = _prompt(body)
        parsed.max_tokens = _get(body, "max_tokens", int, default=16)
    _sampling(body, parsed, max_n)
    return parsed


def _sampling(body: dict, parsed: Parsed, max_n: int) -> None:
    """Fill ``parsed``'s sampling and answer options from ``body``, checking their ranges."""
    if parsed.max_tokens is not None and parsed.max_tokens < 1:
        raise APIError(f"max_tokens must be at least 1, got {parsed.max_tokens}", "max_tokens")
    parsed.temperature = _get(body, "temperature", float, default=1.0)
    if not 0 <= parsed.temperature <= 2:
        raise APIError(f"temperature must be between 0 and 2, got {parsed.temperature}", "temperature")
    parsed.top_p = _get(body, "top_p", float)
    if parsed.top_p is not None and not 0 < parsed.top_p <= 1:
        raise APIError(f"top_p must be in (0, 1], got {parsed.top_p}", "top_p")
    top_k = _get(body, "top_k", int)
    if top_k is not None and top_k != -1 and top_k < 1:
        raise APIError(f"top_k must be -1 (every token) or at least 1, got {top_k}", "top_k")
    parsed.top_k = None if top_k in (None, -1) else top_k
    parsed.seed = _get(body, "seed", int)
    parsed.n = _get(body, "n", int, default=1)
    if not 1 <= parsed.n <= max_n:
        raise APIError(f"n must be between 1 and {max_n}, got {parsed.n}", "n")
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else [] if stop is None else stop
    if not (isinstance(stop, list) and len(stop) <= MAX_STOPS and all(isinstance(s, str) for s in stop)):
        raise APIError(f"stop must be a string or a list of up to {MAX_STOPS} strings", "stop")
    parsed.stop = stop
    parsed.stream = _get(body, "stream", bool, default=False)
    parsed.ignore_eos = _get(body, "ignore_eos", bool, default=False)
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise APIError("stream_options must be an object", "stream_options")
    parsed.include_usage = bool(options.get("include_usage", False))


def _get(body: dict, name: str, kind: type, required: bool = False, default=None):
    """``body[name]`` checked to be of ``kind`` (an int is a float too; a bool is not a number); ``default`` when
    absent or null."""
    value = body.get(name)
    if value is None:
        if required:
            raise APIError(f"you must provide a {name} parameter", name)
        return default
    number = kind in (int, float) and not isinstance(value, bool)
    if kind is float and number and isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, kind) and (number or kind not in (int, float)):
        return value
    raise APIError(f"{name} must be of type {kind.__name__}, got {json.dumps(value)[:80]}", name)


def _prompt(body: dict) -> str | list[int]:
    """The completion prompt: a string, a list of one string, or a list of token ids."""
    prompt = body.get("prompt")
    if prompt is None:
        raise APIError("you must provide a prompt parameter", "prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
        return prompt
    raise APIError("prompt must be a string, a list of one string or a list of token ids; send one prompt", "prompt")


def _messages(body: dict) -> list[dict]:
    """Chat messages as ``{"role", "content"}`` with text content (a string, or a list of text parts joined)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError("you must provide messages: a non-empty list of {role, content} objects", "messages")
    out = []
    for i, message in enumerate(messages):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)):
            raise APIError(f"messages[{i}] must be an object with a role", "messages")
        content = message.get("content") or ""
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise APIError(f"messages[{i}].content: only text parts are supported", "messages")
            content = "".join(str(p.get("text", "")) for p in content)
        if not isinstance(content, str):
            raise APIError(f"messages[{i}].content must be a string or a list of text parts", "messages")
        out.append({"role": message["role"], "content": content})
    return out


def new_id(chat: bool) -> str:
    """A fresh response id: ``chatcmpl-...`` or ``cmpl-...``."""
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    """OpenAI's ``usage`` object."""
    total = prompt_tokens + completion_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}


def choice(index: int, text: str, finish_reason: str | None, chat: bool, stream: bool, first: bool = False) -> dict:
    """One entry of ``choices``: ``text`` (completion), ``message`` (chat) or ``delta`` (chat stream; the ``first``
    delta carries the role)."""
    entry: dict = {"index": index, "logprobs": None, "finish_reason": finish_reason}
    if not chat:
        entry["text"] = text
    elif stream:
        entry["delta"] = ({"role": "assistant"} if first else {}) | ({"content": text} if text or first else {})
    else:
        entry["message"] = {"role": "assistant", "content": text}
    return entry


def envelope(rid: str, model: str, chat: bool, stream: bool, choices: list[dict], use: dict | None = None) -> dict:
    """A whole response or one stream chunk around ``choices``."""
    kind = ("chat.completion.chunk" if stream else "chat.completion") if chat else "text_completion"
    body = {"id": rid, "object": kind, "created": int(time.time()), "model": model, "choices": choices}
    if use is not None or not stream:
        body["usage"] = use
    return body


def models(name: str, created: int) -> dict:
    """The ``/v1/models`` list: the one model served."""
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "lit-gpt"}]}
