"""Tensor parallelism and FSDP2 applied to a ``GPT`` from outside the model (torchtitan's rule), for Lightning's
``ModelParallelStrategy``.

``parallelize(model, mesh)`` uses the strategy's 2-D device mesh (``data_parallel`` x ``tensor_parallel``):

- Tensor parallelism (Megatron-LM's split, Shoeybi et al. 2019) over ``tensor_parallel``: in each block the
  q/k/v projections and the MLP's gate/up projections are split by output columns (``ColwiseParallel``: each rank
  computes ``n_head / tp`` query heads, ``n_kv_head / tp`` key/value heads and ``intermediate_size / tp`` MLP
  columns), and o_proj and down_proj by input rows (``RowwiseParallel``: partial sums all-reduced). Attention and
  the activation run on the local shards unchanged (``CausalSelfAttention`` counts heads from the widths), so one
  all-reduce per attention and one per MLP. Embeddings, norms and the head stay whole on each tensor-parallel rank.
  The per-head modules that sit after the column split (QK-norm's ``q_norm``/``k_norm``, ``value_residual``) see
  only their rank's heads: ``replicate_per_head`` makes their weights replicated ``DTensor``s and their inputs
  head-sharded ones, so each rank computes on its heads as before and the weight gradients are summed over the
  tensor-parallel ranks (without that, each replica would learn from its own heads only and they would drift apart).
- FSDP2 (``fully_shard``, PyTorch's per-parameter sharding; ZeRO-3 in DeepSpeed's terms) over ``data_parallel``:
  every block is a unit (its parameters gathered for its forward and backward, then freed), and the root holds
  the embeddings, the final norm and the tied head.

The gradient norm and norm clipping must see through that sharding: ``gradient_norm`` and ``clip_grad_norm_`` take
an optimizer's gradients, plain tensors (one device, DDP: every rank holds the whole gradient) or ``DTensor``
shards (reduced over their meshes by ``total_norm``); ``owns_gradient_norm`` says for which strategies they apply
(FSDP1 and DeepSpeed hold flat shards that only their own clipping knows).

``check_parallel_sizes`` checks the strategy's sizes against the devices and the model from the configuration, before
any process starts (``lit_gpt.train.lightning_cli``); ``parallelize`` checks the tensor-parallel size again.

Module names and the state dict's keys are unchanged (only the tensors become ``DTensor``s), so checkpoints and
``lit-gpt export`` read the same names; a sharded checkpoint is a folder that ``lit_gpt.formats.training`` consolidates.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_gpt.config import Config
from lit_gpt.errors import ConfigError
from lit_gpt.model import GPT


def tensor_parallel_plan(block: nn.Module) -> dict:
    """The ``parallelize_module`` plan of one ``Block``: its module names -> Colwise / Rowwise parallel styles."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    plan = {"self_attn.q_proj": ColwiseParallel(), "self_attn.k_proj": ColwiseParallel(),
            "self_attn.v_proj": ColwiseParallel(), "self_attn.o_proj": RowwiseParallel(),
            "mlp.up_proj": ColwiseParallel(), "mlp.down_proj": RowwiseParallel()}  # fmt: skip
    if block.mlp.swiglu:
        plan["mlp.gate_proj"] = ColwiseParallel()
    return plan


def replicate_per_head(module: nn.Module, mesh, head_dim: int) -> None:
    """Make ``module``'s own parameters replicated over ``mesh`` and its tensor inputs ``DTensor``s sharded on
    dimension ``head_dim`` (the heads), in place; its output comes back as the local tensor. Gradients of the
    replicated parameters are then reduced over the mesh by ``DTensor``'s autograd."""
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_module, distribute_tensor

    def replicate(name: str, mod: nn.Module, device_mesh) -> None:
        for param_name, param in list(mod.named_parameters(recurse=False)):
            mod.register_parameter(param_name, nn.Parameter(distribute_tensor(param, device_mesh, [Replicate()])))

    def shard_inputs(mod: nn.Module, inputs: tuple, device_mesh) -> tuple:
        return tuple(DTensor.from_local(x, device_mesh, [Shard(head_dim)], run_check=False) for x in inputs)

    distribute_module(
        module, mesh, replicate, input_fn=shard_inputs, output_fn=lambda mod, outputs, device_mesh: outputs.to_local()
    )


