"""``lit-gpt prepare --config CONFIG.yaml [--data.key VALUE ...] [--data.format litdata --out DIR_OR_URL]``: tokenize a
training config's corpus (or each corpus of its ``data.mixture``) ahead of training (prepare once, train many times,
on one machine or before a multi-node run), optionally check every shard (``--data.verify true``), and optionally
export it as litdata chunks for ``StreamingTextDataModule`` (``--data.format litdata --out``: a folder or an
``s3://`` URL; a mixture's corpora go to ``OUT/<name>``; ``--chunk_tokens`` sets the chunk size).

The ``data`` sections of the configs and the ``--data.*`` flags are parsed with jsonargparse against
``lit_gpt.data.settings.TextData``, the whole argument set of ``TextDataModule`` (the batch settings are read and
unused; ``data.build`` is unused: this command always builds), plus this command's own ``--data.format``, ``--out``
and ``--chunk_tokens``; the other sections (``trainer``, ``model``, ...) and their flags are read past. So the command
takes the configs and flags of ``lit-gpt fit`` but imports neither Lightning nor the model.
"""

from __future__ import annotations

import json
from typing import Literal

from lit_gpt.cli.args import config_error_cause
from lit_gpt.errors import ConfigError

OWN_FLAGS = ("--out", "--chunk_tokens")
"""This command's flags outside the ``data`` section."""


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """The ``--config`` files and the flags to parse (``--data.*`` and ``OWN_FLAGS``, with values, in order) from
    ``args``; the flags of other sections are read past (each such flag takes one value unless written
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
        elif name in OWN_FLAGS or name.startswith("--data."):
            data += [flag, *value]
        elif not name.startswith("--"):
            raise ConfigError(f"unexpected argument {flag!r} (see `lit-gpt prepare --help`)")
        i += 1 + len(value)
    return configs, data


def _data_section(path: str) -> dict:
    """The ``data`` section of a YAML config (its ``init_args`` when given as a class).

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
    if not isinstance(data, dict):
        return {}
    if str(data.get("class_path", "")).endswith("StreamingTextDataModule"):
        raise ConfigError(
            f"--config {path} streams an export, which lit-gpt prepare wrote; prepare with the config that names the "
            "corpus sources"
        )
    return {key: value for key, value in data.get("init_args", data).items() if key != "class_path"}


def _parser():
    from jsonargparse import ArgumentParser

    from lit_gpt.data.litdata_export import CHUNK_TOKENS
    from lit_gpt.data.settings import TextData

    parser = ArgumentParser(prog="lit-gpt prepare", description=__doc__.split("\n\n")[0], exit_on_error=False)
    parser.add_class_arguments(TextData, "data")
    own = parser.add_argument_group("this command (besides the data section of `lit-gpt fit`)")
    own.add_argument(
        "--data.format",
        dest="format",
        type=Literal["memmap", "litdata"],
        default="memmap",
        help="litdata: also write litdata chunks to --out, for StreamingTextDataModule",
    )
    own.add_argument(
        "--out", type=str | None, default=None, help="with --data.format litdata: the folder or URL (s3://...)"
    )
    own.add_argument("--chunk_tokens", type=int, default=CHUNK_TOKENS, help="training tokens per litdata chunk")
    return parser


def parse(args: list[str]):
    """The options that ``args`` (the flags after ``prepare``) configure: a namespace with ``data`` (a
    ``lit_gpt.data.settings.TextData``), ``format``, ``out`` and ``chunk_tokens``.

    Raises:
        ConfigError: for an unreadable config, an unknown or mistyped key, a bad data section, or a litdata export
            without ``--out``.
    """
    from jsonargparse import ArgumentError

    configs, flags = split_args(args)
    sections = [["--data", json.dumps(_data_section(path))] for path in configs]
    parser = _parser()
    try:
        parsed = parser.instantiate(parser.parse_args([arg for section in sections for arg in section] + flags))
    except ArgumentError as err:
        raise ConfigError(f"{' '.join(str(err).split())} (see `lit-gpt prepare --help`)") from None
    except ValueError as err:
        raise config_error_cause(err) or err
    if parsed.format == "litdata" and not parsed.out:
        raise ConfigError("--data.format litdata needs --out DIR_OR_URL, where the chunks go")
    return parsed


def main(args: list[str]) -> None:
    """Prepare the corpus (or corpora) that ``args`` (``["prepare", flags...]``) configure; print where the shards
    went and their counts, and verify and export them when asked.

    Raises:
        ConfigError: as ``parse``; for a bad corpus; litdata missing for ``--data.format litdata``.
    """
    if any(a in ("-h", "--help") for a in args[1:]):
        _parser().print_help()
        return
    options = parse(args[1:])
    data = options.data
    for corpus in data.corpora():
        out = options.out if data.mixture is None else f"{options.out}/{corpus.name}"
        _prepare_one(corpus, data, options.format, out, options.chunk_tokens)


def _prepare_one(corpus, data, fmt: str, out: str | None, chunk_tokens: int) -> None:
    """Prepare one ``Corpus`` with the data section's tokenizer, seed and threads; print its counts, and verify and
    export it when ``data`` and ``fmt`` ask."""
    from lit_gpt.data.prepare import SPLITS, load_split, prepare_corpus

    cache_dir, meta = prepare_corpus(corpus, data.tokenizer, seed=data.seed, num_threads=data.num_threads)
    print(f"prepared {corpus.path} with tokenizer {data.tokenizer!r} (vocab {meta['vocab_size']}) in {cache_dir}")
    for split in SPLITS:
        print(
            f"  {split}: {meta['tokens'][split]:,} tokens, {meta['documents'][split]:,} documents, "
            f"{len(meta['shards'][split])} shard(s)"
        )
    counts = meta["corpus"] if "files" in meta["corpus"] else meta["corpus"]["train"]
    print("  cleaning: " + ", ".join(f"{k} {v:,}" for k, v in counts.items() if isinstance(v, int)))
    if data.verify:
        for split in SPLITS:
            load_split(cache_dir, split, meta, verify=True)
        print(f"  verified: every token id < {meta['vocab_size']} and every shard's SHA-256 as stamped")
    if fmt == "litdata":
        from lit_gpt.data.litdata_export import export_litdata

        export = export_litdata(cache_dir, meta, out, chunk_tokens)
        print(
            f"  litdata: {export['litdata']['train_chunks']} training chunk(s) of up to {chunk_tokens:,} tokens and "
            f"{export['litdata']['val_items']} validation item(s) in {out}"
        )
