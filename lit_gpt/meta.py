"""``meta_model``: a ``GPT`` on the meta device with no initialisation computed, the skeleton that loaders assign
weights into and that name maps read parameter names from.

On the meta device tensors have shapes and no values, so the random initialisers have nothing to fill; they are
skipped (``_SkipInitialisation``), because the meta kernel of ``normal_`` imports ``torch._dynamo``, a large part
of a ``lit-gpt generate`` start (docs/benchmarks.md). The RoPE tables are computed on the CPU
(``lit_gpt.rope.rope_cache``) and need ``GPT.reset_rope_cache`` once the weights are on their device.

Imports torch, the config and the model only.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from lit_gpt.config import Config
from lit_gpt.model import GPT


class _SkipInitialisation(TorchFunctionMode):
    """Makes the random initialisers do nothing (see the module docstring): each returns its tensor unchanged."""

    SKIPPED = {
        torch.nn.init.normal_,
        torch.nn.init.uniform_,
        torch.nn.init.kaiming_uniform_,
        torch.Tensor.normal_,
        torch.Tensor.uniform_,
    }

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.SKIPPED:
            return args[0] if args else kwargs["tensor"]  # the tensor, left as it is
        return func(*args, **kwargs)


def meta_model(config: Config) -> GPT:
    """``GPT(config)`` on the meta device, with no initialisation computed: parameter names and shapes only, to
    load weights into with ``load_state_dict(state, assign=True)`` (then call ``reset_rope_cache``) or to list the
    names a state dict must have. Takes no memory for the weights."""
    with torch.device("meta"), _SkipInitialisation():
        return GPT(config)
