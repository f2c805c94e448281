"""OpenFlamingo 2.0.1 as the peer of the tests and benchmarks: imported from ``benchmarks/.peer-site`` (installed by
``bash benchmarks/peers/install_openflamingo.sh``, never into the packages' environment) with the patches it needs
on transformers 5. Nothing here is part of the packages.

Patches (applied once, by ``import_openflamingo``):

- ``FlamingoLMMixin.forward(input_ids, attention_mask, **kw)`` requires ``attention_mask`` as a positional
  argument; transformers 5's ``generate`` leaves it out when it is all ones (and calls the prefill with keywords
  only), so it defaults to None here.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["EVERY", "INSTALL_COMMAND", "PEER_SITE", "TINY_LMS", "TINY_VIT", "TINY_VIT_CONFIG", "build_tiny_peer",
           "filter_state_dict_to_trainable", "import_openflamingo", "is_installed", "randomise_trainable",
           "register_tiny_vit", "save_tiny_lm"]

ROOT = Path(__file__).resolve().parents[2]
PEER_SITE = ROOT / "benchmarks" / ".peer-site"
INSTALL_COMMAND = "bash benchmarks/peers/install_openflamingo.sh"
_PATCHED = "_flamingo_suite_patched"


def is_installed() -> bool:
    return (PEER_SITE / "open_flamingo").is_dir()


def import_openflamingo():
    """The ``open_flamingo`` package, patched for transformers 5.

    The peer site goes at the END of ``sys.path``: what the environment already has (open_clip, transformers)
    wins, so the peer and this suite share one open_clip (and its registered model configs); only the modules the
    environment lacks (open_flamingo, einops, einops_exts) come from the peer site.
    """
    if not is_installed():
        raise ModuleNotFoundError(f"OpenFlamingo is not installed in {PEER_SITE}: run `{INSTALL_COMMAND}`")
    if str(PEER_SITE) not in sys.path:
        sys.path.append(str(PEER_SITE))
    import open_flamingo
    from open_flamingo.src.flamingo_lm import FlamingoLMMixin

    if not getattr(FlamingoLMMixin, _PATCHED, False):
        original_forward = FlamingoLMMixin.forward

        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            return original_forward(self, input_ids, attention_mask, **kwargs)

        FlamingoLMMixin.forward = forward
        setattr(FlamingoLMMixin, _PATCHED, True)
    return open_flamingo


def filter_state_dict_to_trainable():
    """OpenFlamingo's own ``train_utils.filter_state_dict_to_trainable(model, state_dict)``: what its training
    script writes to ``checkpoint.pt`` (the trained weights and every weight whose name holds "embed", without the
    duplicates under ``old_decoder_blocks`` / ``gated_cross_attn_layers`` and without the vision encoder).

    Compiled from the function's source in the peer site: ``open_flamingo/train/train_utils.py`` imports wandb and
    FSDP at module level, which the peer site does not install.
    """
    import ast

    import torch

    import_openflamingo()
    path = PEER_SITE / "open_flamingo" / "train" / "train_utils.py"
    tree = ast.parse(path.read_text())
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "filter_state_dict_to_trainable")
    namespace = {"torch": torch}
    exec(compile(ast.Module(body=[func], type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
    return namespace["filter_state_dict_to_trainable"]


# --- tiny random OpenFlamingo models, for the tests and benchmarks that compare with the peer

TINY_VIT = "of-test-vit"  # a tiny open_clip ViT, registered with open_clip by ``register_tiny_vit``
TINY_VIT_CONFIG = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8,
                                                   "head_width": 16},
                   "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}
EVERY = 2  # OpenFlamingo's cross_attn_every_n_layers: blocks before layers 1 and 3 of 4
# The published LMs have more embedding rows than tokens (MPT-7B, RedPajama: OpenFlamingo's resize shrinks them);
# LLaMA has as many, and no pad token (OpenFlamingo adds <PAD> as well: the resize grows it).
TINY_LMS = {
    "mpt": {"model_type": "mpt", "vocab_size": 300, "d_model": 64, "n_heads": 4, "n_layers": 4, "max_seq_len": 512,
            "expansion_ratio": 2},
    "gpt_neox": {"model_type": "gpt_neox", "vocab_size": 300, "hidden_size": 64, "num_hidden_layers": 4,
                 "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 512,
                 "tie_word_embeddings": False, "bos_token_id": 256, "eos_token_id": 256},
    "llama": {"model_type": "llama", "vocab_size": 257, "hidden_size": 64, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
              "max_position_embeddings": 512, "bos_token_id": 256, "eos_token_id": 256},
}  # fmt: skip


def register_tiny_vit(folder: Path) -> None:
    """Register ``TINY_VIT`` with open_clip (its config written to ``folder``)."""
    import json

    import open_clip

    path = Path(folder) / f"{TINY_VIT}.json"
    path.write_text(json.dumps(TINY_VIT_CONFIG))
    open_clip.add_model_config(path)


def save_tiny_lm(folder: Path, family: str, seed: int = 0, **overrides) -> Path:
    """A tiny random LM of ``family`` (its ``TINY_LMS`` config, ``overrides`` over it) and the byte tokenizer
    (LLaMA's without a pad token), with matrices drawn at std 0.3 so greedy decoding does not repeat one token."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from flamingo_core.tokenization import build_byte_tokenizer

    cfg = {**TINY_LMS[family], **overrides}
    lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lm.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    lm.save_pretrained(folder)
    tok = build_byte_tokenizer()
    if family == "llama":
        tok.pad_token = None
    tok.save_pretrained(folder)
    return Path(folder)


def randomise_trainable(model, tok, seed: int) -> None:
    """OpenFlamingo's trainable weights at random (gates in [0.5, 1]); of the input embedding only the new tokens'
    rows, the others staying the LM's as its training leaves them (their gradient is masked)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    new_ids = [tok.convert_tokens_to_ids(t) for t in ("<|endofchunk|>", "<image>")]
    embedding = model.lang_encoder.get_input_embeddings().weight
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if p is embedding:
                p[new_ids] = torch.randn(len(new_ids), p.shape[1], generator=gen) * p.std()
            elif name.endswith(("attn_gate", "ff_gate")):
                p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=gen))
            elif p.ndim == 1:  # layer norms
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 if name.endswith("latents") else 0.1))


def build_tiny_peer(lm_folder: Path, checkpoint: Path | None = None, seed: int = 1):
    """(model, image_processor, tokenizer): OpenFlamingo's factory on ``lm_folder`` and ``TINY_VIT`` (registered
    first), the tower drawn from torch seed 0 (as a converted model's is); then the trainable weights from
    ``checkpoint`` (a safetensors file of ``filter_state_dict_to_trainable``), or at random from ``seed``."""
    import torch

    of = import_openflamingo()
    torch.manual_seed(0)
    model, image_processor, tok = of.create_model_and_transforms(
        TINY_VIT, None, str(lm_folder), str(lm_folder), cross_attn_every_n_layers=EVERY, use_local_files=True)
    if checkpoint is None:
        randomise_trainable(model, tok, seed)
    else:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(checkpoint)), strict=False)
    model.eval()
    tok.padding_side = "left"
    return model, image_processor, tok
