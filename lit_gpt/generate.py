"""Sampling from a trained checkpoint: ``lit-gpt generate --checkpoint PATH --prompt TEXT``.

The checkpoint carries the model config and the tokenizer spec, so no YAML is needed. Decoding recomputes
the whole (cropped) context at every step; no Lightning is imported here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from lit_gpt.config import Config, ConfigError
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[GPT, Tokenizer]:
    """Rebuild the model (in eval mode, on ``device``) and tokenizer from a Lightning ``.ckpt`` of ``LitGPT``.

    The model config and tokenizer spec come from the checkpoint's ``lit_gpt`` record (written by
    ``LitGPT.on_save_checkpoint``); the file is read with ``torch.load(weights_only=True)``.

    Raises:
        ConfigError: if the file is missing or is not a lit_gpt training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([Config]):  # hyper_parameters hold a Config when built from Python
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling raises many types for a file that is not a checkpoint
        raise ConfigError(f"{path} is not a lit_gpt checkpoint ({type(err).__name__})") from None
    record = checkpoint.get("lit_gpt") if isinstance(checkpoint, dict) else None
    if not isinstance(record, dict) or record.get("tokenizer") is None or "state_dict" not in checkpoint:
        raise ConfigError(f"{path} is not a lit_gpt training checkpoint (no model config, tokenizer or weights)")
    config = Config(**record["config"])
    state_dict = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    tokenizer_spec = record["tokenizer"]
    model = GPT(config)
    model.load_state_dict(state_dict)
    return model.to(device).eval(), Tokenizer.from_spec(tokenizer_spec)


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one token id per row from next-token ``logits`` of shape (B, V); returns (B, 1) int64.

    ``temperature`` 0 picks the most likely token (greedy). Otherwise the logits are divided by ``temperature``
    and restricted to the ``top_k`` most likely tokens and then to the nucleus: the smallest set of most likely
    tokens whose probability adds up to at least ``top_p`` (Holtzman et al. 2020, https://arxiv.org/abs/1904.09751).
    The most likely token is always allowed.

    Raises:
        ConfigError: for a negative temperature, top_k < 1, or top_p outside (0, 1].
    """
    check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1): the k-th largest logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
        drop_sorted = mass_before >= top_p  # never drops rank 0, whose mass_before is 0
        drop = torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise ConfigError unless temperature >= 0, top_k is None or >= 1, and top_p is None or in (0, 1]."""
    if temperature < 0:
        raise ConfigError(f"--temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigError(f"--top_p must be in (0, 1], got {top_p}")


@torch.no_grad()
def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    vocab_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend token ids ``idx`` (B, T) by ``max_new_tokens`` sampled tokens; returns (B, T + max_new_tokens).

    Each step feeds the last ``block_size`` tokens to the model. Ids >= ``vocab_size`` (the padding rows of a
    padded vocabulary) are never sampled. See ``sample_next`` for the sampling options and errors.
    """
    check_sampling(temperature, top_k, top_p)
    block_size = model.config.block_size
    for _ in range(max_new_tokens):
        logits = model(idx[:, -block_size:])[:, -1, :]  # (B, V)
        if vocab_size is not None:
            logits[:, vocab_size:] = float("-inf")
        idx = torch.cat((idx, sample_next(logits, temperature, top_k, top_p, generator)), dim=1)
    return idx


def main(argv: list[str] | None = None) -> None:
    """``lit-gpt generate``: print ``--num_samples`` continuations of ``--prompt``."""
    parser = argparse.ArgumentParser(prog="lit-gpt generate", description="Sample text from a lit_gpt checkpoint.")
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by `lit-gpt fit`")
    parser.add_argument("--prompt", default="", help="text to continue; empty starts from end-of-text")
    parser.add_argument("--max_new_tokens", type=int, default=500, help="tokens to generate per sample")
    parser.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0 is greedy")
    parser.add_argument("--top_k", type=int, default=None, help="sample among the k most likely tokens only")
    parser.add_argument("--top_p", type=float, default=None, help="nucleus sampling mass, in (0, 1]")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible samples")
    parser.add_argument("--num_samples", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    check_sampling(args.temperature, args.top_k, args.top_p)
    if args.max_new_tokens < 0 or args.num_samples < 1:
        raise ConfigError("--max_new_tokens must be >= 0 and --num_samples >= 1")

    model, tokenizer = load_checkpoint(args.checkpoint, args.device)
    ids = tokenizer.encode(args.prompt) if args.prompt else [tokenizer.eot_id]
    block_size = model.config.block_size
    if len(ids) > block_size:
        print(
            f"warning: the prompt has {len(ids)} tokens, more than block_size {block_size}; keeping the last {block_size}",
            file=sys.stderr,
        )
        ids = ids[-block_size:]
    generator = torch.Generator(args.device)
    if args.seed is not None:
        generator.manual_seed(args.seed)
    else:
        generator.seed()
    idx = torch.tensor([ids], dtype=torch.long, device=args.device)
    for i in range(args.num_samples):
        out = generate(
            model, idx, args.max_new_tokens, args.temperature, args.top_k, args.top_p, tokenizer.vocab_size, generator
        )
        if i:
            print("\n" + "-" * 40)
        print(tokenizer.decode(out[0].tolist()) if args.prompt else tokenizer.decode(out[0, 1:].tolist()))
