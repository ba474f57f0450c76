"""``lit-gpt serve --checkpoint PATH [--quantize int8|int4] [--host --port] [--max_batch_size N]``: an
OpenAI-compatible HTTP server (``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``, ``/health``) and a
playground page at ``/``.

Any checkpoint form ``lit-gpt generate`` reads is served (``lit_gpt.cli.loading``). Requests are decoded together by
``lit_gpt.engine.Engine`` (continuous batching, up to ``--max_batch_size`` at once); the HTTP layer is
``lit_gpt.serve.app`` on uvicorn (the ``serve`` extra). No Lightning is imported.
"""

from __future__ import annotations

from pathlib import Path

from lit_gpt.cli.args import ArgumentParser
from lit_gpt.cli.loading import add_model_arguments, load_for_inference
from lit_gpt.engine import Engine
from lit_gpt.errors import ConfigError
from lit_gpt.extras import require


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lit-gpt serve", description="Serve a lit_gpt checkpoint over OpenAI's HTTP API.")
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    parser.add_argument("--max_batch_size", type=int, default=16, help="requests decoded together; more wait")
    parser.add_argument(
        "--model_name", default=None, help="the model id clients send (default: the checkpoint's file or folder name)"
    )
    return parser


def main(args: list[str]) -> None:
    """Serve until interrupted (``args`` is ``["serve", flags...]``).

    Raises:
        ConfigError: for bad flags, an unusable checkpoint, or a missing ``serve`` extra.
    """
    opts = _parser().parse_args(args[1:])
    if opts.max_batch_size < 1:
        raise ConfigError(f"--max_batch_size must be >= 1, got {opts.max_batch_size}")
    if not 0 <= opts.port < 65536:
        raise ConfigError(f"--port must be in 0..65535, got {opts.port}")
    uvicorn = require("uvicorn", "serve", "lit-gpt serve")
    from lit_gpt.serve.app import Service, build_app

    model, tokenizer, _ = load_for_inference(opts)
    if tokenizer is None:
        raise ConfigError(f"{opts.checkpoint} has no tokenizer lit_gpt can use; serve a checkpoint with one")
    name = opts.model_name or Path(str(opts.checkpoint).rstrip("/")).name
    engine = Engine(model, opts.max_batch_size, vocab_size=tokenizer.vocab_size)
    app = build_app(Service(engine, tokenizer, name))
    engine.start()
    print(f"serving {name!r} on http://{opts.host}:{opts.port} (OpenAI API under /v1, playground at /)", flush=True)
    try:
        uvicorn.run(app, host=opts.host, port=opts.port, log_level="warning")
    finally:
        engine.stop()
