"""A state dict into and out of a ``GPT``: the one place where a tied output head is stored once and re-tied.

A tied head (``config.tie_embeddings``) is the tensor of ``embed_tokens.weight``; ``state_dict()`` lists it under
both names. Files store it once, as ``embed_tokens.weight`` (safetensors refuses tensors that share memory), and
loading fills ``lm_head.weight`` back in and makes the two modules share one ``Parameter`` again.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lit_gpt.config import Config
from lit_gpt.errors import ConfigError
from lit_gpt.meta import meta_model
from lit_gpt.model import GPT


def cpu_state(model: GPT) -> dict[str, torch.Tensor]:
    """``model``'s state dict, detached, on the CPU and contiguous, in the model's dtypes."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def store_head_once(state: dict[str, torch.Tensor], config: Config) -> dict[str, torch.Tensor]:
    """``state`` (changed in place) without ``lm_head.weight`` when ``config`` ties the head to the embedding."""
    if config.tie_embeddings:
        del state["lm_head.weight"]  # the same tensor as embed_tokens.weight
    return state


def build_model(config: Config, state: dict[str, torch.Tensor], source: str | Path) -> GPT:
    """``GPT(config)`` (train mode) holding the tensors of ``state`` (our names) as float32, strictly; a head stored
    once is re-tied.

    The model is built on the meta device and the tensors are assigned, not copied (unless they must become
    float32 or contiguous), so loading neither computes a random initialisation nor holds the weights twice.

    Raises:
        ConfigError: if ``state`` lacks a weight, has an extra one, a shape disagrees with ``config``, or a tensor is
            quantized (a tensor subclass: ``assign_model`` keeps those).
    """
    quantized = next((k for k, v in state.items() if type(v) not in (torch.Tensor, torch.nn.Parameter)), None)
    if quantized is not None:
        raise ConfigError(
            f"{source} holds quantized weights ({quantized}: {type(state[quantized]).__name__}), not float ones: "
            "start from the float checkpoint they were quantized from"
        )
    # float32 master weights (Hub files are often bf16); GPT-2's transposed Conv1D weights become row-major
    state = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    return assign_model(config, state, source)


def assign_model(config: Config, state: dict[str, torch.Tensor], source: str | Path, trainable: bool = True) -> GPT:
    """``GPT(config)`` built on the meta device with the tensors of ``state`` assigned as they are (dtype, device,
    tensor subclass), strictly; a head stored once is re-tied and the RoPE tables are made. ``trainable=False``
    freezes every parameter (quantized tensors take no gradients).

    Raises:
        ConfigError: naming ``source`` if ``state`` lacks a weight, has an extra one, or a shape disagrees.
    """
    if config.tie_embeddings and "lm_head.weight" not in state and "embed_tokens.weight" in state:
        state = {**state, "lm_head.weight": state["embed_tokens.weight"]}
    model = meta_model(config)
    if not trainable:
        model.requires_grad_(False)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise ConfigError(f"the weights in {source} do not fit its config: {first}") from None
    if config.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight  # assign=True made two Parameters of one tensor
    if config.position_embedding == "rope":
        model.reset_rope_cache()
    return model
