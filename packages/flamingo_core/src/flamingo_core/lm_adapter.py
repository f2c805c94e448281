"""Generic access to a Hugging Face causal LM for Flamingo (arXiv 2204.14198, Section 2.2): find its decoder
layers without per-architecture code, insert GATED XATTN-DENSE blocks before every N-th of them, and add the
``<image>`` / ``<EOC>`` tokens as a small trainable parameter beside the frozen embedding matrix.
"""

from __future__ import annotations

import torch
from torch import nn

from .gated_xattn import GatedCrossAttentionBlock, media_attention_mask

__all__ = ["FlamingoDecoderLayer", "NewTokenRows", "find_decoder_layers", "MediaContext"]


def _num_layers(config) -> int | None:
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def find_decoder_layers(lm: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """Return (parent module, attribute name, ModuleList) of the LM's decoder layers.

    The layers are the ``nn.ModuleList`` whose length is the config's number of hidden layers and whose entries
    all share one class (LLaMA ``model.layers``, GPT-2 ``transformer.h``, OPT ``model.decoder.layers``,
    GPT-NeoX ``gpt_neox.layers``, ...).
    """
    n = _num_layers(lm.config)
    candidates = []
    for name, module in lm.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (n is None or len(module) == n):
            if len({type(m) for m in module}) == 1:
                candidates.append((name, module))
    if not candidates:
        raise ValueError(
            f"cannot find the decoder layers of {type(lm).__name__}: expected an nn.ModuleList of "
            f"{n} identical layers (config.num_hidden_layers)"
        )
    name, layers = min(candidates, key=lambda c: c[0].count("."))  # the outermost such list
    parent_name, _, attr = name.rpartition(".")
    return lm.get_submodule(parent_name) if parent_name else lm, attr, layers


class MediaContext:
    """What the cross-attention blocks see during one LM call: phi and each block's media keys/values.

    Attributes:
        phi: (B, L) index of the last media at or before each token of this call (0 = none).
        kv: per-block (k, v) already computed (the media KV cache), or None to compute from ``visual``.
        visual: (B, N, R, d) visual tokens.
        num_latents: R.
    """

    def __init__(self, phi: torch.Tensor, visual: torch.Tensor | None, kv: list | None, num_latents: int):
        self.phi, self.visual, self.kv, self.num_latents = phi, visual, kv, num_latents
        self._masks: dict[tuple[int, bool], torch.Tensor] = {}

    def media_mask(self, num_media: int, only_immediate: bool) -> torch.Tensor:
        """``media_attention_mask`` of this call, built once and shared by every block."""
        key = (num_media, only_immediate)
        if key not in self._masks:
            self._masks[key] = media_attention_mask(self.phi, num_media, self.num_latents, only_immediate)
        return self._masks[key]


class FlamingoDecoderLayer(nn.Module):
    """A frozen decoder layer with a GATED XATTN-DENSE block applied to its input hidden states.

    The block is held by the Flamingo model (not registered here) so the LM's own parameter names are
    unchanged apart from the ``decoder_layer.`` prefix; unknown attributes fall through to the wrapped layer
    (some LMs read e.g. ``layer.attention_type``).
    """

    def __init__(self, decoder_layer: nn.Module, block: GatedCrossAttentionBlock, block_index: int):
        super().__init__()
        self.decoder_layer = decoder_layer
        object.__setattr__(self, "_xattn", block)
        object.__setattr__(self, "_block_index", block_index)
        object.__setattr__(self, "media_context", None)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["decoder_layer"], name)

    def forward(self, *args, **kwargs):
        ctx: MediaContext | None = self.media_context
        if ctx is not None:
            in_kwargs = "hidden_states" in kwargs
            hidden = kwargs["hidden_states"] if in_kwargs else args[0]
            device = self._xattn.alpha_xattn.device  # an LM spread by a device_map: the block runs on its layer's
            kv = ctx.kv[self._block_index] if ctx.kv is not None else self._xattn.media_kv(ctx.visual.to(device))
            mask = ctx.media_mask(kv[0].shape[2] // ctx.num_latents, self._xattn.attn.only_immediate)
            kv, phi = tuple(t.to(device) for t in kv), ctx.phi.to(device)  # no-ops on one device
            mask = mask if mask is None else mask.to(device)
            hidden = self._xattn(hidden.to(device), phi, kv, ctx.num_latents, mask)
            if in_kwargs:
                kwargs["hidden_states"] = hidden
            else:
                args = (hidden, *args[1:])
        return self.decoder_layer(*args, **kwargs)


class NewTokenRows(nn.Module):
    """Embeddings (and output rows) of the tokens added for Flamingo, kept apart from the frozen matrices.

    Only these ``len(token_ids)`` rows train, so the optimizer never touches the full vocabulary. Rows are
    initialised explicitly: the mean of the existing rows plus small seeded noise (std 1% of the rows' std).

    Args:
        token_ids: ids of the new tokens in the tokenizer.
        input_embeddings: the LM's (frozen) input embedding matrix (V, D).
        output_embeddings: the LM's output matrix (V, D), or None when tied to the input embeddings.
        seed: seed of the initial noise.
    """

    def __init__(
        self,
        token_ids: list[int],
        input_embeddings: torch.Tensor,
        output_embeddings: torch.Tensor | None,
        seed: int = 0,
    ):
        super().__init__()
        self.register_buffer("token_ids", torch.tensor(token_ids, dtype=torch.long), persistent=False)
        gen = torch.Generator().manual_seed(seed)
        self.input_rows = nn.Parameter(self._init_rows(input_embeddings, len(token_ids), gen))
        self.output_rows = None
        if output_embeddings is not None:
            self.output_rows = nn.Parameter(self._init_rows(output_embeddings, len(token_ids), gen))
        # the usual case: the new ids directly follow the LM head's vocabulary, so logits are one concatenation
        v_head = (input_embeddings if output_embeddings is None else output_embeddings).shape[0]
        self._appended = list(token_ids) == list(range(v_head, v_head + len(token_ids)))

    @staticmethod
    def _init_rows(weight: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
        w = weight.detach().float().cpu()
        noise = torch.randn(n, w.shape[1], generator=gen) * w.std(dim=0, keepdim=True) * 0.01
        return w.mean(dim=0, keepdim=True) + noise  # (n, D), fp32 master weights whatever the LM's dtype

    @property
    def tied(self) -> bool:
        return self.output_rows is None

    @property
    def head_rows(self) -> torch.Tensor:
        """The new tokens' rows in the output head (the input rows when the LM ties its embeddings)."""
        return self.input_rows if self.output_rows is None else self.output_rows

    def appended_to(self, head_vocab: int, vocab_size: int) -> bool:
        """Whether the full logits are the head's ``head_vocab`` columns then the new rows', ``vocab_size`` in all."""
        return self._appended and vocab_size == head_vocab + len(self.token_ids)

    def embed(self, input_ids: torch.Tensor, embedding: nn.Embedding) -> torch.Tensor:
        """Frozen embedding for old ids, ``input_rows`` for the new ids: (B, L) -> (B, L, D)."""
        match = input_ids[..., None] == self.token_ids  # (B, L, n_new)
        is_new = match.any(-1)
        old_ids = torch.where(is_new | (input_ids >= embedding.num_embeddings), 0, input_ids)
        embeds = embedding(old_ids)  # (B, L, D)
        new = self.input_rows.to(embeds.dtype)[match.long().argmax(-1)]  # (B, L, D)
        return torch.where(is_new[..., None], new, embeds)

    def logits(self, hidden: torch.Tensor, lm_logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """Combine the frozen head's logits (B, L, V_lm) with the new rows' into (B, L, vocab_size)."""
        new_logits = hidden @ self.head_rows.to(hidden.dtype).t()  # (B, L, n_new)
        if self.appended_to(lm_logits.shape[-1], vocab_size):
            return torch.cat([lm_logits, new_logits.to(lm_logits.dtype)], -1)  # one copy, no -inf fill + scatter
        extra = vocab_size - lm_logits.shape[-1]
        if extra > 0:
            lm_logits = torch.cat([lm_logits, lm_logits.new_full((*lm_logits.shape[:-1], extra), float("-inf"))], -1)
        index = self.token_ids.expand(*new_logits.shape[:-1], -1)
        return lm_logits.scatter(-1, index, new_logits.to(lm_logits.dtype))


def enable_gradient_checkpointing(model) -> int:
    """Recompute each decoder layer (and its GATED XATTN-DENSE block) in backward instead of storing its
    activations. Returns the number of layers wrapped.

    The frozen LM stays in eval mode, so Hugging Face's own checkpointing (active only in training mode) does not
    apply; the layers are wrapped with non-reentrant ``torch.utils.checkpoint`` here. The media context the
    cross-attention reads is captured at forward time and restored for the recomputation.
    """
    import functools

    from torch.utils.checkpoint import checkpoint

    if hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable()
        return -1
    _, _, layers = find_decoder_layers(model.lm)

    def forward(layer, original, *args, **kwargs):
        if not torch.is_grad_enabled():
            return original(*args, **kwargs)
        ctx = getattr(layer, "media_context", None)

        def run(*a, **kw):
            before = getattr(layer, "media_context", None)
            if ctx is not None:
                object.__setattr__(layer, "media_context", ctx)
            try:
                return original(*a, **kw)
            finally:
                if ctx is not None:
                    object.__setattr__(layer, "media_context", before)

        return checkpoint(run, *args, use_reentrant=False, **kwargs)

    for layer in layers:
        if not getattr(layer, "_flamingo_checkpointed", False):
            layer.forward = functools.partial(forward, layer, layer.forward)
            object.__setattr__(layer, "_flamingo_checkpointed", True)
    return len(layers)