def check_tensor_parallel(model: GPT | Config, size: int) -> None:
    """Raise ConfigError unless ``size`` divides the heads, the key/value heads and the MLP width of ``model`` (a
    ``GPT`` or its ``Config``)."""
    config = model.config if isinstance(model, GPT) else model
    bad = [
        f"{name} ({value})"
        for name, value in (
            ("n_head", config.n_head),
            ("n_kv_head", config.n_kv_head),
            ("intermediate_size", config.intermediate_size),
        )
        if value % size
    ]
    if bad:
        raise ConfigError(
            f"tensor_parallel_size {size} must divide model.config {', '.join(bad)}; choose a size "
            "that divides them, or change the model"
        )


def check_parallel_sizes(
    config: Config, data_parallel: int | None, tensor_parallel: int | None, devices: int | None, num_nodes: int
) -> None:
    """Check ``ModelParallelStrategy``'s sizes against the processes and the model before any process starts.

    Args:
        config: the model's architecture.
        data_parallel, tensor_parallel: the strategy's ``data_parallel_size`` and ``tensor_parallel_size``; None for
            ``"auto"``, which Lightning resolves to the number of nodes and to the devices per node.
        devices: processes per node; None where Lightning finds the number on the machine (``devices: auto``).
        num_nodes: the number of nodes.

    Raises:
        ConfigError: unless data_parallel x tensor_parallel = devices x num_nodes, or unless the tensor-parallel
            size divides the heads, the key/value heads and the MLP width (``check_tensor_parallel``).
    """
    data_parallel = num_nodes if data_parallel is None else data_parallel
    tensor_parallel = devices if tensor_parallel is None else tensor_parallel
    if devices is not None and data_parallel * tensor_parallel != devices * num_nodes:
        raise ConfigError(
            f"data_parallel_size x tensor_parallel_size ({data_parallel} x {tensor_parallel}) must equal devices x "
            f"num_nodes ({devices} x {num_nodes}), one process per device; choose sizes whose product is "
            f"{devices * num_nodes}"
        )
    if tensor_parallel is not None and tensor_parallel > 1:
        check_tensor_parallel(config, tensor_parallel)


def parallelize(model: GPT, mesh) -> None:
    """Apply tensor parallelism over ``mesh["tensor_parallel"]`` and FSDP2 over ``mesh["data_parallel"]``, in place
    (see the module docstring). A tensor-parallel size of 1 is left alone; a data-parallel size of 1 is too, unless
    tensor parallelism is also off: then FSDP2 over that one rank still makes the parameters ``DTensor``s, which
    Lightning needs to load the sharded checkpoints it writes (a single-device ``ModelParallelStrategy`` run resumes).

    Raises:
        ConfigError: if the tensor-parallel size does not divide the heads, key/value heads or MLP width.
    """
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method
    from torch.distributed.tensor.parallel import parallelize_module

    tp_mesh, dp_mesh = mesh["tensor_parallel"], mesh["data_parallel"]
    if tp_mesh.size() > 1:
        check_tensor_parallel(model, tp_mesh.size())
        for block in model.layers:
            parallelize_module(block, tp_mesh, tensor_parallel_plan(block))
            attention = block.self_attn
            for norm in (getattr(attention, "q_norm", None), getattr(attention, "k_norm", None)):
                if norm is not None:
                    replicate_per_head(norm, tp_mesh, head_dim=2)  # (B, T, nh / tp, hs)
            if hasattr(attention, "value_residual"):
                replicate_per_head(attention.value_residual, tp_mesh, head_dim=1)  # (B, nkv / tp, T, hs)
    if dp_mesh.size() > 1 or tp_mesh.size() == 1:
        for block in model.layers:
            fully_shard(block, mesh=dp_mesh)
        fully_shard(model, mesh=dp_mesh)
        # the chunked loss (lit_gpt.train.loss) runs hidden_states, then the head: the root's weights must be gathered
        register_fsdp_forward_method(model, "hidden_states")


