"""Training data for Flamingo: M3W interleaved documents, image-text pairs (LTIP/ALIGN), video-text pairs (VTP).

Stores read JSON Lines (docs/formats.md), WebDataset tar shards or Hugging Face ``datasets``; sources turn
records into interleaved item lists (``m3w`` lays out documents, ``augmentation`` pads and augments the media);
the loader shards, resumes and collates them with labels, taking M3W's token window.
"""

from contrastive_encoder.shared.media import MediaError, load_image, load_video
from contrastive_encoder.shared.stores import HFStore, JsonlStore, TarStore, open_store
from flamingo_core.data.augmentation import Stage2Augmentation, pad_to_square
from flamingo_core.data.loader import (
    IGNORE_INDEX,
    FlamingoCollator,
    ResumableBatchSampler,
    SourceDataset,
    make_labels,
    make_loader,
    sample_rng,
)
from flamingo_core.data.m3w import m3w_items, m3w_window
from flamingo_core.data.sources import (
    EOC,
    KINDS,
    DocumentImage,
    InterleavedSource,
    PairSource,
    SkippedSample,
    Source,
    VideoSource,
    build_source,
)

__all__ = [
    "EOC",
    "IGNORE_INDEX",
    "KINDS",
    "DocumentImage",
    "FlamingoCollator",
    "HFStore",
    "InterleavedSource",
    "JsonlStore",
    "MediaError",
    "PairSource",
    "ResumableBatchSampler",
    "SkippedSample",
    "Source",
    "SourceDataset",
    "Stage2Augmentation",
    "TarStore",
    "VideoSource",
    "build_source",
    "load_image",
    "load_video",
    "m3w_items",
    "m3w_window",
    "make_labels",
    "make_loader",
    "open_store",
    "pad_to_square",
    "sample_rng",
]
