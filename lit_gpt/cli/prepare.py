"""``lit-gpt prepare --config CONFIG.yaml [--data.key VALUE ...] [--data.format litdata --out DIR_OR_URL]``: tokenize a
training config's corpus (or each corpus of its ``data.mixture``) ahead of training (prepare once, train many times,
on one machine or before a multi-node run), optionally check every shard (``--data.verify true``), and optionally
export it as litdata chunks for ``StreamingTextDataModule`` (``--data.format litdata --out``: a folder or an
``s3://`` URL; a mixture's corpora go to ``OUT/<name>``; ``--chunk_tokens`` sets the chunk size).

The ``data`` section of the configs and the ``--data.*`` flags are parsed with jsonargparse against
``lit_gpt.data.prepare.prepare_corpus``, whose arguments are the data module's that decide the token files, plus
``EXTRA_KEYS`` (``mixture``, ``verify``) and ``format``; the data module's loader settings (``LOADER_KEYS``) and the
other sections (``trainer``, ``model``, ...) are read past. So the command takes the flags of ``lit-gpt fit`` but
imports neither Lightning nor the model.
"""

from __future__ import annotations

import json
from typing import Literal

from lit_gpt.data.mixture import Corpus
from lit_gpt.errors import ConfigError

LOADER_KEYS = frozenset({"block_size", "batch_size", "val_batch_size", "num_workers"})
"""``TextDataModule`` arguments that shape batches, not token files (``tests/test_layout.py`` keeps
``LOADER_KEYS | EXTRA_KEYS`` equal to the data module's arguments minus ``prepare_corpus``'s)."""
EXTRA_KEYS = {"mixture": list[Corpus] | None, "verify": bool}
"""``TextDataModule`` arguments this command reads besides ``prepare_corpus``'s, with their types."""
TOP_FLAGS = frozenset({"--out", "--chunk_tokens"})
"""This command's own flags, outside the ``data`` section."""


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """The ``--config`` files and the flags to parse (``--data.*`` and ``TOP_FLAGS``, with values, in order) from
    ``args``; ``--data.X`` flags of ``LOADER_KEYS`` and flags of other sections are dropped (each such flag takes one
    value unless written ``--flag=value``)."""
    configs, data = [], []
    i = 0
    while i < len(args):
        flag = args[i]
        name = flag.split("=", 1)[0]
        has_value = "=" in flag or i + 1 >= len(args)
        value = [] if has_value else [args[i + 1]]
        if name == "--config":
            configs.append(flag.split("=", 1)[1] if "=" in flag else args[i + 1])
        elif name in TOP_FLAGS or (name.startswith("--data.") and
                                   name.removeprefix("--data.").split(".")[0] not in LOADER_KEYS):  # fmt: skip
            data += [flag, *value]
        elif not name.startswith("--"):
            raise ConfigError(f"unexpected argument {flag!r} (see `lit-gpt prepare --help`)")
        i += 1 + len(value)
    return configs, data


