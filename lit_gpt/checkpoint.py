"""Every file a model is read from or written to, without Lightning.

Read by ``load_checkpoint`` / ``load_model`` / ``load_tokenizer`` (``path`` may be any of these):

- a Lightning ``.ckpt`` written by ``lit-gpt fit``: the ``lit_gpt`` record (written by
  ``lit_gpt.train.module.LitGPT.on_save_checkpoint``) holds the config and tokenizer spec, the weights sit under
  ``state_dict`` with a ``model.`` prefix; read with ``torch.load(weights_only=True)``, which unpickles no code;
- our folder (``save_folder``, ``lit-gpt export --format lit_gpt``): ``config.json``
  (``{"format": "lit_gpt", "version": 1, "config": ..., "tokenizer": ...}``) and ``model.safetensors`` with the
  state dict under our module names. A tied output head is stored once, as ``embed_tokens.weight`` (safetensors
  refuses tensors that share memory), and re-tied on load;
- a Hugging Face ``LlamaForCausalLM``, ``Qwen3ForCausalLM`` (``qk_norm``) or ``GPT2LMHeadModel`` folder
  (``save_hf``, ``lit-gpt export --format hf``),
  ours or not: ``config.json``, ``model.safetensors`` (or sharded, or ``pytorch_model.bin``),
  ``generation_config.json``, and for the GPT-2 BPE ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json``;
- a LoRA training ``.ckpt`` (``model.lora``): its ``lit_gpt`` record also holds ``lora`` (the LoRA settings and the
  base's path and weight hash, ``lit_gpt.lora.base_identity``) and its state dict holds the adapters only; the base
  is read from its path and checked, and the adapters are merged into it unless asked not to (``merge_lora``);
- a quantized folder (``save_quantized``, ``lit-gpt quantize``): our ``config.json`` with a ``quantization`` record
  (mode, group size, device, torchao version) and ``model.pt``, the state dict of torchao tensors (torchao 0.18's
  safetensors support does not cover its CPU int4 tensor), read with ``torch.load(weights_only=True)``.

- a sharded checkpoint folder written by ``lit-gpt fit`` under Lightning's ``ModelParallelStrategy`` (FSDP2, tensor
  parallelism): PyTorch Distributed Checkpoint shards plus ``meta.pt``; read into whole tensors on one process.

A path to a folder's ``config.json`` or ``model.safetensors`` means the folder. ``read_training_checkpoint``
checks a ``.ckpt`` before a run resumes from it. The name and shape maps are in ``lit_gpt.hf``.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lit_gpt import hf
from lit_gpt.config import Config
from lit_gpt.errors import ConfigError
from lit_gpt.lora import LoRA, add_adapters, check_base, load_adapters, merge_adapters
from lit_gpt.meta import meta_model
from lit_gpt.model import GPT
from lit_gpt.quantize import prepare_loading, torchao_version
from lit_gpt.tokenizer import Tokenizer

FORMAT, VERSION = "lit_gpt", 1
"""The ``format`` and ``version`` of our folder's ``config.json``."""
CHECKPOINT_FORMAT = 1
"""The ``format`` of the ``lit_gpt`` record in a training ``.ckpt``."""
SHARDED_METADATA = "meta.pt"
"""The file of a sharded checkpoint folder that holds everything but the tensors (Lightning's name for it)."""
WHAT_TO_PASS = "pass a .ckpt written by `lit-gpt fit` or a folder written by `lit-gpt export`"


# ---------------------------------------------------------------------------------------------------------------
# Our own folder format


def save_folder(model: GPT, tokenizer: Tokenizer, out_dir: str | Path) -> None:
    """Write ``model`` and ``tokenizer`` to ``out_dir`` in our format: ``config.json`` and ``model.safetensors``.

    Tensors keep their dtype and are moved to the CPU. ``load_folder`` (or ``load_checkpoint``) reads the folder
    back.

    Raises:
        ConfigError: if ``out_dir`` exists and is not a folder.
    """
    out = _make_dir(out_dir)
    state = _cpu_state(model)
    if model.config.tie_embeddings:
        del state["lm_head.weight"]  # the same tensor as embed_tokens.weight
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    meta = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "tokenizer": tokenizer.spec}
    _write_json(out / "config.json", meta)


