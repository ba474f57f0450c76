"""Weight-only int8 / int4 quantization of a ``GPT`` for inference, with torchao's ``quantize_``.

Weights are stored as integers with floating-point scales and are dequantized inside each matmul; activations,
norms and the KV cache keep the model's float dtype. What each mode does (torchao 0.18 names):

- token embedding (and learned positions): int8, one scale per row (``IntxWeightOnlyConfig``, per-axis 0). A tied
  output head keeps sharing that int8 matrix, so it is stored once: about a third of a 124M-parameter model with
  GPT-2's vocabulary, which could not reach a quarter of the float32 size with a float embedding;
- ``int8``: every other linear layer int8 per output channel (``Int8WeightOnlyConfig``): ~1/4 of float32;
- ``int4``: every other linear layer int4 in groups of ``group_size`` input weights, each group with its own scale
  and zero point (tinygemm's asymmetric scheme). On a CPU: ``PrototypeInt4WeightOnlyConfig`` (a prototype in
  torchao 0.18; its kernel is PyTorch's ``_weight_int4pack_mm_for_cpu``), float32 activations. On a CUDA GPU:
  ``Int4WeightOnlyConfig`` with the ``tile_packed_to_4d`` layout (tinygemm), which needs bfloat16, so the model is
  cast to bfloat16 first. The packed layouts differ, so an int4 model runs on the kind of device it was quantized on.

Perplexity and memory against float32 are measured by ``bench/quantize.py``. Files: ``lit_gpt.formats.quantized``
(``save_quantized``, ``load_quantized``; ``lit_gpt.load_checkpoint`` reads the folder). torchao is an optional extra
(``pip install -e ".[quant]"``), imported only here.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_gpt.errors import ConfigError
from lit_gpt.extras import require
from lit_gpt.lora import has_adapters
from lit_gpt.model import GPT

MODES = ("int8", "int4")
GROUP_SIZES = (32, 64, 128)
"""int4 group sizes that both int4 kernels accept. Smaller groups are more accurate and cost more scales: per
weight 0.5 byte of int4 plus 2 scales per group (float32 on a CPU: 0.25 byte per weight with groups of 32)."""
DEFAULT_GROUP_SIZE = 64


def quantize(model: GPT, mode: str, group_size: int = DEFAULT_GROUP_SIZE) -> GPT:
    """Quantize ``model``'s weights in place for inference on the device they are on; returns ``model`` (eval mode,
    no gradients). See the module docstring for what each mode stores.

    Raises:
        ConfigError: for an unknown mode or group size, a model that is already quantized or still has unmerged LoRA
            adapters, a linear layer whose input width is not a multiple of ``group_size`` (int4), torchao missing,
            or a torchao without the int4 path for this device.
    """
    if mode not in MODES:
        raise ConfigError(f"quantization mode {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "int4" and group_size not in GROUP_SIZES:
        raise ConfigError(f"int4 group size {group_size}: choose one of {', '.join(map(str, GROUP_SIZES))}")
    if is_quantized(model):
        raise ConfigError("the model is already quantized: load the float checkpoint it was made from")
    if has_adapters(model):
        raise ConfigError("merge the LoRA adapters first (lit_gpt.lora.merge_adapters; load_checkpoint merges them)")
    quantization = require("torchao.quantization", "quant", "quantization")
    device = model.lm_head.weight.device
    tied = model.config.tie_embeddings
    head = model.lm_head if tied else None  # a tied head is the embedding's matrix, quantized with it
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head}
    config = _linear_config(quantization, mode, group_size, device, linears)
    model.eval().requires_grad_(False)
    if mode == "int4" and device.type == "cuda":
        model.to(torch.bfloat16)
    embedding = quantization.IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=quantization.PerAxis(0))
    quantization.quantize_(model, embedding, filter_fn=lambda module, fqn: isinstance(module, nn.Embedding))
    if tied:
        model.lm_head.weight = model.embed_tokens.weight  # quantize_ replaced the embedding's Parameter only
    quantization.quantize_(model, config, filter_fn=lambda module, fqn: fqn in linears)
    return model


def _linear_config(quantization, mode: str, group_size: int, device: torch.device, linears: dict[str, nn.Linear]):
    """torchao's config for the linear layers (see the module docstring), checked against the layers' widths."""
    if mode == "int8":
        return quantization.Int8WeightOnlyConfig(set_inductor_config=False)
    narrow = [name for name, linear in linears.items() if linear.in_features % group_size]
    if narrow:
        raise ConfigError(
            f"int4 groups of {group_size} need input widths that are multiples of {group_size}; "
            f"{narrow[0]} has {linears[narrow[0]].in_features}: choose a smaller group size"
        )
    if device.type == "cuda":
        return quantization.Int4WeightOnlyConfig(
            group_size=group_size, int4_packing_format="tile_packed_to_4d", set_inductor_config=False
        )
    if device.type != "cpu":
        raise ConfigError(f"int4 runs on a CPU or a CUDA GPU, not {device.type}: quantize to int8 instead")
    try:
        prototype = require("torchao.prototype.quantization.int4", "quant", "int4 quantization")
        config = prototype.PrototypeInt4WeightOnlyConfig
    except (ModuleNotFoundError, AttributeError):
        raise ConfigError(
            f"this torchao ({torchao_version()}) has no CPU int4 path (torchao 0.18's "
            "torchao.prototype.quantization.int4.PrototypeInt4WeightOnlyConfig): install torchao 0.18, quantize on a "
            "CUDA GPU, or quantize to int8"
        ) from None
    return config(group_size=group_size, set_inductor_config=False)


def torchao_version() -> str:
    """The installed torchao's version (ConfigError if it is missing)."""
    return getattr(require("torchao", "quant", "quantization"), "__version__", "unknown")


def prepare_loading(mode: str) -> None:
    """Import the torchao tensor types a quantized state dict of ``mode`` holds, which registers them with
    ``torch.load(weights_only=True)`` (torchao adds its tensor subclasses to torch's safe globals).

    Raises:
        ConfigError: if torchao is missing.
    """
    require("torchao.quantization", "quant", "loading a quantized model")
    if mode == "int4":
        try:
            require("torchao.prototype.quantization.int4", "quant", "loading an int4 model")
        except ModuleNotFoundError:  # a CUDA int4 folder needs only torchao.quantization's types
            pass


def is_quantized(model: nn.Module) -> bool:
    """Whether any parameter of ``model`` is a quantized tensor (a tensor subclass, not a plain ``Parameter``)."""
    return any(type(param) is not nn.Parameter for param in model.parameters())


def model_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s parameters and buffers in memory, each tensor counted once (a tied head too): for a
    quantized tensor, the bytes of the integer data and scales it holds."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += _tensor_bytes(tensor)
    return total


def _tensor_bytes(tensor: torch.Tensor) -> int:
    if hasattr(tensor, "__tensor_flatten__") and type(tensor) not in (torch.Tensor, nn.Parameter):
        names, _ = tensor.__tensor_flatten__()  # the inner tensors of a torchao tensor subclass
        return sum(_tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()
