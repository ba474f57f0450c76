"""Hugging Face folders: ``LlamaForCausalLM``, ``Qwen3ForCausalLM`` (``qk_norm``) or ``GPT2LMHeadModel``, ours or
not. ``save_hf`` writes one (``config.json``, ``model.safetensors``, ``generation_config.json`` and the tokenizer's
files: a Hugging Face tokenizer's own, or for the GPT-2 BPE ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``;
see ``lit_gpt.hf_tokenizer``); ``load_hf`` reads one (``model.safetensors``, sharded safetensors or
``pytorch_model.bin``) and ``tokenizer_spec_from_hf`` its tokenizer. The config maps are ``lit_gpt.hf``'s and the
name and shape maps ``lit_gpt.hf_weights``'s; this module only reads and writes the files."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lit_gpt import hf, hf_tokenizer, hf_weights
from lit_gpt.errors import ConfigError
from lit_gpt.formats.files import make_dir, read_json, write_json
from lit_gpt.formats.weights import build_model, cpu_state
from lit_gpt.hub import display_name
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.tokenizer_hf import read_folder


def save_hf(model: GPT, tokenizer: Tokenizer, out_dir: str | Path) -> str:
    """Write ``model`` as a Hugging Face folder loadable by ``transformers.AutoModelForCausalLM.from_pretrained``.

    Writes ``config.json`` (see ``lit_gpt.hf.config_to_hf``), ``model.safetensors`` (tensors in the model's dtype,
    on the CPU) and ``generation_config.json`` (bos = the tokenizer's BOS, else ``eot_id``; eos = its
    ``stop_ids``, one id or a list). A Hugging Face tokenizer's files are written back, and for the ``gpt2`` /
    ``r50k_base`` BPE ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json``, for
    ``transformers.AutoTokenizer`` (``lit_gpt.hf_tokenizer.tokenizer_files``, with the chat template); other
    tokenizers (character-level, ``cl100k_base`` ...) have no Hugging Face equivalent here and get no tokenizer files
    (the ``lit_gpt`` record in ``config.json`` still names them).

    Returns:
        the architecture written: ``"LlamaForCausalLM"``, ``"Qwen3ForCausalLM"`` or ``"GPT2LMHeadModel"``.
    Raises:
        ConfigError: if the config cannot be expressed by the chosen class (nothing is written then), or
            ``out_dir`` exists and is not a folder.
    """
    config = model.config
    hf_config = hf.config_to_hf(config, tokenizer)
    hf_config["dtype"] = str(model.embed_tokens.weight.dtype).removeprefix("torch.")
    out = make_dir(out_dir)
    save_file(hf_weights.state_to_hf(cpu_state(model), config), out / "model.safetensors", metadata={"format": "pt"})
    write_json(out / "config.json", hf_config)
    stops = tokenizer.stop_ids
    bos = tokenizer.hf.bos_id if tokenizer.hf is not None and tokenizer.hf.bos_id is not None else tokenizer.eot_id
    write_json(
        out / "generation_config.json", {"bos_token_id": bos, "eos_token_id": stops[0] if len(stops) == 1 else stops}
    )
    for name, data in hf_tokenizer.tokenizer_files(tokenizer, config.block_size).items():
        if isinstance(data, bytes):
            (out / name).write_bytes(data)
        else:
            (out / name).write_text(data, encoding="utf-8")
    return hf_config["architectures"][0]


def load_hf(folder: str | Path) -> GPT:
    """Build our ``GPT`` (float32, CPU, train mode) from a Hugging Face Llama, Qwen3 or GPT-2 folder.

    Reads ``config.json`` (see ``lit_gpt.hf.config_from_hf``) and the weights from ``model.safetensors``, a sharded
    ``model.safetensors.index.json`` or ``pytorch_model.bin`` (read with ``weights_only=True``).

    Raises:
        ConfigError: if a file is missing, the model has features lit_gpt lacks, or the weights do not fit.
    """
    folder = Path(folder)
    config = hf.config_from_hf(read_json(folder / "config.json"))
    return build_model(config, hf_weights.state_from_hf(_read_weights(folder), config), folder)


def tokenizer_spec_from_hf(folder: str | Path) -> dict | None:
    """The lit_gpt tokenizer spec for a Hugging Face folder, or None if it has none lit_gpt can use.

    The ``lit_gpt`` record of ``config.json`` wins; otherwise a byte-level BPE vocabulary (``vocab.json``, or the
    ``model.vocab`` of ``tokenizer.json``) identical to tiktoken's ``gpt2`` is recognised as ``gpt2``, and any other
    ``tokenizer.json`` or ``tokenizer.model`` is read as a Hugging Face tokenizer (``lit_gpt.tokenizer_hf``).

    Raises:
        ConfigError: for a tokenizer file that cannot be read (see ``lit_gpt.tokenizer_hf.read_folder``).
    """
    folder = Path(folder)
    record = read_json(folder / "config.json").get("lit_gpt")
    if isinstance(record, dict) and isinstance(record.get("tokenizer"), dict):
        return record["tokenizer"]
    if (folder / "vocab.json").is_file() and not (folder / "tokenizer.json").is_file():
        return hf_tokenizer.tokenizer_spec_from_vocab(read_json(folder / "vocab.json"))
    if (folder / "tokenizer.json").is_file():
        gpt2 = hf_tokenizer.tokenizer_spec_from_vocab(
            read_json(folder / "tokenizer.json").get("model", {}).get("vocab")
        )
        if gpt2 is not None:
            return gpt2
    if (folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file():
        return read_folder(folder, display_name(folder))
    return None


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").is_file():
        return load_file(folder / "model.safetensors")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
        missing = [shard for shard in shards if not (folder / shard).is_file()]
        if missing:
            raise ConfigError(f"{folder} lacks the weight shards {missing} that model.safetensors.index.json lists")
        return {k: v for shard in shards for k, v in load_file(folder / shard).items()}
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise ConfigError(f"{folder} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
