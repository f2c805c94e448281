"""OpenFlamingo checkpoints as Flamingo models of this suite (Awadalla et al., "OpenFlamingo: An Open-Source
Framework for Training Large Autoregressive Vision-Language Models", arXiv 2308.01390; code: OpenFlamingo 2.0.1).

``from_openflamingo(checkpoint, lm=..., vision=...)`` builds a ``Flamingo`` that computes what OpenFlamingo's
``Flamingo.forward`` computes with the same frozen LM and vision tower; ``convert_openflamingo`` (``flamingo
convert-openflamingo``) writes it as a saved-model folder. ``checkpoint`` is OpenFlamingo's ``checkpoint.pt`` (read
with ``weights_only=True``; a training checkpoint's ``model_state_dict`` and DDP / checkpointing prefixes are
accepted) or a safetensors file of the same keys. Bad inputs raise a one-line ``ValueError`` before any weight moves.

Names (OpenFlamingo -> here): ``perceiver.*`` -> ``perceiver.*`` (the same modules and names, ``frame_embs`` (F, d)
-> ``time_embeddings`` (F, 1, d)); ``lang_encoder.<layers>.<i>.gated_cross_attn_layer.*`` (its ``FlamingoLayer``
wrapper; or the duplicate ``lang_encoder.gated_cross_attn_layers.<i>.*``) -> ``xattn_layers.<k>.*`` with
``attn_gate`` -> ``alpha_xattn``, ``ff_gate`` -> ``alpha_dense``, ``ff.*`` -> ``ffw.*``, ``attn.{norm, to_q, to_kv,
to_out}`` unchanged; the ``<image>`` / ``<|endofchunk|>`` rows of the LM's resized input (and, untied, output)
embedding matrix -> ``new_tokens.input_rows`` / ``output_rows``.

Computation, compared with OpenFlamingo's code (the test compares logits and greedy tokens on the three families):

- the same: layer norms (eps 1e-5, with bias), bias-free projections, exact GELU, attention scaled by
  dim_head ** -0.5 (OpenFlamingo subtracts the row maximum first: the same softmax), ``to_kv`` split as k | v and
  heads the leading factor of the inner width, the resampler's final norm, tanh gates; phi is OpenFlamingo's
  ``cumsum(input_ids == <image>)`` and a token sees the latents of image phi only (OpenFlamingo 2.0.1 always builds
  ``only_attend_immediate_media=True``); decoded tokens see the prompt's last image in both.
- decoding: ``generate`` here never emits ``<image>``; OpenFlamingo's can (the tokens after it then see image 1, its
  media_locations being that one step's); ``suppress_tokens=[<image>]`` there gives the same tokens.
- text before the first image: OpenFlamingo zeroes its attention weights, here the attention output is zeroed;
  either way the attention leaves it unchanged and the gated feed-forward still applies.
- time embeddings: OpenFlamingo 2.0.1 builds none (``frame_embs`` / ``media_time_embs`` are None); ours are then
  zeros, which add nothing. ``media_time_embs`` (one per image position in the sequence) has no counterpart: refused.
- padding images (OpenFlamingo needs as many per sample): it encodes them and no token attends to them; here
  ``media_mask`` marks them and they are skipped.
- placement: a block before layer i when (i + 1) % n == 0 (``cross_attn_placement="openflamingo"``), n read from the
  checkpoint's layer indices.
- 8 heads of 64 in the resampler and the blocks: what OpenFlamingo 2.0.1 always builds; the shapes cannot tell heads
  from width, so a fork with others needs ``resampler_heads`` / ``xattn_heads`` (and ``*_dim_head``) given.
- vocabulary: OpenFlamingo adds ``<|endofchunk|>``, ``<image>`` (and ``<PAD>`` when the tokenizer has no pad token) as
  additional special tokens and resizes the LM's embeddings to ``len(tokenizer)``. The converted model's tokenizer
  gets them the same way, so token ids and prompts are OpenFlamingo's. An LM with more rows than that (MPT-7B,
  RedPajama: 50432 rows, fewer tokens) loses the rest in OpenFlamingo's resize but keeps them here: logits have columns
  for ids no text tokenizes to (untrained padding rows); ``suppress_tokens=range(len(tokenizer), vocab_size)`` in
  ``generate`` gives exact parity.
- OpenFlamingo trains the whole input embedding matrix but masks its gradient to the two new rows
  (``train_utils.train_one_epoch``), so every other row is the LM's: checked, as the proof that ``--lm`` is the LM the
  checkpoint was trained on.
- output rows of an untied LM: OpenFlamingo saves frozen weights whose name holds "embed" only, so GPT-NeoX's
  ``embed_out`` (named so before transformers 5) is in the checkpoint and LLaMA's ``lm_head`` is not. Without them the
  rows are the LM's own where its matrix had those ids (the resize kept them), else OpenFlamingo draws them anew at
  every load; here they then start as ``NewTokenRows`` does (the mean row), with a warning.

Published checkpoints (hub ids; nothing is downloaded unless the loaders are allowed to; their weights could not be
fetched here, so none of them has been run: the test builds random models of the same families):

- ``openflamingo/OpenFlamingo-9B-vitl-mpt7b``: ``--lm mosaicml/mpt-7b`` (transformers' native ``MptForCausalLM``
  loads it without remote code; OpenFlamingo used ``anas-awadalla/mpt-7b``, a copy with edited remote code whose
  weights should be the same: the embedding-row check says if not), every 4.
- ``openflamingo/OpenFlamingo-4B-vitl-rpj3b``: ``--lm togethercomputer/RedPajama-INCITE-Base-3B-v1`` (GPT-NeoX), every
  2; ``-langinstruct``: ``togethercomputer/RedPajama-INCITE-Instruct-3B-v1``.
- ``openflamingo/OpenFlamingo-3B-vitl-mpt1b`` (and ``-langinstruct``): not supported. Their LM,
  ``anas-awadalla/mpt-1b-redpajama-200b(-dolly)``, is MosaicGPT, remote code only (never enabled here; its forward
  takes no ``inputs_embeds`` either); it would need a port to a native transformers class first.
- ``openflamingo/OpenFlamingo-9B-deprecated`` (v1, LLaMA-7B, every 4): ``--lm`` a LLaMA-7B folder in transformers
  format; its ``lm_head`` rows are not in the checkpoint (see above); saved by OpenFlamingo v1, whose names are
  expected to be 2.0.1's (not verified).

All take ``--vision open_clip:ViT-L-14-quickgelu@openai``: OpenFlamingo trained on open_clip 2.x, whose OpenAI path
built those weights with QuickGELU (``open_clip:ViT-L-14@openai`` builds GELU under open_clip 3.x; see the tower's module).
"""

