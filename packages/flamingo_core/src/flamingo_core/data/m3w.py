"""M3W sequences (Flamingo, arXiv 2204.14198, Section 2.4 and Appendix A.3): an interleaved document laid out in
its own order with ``<EOC>`` ending every text chunk (Figure 7), then a random window of L = 256 tokens in which
the first N = 5 images are kept.

``m3w_items`` lays the document out; ``m3w_window`` cuts the tokenized document: the window starts at a token
drawn uniformly (from the sample's RNG, so it is reproducible) among those that leave L tokens, and inside it the
``<image>`` tokens after the N-th are removed with their images, the text around them kept. The window is taken
on tokens, so it is applied where the tokenizer is, in the collator (``loader.FlamingoCollator``); images the
window leaves out are never loaded.

Previous or next image (Appendix A.3.2): the layout never moves an image. A sequence drawn as "next"
(``InterleavedSource.p_next``) carries ``media_next`` and the model shifts phi so its tokens attend to the image
after them (``Flamingo.phi``); the tokens the LM reads are the same in both modes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["m3w_items", "m3w_window"]


def m3w_items(texts: Sequence[Any], images: Sequence[Any]) -> list[tuple[str, Any]]:
    """One OBELICS-style document (parallel lists, exactly one non-null per position) as
    ``[("text", t) | ("image", ref), ...]`` in document order, consecutive texts joined by a space.

    Raises:
        ValueError: lists of different lengths, or a position with both or neither of a text and an image.
    """
    if len(texts) != len(images):
        raise ValueError(f"texts ({len(texts)}) and images ({len(images)}) must be parallel lists")
    out: list[tuple[str, Any]] = []
    for i, (t, im) in enumerate(zip(texts, images)):
        if (t is None) == (im is None):
            raise ValueError(f"position {i}: each position needs exactly one of texts[{i}] / images[{i}]")
        if im is not None:
            out.append(("image", im))
            continue
        t = str(t).strip()
        if not t:
            continue
        if out and out[-1][0] == "text":
            out[-1] = ("text", f"{out[-1][1]} {t}")
        else:
            out.append(("text", t))
    return out


def m3w_window(ids: Sequence[int], media_token_id: int, length: int, max_images: int | None,
               u: float) -> tuple[list[int], list[int]]:
    """The paper's M3W window of a tokenized document.

    Args:
        ids: the document's token ids (without the tokens the processor puts around every sequence).
        media_token_id: id of ``<image>``.
        length: L, the window's tokens.
        max_images: N, the images kept (the first ones in the window); None keeps all.
        u: a uniform draw in [0, 1) choosing the window's first token.

    Returns:
        ``(window ids, indices of the kept images among the document's images)``.
    """
    if length < 1:
        raise ValueError(f"an M3W window needs at least 1 token, got {length}")
    start = int(u * (len(ids) - length + 1)) if len(ids) > length else 0
    before = sum(t == media_token_id for t in ids[:start])
    out, kept, seen = [], [], 0
    for t in ids[start:start + length]:
        if t == media_token_id:
            if max_images is None or seen < max_images:
                kept.append(before + seen)
                out.append(t)
            seen += 1
        else:
            out.append(t)
    return out, kept
