"""Training data for Flamingo: M3W interleaved documents, image-text pairs (LTIP/ALIGN), video-text pairs (VTP).

Stores read JSON Lines (docs/formats.md), WebDataset tar shards or Hugging Face ``datasets``; sources turn
records into interleaved item lists; the loader shards, resumes and collates them with labels.
"""

from contrastive_encoder.shared.media import MediaError, load_image, load_video
from contrastive_encoder.shared.stores import HFStore, JsonlStore, TarStore, open_store
from flamingo_core.data.loader import (
    IGNORE_INDEX,
    FlamingoCollator,
    ResumableBatchSampler,
    SourceDataset,
    make_labels,
    make_loader,
    sample_rng,
)
from flamingo_core.data.sources import (
    EOC,
    KINDS,
    InterleavedSource,
    PairSource,
    SkippedSample,
    Source,
    VideoSource,
    build_source,
    m3w_items,
)

__all__ = [
    "EOC",
    "IGNORE_INDEX",
    "KINDS",
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
    "TarStore",
    "VideoSource",
    "build_source",
    "load_image",
    "load_video",
    "m3w_items",
    "make_labels",
    "make_loader",
    "open_store",
    "sample_rng",
]