def load_folder(folder: str | Path) -> GPT:
    """Rebuild the model (float32, CPU, train mode) from a folder written by ``save_folder``.

    Raises:
        ConfigError: if ``config.json`` is missing or not ours, a file is missing, or the weights do not fit the config.
    """
    folder = Path(folder)
    meta = _read_json(folder / "config.json")
    if meta.get("format") != FORMAT or not isinstance(meta.get("config"), dict):
        raise ConfigError(f"{folder} is not a lit_gpt export folder: write one with `lit-gpt export --format lit_gpt`")
    if meta.get("version") != VERSION:
        raise ConfigError(f"{folder} has lit_gpt export version {meta.get('version')!r}; this lit_gpt reads {VERSION}")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"{folder} has no model.safetensors: export the checkpoint again with `lit-gpt export`")
    return build_model(Config(**meta["config"]), load_file(weights), weights)


# ---------------------------------------------------------------------------------------------------------------
# Quantized folders (lit_gpt.quantize makes the models)


def save_quantized(model: GPT, tokenizer: Tokenizer, out_dir: str | Path, mode: str, group_size: int | None) -> None:
    """Write a model quantized by ``lit_gpt.quantize.quantize(model, mode, group_size)`` to ``out_dir``:
    ``config.json`` (ours, with a ``quantization`` record) and ``model.pt`` (a tied head stored once).

    Raises:
        ConfigError: if ``out_dir`` exists and is not a folder.
    """
    out = _make_dir(out_dir)
    state = dict(model.state_dict())
    if model.config.tie_embeddings:
        del state["lm_head.weight"]
    torch.save(state, out / "model.pt")
    weight = model.lm_head.weight
    record = {"mode": mode, "group_size": group_size if mode == "int4" else None, "device": weight.device.type,
              "dtype": str(weight.dtype).removeprefix("torch."), "torchao": torchao_version()}  # fmt: skip
    meta = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "tokenizer": tokenizer.spec,
            "quantization": record}  # fmt: skip
    _write_json(out / "config.json", meta)


