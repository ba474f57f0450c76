"""What every command shares: the usage text, argument parsing for the commands that do not go through
LightningCLI, whose errors become ``ConfigError`` (one ``error:`` line from ``lit_gpt.cli.main``) instead of
argparse's usage text and exit, and the ``ConfigError`` inside jsonargparse's errors."""

from __future__ import annotations

import argparse

from lit_gpt.errors import ConfigError

USAGE = """\
usage: lit-gpt {fit,validate,test} --config CONFIG.yaml [--section.key VALUE ...]
       lit-gpt prepare --config CONFIG.yaml [--data.key VALUE ...] [--data.format litdata --out DIR_OR_URL]
       lit-gpt lr-find --config CONFIG.yaml [--section.key VALUE ...] [--lr_find.num_training N --lr_find.plot PNG ...]
       lit-gpt generate --checkpoint PATH --prompt TEXT [--max_new_tokens N --temperature T --top_k K --top_p P ...]
                        [--quantize int8|int4]
       lit-gpt chat --checkpoint PATH [--system TEXT --max_new_tokens N --temperature T --top_k K --top_p P ...]
       lit-gpt export --checkpoint PATH --out DIR [--format hf|lit_gpt|peft] [--merge]
       lit-gpt quantize --checkpoint PATH --out DIR --mode int8|int4 [--group_size G]
       lit-gpt evaluate --checkpoint PATH --data.path FILE_OR_GLOB [--block_size N --stride S --by_position --out JSON]
       lit-gpt evaluate --checkpoint PATH --passkey [--passkey.lengths N,N... --passkey.depths D,D... --out JSON]
       lit-gpt evaluate --checkpoint PATH --tasks NAME[,NAME...] [--include_path DIR --limit N --out JSON]
       lit-gpt serve --checkpoint PATH [--host H --port P --max_batch_size N --quantize int8|int4]
       lit-gpt presets [--vocab_size N]
       lit-gpt train-tokenizer --data.path PATH --vocab_size N --out DIR [--val_path PATH] [--val_fraction F]

Train (fit, also LoRA: model.lora; instruction tuning: lit_gpt.train.sft.SFTDataModule), validate, sample, chat,
serve, quantize and evaluate LLaMA- or GPT-2-style language models.
`lit-gpt COMMAND --help` lists a command's options (`lit-gpt fit --help`: every training option)."""
"""``lit-gpt --help``, also the description of ``lit-gpt fit --help``."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors raise ``ConfigError`` naming the command's ``--help``.

    ``--help`` still prints the help and exits with status 0.
    """

    def __init__(self, prog: str, description: str, **kwargs) -> None:
        super().__init__(prog=prog, description=description, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def config_error_cause(err: BaseException) -> ConfigError | None:
    """The ``ConfigError`` that ``err`` is or was raised from, or None.

    jsonargparse re-raises an error of a class it instantiates (a data module, a ``lit_gpt.data.settings`` dataclass
    in a list) as a ``ValueError`` listing every type it tried; the command prints the ``ConfigError`` alone.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ConfigError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
