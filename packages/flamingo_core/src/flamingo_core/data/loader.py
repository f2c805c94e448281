"""Batches for training: a resumable, rank-sharded sampler, the per-sample RNG, and the collator that builds
labels for next-token prediction.

Exactness. The order of a source is a fixed function of (seed, epoch): step ``s`` of a run reads global
positions ``[s*G, (s+1)*G)`` of the endless stream of epoch permutations, ``G = batch_size * world_size``, and
process ``r`` takes its ``batch_size`` slice of them. Every random choice inside a sample (video clip start,
M3W window and previous/next image, flips and colour jitter) comes from an RNG seeded by (seed, source, epoch,
index). So the data position of a run is just its step number: a resumed run and a run with a different number
of processes but the same global batch read exactly the same samples.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from contrastive_encoder.shared.media import MediaError
from contrastive_encoder.shared.records import BadSampleError
from flamingo_core.data.m3w import m3w_window
from flamingo_core.data.sources import DocumentImage, SkippedSample, Source
from flamingo_core.labels import IGNORE_INDEX, make_labels
from flamingo_core.packing import pack_batch

__all__ = [
    "IGNORE_INDEX",
    "FlamingoCollator",
    "ResumableBatchSampler",
    "SourceDataset",
    "make_labels",
    "make_loader",
    "sample_rng",
]


def sample_rng(seed: int, source: str, epoch: int, index: int) -> random.Random:
    """The RNG of one sample; string seeds hash with SHA-512, so this is stable across processes and runs."""
    return random.Random(f"{seed}/{source}/{epoch}/{index}")


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Endless batches of ``(epoch, index)`` for one process, starting at step ``start_step``.

    Args:
        num_samples: size of the source.
        batch_size: samples per process per step.
        rank / world_size: this process's slice of each global batch.
        seed: seeds the per-epoch permutation.
        start_step: the first step to produce (resume).
    """

    def __init__(self, num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 start_step: int = 0):
        if num_samples <= 0:
            raise ValueError("a source needs at least one sample")
        self.n, self.b, self.rank, self.world, self.seed = num_samples, batch_size, rank, world_size, seed
        self.start_step = start_step
        self._perm_epoch, self._perm = -1, None

    def _perm_for(self, epoch: int) -> list[int]:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g).tolist(), epoch
        return self._perm

    def batch_at(self, step: int) -> list[tuple[int, int]]:
        first = (step * self.world + self.rank) * self.b
        out = []
        for pos in range(first, first + self.b):
            epoch, offset = divmod(pos, self.n)
            out.append((epoch, self._perm_for(epoch)[offset]))
        return out

    def position(self, step: int) -> dict[str, int]:
        """The (epoch, offset) where global step ``step`` starts; stored in checkpoints for inspection."""
        epoch, offset = divmod(step * self.world * self.b, self.n)
        return {"epoch": epoch, "offset": offset}

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.batch_at(step)
            step += 1

    def __len__(self) -> int:  # endless; DataLoader only needs this for len(), which we never call
        return 2**62


class SourceDataset(Dataset):
    """Map-style view of a Source indexed by ``(epoch, index)``; corrupt samples come back as SkippedSample."""

    def __init__(self, source: Source, seed: int = 0):
        self.source, self.seed = source, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        return self.source.load(index, sample_rng(self.seed, self.source.name, epoch, index))


