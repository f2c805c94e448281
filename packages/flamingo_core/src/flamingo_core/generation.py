"""Decoding and scoring for Flamingo (arXiv 2204.14198, Section 3: open-ended generation with beam search of
3 beams stopping at ``<EOC>``; close-ended tasks ranked by log-likelihood).

``generate`` runs inside transformers' ``GenerationMixin`` (as IDEFICS and Mllama do), so greedy decoding,
sampling, beam search, the logits processors, stopping criteria and streamers are transformers' own, token for
token. The model it decodes is ``FlamingoForGeneration``: a causal LM whose forward runs the frozen LM with the
media context. Visual tokens are computed once per prompt, and each GATED XATTN-DENSE block's keys/values of
them once (``Flamingo.media_kv_cache``), then reused at every step with the LM's own KV cache; each prompt
runs through the LM once, and the rows transformers makes of it for beams or returned sequences share its
cache and media. New tokens' phi is the prompt's
last media (``<image>`` is never generated). ``use_cache=False`` recomputes the whole sequence, vision included,
at every step: the reference the cached path is tested against.
"""

from __future__ import annotations

import contextlib
import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from transformers import DynamicCache, GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .decoding_options import SUPPORTED_MODES, decoding_config
from .lm_adapter import MediaContext

__all__ = ["ContinuationScores", "FlamingoForGeneration", "check_context", "generate", "score_continuations"]


class ContinuationScores(NamedTuple):
    logprobs: torch.Tensor  # (C,) summed log-likelihood of each continuation's tokens
    num_tokens: torch.Tensor  # (C,) number of tokens scored


def _media_visual(model, media, media_mask, media_frame_mask, media_tokens):
    if media_tokens is not None:
        return media_tokens
    if media is None:
        return None
    return model.encode_media(media.to(model.device), media_mask, media_frame_mask)


def _repeat_rows(t: torch.Tensor | None, r: int) -> torch.Tensor | None:
    return None if t is None else t.repeat_interleave(r, dim=0)


