"""Shared helpers for the flamingo_core tests: tiny random LMs of four architectures, a conv-stem vision
encoder (the package's ``conv-tiny`` double), seeded random images, tar-shard members."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import torch
from PIL import Image

import flamingo_core as fc

TINY_LMS = {
    "llama": None,  # the tiny preset's own LlamaConfig
    "gpt2": {"model_type": "gpt2", "vocab_size": 300, "n_embd": 64, "n_layer": 2, "n_head": 4,
             "n_positions": 512, "bos_token_id": 256, "eos_token_id": 256},
    "opt": {"model_type": "opt", "vocab_size": 257, "hidden_size": 64, "num_hidden_layers": 2, "ffn_dim": 128,
            "num_attention_heads": 4, "max_position_embeddings": 512, "word_embed_proj_dim": 32,
            "bos_token_id": 256, "eos_token_id": 256, "pad_token_id": 256},
    "gpt_neox": {"model_type": "gpt_neox", "vocab_size": 257, "hidden_size": 64, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 512,
                 "tie_word_embeddings": False, "bos_token_id": 256, "eos_token_id": 256},
}


def make_model(arch: str = "llama", **overrides) -> fc.Flamingo:
    if TINY_LMS.get(arch) is not None:
        overrides.setdefault("lm_config", TINY_LMS[arch])
    return fc.create_model("tiny", **overrides)


def set_gates(model: fc.Flamingo, value: float) -> None:
    with torch.no_grad():
        for block in model.xattn_layers:
            block.alpha_xattn.fill_(value)
            block.alpha_dense.fill_(value)


def random_image(seed: int, size: int = 32) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))




def diversify_lm(model: fc.Flamingo, std: float = 0.3, seed: int = 0) -> fc.Flamingo:
    """Re-draw the tiny LM's matrices with a larger std: at the default 0.02 a random LM repeats one token,
    which would make generation comparisons trivially equal."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.lm.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def add_member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add a file member ``name`` holding ``data`` to an open tar."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def png_bytes(colour, size: int = 16) -> bytes:
    """A one-colour PNG, encoded."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()
