"""The Flamingo model (Alayrac et al., "Flamingo: a Visual Language Model for Few-Shot Learning",
arXiv 2204.14198, Figure 3): a frozen vision encoder and a frozen causal LM bridged by a trained Perceiver
Resampler and GATED XATTN-DENSE blocks, modelling p(y | x) = prod_l p(y_l | y_<l, x_<=l) (Equation 1).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from .config import FlamingoConfig
from .gated_xattn import GatedCrossAttentionBlock
from .head_loss import ChunkedHeadNLL, LinearHeadNLL, default_chunks
from .labels import IGNORE_INDEX
from .linear import row_split_linear
from .lm_adapter import FlamingoDecoderLayer, MediaContext, NewTokenRows, find_decoder_layers
from .packing import segment_attention_mask, segment_phi, segment_positions
from .perceiver import PerceiverResampler
from .processor import FlamingoProcessor, stage2_image_transform
from .tokenization import add_flamingo_tokens
from .vision import freeze_module

__all__ = ["Flamingo"]

logger = logging.getLogger(__name__)

TRAINABLE_PREFIXES = ("perceiver.", "xattn_layers.", "new_tokens.")


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so a left-padded row matches the same row unpadded."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class Flamingo(nn.Module):
    """Frozen vision encoder + Perceiver Resampler + frozen LM with GATED XATTN-DENSE blocks.

    Args:
        config: the model configuration.
        lm: a Hugging Face causal LM (frozen here).
        vision_encoder: module with the FrozenVisionEncoder interface (frozen here).
        tokenizer: the LM's tokenizer; ``<image>`` and ``<EOC>`` are added to it.

    ``fused_head_loss`` (default True): the training loss takes the head's gradient inside the forward
    (``label_nll``); False takes it from the logits by autograd, as FSDP needs (the trainer sets it there).
    ``feature_cache`` (default None): a ``feature_cache.FrozenFeatureCache`` serving the vision encoder's outputs
    (``use_feature_cache``).
    """

    def __init__(self, config: FlamingoConfig, lm: nn.Module, vision_encoder: nn.Module, tokenizer):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.media_token_id, self.eoc_token_id = add_flamingo_tokens(tokenizer, config.media_token, config.eoc_token)
        self.lm = freeze_module(lm)
        self.vision_encoder = freeze_module(vision_encoder)
        self.image_transform = stage2_image_transform(vision_encoder, config.image_size, pad=False)  # refused now
        in_emb, out_emb = lm.get_input_embeddings(), lm.get_output_embeddings()
        tied = out_emb is None or out_emb.weight is in_emb.weight
        self.lm_vocab_size = (in_emb if out_emb is None else out_emb).weight.shape[0]
        self.vocab_size = max(len(tokenizer), self.lm_vocab_size)
        dim, dim_visual = lm.config.hidden_size, vision_encoder.feature_dim
        # heads None: the LM's own (the paper's blocks, Table 4); the config then records the numbers built
        config.xattn_heads, config.xattn_dim_head = config.xattn_head_shape(dim, lm.config.num_attention_heads)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.perceiver = PerceiverResampler(
                dim_visual,
                depth=config.resampler_depth,
                heads=config.resampler_heads,
                dim_head=config.resampler_dim_head,
                num_latents=config.num_latents,
                max_frames=config.max_frames,
                ff_mult=config.resampler_ff_mult,
                ffw_activation=config.ffw_activation,
            )
            parent, attr, layers = find_decoder_layers(lm)
            self.xattn_layer_indices = config.xattn_layer_indices(len(layers))  # cross_attn_every / _placement
            self.xattn_layers = nn.ModuleList(
                GatedCrossAttentionBlock(
                    dim,
                    dim_visual,
                    heads=config.xattn_heads,
                    dim_head=config.xattn_dim_head,
                    ff_mult=config.xattn_ff_mult,
                    only_attend_immediate_media=config.only_attend_immediate_media,
                    ffw_activation=config.ffw_activation,
                )
                for _ in self.xattn_layer_indices
            )
            self.new_tokens = NewTokenRows(
                [self.media_token_id, self.eoc_token_id],
                in_emb.weight,
                None if tied else out_emb.weight,
                seed=config.seed,
            )
        wrapped = list(layers)
        for block_index, (i, block) in enumerate(zip(self.xattn_layer_indices, self.xattn_layers)):
            wrapped[i] = FlamingoDecoderLayer(layers[i], block, block_index)
        setattr(parent, attr, nn.ModuleList(wrapped))
        self._wrappers = [m for m in wrapped if isinstance(m, FlamingoDecoderLayer)]
        # the trained parts stay fp32 whatever the frozen parts' dtype (the paper's fp32 master weights); their
        # inputs and outputs are cast at the boundaries (encode_media, GatedCrossAttentionBlock, NewTokenRows)
        self.fused_head_loss = True
        self.feature_cache = None  # a FrozenFeatureCache: the frozen encoder's outputs computed once per image

    # ------------------------------------------------------------------ freezing and parameters
    def freeze_lm(self) -> None:
        freeze_module(self.lm)

    def freeze_vision_encoder(self) -> None:
        freeze_module(self.vision_encoder)

    def place_on_lm_devices(self) -> None:
        """After the frozen LM was placed by a ``device_map``: each cross-attention block goes to the device of the
        LM layer it wraps, the resampler, the new token rows and the vision encoder to the input embedding's."""
        first = self.lm.get_input_embeddings().weight.device
        for module in (self.perceiver, self.new_tokens, self.vision_encoder):
            module.to(first)
        for wrapper in self._wrappers:
            layer = next(wrapper.decoder_layer.parameters(), None)
            if layer is not None:
                wrapper._xattn.to(layer.device)

    def use_feature_cache(self, directory: str | Path | None = None):
        """Compute each image's frozen features once (``feature_cache.FrozenFeatureCache``), in memory or in
        ``directory``; returns the cache (its ``hits`` / ``misses``)."""
        from .feature_cache import FrozenFeatureCache

        identifier = getattr(self.vision_encoder, "identifier", None)
        if identifier is None:
            raise ValueError(f"{type(self.vision_encoder).__name__} has no identifier to key a feature cache by")
        self.feature_cache = FrozenFeatureCache(identifier, directory)
        return self.feature_cache

    def train(self, mode: bool = True):
        super().train(mode)
        self.lm.eval()  # frozen parts never use dropout
        self.vision_encoder.eval()
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained parameters only (resampler, cross-attention blocks, new token rows)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(TRAINABLE_PREFIXES)}

    def parameter_counts(self) -> dict[str, int]:
        counts = {"trainable": 0, "frozen": 0}
        for p in self.parameters():
            counts["trainable" if p.requires_grad else "frozen"] += p.numel()
        return counts

    def log_parameter_counts(self) -> dict[str, int]:
        counts = self.parameter_counts()
        logger.info("Flamingo parameters: %(trainable)d trainable, %(frozen)d frozen", counts)
        return counts

    @property
    def processor(self):
        return FlamingoProcessor(
            self.tokenizer, self.image_transform, self.config.media_token, self.config.eoc_token,
            doc_start_token=self.config.doc_start_token,
        )

    @property
    def device(self) -> torch.device:
        return self.perceiver.latents.device

    @property
    def context_length(self) -> int | None:
        """The frozen LM's positions, prompt and generated tokens together (``max_position_embeddings``, GPT-2's
        ``n_positions``, MPT's ``max_seq_len``); None when its config names none."""
        for name in ("max_position_embeddings", "n_positions", "max_seq_len"):
            value = getattr(self.lm.config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @property
    def stop_token_ids(self) -> list[int]:
        ids = [self.eoc_token_id]
        eos = self.tokenizer.eos_token_id
        if eos is not None and eos not in ids:
            ids.append(eos)
        return ids

    # ------------------------------------------------------------------ vision
    def encode_media(self, media: torch.Tensor, media_mask: torch.Tensor | None = None,
                     media_frame_mask: torch.Tensor | None = None,
                     media_frame_positions: torch.Tensor | None = None) -> torch.Tensor:
        """Pixels -> visual tokens: frozen encoder, then the Perceiver Resampler.

        Args:
            media: (B, N, T, C, H, W) pixels (or (B, N, C, H, W) for images).
            media_mask: (B, N) bool, False for padding slots (not encoded).
            media_frame_mask: (B, N, T) bool, False for padding frames.
            media_frame_positions: (T,) or (B, N, T) frame places in trained frames (``PerceiverResampler``).

        Returns:
            (B, N, R, d) visual tokens (zeros for padding slots).
        """
        media = media[:, :, None] if media.ndim == 5 else media  # (B, N, 1, C, H, W)
        if media.ndim != 6:
            raise ValueError(f"media must have shape (B, N, T, C, H, W), got {tuple(media.shape)}")
        b, n, t = media.shape[:3]
        flat = media.flatten(0, 1)  # (B*N, T, C, H, W)
        valid = (torch.ones(b * n, dtype=torch.bool, device=media.device) if media_mask is None
                 else media_mask.reshape(b * n).to(torch.bool))
        frame_mask = None if media_frame_mask is None else media_frame_mask.reshape(b * n, t)[valid]
        if media_frame_positions is not None:  # (T,) or (B, N, T) -> the encoded slots' (M, T)
            positions = torch.as_tensor(media_frame_positions)
            if positions.shape not in ((t,), (b, n, t)):
                raise ValueError(f"media_frame_positions must have shape ({t},) or ({b}, {n}, {t}) for media of "
                                 f"shape {tuple(media.shape)}, got {tuple(positions.shape)}")
            media_frame_positions = positions.expand(b, n, t).reshape(b * n, t)[valid.to(positions.device)]
        tower = next(self.vision_encoder.parameters(), None)
        pixels = flat[valid] if tower is None else flat[valid].to(tower.dtype)  # a bf16 tower takes bf16 pixels
        with torch.no_grad():
            x_f = (self.vision_encoder(pixels) if self.feature_cache is None
                   else self.feature_cache.features(self.vision_encoder, pixels))  # (M, T, S, d)
        tokens = self.perceiver(x_f.to(self.perceiver.latents.dtype), frame_mask,
                                frame_positions=media_frame_positions)  # (M, R, d)
        out = tokens.new_zeros(b * n, *tokens.shape[1:]).index_copy(0, valid.nonzero().squeeze(1), tokens)
        return out.view(b, n, *tokens.shape[1:])  # (B, N, R, d)

    def media_kv_cache(self, visual: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each cross-attention block's keys/values of the visual tokens, computed once per prompt."""
        return [block.media_kv(visual) for block in self.xattn_layers]

    def phi(self, input_ids: torch.Tensor, offset: torch.Tensor | None = None,
            media_next: torch.Tensor | None = None) -> torch.Tensor:
        """phi of Figure 7: (B, L) index of the last ``<image>`` at or before each token (0 = none).

        ``media_next`` (B,) bool: in those rows every token attends to the first image after it instead, phi + 1,
        and tokens after the row's last image to none (M3W's next-image sequences, Appendix A.3.2).
        """
        phi = (input_ids == self.media_token_id).long().cumsum(-1)
        if media_next is not None:
            after = phi + 1
            after = after.masked_fill(after > phi[:, -1:], 0)  # phi[:, -1]: the row's number of images
            phi = torch.where(media_next.to(device=phi.device, dtype=torch.bool)[:, None], after, phi)
        return phi if offset is None else phi + offset[:, None]

    # ------------------------------------------------------------------ LM calls
    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.new_tokens.embed(input_ids, self.lm.get_input_embeddings())

    def compute_logits(self, hidden: torch.Tensor, decoding: bool = False) -> torch.Tensor:
        """Frozen LM head logits with the new tokens' logits at their ids: (B, L, D) -> (B, L, vocab_size).

        ``decoding``: a linear head takes ``row_split_linear`` (a one-row product over every thread; the sums run
        in another order, so logits may differ from the LM's own by float rounding, ~1e-6 relative).
        """
        head = self.lm.get_output_embeddings()
        if head is not None and type(head) is not nn.Linear:  # a custom head module: as the LM applies it
            lm_logits = head(hidden)
        else:  # a linear head, or none: tied to the input embeddings
            weight, bias = (self.lm.get_input_embeddings().weight, None) if head is None else (head.weight, head.bias)
            lm_logits = (row_split_linear if decoding else F.linear)(hidden, weight, bias)
        return self.new_tokens.logits(hidden, lm_logits, self.vocab_size)

    def linear_head_weight(self, dtype: torch.dtype) -> torch.Tensor | None:
        """The frozen head's (V, D) matrix when ``LinearHeadNLL`` covers it: a bias-free ``nn.Linear`` (or tied
        input embeddings) in fp32 like ``dtype``, with the new ids right after its vocabulary; else None."""
        head = self.lm.get_output_embeddings()
        if head is not None and (type(head) is not nn.Linear or head.bias is not None):
            return None
        weight = (head if head is not None else self.lm.get_input_embeddings()).weight
        if dtype != torch.float32 or weight.dtype != dtype or weight.requires_grad:
            return None
        if not self.new_tokens.appended_to(weight.shape[0], self.vocab_size):
            return None
        return weight

    def run_lm(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        context: MediaContext | None,
        past_key_values=None,
        use_cache: bool = False,
        logits_slice: slice | None = None,
        logits_mask: torch.Tensor | None = None,
        with_logits: bool = True,
        decoding: bool = False,
    ):
        """One call of the frozen LM with the media context set on the cross-attention layers.

        ``logits_slice`` keeps positions of every row (decoding: the last one); ``logits_mask`` (B, L) bool keeps
        the selected positions only, flattened (training: the positions that predict a label). ``decoding``
        selects the head product for a few rows (``compute_logits``).

        Returns:
            (logits (B, L', vocab_size) or (P, vocab_size) with ``logits_mask``, past_key_values, hidden state).
        """
        embeds = self.embed_tokens(input_ids)
        for w in self._wrappers:
            object.__setattr__(w, "media_context", context)
        try:
            out = self.lm.base_model(
                inputs_embeds=embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=past_key_values,
                use_cache=use_cache,
            )
        finally:
            for w in self._wrappers:
                object.__setattr__(w, "media_context", None)
        hidden = out.last_hidden_state
        if logits_slice is not None:
            hidden = hidden[:, logits_slice]
        if logits_mask is not None:
            hidden = hidden[logits_mask.to(device=hidden.device, dtype=torch.bool)]  # (P, D)
        logits = self.compute_logits(hidden, decoding) if with_logits else None
        return logits, out.past_key_values if use_cache else None, hidden

    def _check_media_count(self, phi: torch.Tensor, num_media: torch.Tensor) -> None:
        used = phi.max(dim=1).values
        bad = (used > num_media).nonzero()
        if len(bad):
            i = int(bad[0, 0])
            raise ValueError(
                f"{int(used[i])} {self.config.media_token} tokens in the text but {int(num_media[i])} "
                f"images were given (sample {i})"
            )

    def _media_context(self, input_ids, media, media_mask, media_frame_mask, media_tokens,
                       segment_ids=None, media_next=None) -> MediaContext | None:
        """The cross-attention layers' view of the media (None without any), after checking that the text's
        ``<image>`` tokens do not outnumber the media given. ``segment_ids``: a packed batch (``packing``);
        ``media_next``: rows whose phi points at the next image (``phi``)."""
        phi = self.phi(input_ids, media_next=media_next)
        if segment_ids is not None:
            if media_next is not None and bool(media_next.any()):
                raise ValueError("packed batches cannot hold next-image rows (media_next): their phi would reach "
                                 "the next sample's image")
            if not self.config.only_attend_immediate_media:
                raise ValueError("packed batches need only_attend_immediate_media: attending to every earlier "
                                 "media would reach the other samples' images (flamingo train --no-pack)")
            phi = segment_phi(phi, segment_ids)
        if media_tokens is None and media is not None:
            media_tokens = self.encode_media(media, media_mask, media_frame_mask)
        if media_tokens is None:
            self._check_media_count(phi, torch.zeros_like(phi[:, 0]))
            return None
        n = media_tokens.shape[1]
        self._check_media_count(phi, media_mask.sum(1) if media_mask is not None else torch.full_like(phi[:, 0], n))
        return MediaContext(phi, media_tokens, None, self.config.num_latents)

    def label_nll(self, hidden: torch.Tensor, targets: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Summed NLL of ``targets`` (P,) under the head's logits of ``hidden`` (P, D): the one place the training
        loss's head path and tile sizes are chosen. ``fused_head_loss`` False (FSDP, whose sharded parameters an
        in-forward gradient would bypass): the (P, vocab_size) logits and cross-entropy by autograd; without
        autograd: cross-entropy ``chunk`` rows at a time; a bias-free fp32 linear head (``linear_head_weight``):
        ``head_loss.LinearHeadNLL``; any other head: ``head_loss.ChunkedHeadNLL``. ``chunk`` defaults to
        ``head_loss.default_chunks(device)`` (CPU: 1024 rows per ``LinearHeadNLL`` pass over (rows, 1024) tiles,
        128 for a (rows, vocab_size) block; an accelerator: 4096 with (rows, 8192) tiles, and 1024). The fused
        paths give the logits path's gradients (tests) without (P, vocab_size) logits as autograd tensors.
        """
        targets = targets.to(hidden.device)
        if not self.fused_head_loss:
            return F.cross_entropy(self.compute_logits(hidden).float(), targets, reduction="sum")
        linear_chunk, logits_chunk = default_chunks(hidden.device)
        if not (torch.is_grad_enabled() and hidden.requires_grad):
            chunk = chunk or logits_chunk
            return sum((F.cross_entropy(self.compute_logits(h).float(), t, reduction="sum")
                        for h, t in zip(hidden.split(chunk), targets.split(chunk))),
                       hidden.new_zeros((), dtype=torch.float32))
        if (weight := self.linear_head_weight(hidden.dtype)) is not None:
            return LinearHeadNLL.apply(hidden, targets, weight, chunk or linear_chunk, self.new_tokens.head_rows)
        rows = [p for p in self.new_tokens.parameters() if p.requires_grad]
        return ChunkedHeadNLL.apply(hidden, targets, self.compute_logits, chunk or logits_chunk, *rows)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        media: torch.Tensor | None = None,
        media_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        media_tokens: torch.Tensor | None = None,
        media_frame_mask: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool = False,
        logits_mask: torch.Tensor | None = None,
        loss_reduction: str = "mean",
        loss_chunk: int | None = None,
        segment_ids: torch.Tensor | None = None,
        media_next: torch.Tensor | None = None,
        **unused,
    ) -> CausalLMOutputWithPast:
        """Logits (and loss when ``labels`` are given) of interleaved text and media.

        Args:
            input_ids: (B, L) token ids with one ``<image>`` token where each media occurs.
            attention_mask: (B, L), 0 on padding (left or right).
            media: (B, N, T, C, H, W) pixels of the media in order of occurrence.
            media_mask: (B, N) bool, False for padding slots.
            labels: (B, L) targets (IGNORE_INDEX ignored, ``flamingo_core.labels``), shifted inside as usual for causal LMs.
            media_tokens: instead of ``media``: precomputed (B, N, R, d) visual tokens (``encode_media``).
            media_frame_mask: (B, N, T) bool, False on padding frames of short videos.
            past_key_values, use_cache: the LM's cache (phi of new tokens counts the cached ones' media
                only through ``input_ids``; use ``generate`` / ``score_continuations`` for cached decoding).
            logits_mask: (B, L) bool: compute logits only at these positions (the frozen head is a large part
                of a step); ``logits`` is then (P, vocab_size) and ``labels`` must be None.
            loss_reduction: with ``labels``: ``"mean"`` (default, as Hugging Face causal LMs): the mean NLL and
                the full logits. ``"sum"`` (the training loss): the summed next-token NLL over the label
                positions and ``logits`` None; the head runs only at the positions that predict a label, by the
                path ``label_nll`` chooses (``fused_head_loss``).
            loss_chunk: rows per pass of ``label_nll`` (default ``head_loss.default_chunks(device)``).
            segment_ids: (B, L) a packed batch's samples (1, 2, ...; 0 on padding, ``packing.pack_batch``): each
                sees only its own tokens and media, its positions restart at 0.
            media_next: (B,) bool: those rows' tokens attend to the image after them (``phi``; M3W, A.3.2).

        Returns:
            ``CausalLMOutputWithPast`` with ``loss``, ``logits`` (B, L, vocab_size), ``past_key_values``.
        """
        bad = sorted(k for k, v in unused.items() if v is not None)
        if bad:
            raise TypeError(f"Flamingo.forward got unexpected arguments {bad}")
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"Flamingo.forward: loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        context = self._media_context(input_ids, media, media_mask, media_frame_mask, media_tokens, segment_ids,
                                      media_next)
        positions = position_ids_from_mask(attention_mask)
        if segment_ids is not None:  # block-diagonal causal self-attention, positions per sample
            attention_mask, positions = segment_attention_mask(segment_ids), segment_positions(segment_ids)
        if logits_mask is not None and labels is not None:
            raise ValueError("Flamingo.forward: give labels or logits_mask, not both")
        summed = loss_reduction == "sum"
        if summed:
            if labels is None:
                raise ValueError("Flamingo.forward: loss_reduction='sum' needs labels")
            targets = labels[:, 1:]
            keep = targets != IGNORE_INDEX  # (B, L-1)
            logits_mask = F.pad(keep, (0, 1), value=False)  # position t predicts label t+1
        logits, past, hidden = self.run_lm(
            input_ids, attention_mask, positions, context, past_key_values, use_cache,
            logits_mask=logits_mask, with_logits=not summed,
        )
        if summed:
            loss = self.label_nll(hidden, targets[keep], loss_chunk)
            return CausalLMOutputWithPast(loss=loss, logits=None, past_key_values=past)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(logits.device), ignore_index=IGNORE_INDEX
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=past)

    # ------------------------------------------------------------------ generation and scoring
    def generate(self, input_ids, attention_mask=None, media=None, generation_config=None, **kwargs):
        """New token ids after each prompt, with transformers' decoding options (a ``GenerationConfig`` and/or
        keywords such as ``max_new_tokens``, ``num_beams``, ``do_sample``, ``repetition_penalty``,
        ``stop_strings``, ``streamer``); see ``flamingo_core.generation.generate`` for all of them."""
        from .generation import generate

        return generate(self, input_ids, attention_mask, media, generation_config, **kwargs)

    def score_continuations(self, prefix_ids, continuations, media=None, **kwargs):
        """Summed log-likelihood of each continuation after one prefix; see ``generation.score_continuations``."""
        from .generation import score_continuations

        return score_continuations(self, prefix_ids, continuations, media, **kwargs)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path, overwrite: bool = False,
                        weights: dict[str, torch.Tensor] | None = None, copy_vision_encoder: bool = False) -> Path:
        """Write a self-contained folder (``saved_model``): ``config.json`` naming the LM and vision encoder, the
        trained weights only, and the tokenizer with the added tokens.

        Local frozen parts are named by absolute path, or ``copy_vision_encoder`` copies a vision encoder folder
        (a stage-1 export) in. ``directory`` may be missing, empty or a previous save (replaced atomically); a
        folder with other files is refused unless ``overwrite``. ``weights`` replaces this module's trained
        weights (FSDP: the gathered full state, the module holding shards).
        """
        from .saved_model import save_flamingo

        return save_flamingo(self, directory, overwrite, weights, copy_vision_encoder)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, lm=None, vision_encoder=None, tokenizer=None, dtype=None, device_map=None,
        **overrides,
    ) -> Flamingo:
        """Rebuild a saved model: the frozen parts from the names in its config (or the ones given; ``dtype`` and
        ``device_map`` as ``create_model``'s). A config that is not JSON, or weights that are truncated or do not
        fit the config, raise ``ValueError`` naming the file before the frozen parts are built."""
        from .saved_model import load_flamingo

        return load_flamingo(directory, lm, vision_encoder, tokenizer, dtype, device_map, **overrides)
