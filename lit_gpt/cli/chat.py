"""``lit-gpt chat --checkpoint PATH``: a multi-turn chat in the terminal with the model's chat template.

Each turn renders the whole conversation with the template (``lit_gpt.chat.ChatTemplate``: the model's Jinja
template, ChatML for models trained here) and the assistant's generation prompt, then streams the reply as it is
sampled (``lit_gpt.generate.iter_tokens``), up to the end of the turn: an id of ``ChatTemplate.stop_ids``, or a text
of ``stop_texts`` where the tokenizer spells the end of turn in several tokens (ChatML on GPT-2's BPE). ``/reset``
starts a new conversation and ``/exit`` (or the end of input) leaves. A conversation longer than ``block_size`` is
seen by its last ``block_size`` tokens. No Lightning is imported.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from lit_gpt.chat import ChatTemplate
from lit_gpt.cli.args import ArgumentParser
from lit_gpt.cli.generate import stream_text
from lit_gpt.cli.loading import add_model_arguments, load_for_inference
from lit_gpt.errors import ConfigError
from lit_gpt.generate import check_sampling, iter_tokens
from lit_gpt.model import GPT

PROMPT = ">>> "
"""What the chat prints before reading each user turn."""


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lit-gpt chat", description="Chat with a lit_gpt checkpoint in the terminal.")
    add_model_arguments(parser)
    parser.add_argument("--system", default=None, help="a system message that starts every conversation")
    parser.add_argument("--chat_template", default=None, help="a Jinja chat template file instead of the model's")
    parser.add_argument("--max_new_tokens", type=int, default=256, help="tokens per reply at most")
    parser.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0 is greedy")
    parser.add_argument("--top_k", type=int, default=None, help="sample among the k most likely tokens only")
    parser.add_argument("--top_p", type=float, default=None, help="nucleus sampling mass, in (0, 1]")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible replies")
    return parser


def main(args: list[str]) -> None:
    """Chat until ``/exit`` or the end of input (``args`` is ``["chat", flags...]``).

    Raises:
        ConfigError: for bad flags or sampling options, an unusable checkpoint or chat template file. A conversation
            the template cannot render is one ``error:`` line, and the chat goes on without that turn.
    """
    opts = _parser().parse_args(args[1:])
    try:
        check_sampling(opts.temperature, opts.top_k, opts.top_p)
    except ConfigError as err:
        raise ConfigError(f"--{err}") from None  # the message starts with the option's name
    if opts.max_new_tokens < 1:
        raise ConfigError(f"--max_new_tokens must be >= 1, got {opts.max_new_tokens}")
    if opts.chat_template is not None and not Path(opts.chat_template).is_file():
        raise ConfigError(f"--chat_template {opts.chat_template} not found: pass a Jinja file")
    model, tokenizer, device = load_for_inference(opts)
    source = Path(opts.chat_template).read_text(encoding="utf-8") if opts.chat_template else None
    template = ChatTemplate(tokenizer, source)
    generator = torch.Generator(device)
    generator.manual_seed(opts.seed) if opts.seed is not None else generator.seed()
    start = [{"role": "system", "content": opts.system}] if opts.system else []
    messages = list(start)
    print(f"lit-gpt chat: {opts.checkpoint}. /reset starts over, /exit leaves.", flush=True)
    while True:
        try:
            line = input(PROMPT)
        except EOFError:
            print()
            return
        if line.strip() == "/exit":
            return
        if line.strip() == "/reset":
            messages = list(start)
            print("(a new conversation)", flush=True)
            continue
        if not line.strip():
            continue
        reply = _reply(model, template, [*messages, {"role": "user", "content": line}], opts, generator)
        if reply is not None:
            messages += [{"role": "user", "content": line}, {"role": "assistant", "content": reply}]


def _reply(model: GPT, template: ChatTemplate, messages: list[dict], opts, generator: torch.Generator) -> str | None:
    """Stream the assistant's reply to ``messages`` and return it; None (after an ``error:`` line) when the template
    cannot render them."""
    try:
        ids = template.encode(messages, add_generation_prompt=True)
    except ConfigError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
        return None
    block_size = model.config.block_size
    if len(ids) > block_size:
        print(f"warning: the conversation has {len(ids)} tokens; the model sees the last {block_size}", file=sys.stderr)
    device = model.lm_head.weight.device
    tokens = iter_tokens(
        model,
        torch.tensor([ids], device=device),
        opts.max_new_tokens,
        temperature=opts.temperature,
        top_k=opts.top_k,
        top_p=opts.top_p,
        vocab_size=template.tokenizer.vocab_size,
        generator=generator,
    )
    try:
        return stream_text(tokens, template.tokenizer, template.stop_texts, set(template.stop_ids))
    finally:
        tokens.close()  # frees the KV cache when the reply stopped early
