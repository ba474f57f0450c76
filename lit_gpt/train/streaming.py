"""``StreamingTextDataModule``: training windows streamed with litdata from a folder or object storage, for corpora
that do not fit on every machine; ``--data.class_path lit_gpt.train.streaming.StreamingTextDataModule``.

The data comes from ``lit-gpt prepare --data.format litdata --out DIR_OR_URL`` (``lit_gpt.data.litdata_export``).
Training windows, their order, mixtures and the exact position are ``lit_gpt.data.streaming_windows``'s. Validation
reads each corpus's whole validation split into memory and covers it exactly once, as ``TextDataModule`` does, so
``val/loss`` of the two modules on the same prepared corpus is the same for the same model.

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
from lit_gpt.data.mixture import StreamingCorpus, mixture_weights
from lit_gpt.data.streaming_windows import MixedStream, int64_batch, open_train, read_val_tokens
from lit_gpt.errors import ConfigError
from lit_gpt.train.datamodule import TokenDataModule, data_parallel_rank

STATE_FORMAT = 1


class StreamingTextDataModule(TokenDataModule):
    """Train/val token windows streamed from one or more litdata exports (local folders or URLs).

    Args:
        input_dir: a folder or URL (``s3://...``) written by ``lit-gpt prepare --data.format litdata --out``.
        mixture: several exports with weights (``lit_gpt.data.mixture.StreamingCorpus``: ``name``, ``input_dir``,
            ``weight``) instead of ``input_dir``; validation then logs ``val/loss/<name>`` per corpus and their
            weighted sum as ``val/loss``.
        block_size: tokens per training window; linked from ``model.config.block_size`` on the command line.
        batch_size: training windows per batch (per device).
        val_batch_size: validation windows per batch (per device); None as in ``TextDataModule``.
        seed: seed of litdata's shuffle and of a mixture's draws.
        num_workers: DataLoader worker processes per corpus (each reads and decodes chunks while the model trains;
            the validation loaders use as many).
        cache_dir: where litdata keeps the chunks it downloads from a URL (default: litdata's, under
            ``~/.lightning``), and where ``meta.json`` is fetched to.
        max_cache_size: how much of that cache litdata may fill (e.g. ``"50GB"``; None: litdata's default).
    """

    def __init__(
        self,
        input_dir: str | None = None,
        mixture: list[StreamingCorpus] | None = None,
        block_size: int = 256,
        batch_size: int = 12,
        val_batch_size: int | None = None,
        seed: int = 1337,
        num_workers: int = 0,
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
    ) -> None:
        super().__init__()
        if (input_dir is None) == (mixture is None):
            raise ConfigError("StreamingTextDataModule needs data.input_dir or data.mixture (one of them)")
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise ConfigError(f"data.batch_size and data.val_batch_size must be positive integers, got {batch_size} "
                              f"and {val_batch_size}")  # fmt: skip
        import_litdata()
        self.corpora = list(mixture) if mixture is not None else [StreamingCorpus("corpus", input_dir)]
        self.weights = mixture_weights(self.corpora)
        self.names = [c.name for c in self.corpora] if mixture is not None else None
        self.block_size, self.batch_size, self.val_batch_size = block_size, batch_size, val_batch_size
        self.seed, self.num_workers, self.cache_dir, self.max_cache_size = seed, num_workers, cache_dir, max_cache_size
        self._metas: list[dict] | None = None
        self._resume: dict | None = None
        self.stream: MixedStream | None = None
        self.val_tokens = []

    def metas(self) -> list[dict]:
        """Each export's ``meta.json`` (downloaded once per process for a URL).

        Raises:
            ConfigError: for a folder or URL without an export's ``meta.json``.
        """
        if self._metas is None:
            metas = [read_export_meta(c.input_dir, self.cache_dir) for c in self.corpora]
            for corpus, meta in zip(self.corpora, metas):
                if meta is None or "litdata" not in meta:
                    raise ConfigError(f"{corpus.input_dir} has no meta.json of a litdata export; write it with lit-gpt "
                                      "prepare --config ... --data.format litdata --out DIR_OR_URL")  # fmt: skip
            self._metas = metas
        return self._metas

    def setup(self, stage: str) -> None:
        self.vocab_size  # noqa: B018  (reads the metadata, and checks that the corpora share a tokenizer)
        self.val_tokens = []
        for corpus, meta in zip(self.corpora, self.metas()):
            longest_chunk = min(meta["tokens"]["train"], meta["litdata"]["chunk_tokens"])
            self._check_windows(corpus.input_dir, "training", longest_chunk)
            self.val_tokens.append(read_val_tokens(corpus.input_dir, meta, self.cache_dir))
            self._check_windows(corpus.input_dir, "validation", len(self.val_tokens[-1]))

    def _topology(self) -> dict:
        """What the order of the stream depends on, besides the data: a resume must find the same."""
        return {"batch_size": self.batch_size, "block_size": self.block_size, "num_workers": self.num_workers,
                "replicas": data_parallel_rank(self.trainer)[1], "seed": self.seed,
                "corpora": [c.input_dir for c in self.corpora],
                "weights": [float(w) for w in self.weights]}  # fmt: skip

    def train_dataloader(self) -> MixedStream:
        """The endless stream of training batches, continuing from a loaded position."""
        from litdata import StreamingDataLoader

        rank, replicas = data_parallel_rank(self.trainer)
        cuda = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        loaders = []
        for corpus in self.corpora:
            dataset = open_train(corpus.input_dir, self.block_size, self.seed, self.cache_dir, self.max_cache_size)
            env = dataset.distributed_env
            if (env.global_rank, env.world_size) != (rank, replicas):
                raise ConfigError(f"streaming data follows torch.distributed's ranks ({env.global_rank} of "
                                  f"{env.world_size}), but this strategy's data-parallel rank is {rank} of {replicas} "
                                  "(tensor parallelism): use TextDataModule")  # fmt: skip
            # a generator of its own keeps the workers' seed draw off torch's global one (dropout's)
            loader = StreamingDataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                                         drop_last=True, collate_fn=int64_batch, pin_memory=cuda,
                                         generator=torch.Generator())  # fmt: skip
            if len(loader) == 0:
                raise ConfigError(f"{corpus.input_dir} has fewer than batch_size x num_workers x devices windows of "
                                  "block_size + 1 tokens; use a larger corpus, fewer workers or devices")  # fmt: skip
            loaders.append(loader)
        self.stream = MixedStream(loaders, self.weights, self.batch_size, self.seed, self._start())
        return self.stream

    def _consumed(self) -> int:
        """Batches the trainer's steps have consumed."""
        return self.trainer.global_step * self.trainer.accumulate_grad_batches if self.trainer is not None else 0

    def _start(self) -> dict:
        """The position to continue from: the loaded one (checked against this run's topology), or every corpus at
        its beginning."""
        if self._resume is None:
            if self._consumed():
                rank_zero_warn("the checkpoint holds no stream position (another data module wrote it): every "
                               "corpus starts at its beginning")  # fmt: skip
            return {"batch": self._consumed(), "corpora": [[0, 0, 0] for _ in self.corpora]}
        saved = self._resume["topology"]
        if saved != self._topology():
            changed = ", ".join(f"{k} {saved.get(k)} -> {v}" for k, v in self._topology().items() if saved.get(k) != v)
            raise ConfigError(f"cannot continue the stream exactly: {changed}; resume with the settings of the run "
                              "that wrote the checkpoint")  # fmt: skip
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
            raise ConfigError(f"the checkpoint's stream position has format {state_dict.get('format')}, this version "
                              f"reads {STATE_FORMAT}")  # fmt: skip
        self._resume = state_dict or None
