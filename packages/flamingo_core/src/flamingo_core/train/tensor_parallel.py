"""Tensor parallelism of Flamingo as the paper's Megatron sharding (arXiv 2204.14198, Appendix B.1.2; Shoeybi et
al., "Megatron-LM", arXiv 1909.08053) through ``torch.distributed.tensor.parallel.parallelize_module``.

What is split over the ``tp`` processes of a mesh dimension:

- the frozen LM's attention and MLP: the column-wise / row-wise plan its transformers config names
  (``base_model_tp_plan``: q/k/v and gate/up column-wise, the output and down projections row-wise), so each
  process holds ``1/tp`` of the heads and of the MLP width and one all-reduce closes each sublayer;
- each GATED XATTN-DENSE block the same way: ``to_q`` and ``to_kv`` column-wise (``to_kv`` holds the keys'
  then the values' rows: each half is split, so a process holds its heads' keys and values), ``to_out``
  row-wise, the dense feed-forward's first matrix column-wise and its second row-wise;
- the embedding row-wise (a process looks up its slice of the vocabulary, the rows summed) and the head
  column-wise with the logits gathered, so the loss and generation see the whole vocabulary.

The Perceiver Resampler, the vision encoder, the norms, the gates and the new token rows stay whole on every
process (their inputs are the same on all of them, so their gradients are too). Every process of a
tensor-parallel group must run the same batch: the data is split over the other (data-parallel) mesh dimension
only (``train/mesh.py``).
"""

from __future__ import annotations

import re

from torch import nn

from contrastive_encoder.shared.fsdp import clip_grad_norm  # whole tensors and DTensors of several meshes
from flamingo_core.linear import RowSplitLinear

__all__ = ["clip_grad_norm", "lm_parallel_plan", "parallelize_flamingo", "check_tensor_parallel"]


def _styles():
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel
    from torch.distributed.tensor.placement_types import _StridedShard

    class KeyValueColwise(ColwiseParallel):
        """Column-wise for a fused [keys; values] projection: each half split over the processes (a process
        holds rows [K_r; V_r], ``_StridedShard(0, split_factor=2)``) and its output kept as that local pair."""

        def _partition_linear_fn(self, name, module, device_mesh):
            from torch.distributed.tensor import distribute_tensor

            for pname, param in module.named_parameters():
                placed = distribute_tensor(param, device_mesh, [_StridedShard(0, split_factor=2)])
                module.register_parameter(pname, nn.Parameter(placed, requires_grad=param.requires_grad))

        @staticmethod
        def _prepare_output_fn(output_layouts, use_local_output, mod, outputs, device_mesh):
            return outputs.to_local()  # (.., 2 * inner / tp): this process's heads' keys then values

    return {"colwise": ColwiseParallel, "rowwise": RowwiseParallel, "kv": KeyValueColwise,
            "embedding": lambda: RowwiseParallel(input_layouts=Replicate()),
            "head": lambda: ColwiseParallel(output_layouts=Replicate())}


class _GatheredHead(nn.Linear):
    """The LM head after column-wise sharding: called as a module (``Flamingo.compute_logits`` does so for any
    head that is not a plain ``nn.Linear``) so that its parallel style gathers the logits; a plain product with
    the sharded weight would mix a shard and a whole tensor."""


def _pattern(key: str) -> re.Pattern:
    return re.compile(re.escape(key).replace(r"\*", r"\d+") + "$")


def lm_parallel_plan(lm: nn.Module) -> dict[str, str]:
    """The frozen LM's decoder modules to split: ``{module path in lm.base_model: "colwise" | "rowwise"}`` from
    its config's ``base_model_tp_plan``, matched through Flamingo's layer wrappers (``decoder_layer.``).

    Raises:
        ValueError: the LM has no plan, or the plan names a style other than column-wise / row-wise.
    """
    plan = getattr(lm.config, "base_model_tp_plan", None) or {}
    if not plan:
        raise ValueError(f"--tensor-parallel: the LM {type(lm).__name__} ({lm.config.model_type}) has no "
                         "base_model_tp_plan in its transformers config to split its layers by (LLaMA, Mistral, "
                         "Qwen2, GPT-NeoX and most recent decoders have one)")
    bad = {k: v for k, v in plan.items() if v not in ("colwise", "rowwise")}
    if bad:
        key, value = next(iter(bad.items()))
        raise ValueError(f"--tensor-parallel: the LM's plan entry {key}: {value!r} is not supported (expected "
                         "colwise or rowwise)")
    patterns = [(_pattern(k), v) for k, v in plan.items()]
    out = {}
    for name, _ in lm.base_model.named_modules():
        plain = name.replace(".decoder_layer.", ".")
        style = next((v for p, v in patterns if p.match(plain)), None)
        if style is not None:
            out[name] = style
    return out


