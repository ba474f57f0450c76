"""The FastAPI application of ``lit-gpt serve``: OpenAI's routes over a running ``lit_gpt.engine.Engine``.

Each HTTP request is checked (``lit_gpt.serve.protocol``), encoded (a completion prompt as ``lit-gpt generate``
encodes it; chat messages with ``lit_gpt.chat.ChatTemplate``, the checkpoint's template or ChatML), and submitted to
the engine as ``n`` requests, which decode in the engine's batch together with every other client's. Tokens come back
from the engine's thread into the request's asyncio queue; a streamed answer is sent as server-sent events ending with
``data: [DONE]``. A stop string, or a client that goes away mid-stream, cancels the engine requests, which frees their
batch slots at the next step. Errors use OpenAI's body (``APIError.body``), unknown routes included.

FastAPI is imported in ``build_app`` only (the ``serve`` extra). This module does not postpone annotations: FastAPI reads
the routes' ``fastapi.Request`` annotations, which name a module imported inside ``build_app``.
"""

import asyncio
import json
import time
from importlib import resources

from lit_gpt.chat import ChatTemplate
from lit_gpt.engine import Engine, Request, Sampling
from lit_gpt.errors import ConfigError
from lit_gpt.extras import require
from lit_gpt.serve import protocol
from lit_gpt.serve.protocol import APIError, Parsed
from lit_gpt.serve.text import TextStream
from lit_gpt.tokenizer import Tokenizer


class Service:
    """What the routes do, without HTTP: checks a parsed request against the model, runs it on ``engine``, and
    builds the answer. ``max_n`` bounds ``n`` (default the engine's batch size)."""

    def __init__(self, engine: Engine, tokenizer: Tokenizer, model_name: str, max_n: int | None = None) -> None:
        self.engine, self.tokenizer, self.model_name = engine, tokenizer, model_name
        self.max_n = max_n or engine.cache.slots
        self.template = ChatTemplate(tokenizer, tokenizer.chat_template)
        self.created = int(time.time())

    def encode(self, parsed: Parsed) -> tuple[list[int], tuple[int, ...], list[str]]:
        """The prompt ids, the stop ids (none with ``ignore_eos``) and the stop strings of a request.

        Raises:
            APIError: 404 for another model's name; 400 for a prompt the tokenizer or chat template refuses, token ids
                outside the vocabulary, or a prompt and ``max_tokens`` longer than the context.
        """
        if parsed.model != self.model_name:
            message = f"The model `{parsed.model}` does not exist; this server serves `{self.model_name}`"
            raise APIError(message, "model", 404, "model_not_found")
        tok, stops = self.tokenizer, list(parsed.stop)
        try:
            if parsed.messages is not None:
                ids = self.template.encode(parsed.messages, add_generation_prompt=True)
                stop_ids, stops = tuple(self.template.stop_ids), stops + self.template.stop_texts
            elif isinstance(parsed.prompt, str):
                ids, stop_ids = (tok.document_prefix + tok.encode(parsed.prompt)) or [tok.eot_id], (tok.eot_id,)
            else:
                ids, stop_ids = list(parsed.prompt), (tok.eot_id,)
        except ConfigError as err:
            raise APIError(str(err), "messages" if parsed.messages is not None else "prompt") from None
        if any(not 0 <= i < tok.vocab_size for i in ids):
            raise APIError(f"prompt token ids must be in [0, {tok.vocab_size})", "prompt")
        self._fit(parsed, len(ids))
        return ids, () if parsed.ignore_eos else stop_ids, stops

    def _fit(self, parsed: Parsed, prompt_tokens: int) -> None:
        """Default chat's ``max_tokens`` to the rest of the context, and refuse a request that does not fit."""
        context = self.engine.block_size
        if parsed.max_tokens is None:
            parsed.max_tokens = max(1, context - prompt_tokens)
        if prompt_tokens + parsed.max_tokens > context:
            raise APIError(
                f"This model's maximum context length is {context} tokens. However, you requested "
                f"{prompt_tokens + parsed.max_tokens} tokens ({prompt_tokens} in the prompt, {parsed.max_tokens} for "
                "the completion). Please reduce the prompt or max_tokens.",
                "max_tokens" if prompt_tokens < context else "prompt",
                code="context_length_exceeded",
            )

    def submit(self, parsed: Parsed, ids: list[int], stop_ids: tuple[int, ...]) -> tuple[asyncio.Queue, list[Request]]:
        """Submit the ``n`` choices; their tokens arrive in the queue as ``(choice, token, finish_reason)``."""
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        requests = []
        for index in range(parsed.n):
            seed = None if parsed.seed is None else parsed.seed + index
            sampling = Sampling(parsed.max_tokens, parsed.temperature, parsed.top_k, parsed.top_p, seed, stop_ids)

            def emit(token, reason, index=index):
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, (index, token, reason))
                except RuntimeError:  # the event loop closed (the server is shutting down): nobody is listening
                    pass

            try:
                requests.append(self.engine.submit(ids, sampling, emit))
            except ConfigError as err:
                for request in requests:
                    request.cancel()
                raise APIError(str(err)) from None
        return queue, requests

    async def events(self, parsed: Parsed, queue: asyncio.Queue, requests: list[Request], stops: list[str]):
        """Yield ``(choice, text_delta, finish_reason, completion_tokens)`` until every choice finished; a choice that
        meets a stop string is cancelled in the engine and finishes with ``"stop"``."""
        streams = [TextStream(self.tokenizer, stops) for _ in requests]
        done = [False] * len(requests)
        while not all(done):
            index, token, reason = await queue.get()
            if done[index]:
                continue
            stream = streams[index]
            if token is not None:
                delta, stopped = stream.push(token)
                if stopped:
                    requests[index].cancel()
                    reason = "stop"
                if delta or not stopped:
                    yield index, delta, None, stream.tokens
                if not stopped:
                    continue
            if reason.startswith("error"):
                raise APIError(f"generation failed: {reason[len('error: ') :]}", status=500)
            done[index] = True
            yield index, stream.finish(), reason, stream.tokens

    async def complete(self, parsed: Parsed, chat: bool, prompt_tokens: int, queue, requests, stops) -> dict:
        """The whole (non-streamed) answer."""
        texts, reasons, counts = [""] * parsed.n, [None] * parsed.n, [0] * parsed.n
        async for index, delta, reason, count in self.events(parsed, queue, requests, stops):
            texts[index] += delta
            reasons[index], counts[index] = reason or reasons[index], count
        choices = [protocol.choice(i, texts[i], reasons[i], chat, stream=False) for i in range(parsed.n)]
        use = protocol.usage(prompt_tokens, sum(counts))
        return protocol.envelope(protocol.new_id(chat), self.model_name, chat, False, choices, use)

    async def stream(self, parsed: Parsed, chat: bool, prompt_tokens: int, queue, requests, stops):
        """The answer as server-sent events; cancels the engine requests when the client goes away."""
        rid, counts = protocol.new_id(chat), [0] * parsed.n

        def chunk(choices: list[dict], use: dict | None = None) -> str:
            return "data: " + json.dumps(protocol.envelope(rid, self.model_name, chat, True, choices, use)) + "\n\n"

        try:
            if chat:
                yield chunk([protocol.choice(i, "", None, chat, True, first=True) for i in range(parsed.n)])
            async for index, delta, reason, count in self.events(parsed, queue, requests, stops):
                counts[index] = count
                if delta or reason:
                    yield chunk([protocol.choice(index, delta, reason, chat, True)])
            if parsed.include_usage:
                yield chunk([], protocol.usage(prompt_tokens, sum(counts)))
        except APIError as err:
            yield "data: " + json.dumps(err.body()) + "\n\n"
        finally:
            for request in requests:
                request.cancel()
        yield "data: [DONE]\n\n"