class FlamingoForGeneration(PreTrainedModel, GenerationMixin):
    """A ``Flamingo`` with one call's media, as transformers' ``generate`` sees a causal LM.

    Holds the prompts' visual tokens and media keys/values (cached path) or their raw media arguments
    (``use_cache=False``), one row per prompt. ``generate`` repeats each prompt for its beams / returned
    sequences (consecutive, identical rows); the first cached forward runs each prompt once and repeats its LM
    cache, logits and media rows to match (transformers' beam search would run the prompt ``num_beams`` times).
    Beams are reordered within a prompt only, so the media rows never move. Not a submodule of the Flamingo, and
    it owns no parameters.

    Args:
        flamingo: the model.
        batch: B, the number of prompts.
        visual: (B, N, R, d) visual tokens, or None (text only or ``use_cache=False``).
        media_kv: per-block (k, v) of ``visual`` (``Flamingo.media_kv_cache``), or None to compute them at every
            step (``use_media_cache=False``).
        media_args: ``Flamingo.forward``'s media arguments for the ``use_cache=False`` reference path.
    """

    _supports_sdpa = _supports_flash_attn = _supports_flex_attn = _supports_attention_backend = True
    _supported_generation_modes = list(SUPPORTED_MODES)

    def __init__(self, flamingo, batch: int, visual=None, media_kv=None, media_args: dict | None = None):
        super().__init__(copy.copy(flamingo.lm.config))  # a copy: the init may set its attention implementation
        self.generation_config = GenerationConfig()  # decoding options come from generate, not the LM's config
        object.__setattr__(self, "flamingo", flamingo)
        self.visual, self.media_kv, self.media_args = visual, media_kv, dict(media_args or {})
        self.rows = batch
        tokenizer = getattr(flamingo, "tokenizer", None)
        self.decodable = len(tokenizer) if tokenizer is not None else flamingo.vocab_size  # ids that decode to text
        self.phi_last = None  # (B', 1) the prompt's last media index, set by the first cached forward

    @property
    def device(self) -> torch.device:
        return self.flamingo.device

    @property
    def dtype(self) -> torch.dtype:
        return self.flamingo.lm.dtype

    def _expand_to(self, n: int) -> None:
        """Repeat each prompt's media row for the ``n // B`` rows generate made of it (beams, returned sequences)."""
        if self.rows == n:
            return
        r = n // self.rows
        self.visual = _repeat_rows(self.visual, r)
        if self.media_kv is not None:
            self.media_kv = [(_repeat_rows(k, r), _repeat_rows(v, r)) for k, v in self.media_kv]
        self.media_args = {key: _repeat_rows(v, r) for key, v in self.media_args.items()}
        self.rows = n

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None,
                logits_to_keep: int = 0, **kwargs) -> CausalLMOutputWithPast:
        """Logits (B', L', V) of this step's tokens (the last ``logits_to_keep`` of them), ``<image>`` at -inf."""
        f = self.flamingo
        keep = slice(-logits_to_keep, None) if logits_to_keep else None
        if not use_cache:  # the reference path: the whole sequence, vision included
            self._expand_to(len(input_ids))
            logits = f(input_ids, attention_mask, **self.media_args).logits
            logits, past = (logits if keep is None else logits[:, keep]), None
        else:
            if past_key_values is None:
                past_key_values = DynamicCache(config=f.lm.config)
            if position_ids is None:
                mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
                position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]
            if self.phi_last is None:
                logits, past = self._prompt_once(input_ids, attention_mask, position_ids, past_key_values, keep)
            else:  # new tokens: <image> is never generated, so phi stays the prompt's last media
                logits, past = self._run(input_ids, attention_mask, position_ids, past_key_values, keep,
                                         self.phi_last.expand(-1, input_ids.shape[1]))
        # media come from the prompt only; and rows of the LM's head past the tokenizer (a converted checkpoint's
        # LM may have more) decode to no text. Both at -inf in the logits, so that no probability is left on them
        # when beam search normalises its scores (a suppress_tokens processor acts after that normalisation)
        logits[..., f.media_token_id] = float("-inf")
        if self.decodable < logits.shape[-1]:
            logits[..., self.decodable:] = float("-inf")
        return CausalLMOutputWithPast(logits=logits, past_key_values=past)

    def _prompt_once(self, input_ids, attention_mask, position_ids, cache, keep):
        """The prompts' forward on one of each prompt's r identical rows, then its cache and logits repeated."""
        r = len(input_ids) // self.rows
        one = slice(None, None, r)
        mask = None if attention_mask is None else attention_mask[one]
        phi = self.flamingo.phi(input_ids[one])  # (B, L)
        logits, cache = self._run(input_ids[one], mask, position_ids[one], cache, keep, phi)
        self.phi_last = phi[:, -1:]
        if r > 1:
            cache.batch_repeat_interleave(r)
            logits, self.phi_last = _repeat_rows(logits, r), _repeat_rows(self.phi_last, r)
            self._expand_to(len(input_ids))
        return logits, cache

    def _run(self, input_ids, attention_mask, position_ids, cache, keep, phi):
        f = self.flamingo
        ctx = None if self.visual is None else MediaContext(phi, self.visual, self.media_kv, f.config.num_latents)
        logits, cache, _ = f.run_lm(input_ids, attention_mask, position_ids, ctx, cache, use_cache=True,
                                    logits_slice=keep, decoding=True)
        return logits, cache


