"""Decoding and scoring for Flamingo (arXiv 2204.14198, Section 3: open-ended generation with beam search of
3 beams stopping at ``<EOC>``; close-ended tasks ranked by log-likelihood).

Visual tokens are computed once per prompt, and each GATED XATTN-DENSE block's keys/values of them once
(``Flamingo.media_kv_cache``), then reused at every decoding step together with the LM's own KV cache. New
tokens' phi is the prompt's last media (``<image>`` is never generated). ``use_cache=False`` recomputes the
whole sequence, vision included, at every step: the reference the cached path is tested against.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from .lm_adapter import MediaContext

__all__ = ["ContinuationScores", "check_context", "generate", "score_continuations"]


class ContinuationScores(NamedTuple):
    logprobs: torch.Tensor  # (C,) summed log-likelihood of each continuation's tokens
    num_tokens: torch.Tensor  # (C,) number of tokens scored


def _media_visual(model, media, media_mask, media_frame_mask, media_tokens):
    if media_tokens is not None:
        return media_tokens
    if media is None:
        return None
    return model.encode_media(media.to(model.device), media_mask, media_frame_mask)


class _CachedDecoder:
    """Prompt once, then one token per step with the LM cache and (optionally) the media KV cache."""

    def __init__(self, model, input_ids, attention_mask, visual, use_media_cache: bool):
        self.model, self.visual = model, visual
        self.mask = attention_mask
        phi = model.phi(input_ids)
        self.kv = model.media_kv_cache(visual) if (visual is not None and use_media_cache) else None
        self.cache = DynamicCache(config=model.lm.config)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        ctx = self._context(phi)
        self.logits, self.cache, _ = model.run_lm(
            input_ids, attention_mask, positions, ctx, self.cache, use_cache=True, logits_slice=slice(-1, None),
            decoding=True,
        )
        self.position = positions[:, -1]
        self.phi = phi[:, -1]

    def _context(self, phi):
        if self.visual is None:
            return None
        return MediaContext(phi, self.visual, self.kv, self.model.config.num_latents)

    def expand(self, k: int) -> None:
        """Repeat every row k times (beam search); all beams of a sample share its media."""
        rep = lambda t: t.repeat_interleave(k, dim=0)  # noqa: E731
        self.cache.batch_repeat_interleave(k)
        self.mask, self.position, self.phi, self.logits = map(rep, (self.mask, self.position, self.phi, self.logits))
        if self.visual is not None:
            self.visual = rep(self.visual)
            if self.kv is not None:
                self.kv = [(rep(key), rep(value)) for key, value in self.kv]

    def step(self, tokens: torch.Tensor, beam_idx: torch.Tensor | None = None) -> torch.Tensor:
        if beam_idx is not None:
            # beams are reordered within a sample only, so the media (and its K/V) rows stay the same
            self.cache.reorder_cache(beam_idx)
            self.mask, self.position, self.phi = self.mask[beam_idx], self.position[beam_idx], self.phi[beam_idx]
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], dim=1)
        self.position = self.position + 1
        self.phi = self.phi + (tokens == self.model.media_token_id).long()
        logits, self.cache, _ = self.model.run_lm(
            tokens[:, None], self.mask, self.position[:, None], self._context(self.phi[:, None]), self.cache, True,
            decoding=True,
        )
        return logits[:, -1]


class _RecomputeDecoder:
    """Reference path: the full forward (vision included) on the whole sequence at every step."""

    def __init__(self, model, input_ids, attention_mask, media_args):
        self.model, self.ids, self.mask, self.media_args = model, input_ids, attention_mask, media_args
        self.logits = self._forward()

    def _forward(self):
        return self.model(self.ids, self.mask, **self.media_args).logits[:, -1:]

    def expand(self, k: int) -> None:
        rep = lambda t: None if t is None else t.repeat_interleave(k, dim=0)  # noqa: E731
        self.ids, self.mask, self.logits = rep(self.ids), rep(self.mask), rep(self.logits)
        self.media_args = {key: rep(v) for key, v in self.media_args.items()}

    def step(self, tokens: torch.Tensor, beam_idx: torch.Tensor | None = None) -> torch.Tensor:
        if beam_idx is not None:
            self.ids, self.mask = self.ids[beam_idx], self.mask[beam_idx]
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], dim=1)
        return self._forward()[:, -1]


def _process_logits(logits: torch.Tensor, media_token_id: int, banned: torch.Tensor | None = None) -> torch.Tensor:
    logits = logits.float().clone()
    logits[:, media_token_id] = float("-inf")  # media come from the prompt only
    if banned is not None:
        logits[:, banned] = float("-inf")  # stop tokens before min_new_tokens
    return logits


def _sample(logits, temperature: float, top_k: int, top_p: float, generator) -> torch.Tensor:
    logits = logits / max(temperature, 1e-5)
    if top_k and top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest prefix reaching top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _pad_outputs(seqs: list[list[int]], pad_id: int, device) -> torch.Tensor:
    width = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def check_context(model, prompt_len: int, extra: int, what: str) -> None:
    """Refuse a sequence longer than the frozen LM's positions (``Flamingo.context_length``): past them a LM
    with learned positions fails and a rotary one writes garbage, with no error either way."""
    limit = getattr(model, "context_length", None)
    if limit is not None and prompt_len + extra > limit:
        raise ValueError(f"a prompt of {prompt_len} tokens + {extra} {what} exceeds the language model's "
                         f"context of {limit} tokens")


def _check_decoding_args(max_new_tokens: int, min_new_tokens: int, num_beams: int, do_sample: bool,
                         temperature: float, top_k: int, top_p: float) -> None:
    if max_new_tokens < 0 or min_new_tokens < 0:
        raise ValueError(f"max_new_tokens and min_new_tokens must be >= 0, got {max_new_tokens}, {min_new_tokens}")
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = all tokens), got {top_k}")
    if not 0 < top_p <= 1:  # top_p 0 keeps no token: multinomial on an all -inf row
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    media: torch.Tensor | None = None,
    max_new_tokens: int = 20,
    min_new_tokens: int = 0,
    num_beams: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    length_penalty: float = 1.0,
    media_mask: torch.Tensor | None = None,
    media_frame_mask: torch.Tensor | None = None,
    media_tokens: torch.Tensor | None = None,
    use_cache: bool = True,
    use_media_cache: bool = True,
    stop_token_ids: list[int] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Generate up to ``max_new_tokens`` tokens after each (left-padded) prompt.

    Args:
        model: a ``Flamingo``.
        input_ids, attention_mask: (B, L) prompts; pad on the left for batches.
        media, media_mask, media_frame_mask, media_tokens: as in ``Flamingo.forward``.
        max_new_tokens, min_new_tokens: bounds on the number of new tokens (stop tokens are banned before
            ``min_new_tokens``).
        num_beams: beam search with this many beams when > 1 (the paper uses 3).
        do_sample, temperature, top_k, top_p: sampling (ignored by beam search).
        length_penalty: beam hypotheses are ranked by sum logprob / length ** length_penalty.
        use_cache: False recomputes everything each step (reference path, slow).
        use_media_cache: False recomputes the media keys/values at every step (as OpenFlamingo does).
        stop_token_ids: defaults to ``<EOC>`` and the tokenizer's EOS.
        generator: random generator for sampling.

    Returns:
        (B, L_new) new token ids, each row ending with its stop token when one was produced, padded with the
        tokenizer's pad id.
    """
    model.eval()
    device = model.device
    input_ids, attention_mask = _prompt(model, input_ids, attention_mask)
    _check_decoding_args(max_new_tokens, min_new_tokens, num_beams, do_sample, temperature, top_k, top_p)
    check_context(model, input_ids.shape[1], max_new_tokens, "new tokens (max_new_tokens)")
    stop = torch.tensor(stop_token_ids or model.stop_token_ids, device=device)
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else int(stop[0])
    media_args = _media_args(model, input_ids, {"media": media, "media_mask": media_mask,
                                                "media_frame_mask": media_frame_mask, "media_tokens": media_tokens})
    if use_cache:
        decoder = _CachedDecoder(model, input_ids, attention_mask, _media_visual(model, **media_args), use_media_cache)
    else:
        decoder = _RecomputeDecoder(model, input_ids, attention_mask, media_args)
    if max_new_tokens == 0:
        return torch.empty(len(input_ids), 0, dtype=torch.long, device=device)
    if num_beams > 1:
        seqs = _beam_search(model, decoder, len(input_ids), num_beams, max_new_tokens, stop, length_penalty,
                            min_new_tokens)
        return _pad_outputs(seqs, pad_id, device)
    pick = ((lambda scores: _sample(scores, temperature, top_k, top_p, generator)) if do_sample
            else (lambda scores: scores.argmax(-1)))
    return _greedy(model, decoder, pick, max_new_tokens, min_new_tokens, stop, pad_id)


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


