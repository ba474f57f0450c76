"""Our folder of quantized weights (``lit_gpt.quantize`` makes the models): ``config.json`` (our folder's record
plus ``quantization``: mode, group size, device, dtype, torchao version) and ``model.pt``, the state dict of torchao
tensors with a tied head stored once, read with ``torch.load(weights_only=True)`` (torchao 0.18's safetensors
support does not cover its CPU int4 tensor). ``save_quantized`` writes it, ``load_quantized`` reads it back."""

from __future__ import annotations

from pathlib import Path

import torch

from lit_gpt.config import Config
from lit_gpt.errors import ConfigError
from lit_gpt.formats.files import make_dir, read_json, write_json
from lit_gpt.formats.folder import folder_record
from lit_gpt.formats.weights import assign_model, store_head_once
from lit_gpt.model import GPT
from lit_gpt.quantize import prepare_loading, torchao_version
from lit_gpt.tokenizer import Tokenizer


def save_quantized(model: GPT, tokenizer: Tokenizer, out_dir: str | Path, mode: str, group_size: int | None) -> None:
    """Write a model quantized by ``lit_gpt.quantize.quantize(model, mode, group_size)`` to ``out_dir``:
    ``config.json`` (ours, with a ``quantization`` record) and ``model.pt`` (a tied head stored once).

    Raises:
        ConfigError: if ``out_dir`` exists and is not a folder.
    """
    out = make_dir(out_dir)
    torch.save(store_head_once(dict(model.state_dict()), model.config), out / "model.pt")
    weight = model.lm_head.weight
    record = {
        "mode": mode,
        "group_size": group_size if mode == "int4" else None,
        "device": weight.device.type,
        "dtype": str(weight.dtype).removeprefix("torch."),
        "torchao": torchao_version(),
    }
    write_json(out / "config.json", {**folder_record(model, tokenizer), "quantization": record})


def load_quantized(folder: str | Path, device: str | torch.device = "cpu") -> GPT:
    """Rebuild a quantized model (eval mode, on ``device``) from a folder written by ``save_quantized``.

    Raises:
        ConfigError: if torchao is missing, ``model.pt`` is missing or unreadable, its tensors do not fit the config,
            or int4 weights packed for one kind of device (cpu, cuda) are loaded on another.
    """
    folder, device = Path(folder), torch.device(device)
    meta = read_json(folder / "config.json")
    record = meta["quantization"]
    if record.get("mode") == "int4" and record.get("device") != device.type:
        raise ConfigError(
            f"{folder} holds int4 weights packed for {record.get('device')}, not {device.type}: load it there, or "
            "quantize the float checkpoint again on this device"
        )
    prepare_loading(record.get("mode"))
    weights = folder / "model.pt"
    if not weights.is_file():
        raise ConfigError(f"{folder} has no model.pt: quantize the checkpoint again with `lit-gpt quantize`")
    try:
        state = torch.load(weights, map_location=device, weights_only=True)
    except Exception as err:  # unpickling raises many types for a file that is not a state dict
        raise ConfigError(
            f"{weights} is not a readable quantized state dict ({type(err).__name__}); quantize the checkpoint again "
            "with `lit-gpt quantize`"
        ) from None
    return assign_model(Config(**meta["config"]), state, weights, trainable=False).eval()