def _data_section(path: str) -> dict:
    """The ``data`` section of a YAML config (its ``init_args`` when given as a class), without ``LOADER_KEYS``.

    Raises:
        ConfigError: for an unreadable config, or one whose data module streams an export (it names no sources).
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
    except OSError as err:
        raise ConfigError(f"cannot read --config {path} ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"--config {path} is not valid YAML ({' '.join(str(err).split())})") from None
    data = config.get("data") or {} if isinstance(config, dict) else {}
    if isinstance(data, dict) and str(data.get("class_path", "")).endswith("StreamingTextDataModule"):
        raise ConfigError(f"--config {path} streams an export, which lit-gpt prepare wrote; prepare with the config "
                          "that names the corpus sources")  # fmt: skip
    data = data.get("init_args", data) if isinstance(data, dict) else {}
    return {key: value for key, value in data.items() if key not in LOADER_KEYS and key not in ("class_path", "build")}


def _parser():
    from jsonargparse import ArgumentParser

    from lit_gpt.data.litdata_export import CHUNK_TOKENS
    from lit_gpt.data.prepare import prepare_corpus

    parser = ArgumentParser(prog="lit-gpt prepare", description=__doc__.split("\n\n")[0], exit_on_error=False)
    parser.add_function_arguments(prepare_corpus, "data", skip={"progress", "build"})
    parser.add_argument("--data.mixture", type=EXTRA_KEYS["mixture"], default=None,
                        help="several corpora, each prepared in its own folder (see TextDataModule)")  # fmt: skip
    parser.add_argument("--data.verify", type=bool, default=False,
                        help="read every shard again: token ids and SHA-256 against the stamps")  # fmt: skip
    parser.add_argument("--data.format", type=Literal["memmap", "litdata"], default="memmap",
                        help="litdata: also write litdata chunks to --out, for StreamingTextDataModule")  # fmt: skip
    parser.add_argument("--out", type=str | None, default=None,
                        help="with --data.format litdata: the folder or URL (s3://...) to write to")  # fmt: skip
    parser.add_argument("--chunk_tokens", type=int, default=CHUNK_TOKENS, help="training tokens per litdata chunk")
    return parser


def main(args: list[str]) -> None:
    """Prepare the corpus (or corpora) that ``args`` (``["prepare", flags...]``) configure; print where the shards
    went and their counts, and verify and export them when asked.

    Raises:
        ConfigError: for an unreadable config, an unknown or mistyped key, a bad corpus, a missing ``--out``, or
            litdata missing for ``--data.format litdata``.
    """
    from jsonargparse import ArgumentError

    parser = _parser()
    if any(a in ("-h", "--help") for a in args[1:]):
        parser.print_help()
        return
    configs, flags = split_args(args[1:])
    sections = [["--data", json.dumps(_data_section(path))] for path in configs]
    try:
        parsed = parser.instantiate_classes(parser.parse_args([arg for section in sections for arg in section] + flags))
    except ArgumentError as err:
        raise ConfigError(f"{' '.join(str(err).split())} (see `lit-gpt prepare --help`)") from None
    data = vars(parsed.data)
    fmt, verify, mixture = data.pop("format"), data.pop("verify"), data.pop("mixture")
    if fmt == "litdata" and not parsed.out:
        raise ConfigError("--data.format litdata needs --out DIR_OR_URL, where the chunks go")
    for name, options in _corpora(data, mixture):
        _prepare_one(options, verify, fmt, parsed.out if name is None else f"{parsed.out}/{name}", parsed.chunk_tokens)


def _corpora(data: dict, mixture: list[Corpus] | None) -> list[tuple[str | None, dict]]:
    """(name, ``prepare_corpus`` arguments) of each corpus: the one ``data`` describes (no name), or each of
    ``mixture`` with the shared tokenizer, seed and threads."""
    if mixture is None:
        return [(None, data)]
    from lit_gpt.data.mixture import mixture_weights, require_shared_vocabulary

    mixture_weights(mixture)  # checks the names and weights
    require_shared_vocabulary(data["tokenizer"])
    shared = {key: data[key] for key in ("tokenizer", "seed", "num_threads")}
    return [(c.name, {**c.corpus_options(), **shared}) for c in mixture]


def _prepare_one(options: dict, verify: bool, fmt: str, out: str | None, chunk_tokens: int) -> None:
    from lit_gpt.data.prepare import SPLITS, load_split, prepare_corpus

    cache_dir, meta = prepare_corpus(**options)
    print(f"prepared {options['path']} with tokenizer {options['tokenizer']!r} (vocab {meta['vocab_size']}) in "
          f"{cache_dir}")  # fmt: skip
    for split in SPLITS:
        print(f"  {split}: {meta['tokens'][split]:,} tokens, {meta['documents'][split]:,} documents, "
              f"{len(meta['shards'][split])} shard(s)")  # fmt: skip
    corpus = meta["corpus"] if "files" in meta["corpus"] else meta["corpus"]["train"]
    print("  cleaning: " + ", ".join(f"{k} {v:,}" for k, v in corpus.items() if isinstance(v, int)))
    if verify:
        for split in SPLITS:
            load_split(cache_dir, split, meta, verify=True)
        print(f"  verified: every token id < {meta['vocab_size']} and every shard's SHA-256 as stamped")
    if fmt == "litdata":
        from lit_gpt.data.litdata_export import export_litdata

        export = export_litdata(cache_dir, meta, out, chunk_tokens)
        print(f"  litdata: {export['litdata']['train_chunks']} training chunk(s) of up to {chunk_tokens:,} tokens and "
              f"{export['litdata']['val_items']} validation item(s) in {out}")  # fmt: skip
