"""Size a Flamingo training run before renting the cluster: parameters, optimizer state, activation memory per
token and FLOPs per token of the 3B / 9B / 80B spacing presets at the paper's sizes (arXiv 2204.14198, Table 4),
each model built on the meta device (no weights are allocated, nothing is computed) and measured from it:

- parameters: counted from the built modules (frozen LM, frozen NFNet-F6, trained resampler and GATED
  XATTN-DENSE blocks, the new token rows);
- state: trained parameters in fp32 with their fp32 gradients and AdamW's two moments (16 bytes each), frozen
  ones in bf16 (2 bytes), as ``flamingo train --frozen-dtype bfloat16`` keeps them; divided by the processes
  FSDP2 shards over;
- activations: the tensors autograd saves for the backward of one training forward (``saved_tensors_hooks``),
  at 2 bytes a value (bf16 activations), per text token of the sample below;
- FLOPs: forward + backward of that sample (``torch.utils.flop_counter``: matrix products and attention; the
  frozen LM needs no weight gradients, the frozen vision encoder runs forward only), per text token.

The sample is an M3W sequence as the paper trains it: 256 text tokens with 5 images at the encoder's 288 px.
The frozen LM has Chinchilla's shapes from Table 4 (layers, width, heads) on a GPT-NeoX-style decoder (GeLU MLP
of 4x the width, vocabulary 32,000); the cross-attention has Table 4's width and heads (heads of 128), the
resampler 6 layers of 16 heads over the 1536-channel NFNet-F6 features, 64 latents.

Usage: python tools/plan_cluster.py [--gpus 8 --nodes 4 --gpu-memory-gb 80] [--markdown]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import torch

# Table 4: (frozen LM layers, width, heads), every how many layers a GATED XATTN-DENSE block goes
PAPER_SIZES = {
    "flamingo-3b-spacing": ((24, 2048, 16), 1),
    "flamingo-9b-spacing": ((40, 4096, 32), 4),
    "flamingo-80b-spacing": ((80, 8192, 64), 7),
}
TOKENS, IMAGES = 256, 5  # one M3W training sequence (paper Appendix A.3.2)


@dataclass
class Plan:
    name: str
    lm: int
    vision: int
    trained: int
    xattn_blocks: int
    state_bytes: int
    activation_bytes_per_token: float
    flops_per_token: float

    @property
    def total(self) -> int:
        return self.lm + self.vision + self.trained


def build_on_meta(preset: str):
    """The preset at the paper's size, on the meta device."""
    import contrastive_encoder as ce
    from contrastive_encoder.vision import FrozenVisionEncoder
    from flamingo_core import create_model
    from flamingo_core.lm_adapter import NewTokenRows

    (layers, width, heads), _every = PAPER_SIZES[preset]
    lm_config = {"model_type": "gpt_neox", "vocab_size": 32000, "hidden_size": width, "num_hidden_layers": layers,
                 "num_attention_heads": heads, "intermediate_size": 4 * width, "max_position_embeddings": 2048,
                 "tie_word_embeddings": False}
    # the new rows' starting values are a mean over the frozen matrix, which the meta device does not hold
    NewTokenRows._init_rows = staticmethod(lambda weight, n, gen: torch.zeros(n, weight.shape[1], device="meta"))
    with torch.device("meta"):
        # the identifier hashes the weights: none here
        tower = FrozenVisionEncoder.from_dual_encoder(ce.create_model("nfnet-f6-bert-base"), identifier="meta")
        model = create_model(preset, vision_encoder=tower.to(torch.bfloat16), lm="random", lm_config=lm_config,
                             tokenizer="byte", frozen_dtype="bfloat16", xattn_heads=heads, xattn_dim_head=128,
                             resampler_heads=16, resampler_dim_head=96)
    model.fused_head_loss = False  # the head's gradient by autograd: what the flop counter can see
    return model


