"""Where image-text pairs come from: any record store of ``shared.stores`` (JSON Lines + image files, WebDataset
tar shards, a ``datasets`` dataset), the reader family stage 2 reads its sources with too.

``ImageTextPairs`` is a random-access list of pairs over a store: ``len(pairs)``, ``pairs.load(i)`` giving
``(PIL image, caption)`` (raising ``MediaError`` for a corrupt or missing image) and ``pairs.where(i)`` naming the
file, for error messages. A record's image and caption are found by the stores' key rules (``IMAGE_KEYS``,
``TEXT_KEYS``: the same fields as stage 2's pair sources). A record whose caption is a list gives one pair per
caption when the store holds its records in memory (JSON Lines) and its first caption otherwise (tar samples,
``datasets`` rows: indexing them reads no member and no row).
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from ..shared.media import MediaError, load_image
from ..shared.records import SkipCounter
from ..shared.stores import IMAGE_KEYS, TEXT_KEYS, JsonlStore, RecordStore, first_field, open_store

__all__ = ["ImageTextPairs", "open_source"]

# JSON Lines rows are checked as they are read: a media path given as a number or a caption given as an object
# is a bad row (skipped and counted), not a crash or a caption reading "{'a': 1}" later
_ROW_TYPES = {**{k: str for k in IMAGE_KEYS}, **{k: (str, [str]) for k in TEXT_KEYS}}


class ImageTextPairs:
    """The (image, caption) pairs of a record store.

    Args:
        store: the records.
        name: what to call the source in logs and errors (default: the store's path or name).
        strict / skipped: a record without an image or a caption is skipped and counted in ``skipped``
            (raises ``BadSampleError`` when strict).
    """

    def __init__(self, store: RecordStore, name: str | None = None, strict: bool = False,
                 skipped: SkipCounter | None = None):
        self.store = store
        self.name = name or str(getattr(store, "path", None) or getattr(store, "name", None) or "pairs")
        skipped = skipped if skipped is not None else SkipCounter()
        # (record, caption): the caption's index into a list held in memory, or None for the record's first one
        self.items: list[tuple[int, int | None]] = []
        for i in range(len(store)):
            if isinstance(store, JsonlStore):
                pairs = [(i, j) for j in range(len(self._captions(store.record(i))))]
            else:
                fields = store.fields(i)
                pairs = [(i, None)] if fields & set(IMAGE_KEYS) and fields & {*TEXT_KEYS, "json"} else []
            if not pairs:
                skipped.skip(f"no image ({'/'.join(IMAGE_KEYS[:3])}...) and caption ({'/'.join(TEXT_KEYS)})",
                             store.where(i), strict)
            self.items += pairs
        if not self.items:
            raise ValueError(f"{self.name}: no records with both an image ({'/'.join(IMAGE_KEYS)}) and a caption "
                             f"({'/'.join(TEXT_KEYS)})")

    @staticmethod
    def _captions(record: dict[str, Any]) -> list[str]:
        if first_field(record, IMAGE_KEYS)[0] is None:
            return []
        _, text = first_field(record, TEXT_KEYS)
        texts = text if isinstance(text, list) else [text] if text is not None else []
        return [str(t).strip() for t in texts if str(t).strip()]

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[Image.Image, str]:
        i, j = self.items[index]
        record = self.store.record(i)
        captions = self._captions(record)
        if not captions:
            raise MediaError(f"{self.where(index)}: no image and caption in the record")
        _, ref = first_field(record, IMAGE_KEYS)
        media = self.store.media(i, ref) if not isinstance(ref, Image.Image) else None
        if media is not None and media.value is None:
            raise MediaError(f"image not found: {media.where}")
        image = load_image(ref if media is None else media.value, name=None if media is None else media.where)
        return image, captions[j or 0]

    def where(self, index: int) -> str:
        return self.store.where(self.items[index][0])


def open_source(spec: Any, strict: bool = False, skipped: SkipCounter | None = None) -> ImageTextPairs:
    """Open a data source from a command-line spec (``shared.stores.open_store``: ``path.jsonl``; ``shard.tar`` /
    a folder of shards / ``shards-*.tar`` / ``shards-{000..009}.tar``; ``hf:<saved folder or dataset>[:split]``;
    a ``datasets.Dataset``). A bad JSON Lines row is skipped and counted in ``skipped`` (raises when strict)."""
    store = open_store(spec, strict=strict, skipped=skipped, types=_ROW_TYPES)
    return ImageTextPairs(store, name=str(spec), strict=strict, skipped=skipped)
