"""``StreamingTextDataModule``: training windows streamed with litdata from a folder or object storage, for corpora
that do not fit on every machine (``data.class_path: lit_gpt.train.streaming.StreamingTextDataModule``).

The data comes from ``lit-gpt prepare``'s litdata export (``lit_gpt.data.litdata_export``). Training windows, their
order, mixtures and the exact position are ``lit_gpt.data.streaming_windows``'s. Validation reads each corpus's whole
validation split into memory and covers it exactly once, as ``TextDataModule`` does, so ``val/loss`` of the two
modules on the same prepared corpus is the same for the same model.

Exact resume: ``state_dict`` returns the stream's position after the batch that the trainer's step reached
(``global_step x accumulate_grad_batches`` batches), which Lightning stores in the checkpoint; ``load_state_dict``
takes it back before ``train_dataloader`` builds the stream. A resume must keep ``batch_size``, ``block_size``,
``num_workers``, the number of devices, the seed and the corpora: the order of the stream depends on all of them.
litdata (``pip install -e ".[stream]"`` plus litdata itself, see README) is imported only when the module is used.
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from lit_gpt.data.litdata_export import import_litdata, read_export_meta
from lit_gpt.data.settings import StreamingCorpus, StreamingData
from lit_gpt.data.streaming_windows import MixedStream, int64_batch, open_train, read_val_tokens
from lit_gpt.errors import ConfigError
from lit_gpt.train.datamodule import TokenDataModule, data_parallel_rank

STATE_FORMAT = 1


class StreamingTextDataModule(TokenDataModule):
    """Train/val token windows streamed from one or more litdata exports (local folders or URLs).

    Its arguments are the fields of ``lit_gpt.data.settings.StreamingData``, as keywords (documented there, and by
    ``lit-gpt fit --data.help lit_gpt.train.streaming.StreamingTextDataModule``): ``input_dir`` or ``mixture``,
    litdata's cache, and the batch settings. The data module holds them as ``settings``.

    Raises:
        ConfigError: for a bad data section (see ``StreamingData``), or without litdata.
    """

    def __init__(self, **settings) -> None:
        super().__init__(StreamingData(**settings))
        import_litdata()
        self.corpora = self.settings.corpora()
        self._metas: list[dict] | None = None
        self._resume: dict | None = None
        self.stream: MixedStream | None = None

    def metas(self) -> list[dict]:
        """Each export's ``meta.json`` (downloaded once per process for a URL).

        Raises:
            ConfigError: for a folder or URL without an export's ``meta.json``.
        """
        if self._metas is None:
            metas = [read_export_meta(c.input_dir, self.settings.cache_dir) for c in self.corpora]
            for corpus, meta in zip(self.corpora, metas):
                if meta is None or "litdata" not in meta:
                    raise ConfigError(
                        f"{corpus.input_dir} has no meta.json of a litdata export; write it with lit-gpt prepare "
                        "(format litdata)"
                    )
            self._metas = metas
        return self._metas

    def setup(self, stage: str) -> None:
        self.vocab_size  # noqa: B018  (reads the metadata, and checks that the corpora share a tokenizer)
        self.val_tokens = []
        for corpus, meta in zip(self.corpora, self.metas()):
            longest_chunk = min(meta["tokens"]["train"], meta["litdata"]["chunk_tokens"])
            self._check_windows(corpus.input_dir, "training", longest_chunk)
            self.val_tokens.append(read_val_tokens(corpus.input_dir, meta, self.settings.cache_dir))
            self._check_windows(corpus.input_dir, "validation", len(self.val_tokens[-1]))
        self._setup_documents()

    def _topology(self) -> dict:
        """What the order of the stream depends on, besides the data: a resume must find the same."""
        s = self.settings
        return {
            "batch_size": s.batch_size,
            "block_size": s.block_size,
            "num_workers": s.num_workers,
            "replicas": data_parallel_rank(self.trainer)[1],
            "seed": s.seed,
            "corpora": [c.input_dir for c in self.corpora],
            "weights": [float(w) for w in self.weights],
        }

    def train_dataloader(self) -> MixedStream:
        """The endless stream of training batches, continuing from a loaded position."""
        rank, replicas = data_parallel_rank(self.trainer)
        cuda = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        loaders = [self._train_loader(corpus, rank, replicas, cuda) for corpus in self.corpora]
        s = self.settings
        self.stream = MixedStream(loaders, self.weights, s.batch_size, s.seed, self._start())
        return self.stream

    def _train_loader(self, corpus: StreamingCorpus, rank: int, replicas: int, cuda: bool):
        """The ``StreamingDataLoader`` of one export's training windows for this data-parallel rank.

        Raises:
            ConfigError: when litdata's ranks are not the strategy's data-parallel ranks, or the export holds no
                whole batch for every worker of every device.
        """
        from litdata import StreamingDataLoader

        s = self.settings
        dataset = open_train(corpus.input_dir, s.block_size, s.seed, s.cache_dir, s.max_cache_size)
        env = dataset.distributed_env
        if (env.global_rank, env.world_size) != (rank, replicas):
            raise ConfigError(
                f"streaming data follows torch.distributed's ranks ({env.global_rank} of {env.world_size}), but this "
                f"strategy's data-parallel rank is {rank} of {replicas} (tensor parallelism): use TextDataModule"
            )
        # a generator of its own keeps the workers' seed draw off torch's global one (dropout's)
        loader = StreamingDataLoader(
            dataset,
            batch_size=s.batch_size,
            num_workers=s.num_workers,
            drop_last=True,
            collate_fn=int64_batch,
            pin_memory=cuda,
            generator=torch.Generator(),
        )
        if len(loader) == 0:
            raise ConfigError(
                f"{corpus.input_dir} has fewer than batch_size x num_workers x devices windows of block_size + 1 "
                "tokens; use a larger corpus, fewer workers or devices"
            )
        return loader

    def _consumed(self) -> int:
        """Batches the trainer's steps have consumed."""
        return self.trainer.global_step * self.trainer.accumulate_grad_batches if self.trainer is not None else 0

    def _start(self) -> dict:
        """The position to continue from: the loaded one (checked against this run's topology), or every corpus at
        its beginning."""
        if self._resume is None:
            if self._consumed():
                rank_zero_warn(
                    "the checkpoint holds no stream position (another data module wrote it): every "
                    "corpus starts at its beginning"
                )
            return {"batch": self._consumed(), "corpora": [[0, 0, 0] for _ in self.corpora]}
        saved = self._resume["topology"]
        if saved != self._topology():
            changed = ", ".join(f"{k} {saved.get(k)} -> {v}" for k, v in self._topology().items() if saved.get(k) != v)
            raise ConfigError(
                f"cannot continue the stream exactly: {changed}; resume with the settings of the run "
                "that wrote the checkpoint"
            )
        return self._resume["position"]

    def state_dict(self) -> dict:
        """The stream's position after the batches the trainer's step consumed (stored in checkpoints)."""
        if self.stream is None:
            return self._resume or {}
        position = self.stream.position_at(self._consumed())
        return {"format": STATE_FORMAT, "topology": self._topology(), "position": position}

    def load_state_dict(self, state_dict: dict) -> None:
        """Keep a checkpoint's position for ``train_dataloader``."""
        if state_dict and state_dict.get("format") != STATE_FORMAT:
            raise ConfigError(
                f"the checkpoint's stream position has format {state_dict.get('format')}, this version "
                f"reads {STATE_FORMAT}"
            )
        self._resume = state_dict or None