def build_app(service: Service):
    """The FastAPI application serving ``service``.

    Raises:
        ConfigError: when FastAPI (the ``serve`` extra) is not installed.
    """
    fastapi = require("fastapi", "serve", "lit-gpt serve")
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    app = fastapi.FastAPI(title="lit-gpt", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(APIError)
    async def api_error(request, err: APIError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException):
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        body = APIError(f"{request.method} {request.url.path}: {err.detail}", status=err.status_code, kind=kind).body()
        return JSONResponse(body, status_code=err.status_code)

    async def answer(request, chat: bool):
        parsed = protocol.parse(await request.body(), chat, service.max_n)
        ids, stop_ids, stops = service.encode(parsed)
        queue, requests = service.submit(parsed, ids, stop_ids)
        if parsed.stream:
            events = service.stream(parsed, chat, len(ids), queue, requests, stops)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            return await service.complete(parsed, chat, len(ids), queue, requests, stops)
        finally:
            for r in requests:
                r.cancel()

    @app.post("/v1/completions")
    async def completions(request: fastapi.Request):
        return await answer(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: fastapi.Request):
        return await answer(request, chat=True)

    @app.get("/v1/models")
    async def list_models():
        return protocol.models(service.model_name, service.created)

    @app.get("/health")
    async def health():
        return {"status": "ok", "pending": service.engine.pending()}

    page = resources.files("lit_gpt.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/")
    async def playground():
        return HTMLResponse(page)

    return app