def _flamingo_plan(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Every module to split: ``{path in model: (module, style)}``."""
    base = model.lm.base_model
    prefix = next(n for n, m in model.named_modules() if m is base)
    plan = {f"{prefix}.{n}": (base.get_submodule(n), s) for n, s in lm_parallel_plan(model.lm).items()}
    for i, block in enumerate(model.xattn_layers):
        for name, style in (("attn.to_q", "colwise"), ("attn.to_kv", "kv"), ("attn.to_out", "rowwise"),
                            ("ffw.1", "colwise"), ("ffw.3", "rowwise")):
            plan[f"xattn_layers.{i}.{name}"] = (block.get_submodule(name), style)
    return plan


def check_tensor_parallel(model: nn.Module, tp: int, world: int, fsdp: bool) -> None:
    """One-line errors for a tensor-parallel size the model or the launch cannot take.

    Raises:
        ValueError: ``tp`` does not divide the processes, the LM's or the cross-attention's heads, or a split
            matrix; several data-parallel groups without ``fsdp``; a model that is not a Flamingo.
    """
    if tp < 1:
        raise ValueError(f"--tensor-parallel {tp}: expected a positive number of processes")
    if world % tp:
        raise ValueError(f"--tensor-parallel {tp} does not divide the {world} processes of this run")
    if world > tp and not fsdp:
        raise ValueError(f"--tensor-parallel {tp} with {world} processes: the other factor ({world // tp}) is data "
                         "parallel, which runs through FSDP: add --fsdp (a 2-D mesh), or launch "
                         f"{tp} processes")
    missing = [a for a in ("perceiver", "xattn_layers", "lm") if not hasattr(model, a)]
    if missing:
        raise ValueError(f"--tensor-parallel: cannot split a {type(model).__name__}: expected a Flamingo model "
                         f"(it has no {', '.join(missing)})")
    cfg = model.lm.config
    heads = {"the LM's attention heads": getattr(cfg, "num_attention_heads", None),
             "the LM's key/value heads": getattr(cfg, "num_key_value_heads", None),
             "the cross-attention heads (xattn_heads)": model.config.xattn_heads}
    for what, n in heads.items():
        if isinstance(n, int) and n % tp:
            raise ValueError(f"--tensor-parallel {tp} does not divide {what}: {n}")
    for path, (module, style) in _flamingo_plan(model).items():
        if type(module) not in (nn.Linear, RowSplitLinear):
            raise ValueError(f"--tensor-parallel: {path} is a {type(module).__name__}, not an nn.Linear that "
                             "torch's tensor parallelism can split")
        dim = module.in_features if style == "rowwise" else module.out_features // (2 if style == "kv" else 1)
        if dim % tp:
            side = "input" if style == "rowwise" else "output"
            raise ValueError(f"--tensor-parallel {tp} does not divide {path}'s {side} width {dim}")
    if model.lm.get_output_embeddings() is None:
        raise ValueError("--tensor-parallel: the LM has no output head module to split (get_output_embeddings)")


def parallelize_flamingo(model: nn.Module, tp_mesh) -> nn.Module:
    """Split ``model`` in place over the 1-D ``tp_mesh`` (module docstring); returns it.

    The model must already be on the mesh's device, with ``check_tensor_parallel`` passed. Afterwards the
    trained matrices of the cross-attention blocks are DTensors (this process's shard in ``to_local()``), and the
    model's forward, ``generate`` and ``score_continuations`` are collectives over the mesh.
    """
    from torch.distributed.tensor.parallel import parallelize_module

    tp = tp_mesh.size()
    styles = _styles()
    for module, style in _flamingo_plan(model).values():
        if type(module) is not nn.Linear:
            # RowSplitLinear's one-row product reads the whole weight; a shard takes the plain product
            module.__class__ = nn.Linear
        parallelize_module(module, tp_mesh, styles[style]())
    for block in model.xattn_layers:
        block.attn.heads //= tp  # the views (B, L, heads, dh) of this process's heads
    embedding, head = model.lm.get_input_embeddings(), model.lm.get_output_embeddings()
    tied = head.weight is embedding.weight
    parallelize_module(embedding, tp_mesh, styles["embedding"]())
    parallelize_module(head, tp_mesh, styles["head"]())
    if tied:  # both split by vocabulary row (Shard(0)): one matrix again
        head.weight = embedding.weight
    head.__class__ = _GatheredHead
    model.fused_head_loss = False  # the head's gradient by autograd through the gathered logits
    return model
