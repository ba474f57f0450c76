"""``lit-gpt prepare --config CONFIG.yaml [--data.key VALUE ...]``: tokenize a training config's corpus ahead of
training (prepare once, train many times, on one machine or before a multi-node run).

The ``data`` section of the configs and the ``--data.*`` flags are parsed with jsonargparse against
``lit_gpt.data.prepare.prepare_corpus``, whose arguments are the data module's that decide the token files; the
data module's loader settings (``LOADER_KEYS``) and the other sections (``trainer``, ``model``, ...) are read past.
So the command takes the flags of ``lit-gpt fit`` but imports neither Lightning nor the model.
"""

from __future__ import annotations

import json

from lit_gpt.errors import ConfigError

LOADER_KEYS = frozenset({"block_size", "batch_size", "val_batch_size", "num_workers"})
"""``TextDataModule`` arguments that shape batches, not token files (``tests/test_layout.py`` keeps this equal to
the data module's arguments minus ``prepare_corpus``'s)."""


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """The ``--config`` files and the ``--data.*`` flags (with values, in order) from ``args``; ``--data.X`` flags
    of ``LOADER_KEYS`` and flags of other sections are dropped (each such flag takes one value unless written
    ``--flag=value``)."""
    configs, data = [], []
    i = 0
    while i < len(args):
        flag = args[i]
        name = flag.split("=", 1)[0]
        has_value = "=" in flag or i + 1 >= len(args)
        value = [] if has_value else [args[i + 1]]
        if name == "--config":
            configs.append(flag.split("=", 1)[1] if "=" in flag else args[i + 1])
        elif name.startswith("--data.") and name.removeprefix("--data.").split(".")[0] not in LOADER_KEYS:
            data += [flag, *value]
        elif not name.startswith("--"):
            raise ConfigError(f"unexpected argument {flag!r} (see `lit-gpt prepare --help`)")
        i += 1 + len(value)
    return configs, data


def _data_section(path: str) -> dict:
    """The ``data`` section of a YAML config (its ``init_args`` when given as a class), without ``LOADER_KEYS``."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
    except OSError as err:
        raise ConfigError(f"cannot read --config {path} ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"--config {path} is not valid YAML ({' '.join(str(err).split())})") from None
    data = config.get("data") or {} if isinstance(config, dict) else {}
    data = data.get("init_args", data) if isinstance(data, dict) else {}
    return {key: value for key, value in data.items() if key not in LOADER_KEYS and key not in ("class_path", "build")}


def main(args: list[str]) -> None:
    """Prepare the corpus that ``args`` (``["prepare", flags...]``) configure; print where the shards went and
    their counts.

    Raises:
        ConfigError: for an unreadable config, an unknown or mistyped ``--data.*`` key, or a bad corpus.
    """
    from jsonargparse import ArgumentError, ArgumentParser

    from lit_gpt.data.prepare import prepare_corpus

    parser = ArgumentParser(prog="lit-gpt prepare", description=__doc__.split("\n\n")[0], exit_on_error=False)
    parser.add_function_arguments(prepare_corpus, "data", skip={"progress", "build"})
    if any(a in ("-h", "--help") for a in args[1:]):
        parser.print_help()
        return
    configs, flags = split_args(args[1:])
    sections = [["--data", json.dumps(_data_section(path))] for path in configs]
    try:
        parsed = parser.parse_args([arg for section in sections for arg in section] + flags)
        data = parser.instantiate_classes(parsed).data
    except ArgumentError as err:
        raise ConfigError(f"{' '.join(str(err).split())} (see `lit-gpt prepare --help`)") from None
    cache_dir, meta = prepare_corpus(**vars(data))
    print(f"prepared {data.path} with tokenizer {data.tokenizer!r} (vocab {meta['vocab_size']}) in {cache_dir}")
    for split in ("train", "val"):
        print(f"  {split}: {meta['tokens'][split]:,} tokens, {meta['documents'][split]:,} documents, "
              f"{len(meta['shards'][split])} shard(s)")  # fmt: skip
    corpus = meta["corpus"] if "files" in meta["corpus"] else meta["corpus"]["train"]
    print("  cleaning: " + ", ".join(f"{k} {v:,}" for k, v in corpus.items() if isinstance(v, int)))