def _greedy(model, decoder, pick, max_new_tokens: int, min_new_tokens: int, stop, pad_id: int) -> torch.Tensor:
    """Greedy decoding or sampling (``pick(scores) -> tokens``); finished rows continue with ``pad_id``."""
    logits = decoder.logits[:, -1]
    finished = torch.zeros(len(logits), dtype=torch.bool, device=logits.device)
    out = []
    for step in range(max_new_tokens):
        scores = _process_logits(logits, model.media_token_id, stop if step < min_new_tokens else None)
        tokens = torch.where(finished, pad_id, pick(scores))
        out.append(tokens)
        finished |= torch.isin(tokens, stop)
        if finished.all() or step == max_new_tokens - 1:
            break
        logits = decoder.step(tokens)
    return torch.stack(out, dim=1)


def _beam_search(model, decoder, batch: int, k: int, max_new_tokens: int, stop, length_penalty: float,
                 min_new_tokens: int = 0):
    """Beam search with ``k`` beams; a sample is done once it holds ``k`` finished hypotheses."""
    device = decoder.logits.device
    decoder.expand(k)
    logits = decoder.logits[:, -1]  # (B*k, V)
    beam_scores = torch.zeros(batch, k, device=device)
    beam_scores[:, 1:] = float("-inf")  # all beams start identical: keep one
    beams: list[list[int]] = [[] for _ in range(batch * k)]
    hyps: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    done = [False] * batch
    stop_set = set(stop.tolist())
    for step in range(max_new_tokens):
        banned = stop if step < min_new_tokens else None
        logp = F.log_softmax(_process_logits(logits, model.media_token_id, banned), dim=-1)  # (B*k, V)
        vocab = logp.shape[-1]
        cand = (beam_scores.view(-1, 1) + logp).view(batch, k * vocab)
        top_scores, top_idx = cand.topk(2 * k, dim=-1)  # (B, 2k)
        top_scores, top_idx = top_scores.tolist(), top_idx.tolist()
        next_scores = torch.full((batch, k), float("-inf"), device=device)
        next_tokens = torch.zeros(batch, k, dtype=torch.long, device=device)
        next_src = torch.zeros(batch, k, dtype=torch.long, device=device)
        new_beams: list[list[int]] = []
        for b in range(batch):
            chosen = 0
            for rank, (score, idx) in enumerate(zip(top_scores[b], top_idx[b])):
                src, tok = b * k + idx // vocab, idx % vocab
                if not done[b] and tok in stop_set:
                    if rank < k:  # a finished hypothesis only counts if it is among the k best
                        seq = beams[src] + [tok]
                        hyps[b].append((score / len(seq) ** length_penalty, seq))
                    continue
                next_scores[b, chosen], next_tokens[b, chosen], next_src[b, chosen] = score, tok, src
                new_beams.append(beams[src] + [tok])
                chosen += 1
                if chosen == k:
                    break
            if len(hyps[b]) >= k:
                done[b] = True
        beams = new_beams
        beam_scores = next_scores
        if all(done) or step == max_new_tokens - 1:
            break
        logits = decoder.step(next_tokens.view(-1), next_src.view(-1))
    results = []
    for b in range(batch):
        if not done[b]:
            for j in range(k):
                seq = beams[b * k + j]
                hyps[b].append((float(beam_scores[b, j]) / max(len(seq), 1) ** length_penalty, seq))
        results.append(max(hyps[b], key=lambda h: h[0])[1])
    return results


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
    prefix_dec = _CachedDecoder(model, prefix, mask, visual, use_media_cache=True)
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
