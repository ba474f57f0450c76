"""``lit-gpt presets [--vocab_size N]``: each model preset's shape and exact parameter count (``lit_gpt.config``).
Standard library only: it imports neither torch nor Lightning."""

from __future__ import annotations

from lit_gpt.cli.args import ArgumentParser
from lit_gpt.config import PRESETS, Config


def main(args: list[str]) -> None:
    """Print the preset table for ``args`` (``["presets", flags...]``).

    Raises:
        ConfigError: for a bad flag or vocabulary size.
    """
    parser = ArgumentParser(prog="lit-gpt presets", description=__doc__.split("\n")[0])
    parser.add_argument("--vocab_size", type=int, default=50257, help="vocabulary size (default: GPT-2's 50257)")
    vocab_size = parser.parse_args(args[1:]).vocab_size
    print(f"{'preset':<12}{'n_embd':>8}{'n_head':>8}{'n_layer':>8}{'block':>7}  {'parameters':>13}  style")
    for name in PRESETS:
        config = Config.from_name(name, vocab_size=vocab_size)
        style = "gpt-2" if config.position_embedding == "learned" else "llama"
        print(
            f"{name:<12}{config.n_embd:>8}{config.n_head:>8}{config.n_layer:>8}{config.block_size:>7}"
            f"  {config.num_params():>13,}  {style}"
        )