def _training_pass(model) -> None:
    """Forward and backward of one sample (``TOKENS`` tokens, ``IMAGES`` images) through the parts of
    ``Flamingo.forward``, minus its checks that read values (the meta device holds none)."""
    import torch.nn.functional as F

    from flamingo_core.lm_adapter import MediaContext

    size = model.vision_encoder.image_size
    ids = torch.zeros(1, TOKENS, dtype=torch.long, device="meta")
    with torch.no_grad():  # the frozen encoder: forward only
        x_f = model.vision_encoder(torch.zeros(IMAGES, 3, size, size, device="meta", dtype=torch.bfloat16))
    visual = model.perceiver(x_f.float())[None]  # (1, N, R, d)
    context = MediaContext(model.phi(ids), visual, None, model.config.num_latents)
    # no mask and no positions: the LM counts them itself (given positions, transformers reads them for packing)
    logits, _, _ = model.run_lm(ids, None, None, context)
    F.cross_entropy(logits[0, :-1].float(), ids[0, 1:], reduction="sum").backward()


def measure(preset: str) -> Plan:
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils.flop_counter import FlopCounterMode

    model = build_on_meta(preset).train()
    # fake tensors: transformers skips the checks that read values (packed-sequence detection) while tracing
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    # the mode converts each parameter once (memoised): weights (and views of them, W^T) that autograd saves
    # share these storages; they are not activations
    fakes = [mode.from_tensor(p) for p in model.parameters()]
    weights = {StorageWeakRef(p.untyped_storage()) for p in fakes}
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lm = sum(p.numel() for p in model.lm.parameters())
    vision = sum(p.numel() for p in model.vision_encoder.parameters())
    saved: dict[int, int] = {}

    def pack(t):
        if t.is_floating_point() and StorageWeakRef(t.untyped_storage()) not in weights:
            saved[id(t)] = t.numel()
        return t

    counter = FlopCounterMode(display=False)
    with mode, counter, \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _training_pass(model)
    del fakes
    return Plan(preset, lm, vision, trained, len(model.xattn_layers), 16 * trained + 2 * (lm + vision),
                2 * sum(saved.values()) / TOKENS, counter.get_total_flops() / TOKENS)


def _si(x: float, unit: str = "") -> str:
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}"


def table(plans: list[Plan], gpus: int, gpu_gb: float) -> str:
    head = ("| preset (paper size) | frozen LM | vision (NFNet-F6) | trained (resampler + xattn) | xattn blocks "
            f"| state, whole | state per GPU, FSDP over {gpus} | activations per token | train FLOPs per token "
            f"| GPUs of {gpu_gb:g} GB to hold the state |")
    rows = [head, "|" + " --- |" * 10]
    for p in plans:
        need = math.ceil(p.state_bytes / (gpu_gb * 1e9 * 0.8))  # 20% kept for activations and buffers
        rows.append(f"| {p.name} ({_si(p.total)}) | {_si(p.lm)} | {_si(p.vision)} | {_si(p.trained)} "
                    f"| {p.xattn_blocks} | {_si(p.state_bytes, 'B')} | {_si(p.state_bytes / gpus, 'B')} "
                    f"| {_si(p.activation_bytes_per_token, 'B')} | {_si(p.flops_per_token, 'FLOP')} | {need} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="plan_cluster", description=__doc__.split("\n\n")[0])
    p.add_argument("--gpus", type=int, default=8, help="GPUs per node")
    p.add_argument("--nodes", type=int, default=1, help="nodes")
    p.add_argument("--gpu-memory-gb", type=float, default=80.0, help="memory of one GPU, GB")
    p.add_argument("--preset", action="append", choices=sorted(PAPER_SIZES), help="repeatable (default: all)")
    args = p.parse_args(argv)
    if args.gpus < 1 or args.nodes < 1 or args.gpu_memory_gb <= 0:
        p.error("--gpus, --nodes and --gpu-memory-gb must be positive")
    plans = [measure(name) for name in args.preset or PAPER_SIZES]
    print(table(plans, args.gpus * args.nodes, args.gpu_memory_gb))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