def check_context(model, prompt_len: int, extra: int, what: str) -> None:
    """Refuse a sequence longer than the frozen LM's positions (``Flamingo.context_length``): past them a LM
    with learned positions fails and a rotary one writes garbage, with no error either way."""
    limit = getattr(model, "context_length", None)
    if limit is not None and prompt_len + extra > limit:
        raise ValueError(f"a prompt of {prompt_len} tokens + {extra} {what} exceeds the language model's "
                         f"context of {limit} tokens")


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    media: torch.Tensor | None = None,
    generation_config: GenerationConfig | None = None,
    *,
    media_mask: torch.Tensor | None = None,
    media_frame_mask: torch.Tensor | None = None,
    media_tokens: torch.Tensor | None = None,
    use_media_cache: bool = True,
    stop_token_ids: list[int] | None = None,
    streamer=None,
    tokenizer=None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    **options,
) -> torch.Tensor:
    """Generate after each (left-padded) prompt with transformers' decoding and Flamingo's media context.

    Supported options (``generation_config`` fields, or keywords over it, as in transformers' ``generate``):
    max_new_tokens (default 20) / max_length, min_new_tokens, do_sample, temperature, top_k (transformers'
    default 50 when sampling; 0 = all), top_p, min_p, typical_p, num_beams, length_penalty, early_stopping,
    repetition_penalty, no_repeat_ngram_size, bad_words_ids, suppress_tokens, sequence_bias,
    num_return_sequences, eos_token_id (int or list; default ``<EOC>`` and the tokenizer's EOS), pad_token_id
    (default the tokenizer's pad), stop_strings, max_time, use_cache. Refused with a one-line error: contrastive
    search, assisted decoding, DoLa, group and constrained beam search, classifier-free guidance, token healing,
    chunked prefill, static caches, ``return_dict_in_generate`` / ``output_*``.

    Args:
        model: a ``Flamingo``.
        input_ids, attention_mask: (B, L) prompts; pad on the left for batches.
        media, media_mask, media_frame_mask, media_tokens: as in ``Flamingo.forward``.
        generation_config: a ``transformers.GenerationConfig`` (copied, never changed); ``options`` override it.
        use_media_cache: False recomputes the media keys/values at every step (as OpenFlamingo does).
        stop_token_ids: the former name of ``eos_token_id``.
        streamer: a transformers ``BaseStreamer`` (``put`` / ``end``, e.g. ``TextStreamer``); one prompt and
            ``num_beams=1`` (transformers' rule).
        tokenizer: the one ``stop_strings`` are matched with (default the model's).
        generator, seed: draw the samples from this ``torch.Generator`` (advanced as if it had drawn them) or from
            a fresh one seeded so; the global RNG is left as it was. Without either, sampling draws from the
            global RNG, as transformers' ``generate`` does: ``torch.manual_seed(s)`` then either gives the same
            tokens.

    Returns:
        (B * num_return_sequences, L_new) new token ids (the rows of one prompt together), each row ending with
        its stop token when one was produced, padded with ``pad_token_id``.
    """
    model.eval()
    input_ids, attention_mask = _prompt(model, input_ids, attention_mask)
    options = dict(options)
    if stop_token_ids:
        if "eos_token_id" in options:
            raise ValueError("give stop_token_ids or eos_token_id, not both (stop_token_ids is its former name)")
        options["eos_token_id"] = list(stop_token_ids)
    config = decoding_config(generation_config, options)
    extra = _flamingo_defaults(model, config, tokenizer, streamer, input_ids)
    media_args = _media_args(model, input_ids, {"media": media, "media_mask": media_mask,
                                                "media_frame_mask": media_frame_mask, "media_tokens": media_tokens})
    if config.max_new_tokens == 0:
        return input_ids.new_empty(len(input_ids) * (config.num_return_sequences or 1), 0)
    if config.use_cache is False:
        lm = FlamingoForGeneration(model, len(input_ids),
                                   media_args={k: v for k, v in media_args.items() if v is not None})
    else:
        visual = _media_visual(model, **media_args)
        kv = model.media_kv_cache(visual) if (visual is not None and use_media_cache) else None
        lm = FlamingoForGeneration(model, len(input_ids), visual, kv)
    with _sampling_rng(generator, seed, model.device):
        try:
            out = lm.generate(input_ids, attention_mask=attention_mask, generation_config=config, **extra)
        except ValueError as e:  # transformers' checks at run time (a streamer's batch size, ...): one line
            raise ValueError(" ".join(str(e).split())) from e
    return out[:, input_ids.shape[1]:]