from __future__ import annotations

import argparse
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .config import CROSS_ATTN_PLACEMENTS, FROZEN_DTYPES, FlamingoConfig
from .flamingo import Flamingo
from .gated_xattn import GatedCrossAttentionBlock
from .lm_adapter import find_decoder_layers
from .perceiver import PerceiverResampler

__all__ = ["MEDIA_TOKEN", "EOC_TOKEN", "add_convert_parser", "convert_openflamingo", "from_openflamingo",
           "openflamingo_tokenizer", "read_checkpoint", "run_convert"]

logger = logging.getLogger(__name__)

MEDIA_TOKEN, EOC_TOKEN, PAD_TOKEN = "<image>", "<|endofchunk|>", "<PAD>"  # OpenFlamingo's factory.py
OF_DIM_HEAD = 64  # OpenFlamingo 2.0.1's PerceiverResampler(dim) and GatedCrossAttentionBlock(dim, dim_visual) default
# wrappers that prefix parameter names: DDP, activation checkpointing, torch.compile, FSDP
_WRAPPER_SEGMENTS = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")
_LEGACY_OUTPUT_NAMES = {"GPTNeoXForCausalLM": ["embed_out"]}  # the head's name before transformers 5
_XATTN = re.compile(r"lang_encoder\.(?P<path>.+)\.(?P<layer>\d+)\.gated_cross_attn_layer\.(?P<rest>.+)")
_XATTN_DUPLICATE = re.compile(r"lang_encoder\.gated_cross_attn_layers\.(?P<layer>\d+)\.(?P<rest>.+)")
_CREATE_MODEL_ARGS = ("dtype", "torch_dtype", "device_map")


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """OpenFlamingo's weights: a ``checkpoint.pt`` (``torch.load(weights_only=True)``; a training checkpoint's
    ``model_state_dict``) or a safetensors file, with DDP's ``module.`` and wrapper segments taken out of the names."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"OpenFlamingo checkpoint {path}: no such file")
    from contrastive_encoder.shared.readers import load_weights

    if path.suffix == ".safetensors":
        state = load_weights(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - pickle, zip and torch errors alike: not a weights-only checkpoint
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
            why = f"it pickles a Python object ({found[1]}), which is never unpickled here" if found else \
                f"unreadable ({type(e).__name__})"
            raise ValueError(f"OpenFlamingo checkpoint {path}: not a weights-only torch checkpoint: {why}") from e
    if isinstance(state, dict) and isinstance(state.get("model_state_dict"), dict):  # train_utils.save_checkpoint
        state = state["model_state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"OpenFlamingo checkpoint {path}: expected a state dict of tensors (or one under "
                         f"'model_state_dict'), got {type(state).__name__}")
    out = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module."):]
        for segment in _WRAPPER_SEGMENTS:
            key = key.replace(segment, "")
        out[key] = value
    return out


@dataclass
class _LMLayout:
    """What the checkpoint's names must fit: the LM's structure, read from a meta-device copy (no weights)."""

    name: str
    cls: str
    layers_path: str  # the decoder layers' ModuleList, e.g. "transformer.blocks"
    num_layers: int
    hidden: int
    input_name: str  # the input embedding's module path
    output_names: list[str] = field(default_factory=list)  # the untied head's path (and its legacy names); [] tied

    def describe(self) -> str:
        return f"LM '{self.name}' ({self.cls}, {self.num_layers} layers of width {self.hidden})"


def _lm_layout(name: str) -> _LMLayout:
    from transformers import AutoConfig, AutoModelForCausalLM

    from contrastive_encoder.shared.pretrained import resolve_pretrained
    from contrastive_encoder.shared.readers import first_line

    path = resolve_pretrained(name)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=Path(path).is_dir())
        with torch.device("meta"):
            lm = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as e:
        why = "it needs remote code, which is never enabled here" if "trust_remote_code" in str(e) else first_line(e)
        raise ValueError(f"cannot use LM '{name}' for an OpenFlamingo checkpoint: {why}") from e
    _, _, layers = find_decoder_layers(lm)
    names = {id(m): n for n, m in lm.named_modules()}
    emb_in, emb_out = lm.get_input_embeddings(), lm.get_output_embeddings()
    tied = emb_out is None or emb_out.weight is emb_in.weight
    outputs = [] if tied else [names[id(emb_out)], *_LEGACY_OUTPUT_NAMES.get(type(lm).__name__, [])]
    return _LMLayout(name, type(lm).__name__, names[id(layers)], len(layers), lm.config.hidden_size,
                     names[id(emb_in)], outputs)


@dataclass
class _Parts:
    """The checkpoint split into what this suite trains, in its names, and the LM's embedding matrices."""

    perceiver: dict[str, torch.Tensor]
    blocks: dict[int, dict[str, torch.Tensor]]  # decoder layer index -> block weights (our names)
    input_embedding: torch.Tensor
    output_embedding: torch.Tensor | None


