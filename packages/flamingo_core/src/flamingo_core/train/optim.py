"""The optimizer of stage 2: AdamW parameter groups (decay, gate and resampler learning rates) and the
warm-up-then-constant schedule (paper Appendix B.1.2)."""

from __future__ import annotations

from typing import Any

import torch


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float | None = None,
                 gate_lr_mult: float = 1.0, resampler_lr_mult: float = 1.0) -> list[dict[str, Any]]:
    """AdamW groups: decay on the matrices of the GATED XATTN-DENSE blocks, none elsewhere.

    The paper applies weight decay to the cross-attention layers but not to the Perceiver Resampler; norms,
    tanh gates, biases and the new token rows are never decayed. Two optional learning-rate multipliers (each
    makes its own group; both need ``lr``):

    - ``gate_lr_mult``: the tanh gates (``alpha_xattn``, ``alpha_dense``). Adam moves a gate by about its
      learning rate per step, so from 0 it needs many steps before the LM hears the images.
    - ``resampler_lr_mult``: the Perceiver Resampler. Early in training the cheapest way to lower the loss is
      to learn the captions' wording; at a high learning rate the resampler is then pulled into emitting the
      same tokens for every image (a learned bias), and the image information is lost.
    """
    from flamingo_core.gated_xattn import GatedCrossAttentionBlock

    decay_ids, gate_ids = set(), set()
    for module in model.modules():
        if isinstance(module, GatedCrossAttentionBlock):
            decay_ids.update(id(p) for p in module.parameters() if p.ndim >= 2)
            if gate_lr_mult != 1.0:
                gate_ids.update({id(module.alpha_xattn), id(module.alpha_dense)})
    resampler = getattr(model, "perceiver", None)
    resampler_ids = {id(p) for p in resampler.parameters()} if resampler is not None and resampler_lr_mult != 1.0 \
        else set()
    if (gate_ids or resampler_ids) and lr is None:
        raise ValueError("param_groups: gate_lr_mult / resampler_lr_mult need the base lr")
    decay, no_decay, gates, resampler_params = [], [], [], []
    for p in model.parameters():
        if p.requires_grad:
            group = (gates if id(p) in gate_ids else resampler_params if id(p) in resampler_ids
                     else decay if id(p) in decay_ids else no_decay)
            group.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if gates:
        groups.append({"params": gates, "weight_decay": 0.0, "lr": lr * gate_lr_mult})
    if resampler_params:
        groups.append({"params": resampler_params, "weight_decay": 0.0, "lr": lr * resampler_lr_mult})
    return groups


def warmup_constant(warmup_steps: int):
    """LR multiplier: linear from 1/warmup to 1 over ``warmup_steps``, then 1 (paper: warm-up, then constant)."""
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