def _flamingo_defaults(model, config: GenerationConfig, tokenizer, streamer, input_ids: torch.Tensor) -> dict:
    """Fill ``config``'s stop ids (``<EOC>``, EOS), pad id and ``max_new_tokens`` (from ``max_length`` or 20, as
    transformers counts) where unset; check the streamer and the context length. Returns ``generate``'s
    ``streamer`` / ``tokenizer`` keywords (the tokenizer ``stop_strings`` are matched with)."""
    extra = {"streamer": streamer}
    if config.stop_strings:
        tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(f"stop_strings={config.stop_strings!r} need a tokenizer: pass tokenizer= (the model "
                             "has none)")
        extra["tokenizer"] = tokenizer
    if config.eos_token_id is None:
        config.eos_token_id = model.stop_token_ids
    if config.pad_token_id is None:
        pad_id = model.tokenizer.pad_token_id
        config.pad_token_id = pad_id if pad_id is not None else model.stop_token_ids[0]
    if streamer is not None and ((config.num_beams or 1) > 1 or len(input_ids) > 1):
        raise ValueError(f"a streamer needs one prompt and num_beams=1, got {len(input_ids)} prompts and "
                         f"num_beams={config.num_beams}")
    if config.max_new_tokens is None:
        config.max_new_tokens = 20 if config.max_length is None else max(config.max_length - input_ids.shape[1], 0)
    config.max_length = None  # max_new_tokens rules
    check_context(model, input_ids.shape[1], config.max_new_tokens, "new tokens (max_new_tokens)")
    return extra


@contextlib.contextmanager
def _sampling_rng(generator: torch.Generator | None, seed: int | None, device: torch.device):
    """Run transformers' sampling (``torch.multinomial`` on the global RNG) on ``generator``'s stream, or on a
    fresh one seeded ``seed``; the global RNG is restored afterwards and ``generator`` advanced."""
    if generator is None and seed is None:
        yield
        return
    if generator is not None and seed is not None:
        raise ValueError("give generator or seed, not both")
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(seed)
    if generator.device.type != device.type or device.type not in ("cpu", "cuda"):
        raise ValueError(f"generator must be a cpu or cuda torch.Generator on the model's device ({device}), "
                         f"got one on {generator.device}")
    cuda = device.type == "cuda"
    index = device.index if device.index is not None else torch.cuda.current_device() if cuda else None
    with torch.random.fork_rng(devices=[index] if cuda else [], device_type="cuda"):
        if cuda:
            torch.cuda.set_rng_state(generator.get_state(), index)
        else:
            torch.set_rng_state(generator.get_state())
        yield
        generator.set_state(torch.cuda.get_rng_state(index) if cuda else torch.get_rng_state())