def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The global L2 norm of ``grads``, plain tensors or ``DTensor`` shards on one or several meshes.

    Gradients are grouped by their mesh (a tensor-parallel weight's gradient lives on the 2-D mesh, a norm's only on
    the data-parallel one under FSDP2); each group's norm is reduced over its own mesh (``full_tensor``, which counts
    replicated copies once), and the groups' norms combine to the global one. Plain tensors are local and whole.
    """
    from torch.distributed.tensor import DTensor

    groups: dict[object, list[torch.Tensor]] = {}
    for grad in grads:
        groups.setdefault(grad.device_mesh if isinstance(grad, DTensor) else None, []).append(grad)
    norms = []
    for mesh, members in groups.items():
        norm = torch.nn.utils.get_total_norm(members)
        norms.append(norm.full_tensor() if mesh is not None else norm)
    return torch.linalg.vector_norm(torch.stack(norms))


def clip_grads_with_norm_(grads: list[torch.Tensor], max_norm: float, norm: torch.Tensor) -> None:
    """Scale ``grads`` (plain or ``DTensor``) in place so their global norm ``norm`` is at most ``max_norm``: the
    factor ``min(1, max_norm / (norm + 1e-6))`` of ``torch.nn.utils.clip_grads_with_norm_``, which refuses a mix of
    ``DTensor`` gradients and a plain factor. No host synchronisation."""
    from torch.distributed.tensor import DTensor, Replicate

    factor = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for grad in grads:
        if isinstance(grad, DTensor):
            mesh = grad.device_mesh
            grad.mul_(DTensor.from_local(factor.to(grad.dtype), mesh, [Replicate()] * mesh.ndim))
        else:
            grad.mul_(factor.to(grad.dtype))


def owns_gradient_norm(strategy: object) -> bool:
    """Whether ``gradient_norm`` and ``clip_grad_norm_`` apply to the gradients under Lightning's ``strategy``: one
    device, DDP or ``ModelParallelStrategy`` (whole tensors or ``DTensor`` shards), not FSDP1 or DeepSpeed."""
    from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy, SingleDeviceStrategy

    return type(strategy) in (SingleDeviceStrategy, DDPStrategy, ModelParallelStrategy)


def _params_with_grads(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


def gradient_norm(optimizer: torch.optim.Optimizer, sharded: bool) -> torch.Tensor:
    """The global L2 norm of the gradients of ``optimizer``'s parameters, a 0-dim float tensor, with no host
    synchronisation. ``sharded``: the gradients may be ``DTensor``s (``total_norm`` reduces each mesh's norm);
    otherwise they are whole local tensors (``torch.nn.utils.get_total_norm``)."""
    grads = [p.grad for p in _params_with_grads(optimizer)]
    return total_norm(grads) if sharded else torch.nn.utils.get_total_norm(grads)


def clip_grad_norm_(optimizer: torch.optim.Optimizer, max_norm: float, norm: torch.Tensor, sharded: bool) -> None:
    """Scale the gradients of ``optimizer``'s parameters in place so that their global norm ``norm`` (from
    ``gradient_norm``) is at most ``max_norm``, with no host synchronisation; ``sharded`` as in ``gradient_norm``."""
    params = _params_with_grads(optimizer)
    if sharded:
        clip_grads_with_norm_([p.grad for p in params], max_norm, norm)
    else:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