_GATES = {"attn_gate": "alpha_xattn", "ff_gate": "alpha_dense"}


def _block_name(rest: str) -> str:
    """A GatedCrossAttentionBlock parameter of OpenFlamingo (helpers.py) -> ours (gated_xattn.py)."""
    return _GATES.get(rest) or ("ffw." + rest[len("ff."):] if rest.startswith("ff.") else rest)


def _openflamingo_block_name(name: str) -> str:
    """The inverse of ``_block_name``, for messages in the checkpoint's own names."""
    gates = {ours: theirs for theirs, ours in _GATES.items()}
    return gates.get(name) or ("ff." + name[len("ffw."):] if name.startswith("ffw.") else name)


def _split(state: dict[str, torch.Tensor], lm: _LMLayout, source: str) -> _Parts:
    """Sort the checkpoint's keys; a one-line error for keys that fit neither OpenFlamingo nor ``lm``."""
    perceiver, blocks, duplicates, unknown, elsewhere = {}, {}, {}, [], []
    embeddings: dict[str, torch.Tensor] = {}
    wanted = {f"lang_encoder.{n}.weight" for n in [lm.input_name, *lm.output_names]}
    for key, value in state.items():
        if key.startswith("perceiver."):
            perceiver[key[len("perceiver."):]] = value
        elif m := _XATTN.fullmatch(key):
            if m["path"] != lm.layers_path:
                elsewhere.append((m["path"], key))
            blocks.setdefault(int(m["layer"]), {})[_block_name(m["rest"])] = value
        elif m := _XATTN_DUPLICATE.fullmatch(key):
            duplicates.setdefault(int(m["layer"]), {})[_block_name(m["rest"])] = value
        elif key in wanted:
            embeddings[key] = value
        elif not key.startswith(("lang_encoder.", "vision_encoder.")):  # the frozen parts come from --lm / --vision
            unknown.append(key)
    where = f"{source} does not fit {lm.describe()}"
    if unknown:
        raise ValueError(f"{source} is not an OpenFlamingo checkpoint: unexpected keys {unknown[:4]} (expected "
                         "perceiver.*, lang_encoder.*, vision_encoder.*)")
    if elsewhere:
        path, key = elsewhere[0]
        raise ValueError(f"{where}: its cross-attention blocks are in lang_encoder.{path} (e.g. {key}), the LM's "
                         f"decoder layers are {lm.layers_path}")
    if media_time := [k for k in perceiver if k.startswith("media_time_embs")]:
        raise ValueError(f"{source}: perceiver.{media_time[0]} (OpenFlamingo's max_num_media time embeddings, one "
                         "per image position) has no counterpart in this suite's Perceiver Resampler")
    if "latents" not in perceiver or not (blocks or duplicates):
        raise ValueError(f"{source} is not an OpenFlamingo checkpoint: no perceiver.latents or no "
                         f"lang_encoder.{lm.layers_path}.<i>.gated_cross_attn_layer.* keys")
    input_key = f"lang_encoder.{lm.input_name}.weight"
    if input_key not in embeddings:
        found = [k for k in state if k.startswith("lang_encoder.") and re.search(r"embed|wte", k)
                 and "gated_cross_attn" not in k]
        raise ValueError(f"{where}: no input embedding {input_key} (embedding keys in the checkpoint: {found[:3]})")
    output = next((embeddings[k] for k in (f"lang_encoder.{n}.weight" for n in lm.output_names) if k in embeddings),
                  None)
    return _Parts(perceiver, blocks or duplicates, embeddings[input_key], output)