def _prompt(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
    """The prompts and their attention mask (all ones by default) on the model's device, shapes checked."""
    input_ids = input_ids.to(model.device)
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(model.device)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids {tuple(input_ids.shape)}")
    return input_ids, attention_mask


def _media_args(model, input_ids: torch.Tensor, media_args: dict) -> dict:
    """``generate``'s media arguments on the model's device, refused when the prompts' ``<image>`` tokens
    outnumber the media given."""
    media_args = {k: (v.to(model.device) if v is not None else None) for k, v in media_args.items()}
    given = next((v.shape[1] for v in (media_args["media"], media_args["media_tokens"]) if v is not None), 0)
    num_media = (media_args["media_mask"].sum(1) if media_args["media_mask"] is not None
                 else torch.full_like(input_ids[:, 0], given))
    model._check_media_count(model.phi(input_ids), num_media)
    return media_args


class _CachedPrefix:
    """One prompt run once (LM cache, visual tokens, media keys/values) for ``score_continuations``."""

    def __init__(self, model, input_ids, attention_mask, visual):
        self.kv = model.media_kv_cache(visual) if visual is not None else None
        self.cache = DynamicCache(config=model.lm.config)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        phi = model.phi(input_ids)
        ctx = None if visual is None else MediaContext(phi, visual, self.kv, model.config.num_latents)
        self.logits, self.cache, _ = model.run_lm(
            input_ids, attention_mask, positions, ctx, self.cache, use_cache=True, logits_slice=slice(-1, None),
            decoding=True,
        )
        self.position = positions[:, -1]
        self.phi = phi[:, -1]


@torch.no_grad()
def score_continuations(
    model,
    prefix_ids,
    continuations,
    media: torch.Tensor | None = None,
    media_mask: torch.Tensor | None = None,
    media_frame_mask: torch.Tensor | None = None,
    media_tokens: torch.Tensor | None = None,
    batch_size: int = 16,
) -> ContinuationScores:
    """Log-likelihood of each continuation after one prefix; the prefix (LM cache, visual tokens and media
    keys/values) is computed once and shared by all continuations.

    Args:
        model: a ``Flamingo``.
        prefix_ids: (L,) or (1, L) ids of the prompt (with its ``<image>`` tokens); a list of ints also works.
        continuations: list of token-id lists (or 1-D tensors), scored given the prefix.
        media, media_mask, media_frame_mask, media_tokens: the prefix's media, batch dimension 1.
        batch_size: continuations scored per LM call.

    Returns:
        ``ContinuationScores(logprobs (C,), num_tokens (C,))``.
    """
    model.eval()
    device = model.device
    prefix = torch.as_tensor(prefix_ids, dtype=torch.long, device=device).reshape(1, -1)
    if prefix.shape[1] == 0:
        raise ValueError("prefix_ids must hold at least one token (e.g. BOS)")
    conts = [torch.as_tensor(c, dtype=torch.long).reshape(-1).tolist() for c in continuations]
    check_context(model, prefix.shape[1], max((len(c) for c in conts), default=0), "continuation tokens")
    mask = torch.ones_like(prefix)
    visual = _media_visual(
        model, media, None if media_mask is None else media_mask.to(device),
        None if media_frame_mask is None else media_frame_mask.to(device),
        None if media_tokens is None else media_tokens.to(device),
    )
    num_media = torch.tensor([0 if visual is None else (int(media_mask.sum()) if media_mask is not None
                                                         else visual.shape[1])], device=device)
    model._check_media_count(model.phi(prefix), num_media)
    prefix_dec = _CachedPrefix(model, prefix, mask, visual)
    first_logp = F.log_softmax(prefix_dec.logits[:, -1].float(), dim=-1)  # (1, V)
    logprobs = torch.zeros(len(conts), device=device)
    counts = torch.tensor([len(c) for c in conts], device=device)
    for start in range(0, len(conts), batch_size):
        chunk = conts[start : start + batch_size]
        n, width = len(chunk), max(len(c) for c in chunk)
        if width == 0:
            continue
        ids = torch.zeros(n, width, dtype=torch.long, device=device)
        cmask = torch.zeros(n, width, dtype=torch.long, device=device)
        for i, c in enumerate(chunk):
            ids[i, : len(c)] = torch.tensor(c, dtype=torch.long)
            cmask[i, : len(c)] = 1
        cache = copy.deepcopy(prefix_dec.cache)
        cache.batch_repeat_interleave(n)
        full_mask = torch.cat([mask.expand(n, -1), cmask], dim=1)
        positions = prefix_dec.position + 1 + torch.arange(width, device=device)[None].expand(n, -1)
        ctx = None
        if visual is not None:
            phi = prefix_dec.phi[:, None] + model.phi(ids)  # (n, width)
            kv = [(key.expand(n, -1, -1, -1), value.expand(n, -1, -1, -1)) for key, value in prefix_dec.kv]
            ctx = MediaContext(phi, visual.expand(n, -1, -1, -1), kv, model.config.num_latents)
        logits, _, _ = model.run_lm(ids, full_mask, positions, ctx, cache, use_cache=True)
        logp = torch.cat([first_logp[:, None].expand(n, 1, -1), F.log_softmax(logits[:, :-1].float(), dim=-1)], dim=1)
        token_logp = logp.gather(-1, ids[..., None]).squeeze(-1) * cmask  # (n, width)
        logprobs[start : start + n] = token_logp.sum(1)
    return ContinuationScores(logprobs.cpu(), counts.cpu())