def load_quantized(folder: str | Path, device: str | torch.device = "cpu") -> GPT:
    """Rebuild a quantized model (eval mode, on ``device``) from a folder written by ``save_quantized``.

    Raises:
        ConfigError: if torchao is missing, ``model.pt`` is missing or unreadable, its tensors do not fit the config,
            or int4 weights packed for one kind of device (cpu, cuda) are loaded on another.
    """
    folder, device = Path(folder), torch.device(device)
    meta = _read_json(folder / "config.json")
    record = meta["quantization"]
    if record.get("mode") == "int4" and record.get("device") != device.type:
        raise ConfigError(f"{folder} holds int4 weights packed for {record.get('device')}, not {device.type}: load it "
                          "there, or quantize the float checkpoint again on this device")  # fmt: skip
    prepare_loading(record.get("mode"))
    weights = folder / "model.pt"
    if not weights.is_file():
        raise ConfigError(f"{folder} has no model.pt: quantize the checkpoint again with `lit-gpt quantize`")
    try:
        state = torch.load(weights, map_location=device, weights_only=True)
    except Exception as err:  # unpickling raises many types for a file that is not a state dict
        raise ConfigError(f"{weights} is not a readable quantized state dict ({type(err).__name__}); quantize the "
                          "checkpoint again with `lit-gpt quantize`") from None  # fmt: skip
    config = Config(**meta["config"])
    if config.tie_embeddings and "lm_head.weight" not in state and "embed_tokens.weight" in state:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    model = meta_model(config).requires_grad_(False)
    _assign(model, state, weights)
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face folders (the maps are lit_gpt.hf's)


def save_hf(model: GPT, tokenizer: Tokenizer, out_dir: str | Path) -> str:
    """Write ``model`` as a Hugging Face folder loadable by ``transformers.AutoModelForCausalLM.from_pretrained``.

    Writes ``config.json`` (see ``lit_gpt.hf.config_to_hf``), ``model.safetensors`` (tensors in the model's dtype,
    on the CPU) and ``generation_config.json`` (bos/eos = ``tokenizer.eot_id``). For the ``gpt2`` / ``r50k_base``
    BPE it also writes ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` for
    ``transformers.AutoTokenizer``; other tokenizers (character-level, ``cl100k_base`` ...) have no Hugging Face
    equivalent here and get no tokenizer files (the ``lit_gpt`` record in ``config.json`` still names them).

    Returns:
        the architecture written: ``"LlamaForCausalLM"``, ``"Qwen3ForCausalLM"`` or ``"GPT2LMHeadModel"``.
    Raises:
        ConfigError: if the config cannot be expressed by the chosen class (nothing is written then), or
            ``out_dir`` exists and is not a folder.
    """
    config = model.config
    hf_config = hf.config_to_hf(config, tokenizer)
    hf_config["dtype"] = str(model.embed_tokens.weight.dtype).removeprefix("torch.")
    out = _make_dir(out_dir)
    save_file(hf.state_to_hf(_cpu_state(model), config), out / "model.safetensors", metadata={"format": "pt"})
    _write_json(out / "config.json", hf_config)
    _write_json(out / "generation_config.json", {"bos_token_id": tokenizer.eot_id, "eos_token_id": tokenizer.eot_id})
    if tokenizer.encoding is not None and tokenizer.name in hf.HF_TOKENIZERS:
        for name, text in hf.gpt2_tokenizer_files(tokenizer, config.block_size).items():
            (out / name).write_text(text, encoding="utf-8")
    return hf_config["architectures"][0]


def load_hf(folder: str | Path) -> GPT:
    """Build our ``GPT`` (float32, CPU, train mode) from a Hugging Face Llama or GPT-2 folder.

    Reads ``config.json`` (see ``lit_gpt.hf.config_from_hf``) and the weights from ``model.safetensors``, a sharded
    ``model.safetensors.index.json`` or ``pytorch_model.bin`` (read with ``weights_only=True``).

    Raises:
        ConfigError: if a file is missing, the model has features lit_gpt lacks, or the weights do not fit.
    """
    folder = Path(folder)
    config = hf.config_from_hf(_read_json(folder / "config.json"))
    return build_model(config, hf.state_from_hf(_read_hf_weights(folder), config), folder)


def tokenizer_spec_from_hf(folder: str | Path) -> dict | None:
    """The lit_gpt tokenizer spec for a Hugging Face folder, or None if it has none lit_gpt can use.

    The ``lit_gpt`` record of ``config.json`` wins; otherwise a byte-level BPE vocabulary (``vocab.json``, or the
    ``model.vocab`` of ``tokenizer.json``) identical to tiktoken's ``gpt2`` is recognised as ``gpt2``.
    """
    folder = Path(folder)
    record = _read_json(folder / "config.json").get("lit_gpt")
    if isinstance(record, dict) and isinstance(record.get("tokenizer"), dict):
        return record["tokenizer"]
    if (folder / "vocab.json").is_file():
        return hf.tokenizer_spec_from_vocab(_read_json(folder / "vocab.json"))
    if (folder / "tokenizer.json").is_file():
        return hf.tokenizer_spec_from_vocab(_read_json(folder / "tokenizer.json").get("model", {}).get("vocab"))
    return None


def _read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").is_file():
        return load_file(folder / "model.safetensors")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        missing = [shard for shard in shards if not (folder / shard).is_file()]
        if missing:
            raise ConfigError(f"{folder} lacks the weight shards {missing} that model.safetensors.index.json lists")
        return {k: v for shard in shards for k, v in load_file(folder / shard).items()}
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise ConfigError(f"{folder} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin")



# ---------------------------------------------------------------------------------------------------------------
# Building a model from tensors, and small file helpers


def _cpu_state(model: GPT) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def build_model(config: Config, state: dict[str, torch.Tensor], source: str | Path) -> GPT:
    """``GPT(config)`` holding the tensors of ``state`` (our names), strictly; a head stored once is re-tied.

    The model is built on the meta device and the tensors are assigned, not copied (unless they must become
    float32), so loading neither computes a random initialisation nor holds the weights twice.

    Raises:
        ConfigError: if ``state`` lacks a weight, has an extra one, or a shape disagrees with ``config``.
    """
    # float32 master weights (Hub files are often bf16); GPT-2's transposed Conv1D weights become row-major
    state = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    if config.tie_embeddings and "lm_head.weight" not in state and "embed_tokens.weight" in state:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    model = meta_model(config)
    _assign(model, state, source)
    return model


def _assign(model: GPT, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load ``state`` into a meta-device model by assignment, strictly; re-tie the head and make the RoPE tables."""
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise ConfigError(f"the weights in {source} do not fit its config: {first}") from None
    if model.config.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight  # assign=True made two Parameters of one tensor
    if model.config.position_embedding == "rope":
        model.reset_rope_cache()


def _make_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder (it is created if missing)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path} not found: pass a .ckpt from `lit-gpt fit` or a folder from `lit-gpt export`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return data


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")




# ---------------------------------------------------------------------------------------------------------------
# Loading a model and tokenizer from any of the above


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", merge_lora: bool = True
) -> tuple[GPT, Tokenizer]:
    """The model (in eval mode, on ``device``; float32 parameters, or quantized ones from a quantized folder) and its
    tokenizer, from any form in the module docstring.

    A LoRA checkpoint's adapters are merged into the base weights (a plain ``GPT``, as fast as the base); with
    ``merge_lora=False`` they stay peft layers (``lit_gpt.lora``), e.g. to export them.

    Raises:
        ConfigError: if ``path`` is missing, is not one of those forms, lacks a file, holds weights that do not fit
            its config, (for a foreign Hugging Face folder) has no tokenizer lit_gpt can use, (LoRA) its base moved
            or changed, or (quantized) an optional package is missing; the message says what to pass instead.
    """
    model, tokenizer = _load(path, model=True, tokenizer=True, device=device, merge_lora=merge_lora)
    return model.to(device).eval(), tokenizer


def load_model(path: str | Path, device: str | torch.device = "cpu", merge_lora: bool = True) -> GPT:
    """The model alone, in eval mode on ``device``; see ``load_checkpoint`` for ``path`` and errors."""
    return _load(path, model=True, tokenizer=False, device=device, merge_lora=merge_lora)[0].to(device).eval()


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer alone (no weights are read from folders); see ``load_checkpoint`` for ``path`` and errors."""
    return _load(path, model=False, tokenizer=True)[1]


def lora_record(path: str | Path) -> dict | None:
    """The ``lora`` record of a LoRA training checkpoint (settings and base identity), or None for any other model
    form; reads no weights from folders. Raises ``ConfigError`` as ``load_checkpoint`` does for a bad ``path``."""
    path = _resolve(path)
    return read_training_checkpoint(path)["lit_gpt"].get("lora") if path.is_file() else None


def _resolve(path: str | Path) -> Path:
    """``path`` itself, or the folder of a ``config.json`` / ``.safetensors`` file; ConfigError if it is missing."""
    path = Path(path)
    if path.is_file() and path.suffix in (".json", ".safetensors", ".pt"):
        path = path.parent
    if not path.exists():
        raise ConfigError(f"checkpoint not found: {path}; {WHAT_TO_PASS}")
    return path


def _load(path: str | Path, model: bool, tokenizer: bool, device: str | torch.device = "cpu",
          merge_lora: bool = True) -> tuple[GPT | None, Tokenizer | None]:  # fmt: skip
    """Read what is asked for from ``path``, the tokenizer first so that a missing one fails before the weights."""
    path = _resolve(path)
    if path.is_file() or is_sharded_checkpoint(path):
        checkpoint = read_training_checkpoint(path)
        spec = checkpoint["lit_gpt"].get("tokenizer")  # None when LitGPT was built without one
        build = partial(_model_from_lightning, checkpoint, path, merge_lora)
    else:
        meta = _read_json(path / "config.json")
        if meta.get("format") == FORMAT:
            spec = meta.get("tokenizer")
            build = partial(load_quantized, path, device) if "quantization" in meta else partial(load_folder, path)
        elif "model_type" in meta:
            spec = tokenizer_spec_from_hf(path) if tokenizer else None
            build = partial(load_hf, path)
        else:
            raise ConfigError(f"{path}/config.json is not from lit_gpt or Hugging Face; {WHAT_TO_PASS}")
    if tokenizer and spec is None:
        raise ConfigError(
            f"{path} has no tokenizer lit_gpt can use (it reads its own records and GPT-2's BPE files); "
            "load the model alone with lit_gpt.load_model"
        )
    return (build() if model else None), (Tokenizer.from_spec(spec) if tokenizer else None)


def _model_from_lightning(checkpoint: dict, path: Path, merge_lora: bool) -> GPT:
    states = checkpoint["state_dict"] if "state_dict" in checkpoint else _consolidated_state(path)
    state = {k.removeprefix("model."): v for k, v in states.items() if k.startswith("model.")}
    record = checkpoint["lit_gpt"]
    if "lora" in record:
        return _lora_model(record["lora"], state, path, merge_lora)
    return build_model(Config(**record["config"]), state, path)


def _lora_model(record: dict, adapters: dict[str, torch.Tensor], path: Path, merge: bool) -> GPT:
    """The base that a LoRA checkpoint's record names, checked by its weight hash, with the adapters loaded."""
    base = Path(record["base"]["path"])
    if not base.exists():
        raise ConfigError(
            f"the LoRA checkpoint {path} adapts the base model at {base}, which is not there (moved or deleted?): "
            "put the base back at that path, or export a merged model where both are at hand (lit-gpt export --merge)"
        )
    model = load_model(base)
    check_base(model, record["base"], path)
    add_adapters(model, LoRA.from_record(record))
    load_adapters(model, adapters, path)
    return merge_adapters(model) if merge else model


def is_sharded_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a sharded checkpoint folder written by Lightning's ``ModelParallelStrategy``: the tensors
    in PyTorch Distributed Checkpoint files (``*.distcp`` + ``.metadata``), the rest in ``meta.pt``."""
    path = Path(path)
    return path.is_dir() and (path / SHARDED_METADATA).is_file() and (path / ".metadata").is_file()


def _consolidated_state(folder: Path) -> dict[str, torch.Tensor]:
    """The whole (unsharded) ``state_dict`` of a sharded checkpoint folder, on the CPU, without a process group.

    ``torch.distributed.checkpoint.format_utils.dcp_to_torch_save`` gathers every shard into one ``torch.save`` file
    (a temporary one), read back with ``weights_only=True``.
    """
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        try:
            dcp_to_torch_save(folder, Path(tmp) / "full.pt")
            full = torch.load(Path(tmp) / "full.pt", map_location="cpu", weights_only=True)
        except Exception as err:  # a missing or truncated shard raises several types
            raise ConfigError(f"{folder} is not a readable sharded checkpoint ({type(err).__name__}); "
                              f"{WHAT_TO_PASS}") from None  # fmt: skip
    if not isinstance(full.get("state_dict"), dict):
        raise ConfigError(f"{folder} holds no model weights; {WHAT_TO_PASS}")
    return full["state_dict"]


# ---------------------------------------------------------------------------------------------------------------
# Training checkpoints: checked before a run resumes from one


def read_training_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict of a ``.ckpt`` written by ``lit-gpt fit``, checked to hold our record and a state dict; for
    a sharded checkpoint folder (``is_sharded_checkpoint``), the dict of its ``meta.pt`` (the tensors stay in the
    shards: ``load_checkpoint`` consolidates them).

    Read with ``torch.load(weights_only=True)`` (memory-mapped): a pickle that would run code, a truncated or
    corrupted file, or any other file is refused without executing anything from it.

    Raises:
        ConfigError: naming ``path`` and why: unreadable (with the exception's type), not from lit_gpt, or from a
            newer lit_gpt checkpoint format.
    """
    path = Path(path)
    sharded = is_sharded_checkpoint(path)
    try:
        with torch.serialization.safe_globals([Config, LoRA]):  # hyper_parameters hold them when built in Python
            checkpoint = torch.load(path / SHARDED_METADATA if sharded else path, map_location="cpu",
                                    weights_only=True, mmap=not sharded)  # fmt: skip
    except Exception as err:  # unpickling raises many types for a file that is not a checkpoint
        why = type(err).__name__
        raise ConfigError(f"{path} is not a readable lit_gpt checkpoint ({why}); {WHAT_TO_PASS}") from None
    record = checkpoint.get("lit_gpt") if isinstance(checkpoint, dict) else None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("config"), dict)
        or not (sharded or isinstance(checkpoint.get("state_dict"), dict))
    ):
        raise ConfigError(f"{path} is not a lit_gpt training checkpoint (no model config or weights); {WHAT_TO_PASS}")
    if record.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(
            f"{path} has lit_gpt checkpoint format {record.get('format')!r}; this lit_gpt reads {CHECKPOINT_FORMAT}"
        )
    return checkpoint


