"""``SFTDataModule``: supervised fine-tuning on instruction or chat records, for ``lit-gpt fit``
(``data.class_path: lit_gpt.train.sft.SFTDataModule``), with full fine-tuning or LoRA (``model.lora``).

The records, their rendering by the model's chat template, the loss mask on the assistant turns, the padded rows and
the resumable order are ``lit_gpt.data.sft``'s; this module reads the files at setup, logs how many examples were
truncated or skipped, and serves the loaders. Validation covers every held-out example once, so ``val/loss`` is the
exact mean over their trained tokens (the assistant's, with ``mask_prompt``).
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch.utils.data import DataLoader

from lit_gpt.chat import ChatTemplate
from lit_gpt.checkpoint import load_tokenizer
from lit_gpt.data.sft import (
    ExampleBatches,
    Examples,
    PaddedRows,
    SFTData,
    encode_examples,
    held_out,
    read_records,
    validation_batches,
)
from lit_gpt.errors import ConfigError
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.train.datamodule import TokenDataModule, data_parallel_rank


def sft_tokenizer(name: str) -> Tokenizer:
    """The tokenizer ``SFTData.tokenizer`` names: that of a checkpoint (a ``.ckpt`` file, or a folder with a
    ``config.json``: exported, quantized or Hugging Face), else ``Tokenizer.from_name(name)``.

    Raises:
        ConfigError: as ``lit_gpt.checkpoint.load_tokenizer`` or ``Tokenizer.from_name`` do.
    """
    path = Path(name).expanduser()
    if (path.is_file() and path.suffix == ".ckpt") or (path.is_dir() and (path / "config.json").is_file()):
        return load_tokenizer(path)
    return Tokenizer.from_name(name)


class SFTDataModule(TokenDataModule):
    """Instruction / chat records (JSONL) as padded rows with a loss mask on the assistant turns.

    Its arguments are the fields of ``lit_gpt.data.sft.SFTData``, as keywords (``lit-gpt fit --data.help
    SFTDataModule``): ``path``, ``val_path`` (or ``val_fraction``), ``tokenizer``, ``chat_template``, ``mask_prompt``,
    ``overlong``, ``pad_multiple`` and the batch settings; ``block_size`` is linked from the model's.

    Raises:
        ConfigError: for a bad data section (``SFTData``); at setup, for a bad record or template (naming the file
            and line), or a file with no example to train on.
    """

    def __init__(self, **settings) -> None:
        super().__init__(SFTData(**settings))
        self._tokenizer: Tokenizer | None = None
        self.train_examples: Examples | None = None
        self.val_examples: Examples | None = None

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer (``sft_tokenizer(settings.tokenizer)``), loaded on first use."""
        if self._tokenizer is None:
            self._tokenizer = sft_tokenizer(self.settings.tokenizer)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def tokenizer_spec(self) -> dict:
        return self.tokenizer.spec

    def template(self) -> ChatTemplate:
        """The chat template that renders the records: ``settings.chat_template``'s file, else the tokenizer's.

        Raises:
            ConfigError: for a missing template file or one that is not valid Jinja.
        """
        source = self.settings.chat_template
        if source is not None and not Path(source).is_file():
            raise ConfigError(f"data.chat_template {source} not found: pass a Jinja file, or leave it unset")
        return ChatTemplate(self.tokenizer, Path(source).read_text(encoding="utf-8") if source else None)

    def setup(self, stage: str) -> None:
        s, template = self.settings, self.template()
        examples = encode_examples(read_records(s.path), template, s, s.path)
        if s.val_path is not None:
            self.train_examples = examples
            self.val_examples = encode_examples(read_records(s.val_path), template, s, s.val_path)
            rank_zero_info(
                f"lit-gpt: SFT training data {s.path}: {examples.summary()}; validation data {s.val_path}: "
                f"{self.val_examples.summary()}"
            )
            return
        train, val = held_out(len(examples), s.val_fraction, s.seed)
        self.train_examples, self.val_examples = examples.subset(train), examples.subset(val)
        rank_zero_info(f"lit-gpt: SFT data {s.path}: {examples.summary()}; {len(val)} held out for validation")

    def _rows(self, examples: Examples) -> PaddedRows:
        s = self.settings
        return PaddedRows(examples, self.tokenizer.eot_id, s.pad_multiple, s.block_size)

    def train_dataloader(self) -> DataLoader:
        s = self.settings
        rank, replicas = data_parallel_rank(self.trainer)
        # A resumed run continues the example order at the batch it had reached.
        start_batch = self.trainer.global_step * self.trainer.accumulate_grad_batches if self.trainer else 0
        sampler = ExampleBatches(len(self.train_examples), s.batch_size, s.seed, rank, start_batch, replicas)
        # batch_size=None: each sampler item is already a whole batch of example indices
        return DataLoader(self._rows(self.train_examples), batch_size=None, sampler=sampler, **self._loader_options())

    def val_dataloader(self) -> DataLoader:
        """Every held-out example once (this replica's share), in file order."""
        rank, replicas = data_parallel_rank(self.trainer)
        batches = validation_batches(
            len(self.val_examples), self.settings.val_batch_size or self.settings.batch_size, rank, replicas
        )
        return DataLoader(self._rows(self.val_examples), batch_size=None, sampler=batches, **self._loader_options())