class FlamingoCollator:
    """Turn item lists into a model batch: processor, truncation to ``max_tokens``, labels.

    Truncation keeps the media whose ``<image>`` token survived (the processor places media in order of their
    tokens), so a cut never leaves a token without its image or an image without its token. A batch with M3W
    documents (their meta holds ``m3w_window``) takes the paper's window instead: ``max_tokens`` tokens from a
    random start with the first ``max_images`` images (``m3w.m3w_window``; the start token the processor puts
    before every sequence stays first), and loads only the images kept; a document whose kept image fails to
    load is skipped (strict sources raise). Rows drawn as "next" (``media_next`` in the meta) give the batch a
    (B,) bool ``media_next``: the model shifts their phi to the image after each token.

    Args:
        processor: a FlamingoProcessor (``processor(batch) -> input_ids, attention_mask, media, media_mask``).
        max_tokens: sequence length cap for this source.
        media_token_id: id of ``<image>``.
        extra_masked_ids: other ids never predicted (none by default; ``<EOC>`` is predicted, it ends captions).
        pack_window: pack the samples into rows of this many tokens (``flamingo_core.packing``; the batch gains
            ``segment_ids`` and ``packing``, its real tokens / window), or None for one row per sample.
    """

    def __init__(self, processor: Any, max_tokens: int, media_token_id: int,
                 extra_masked_ids: Sequence[int] = (), pack_window: int | None = None):
        self.processor, self.max_tokens, self.pack_window = processor, max_tokens, pack_window
        self.media_token_id = media_token_id
        self.masked_ids = (media_token_id, *extra_masked_ids)
        params = inspect.signature(processor.__call__).parameters
        self._kw: dict[str, Any] = {"padding_side": "right"} if "padding_side" in params else {}
        if "max_length" in params:  # the processor truncates per sample, before padding
            self._kw["max_length"] = max_tokens

    def __call__(self, samples: list) -> dict[str, Any]:
        skipped = [s for s in samples if isinstance(s, SkippedSample)]
        good = [s for s in samples if not isinstance(s, SkippedSample)]
        batch: dict[str, Any] = {"skipped": skipped, "meta": [m for _, m in good]}
        if not good:
            return batch
        if any("m3w_window" in meta for _, meta in good):
            good, enc = self._windowed(good, skipped)
            batch["meta"] = [m for _, m in good]
            if not good:
                return batch
        else:
            enc = self.processor([items for items, _ in good], **self._kw)
        ids, mask = enc["input_ids"][:, : self.max_tokens], enc["attention_mask"][:, : self.max_tokens]
        media, media_mask, frame_mask = enc.get("media"), enc.get("media_mask"), enc.get("media_frame_mask")
        if media is not None and enc["input_ids"].shape[1] > self.max_tokens:
            kept = (ids == self.media_token_id).sum(1)  # (B,) media still referenced after the cut
            n = max(int(kept.max()), 1)
            alive = torch.arange(n)[None, :] < kept[:, None]  # (B, n)
            media = media[:, :n]
            media_mask = alive if media_mask is None else media_mask[:, :n].bool() & alive
            frame_mask = None if frame_mask is None else frame_mask[:, :n]
        batch.update(input_ids=ids, attention_mask=mask, media=media, media_mask=media_mask,
                     media_frame_mask=frame_mask, labels=make_labels(ids, mask, self.masked_ids))
        if any("media_next" in m for _, m in good):
            batch["media_next"] = torch.tensor([bool(m.get("media_next", False)) for _, m in good])
        if self.pack_window is None:
            return batch
        if bool(batch.pop("media_next", torch.zeros(1, dtype=torch.bool)).any()):
            raise ValueError("packing cannot hold 'next image' sequences (media_next): their phi would reach the "
                             "next sample's image; pack pairs and videos only")
        return pack_batch(batch, self.pack_window)

    def _frame(self) -> tuple[int, int]:
        """(tokens the processor puts before, after) every sequence's text: the start token, BOS, EOS."""
        if not hasattr(self, "_around"):
            empty, one = self.processor.token_ids(""), self.processor.token_ids("a")
            head = next((i for i, (x, y) in enumerate(zip(empty, one)) if x != y), len(empty))
            self._around = (head, len(empty) - head)
        return self._around

    def _windowed(self, good: list, skipped: list) -> tuple[list, dict[str, Any]]:
        """The M3W window of each sample (``m3w_window``; a sample without one keeps its first tokens), its kept
        images loaded; samples whose image fails are moved to ``skipped``. Returns (kept samples, encoding)."""
        head, tail = self._frame()
        length = self.max_tokens - head - tail
        rows, media, kept_samples = [], [], []
        for items, meta in good:
            text, refs = self.processor.split_sample(items)
            ids = self.processor.token_ids(text)
            body = ids[head:len(ids) - tail]
            window, kept = m3w_window(body, self.media_token_id, length, meta.get("max_images"),
                                      meta.get("m3w_window", 0.0))
            loaded = _load_document_images([refs[k] for k in kept])
            if isinstance(loaded, SkippedSample):
                skipped.append(loaded)
                continue
            rows.append(ids[:head] + window + ids[len(ids) - tail:])
            media.append(loaded)
            kept_samples.append((items, meta))
        if not rows:
            return [], {}
        return kept_samples, self.processor.encode_ids(rows, media, padding_side="right")


def _load_document_images(refs: list) -> list | SkippedSample:
    """The kept media of one document, each ``DocumentImage`` loaded; a failure skips the document (or raises
    ``BadSampleError`` for a strict source)."""
    out = []
    for ref in refs:
        if not isinstance(ref, DocumentImage):
            out.append(ref)
            continue
        try:
            out.append(ref.load())
        except (MediaError, ValueError, OSError) as e:
            if ref.strict:
                raise BadSampleError(f"{ref.where}: {ref.what}: {e} (strict mode; drop --strict to skip and count "
                                     "such samples)") from e
            return SkippedSample(f"corrupt or missing media ({ref.what}: {e})", ref.where)
    return out


def make_loader(source: Source, collator: FlamingoCollator, batch_size: int, rank: int = 0,
                world_size: int = 1, seed: int = 0, start_step: int = 0, num_workers: int = 0) -> DataLoader:
    """An endless DataLoader over one source, starting at ``start_step``; see the module docstring."""
    sampler = ResumableBatchSampler(len(source), batch_size, rank, world_size, seed, start_step)
    return DataLoader(SourceDataset(source, seed), batch_sampler=sampler, collate_fn=collator,
                      num_workers=num_workers, persistent_workers=num_workers > 0)