def _heads(inner: int, given_heads: int | None, given_dim: int | None, what: str, source: str) -> tuple[int, int]:
    dim_head = given_dim or (inner // given_heads if given_heads else OF_DIM_HEAD)
    heads = given_heads or inner // dim_head
    if heads * dim_head != inner:
        raise ValueError(f"{source}: the {what}'s attention is {inner} wide, which is not {heads} heads of "
                         f"{dim_head}; give its heads and dim_head")
    return heads, dim_head


def _mult(hidden: int, dim: int, what: str, source: str) -> int:
    if hidden % dim:
        raise ValueError(f"{source}: the {what}'s feed-forward is {hidden} wide, not a multiple of its width {dim}")
    return hidden // dim


def _placement(layers: list[int], lm: _LMLayout, every: int | None, source: str) -> tuple[int, str]:
    """(cross_attn_every, cross_attn_placement) that put blocks before exactly ``layers`` of the LM."""
    for placement in CROSS_ATTN_PLACEMENTS:  # OpenFlamingo's own rule first
        for n in [every] if every else range(1, lm.num_layers + 1):
            cfg = FlamingoConfig(cross_attn_every=n, cross_attn_placement=placement)
            if cfg.xattn_layer_indices(lm.num_layers) == layers:
                return n, placement
    rule = f"cross_attn_every={every}" if every else "any cross_attn_every"
    raise ValueError(f"{source} does not fit {lm.describe()}: its blocks come before layers {layers[:6]}, which "
                     f"{rule} does not give")


def _config(parts: _Parts, lm: _LMLayout, vision: str, every: int | None, overrides: dict, source: str):
    """The FlamingoConfig of the checkpoint's shapes; shapes are checked against meta-device modules built from it."""
    r, d_visual = parts.perceiver["latents"].shape
    layers = sorted(parts.blocks)
    block = parts.blocks[layers[0]]
    depth = 1 + max((int(k.split(".")[1]) for k in parts.perceiver if k.startswith("layers.")), default=-1)
    frames = parts.perceiver.get("frame_embs")
    get = overrides.get

    def rows(weights: dict, key: str, default: int) -> int:  # a missing key: the shape check below names it
        return weights[key].shape[0] if key in weights else default

    r_heads, r_dim = _heads(rows(parts.perceiver, "layers.0.0.to_q.weight", 8 * OF_DIM_HEAD), get("resampler_heads"),
                            get("resampler_dim_head"), "Perceiver Resampler", source)
    x_heads, x_dim = _heads(rows(block, "attn.to_q.weight", 8 * OF_DIM_HEAD), get("xattn_heads"),
                            get("xattn_dim_head"), "cross-attention", source)
    n, placement = _placement(layers, lm, every, source)
    fields = dict(
        lm=lm.name, vision_encoder=vision, cross_attn_every=n, cross_attn_placement=placement,
        only_attend_immediate_media=True, num_latents=r, resampler_depth=depth, resampler_heads=r_heads,
        resampler_dim_head=r_dim, xattn_heads=x_heads, xattn_dim_head=x_dim, media_token=MEDIA_TOKEN,
        eoc_token=EOC_TOKEN, doc_start_token=None, name=f"openflamingo:{Path(source).name}",
        resampler_ff_mult=_mult(rows(parts.perceiver, "layers.0.1.1.weight", 4 * d_visual), d_visual, "resampler",
                                source),
        xattn_ff_mult=_mult(rows(block, "ffw.1.weight", 4 * lm.hidden), lm.hidden, "cross-attention", source),
        extra={"converted_from": {"format": "openflamingo-2.0.1", "checkpoint": str(Path(source).resolve())}},
    )
    if frames is not None:
        fields["max_frames"] = frames.shape[0]
    config = FlamingoConfig.from_dict({**FlamingoConfig().to_dict(), **fields, **overrides})
    _check_shapes(parts, config, lm, d_visual, source)
    return config


def _mismatch(got: dict[str, torch.Tensor], module: nn.Module, prefix: str, skip: tuple = (),
              rename=lambda name: name) -> str | None:
    """What differs between ``got`` and ``module``'s state dict (names and shapes), or None; names in messages are
    ``prefix + rename(name)``, the checkpoint's."""
    want = {k: v.shape for k, v in module.state_dict().items() if k not in skip}
    missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    reshaped = [k for k in sorted(set(want) & set(got)) if tuple(got[k].shape) != tuple(want[k])]
    parts = [f"{label} {[prefix + rename(k) for k in keys[:3]]}"
             for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    parts += [f"{prefix}{rename(k)} is {tuple(got[k].shape)}, expected {tuple(want[k])}" for k in reshaped[:2]]
    return "; ".join(parts) or None


def _check_shapes(parts: _Parts, config: FlamingoConfig, lm: _LMLayout, d_visual: int, source: str) -> None:
    with torch.device("meta"):
        resampler = PerceiverResampler(d_visual, config.resampler_depth, config.resampler_heads,
                                       config.resampler_dim_head, config.num_latents, config.max_frames,
                                       config.resampler_ff_mult)
        block = GatedCrossAttentionBlock(lm.hidden, d_visual, config.xattn_heads, config.xattn_dim_head,
                                         config.xattn_ff_mult)
    perceiver = {("time_embeddings" if k == "frame_embs" else k): (v[:, None] if k == "frame_embs" else v)
                 for k, v in parts.perceiver.items()}
    problem = _mismatch(perceiver, resampler, "perceiver.", skip=() if "frame_embs" in parts.perceiver
                        else ("time_embeddings",), rename=lambda k: "frame_embs" if k == "time_embeddings" else k)
    if problem:
        raise ValueError(f"{source}: its Perceiver Resampler does not fit OpenFlamingo's ({problem})")
    for layer, weights in parts.blocks.items():
        prefix = f"lang_encoder.{lm.layers_path}.{layer}.gated_cross_attn_layer."
        if problem := _mismatch(weights, block, prefix, rename=_openflamingo_block_name):
            raise ValueError(f"{source} does not fit {lm.describe()}: {problem}")
    if parts.input_embedding.shape[1] != lm.hidden:
        raise ValueError(f"{source} does not fit {lm.describe()}: its input embedding is "
                         f"{tuple(parts.input_embedding.shape)}")


def openflamingo_tokenizer(name: str):
    """The tokenizer ``name`` with OpenFlamingo's tokens added as its factory adds them (ids and all)."""
    from contrastive_encoder.shared.pretrained import load_tokenizer

    tokenizer = load_tokenizer(name)
    tokenizer.add_special_tokens({"additional_special_tokens": [EOC_TOKEN, MEDIA_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return tokenizer


def _check_frozen_rows(trained: torch.Tensor, lm_weight: torch.Tensor, added: list[int], what: str,
                       lm: _LMLayout, source: str, chunk: int = 4096) -> None:
    """Every row but the added tokens' must be the LM's (OpenFlamingo masks their gradient): a tolerance of bf16
    rounding, so an LM loaded in bf16 passes and another LM (a fine-tune included) does not."""
    n = min(len(trained), len(lm_weight))
    bad, first, worst = 0, None, 0.0
    for start in range(0, n, chunk):
        end = min(start + chunk, n)
        a, b = trained[start:end].float(), lm_weight[start:end].detach().float().cpu()
        off = ((a - b).abs() > 2 ** -7 * torch.maximum(a.abs(), b.abs()) + 1e-6).any(1)
        off[[i - start for i in added if start <= i < start + len(a)]] = False
        if off.any():
            bad += int(off.sum())
            first = first if first is not None else start + int(off.nonzero()[0, 0])
            worst = max(worst, float((a - b)[off].abs().max()))
    if bad:
        raise ValueError(f"{source} does not fit {lm.describe()}: {bad} of {n - len(added)} rows of its {what} "
                         f"differ from the LM's (first id {first}, max abs diff {worst:.3g}); OpenFlamingo trains "
                         "only the <image> / <|endofchunk|> rows, so it was trained on another LM")


def _new_token_rows(model: Flamingo, parts: _Parts, lm: _LMLayout, source: str) -> dict[str, torch.Tensor]:
    """``new_tokens.*`` from the checkpoint's embedding rows at the new tokens' ids (OpenFlamingo's ids)."""
    ids = model.new_tokens.token_ids.cpu()
    emb_in, emb_out = model.lm.get_input_embeddings(), model.lm.get_output_embeddings()
    vocab = model.tokenizer.get_vocab()
    added = sorted(vocab[t] for t in (MEDIA_TOKEN, EOC_TOKEN, PAD_TOKEN) if t in vocab)
    _check_frozen_rows(parts.input_embedding, emb_in.weight, added, "input embedding", lm, source)
    rows = {"new_tokens.input_rows": parts.input_embedding[ids]}
    if model.new_tokens.tied:
        return rows
    if parts.output_embedding is not None:
        _check_frozen_rows(parts.output_embedding, emb_out.weight, added, "output embedding", lm, source)
        rows["new_tokens.output_rows"] = parts.output_embedding[ids]
    elif int(ids.max()) < emb_out.weight.shape[0]:  # OpenFlamingo's resize kept the LM's own rows at these ids
        rows["new_tokens.output_rows"] = emb_out.weight[ids.to(emb_out.weight.device)].detach()
    else:
        logger.warning("%s holds no output-embedding rows for %s / %s (OpenFlamingo saves only weights named "
                       "*embed* or trained, and the head of LM '%s' is neither): OpenFlamingo draws them anew at each load; "
                       "here they start as the mean of the head's rows", source, MEDIA_TOKEN, EOC_TOKEN, lm.name)
    return rows


def from_openflamingo(checkpoint: str | Path, lm: str, vision: str, cross_attn_every: int | None = None,
                      tokenizer: str | None = None, **create_model_kwargs) -> Flamingo:
    """A ``Flamingo`` with an OpenFlamingo checkpoint's trained weights on the LM and vision tower it was trained on.

    Args:
        checkpoint: OpenFlamingo's ``checkpoint.pt`` (or a safetensors file of its keys).
        lm: the frozen LM (packaged name, folder or hub id; see the module docstring for the published ones).
        vision: the vision tower, e.g. ``open_clip:ViT-L-14-quickgelu@openai``.
        cross_attn_every: OpenFlamingo's ``cross_attn_every_n_layers``; None reads it from the checkpoint (given, it
            must agree).
        tokenizer: the tokenizer it was trained with (default the LM's); OpenFlamingo's tokens are added to it.
        **create_model_kwargs: ``dtype`` / ``device_map`` for ``create_model``, other keys ``FlamingoConfig``
            fields (``seed``, or the heads of a fork that does not use OpenFlamingo's 8 of 64).

    Raises:
        ValueError: one line naming the checkpoint and the keys or model that do not fit, before any weight moves
            into the model.
    """
    from .factory import create_model, resolve_dtype
    from .vision import load_vision_encoder

    source = str(checkpoint)
    kwargs = {k: create_model_kwargs.pop(k) for k in _CREATE_MODEL_ARGS if k in create_model_kwargs}
    dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
    dtype = resolve_dtype(dtype, kwargs.get("device_map")) if dtype is not None else None  # refused before loading
    if clash := sorted(set(create_model_kwargs) & {"vision_encoder", "lm_config", "media_token", "eoc_token",
                                                      "cross_attn_placement"}):
        raise ValueError(f"from_openflamingo: {clash} are set by the conversion (give vision=, lm=)")
    state = read_checkpoint(checkpoint)
    layout = _lm_layout(lm)
    parts = _split(state, layout, source)
    config = _config(parts, layout, vision, cross_attn_every, create_model_kwargs, source)
    tok = openflamingo_tokenizer(tokenizer or lm)
    if len(parts.input_embedding) != len(tok):
        raise ValueError(f"{source} does not fit {layout.describe()}: its input embedding has "
                         f"{len(parts.input_embedding)} rows but the tokenizer of '{tokenizer or lm}' with "
                         f"OpenFlamingo's tokens has {len(tok)} (give the tokenizer it was trained with)")
    tower = load_vision_encoder(vision, seed=config.seed)
    if tower.feature_dim != parts.perceiver["latents"].shape[1]:
        raise ValueError(f"{source} does not fit vision tower '{vision}': its resampler is "
                         f"{parts.perceiver['latents'].shape[1]} wide, the tower's features {tower.feature_dim}")
    model = create_model(config, vision_encoder=tower.to(dtype) if dtype else tower, tokenizer=tok, **kwargs)
    weights = _new_token_rows(model, parts, layout, source)
    weights.update({f"perceiver.{'time_embeddings' if k == 'frame_embs' else k}": v[:, None] if k == "frame_embs"
                    else v for k, v in parts.perceiver.items()})
    if "frame_embs" not in parts.perceiver:
        weights["perceiver.time_embeddings"] = torch.zeros_like(model.perceiver.time_embeddings)  # none there
    for k, layer in enumerate(model.xattn_layer_indices):
        weights.update({f"xattn_layers.{k}.{name}": v for name, v in parts.blocks[layer].items()})
    optional = {"new_tokens.output_rows"}  # absent when the checkpoint and the LM have none (warned above)
    if unfit := sorted((set(weights) - optional) ^ (set(model.trainable_state_dict()) - optional)):  # a bug here
        raise RuntimeError(f"from_openflamingo: converted names do not match the model's: {unfit[:4]}")
    model.load_state_dict({k: v.to(torch.float32) for k, v in weights.items()}, strict=False)
    logger.info("converted %s: %d blocks (before layers %s), %d latents, tower %s", source,
                len(model.xattn_layers), model.xattn_layer_indices[:4], config.num_latents, vision)
    return model


def convert_openflamingo(checkpoint: str | Path, lm: str, vision: str, out: str | Path,
                         cross_attn_every: int | None = None, overwrite: bool = False, tokenizer: str | None = None,
                         dtype: str | None = None) -> Path:
    """``from_openflamingo`` then ``save_pretrained(out)``: a folder ``Flamingo.from_pretrained`` loads (its config
    names the LM and the tower; the tokenizer with OpenFlamingo's tokens is saved in it). ``dtype`` is the frozen
    parts' while converting, saved as the folder's default. An ``out`` that ``save_pretrained`` would refuse is
    refused first."""
    from contrastive_encoder.shared.outputs import check_save_target

    check_save_target(out, overwrite)
    model = from_openflamingo(checkpoint, lm=lm, vision=vision, cross_attn_every=cross_attn_every,
                              tokenizer=tokenizer, **({"dtype": dtype} if dtype else {}))
    return model.save_pretrained(out, overwrite=overwrite)


# ---------------------------------------------------------------------------------------------------- command line
def add_convert_parser(subparsers) -> argparse.ArgumentParser:
    """``flamingo convert-openflamingo``: add the sub-command to ``flamingo``'s sub-parsers."""
    from contrastive_encoder.shared.argtypes import positive_int

    p = subparsers.add_parser(
        "convert-openflamingo", help="convert an OpenFlamingo checkpoint.pt into a saved Flamingo model folder",
        description="Convert an OpenFlamingo 2.0.1 checkpoint into a folder Flamingo.from_pretrained loads (see "
                    "flamingo_core.openflamingo for which published checkpoints take which --lm / --vision).")
    p.add_argument("--checkpoint", required=True, help="OpenFlamingo's checkpoint.pt (or a safetensors file)")
    p.add_argument("--lm", required=True, help="the LM it was trained on: folder or hub id (e.g. mosaicml/mpt-7b)")
    p.add_argument("--vision", required=True, help="the vision tower, e.g. open_clip:ViT-L-14-quickgelu@openai")
    p.add_argument("--out", required=True, help="the folder to write (a saved Flamingo model)")
    p.add_argument("--cross-attn-every", type=positive_int, default=None,
                   help="OpenFlamingo's cross_attn_every_n_layers (default: read from the checkpoint)")
    p.add_argument("--tokenizer", default=None, help="the tokenizer it was trained with (default: the LM's)")
    p.add_argument("--dtype", choices=FROZEN_DTYPES, default=None,
                   help="the frozen LM and tower's dtype while converting, saved as the folder's default "
                        "(default float32; bfloat16 halves the memory)")
    p.add_argument("--overwrite", action="store_true", help="replace an --out folder that holds other files")
    return p


def run_convert(args: argparse.Namespace) -> int:
    """Run ``flamingo convert-openflamingo``: 0, or 2 and one line naming the bad input."""
    from contrastive_encoder.shared.command import run_command

    def convert(a) -> int:
        out = convert_openflamingo(a.checkpoint, a.lm, a.vision, a.out, a.cross_attn_every, a.overwrite,
                                   a.tokenizer, a.dtype)
        print(f"wrote {out}: OpenFlamingo {Path(a.checkpoint).name} on {a.lm} and {a.vision}; load it with "
              f"flamingo_core.Flamingo.from_pretrained('{out}')")
        return 0

    return run_command("flamingo convert-openflamingo", lambda: args, convert)
