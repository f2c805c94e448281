"""The optimizer of stage 2: AdamW parameter groups (decay, gate and resampler learning rates) and the
warm-up-then-constant schedule (paper Appendix B.1.2)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["DECAY_SCOPES", "param_groups", "warmup_constant"]

# Which trainable parameters AdamW decays:
#   "matrices": the GATED XATTN-DENSE blocks' matrices only; norms, tanh gates, the new token rows and the
#       resampler are not decayed. The default: the tanh gates train at --gate-lr-mult (100x) the base rate,
#       and AdamW's decoupled decay scales with the learning rate, so decayed gates would be pulled back to 0
#       100x faster than the other weights; the new token rows would shrink away from the frozen embeddings.
#   "paper": every trainable parameter but the Perceiver Resampler's, as the paper (Appendix B.1.2: weight decay
#       0.1 on the trained parameters, none on the resampler).
DECAY_SCOPES = ("matrices", "paper")


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float | None = None,
                 gate_lr_mult: float = 1.0, resampler_lr_mult: float = 1.0,
                 decay: str = "matrices") -> list[dict[str, Any]]:
    """AdamW groups from the trainable parameters: decayed, not decayed, and the optional faster or slower ones.

    ``decay`` picks the decayed parameters (``DECAY_SCOPES``); the resampler is never decayed. Two optional
    learning-rate multipliers (each makes its own group, decayed as its parameters are; both need ``lr``):

    - ``gate_lr_mult``: the tanh gates (``alpha_xattn``, ``alpha_dense``). Adam moves a gate by about its
      learning rate per step, so from 0 it needs many steps before the LM hears the images.
    - ``resampler_lr_mult``: the Perceiver Resampler. Early in training the cheapest way to lower the loss is
      to learn the captions' wording; at a high learning rate the resampler is then pulled into emitting the
      same tokens for every image (a learned bias), and the image information is lost.
    """
    from flamingo_core.gated_xattn import GatedCrossAttentionBlock

    if decay not in DECAY_SCOPES:
        raise ValueError(f"param_groups: decay {decay!r}: expected one of {', '.join(DECAY_SCOPES)}")
    resampler = getattr(model, "perceiver", None)
    resampler_all = {id(p) for p in resampler.parameters()} if resampler is not None else set()
    gate_ids, decay_ids = set(), set()
    for module in model.modules():
        if isinstance(module, GatedCrossAttentionBlock):
            if decay == "matrices":
                decay_ids.update(id(p) for p in module.parameters() if p.ndim >= 2)
            if gate_lr_mult != 1.0:
                gate_ids.update({id(module.alpha_xattn), id(module.alpha_dense)})
    if decay == "paper":
        decay_ids = {id(p) for p in model.parameters() if id(p) not in resampler_all}
    resampler_ids = resampler_all if resampler_lr_mult != 1.0 else set()
    if (gate_ids or resampler_ids) and lr is None:
        raise ValueError("param_groups: gate_lr_mult / resampler_lr_mult need the base lr")
    decayed, not_decayed, gates, resampler_params = [], [], [], []
    for p in model.parameters():
        if p.requires_grad:
            group = (gates if id(p) in gate_ids else resampler_params if id(p) in resampler_ids
                     else decayed if id(p) in decay_ids else not_decayed)
            group.append(p)
    groups = [{"params": decayed, "weight_decay": weight_decay}, {"params": not_decayed, "weight_decay": 0.0}]
    if gates:
        gate_decay = weight_decay if decay == "paper" else 0.0
        groups.append({"params": gates, "weight_decay": gate_decay, "lr": lr * gate_lr_mult})
    if resampler_params:
        groups.append({"params": resampler_params, "weight_decay": 0.0, "lr": lr * resampler_lr_mult})
    return groups


def warmup_constant(warmup_steps: int):
    """LR multiplier: linear from 1/warmup to 1 over ``warmup_steps``, then 1 (paper: warm-up, then constant)."""
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