def check_resumable(path: str | Path) -> None:
    """Raise ``ConfigError`` unless ``path`` is a readable ``lit-gpt fit`` checkpoint to resume training from.

    The message names the newest readable checkpoint in the same folder, if there is one, so a run whose
    ``last.ckpt`` was cut short (a full disk, a kill during the write) can resume from the one before.
    """
    path = Path(path)
    try:
        checkpoint = read_training_checkpoint(path)
    except ConfigError as err:
        fallback = newest_readable_checkpoint(path.parent, exclude=path)
        hint = (f"; the newest readable checkpoint in {path.parent} is {fallback}: resume with --ckpt_path {fallback}"
                if fallback else f"; {path.parent} holds no other readable checkpoint")  # fmt: skip
        raise ConfigError(f"cannot resume: {err}{hint}") from None
    if ("optimizer_states" not in checkpoint and not is_sharded_checkpoint(path)) or "loops" not in checkpoint:
        raise ConfigError(
            f"cannot resume from {path}: it holds weights only (no optimizer or loop state); to start a new run from "
            f"its weights use --model.init_weights {path}"
        )


def newest_readable_checkpoint(folder: str | Path, exclude: str | Path | None = None) -> Path | None:
    """The most recently modified ``*.ckpt`` in ``folder`` that ``read_training_checkpoint`` accepts, or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    skip = Path(exclude).resolve() if exclude is not None else None
    candidates = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for candidate in candidates:
        if candidate.resolve() == skip:
            continue
        try:
            read_training_checkpoint(candidate)
        except ConfigError:
            continue
        return candidate
    return None
