"""Task probes: scores of a model's generated text on ShapesWorld items, computed from the items' scenes.

The colour probe asks whether a caption names the main object's colour before any other colour. Every
ShapesWorld caption names the main object (``scene["objects"][0]``, the largest) first, so a model that learnt
to look at the image does so; one that names whatever colour is most frequent, or the colour of a smaller
object, does not. It needs only the generated text and the item's record, so held-out evaluation during
training can report it next to the caption loss.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["colour_accuracy", "colour_probe", "colour_words", "first_colour"]


def colour_words(metas: Iterable[dict[str, Any]]) -> list[str]:
    """The colour names of every object in the records' scenes, sorted (records without a scene add none)."""
    colours = {o.get("colour") for r in metas for o in (r.get("scene") or {}).get("objects", [])}
    return sorted(c for c in colours if c)


def first_colour(text: str, colours: Sequence[str]) -> str | None:
    """The first word of ``text`` (lower-cased, trailing punctuation stripped) that is one of ``colours``."""
    words = [w.strip(".,;:!?").lower() for w in text.split()]
    return next((w for w in words if w in colours), None)


def colour_probe(texts: Sequence[str], metas: Sequence[dict[str, Any]],
                 colours: Sequence[str] | None = None) -> dict[str, float | int]:
    """Score generated captions by their first colour word.

    A caption is right when its first colour word equals ``meta["scene"]["objects"][0]["colour"]``; one that
    names no colour, or another object's colour first ("a blue circle beside a red square" for a red main
    object), is wrong. Synonyms ("scarlet") are not colour words here: the probe reads the canonical names.

    Args:
        texts: generated captions, one per record.
        metas: the records the captions were generated for (dicts with a ``scene``, as in every ShapesWorld
            jsonl); records without a scene or whose main object has no colour are not judged.
        colours: the colour words; by default every colour in ``metas``' scenes (``colour_words``).

    Returns:
        ``{"colour_acc": fraction right, "colour_judged": records judged}``, or ``{}`` when none was judged.
    """
    if len(texts) != len(metas):
        raise ValueError(f"{len(texts)} texts for {len(metas)} records; expected one text per record")
    colours = colour_words(metas) if colours is None else list(colours)
    correct = judged = 0
    for text, meta in zip(texts, metas):
        objects = (meta.get("scene") or {}).get("objects") or []
        if colours and objects and objects[0].get("colour"):
            judged += 1
            correct += first_colour(text, colours) == objects[0]["colour"]
    return {"colour_acc": correct / judged, "colour_judged": judged} if judged else {}


def colour_accuracy(texts: Sequence[str], metas: Sequence[dict[str, Any]],
                    colours: Sequence[str] | None = None) -> float | None:
    """The fraction of captions whose first colour word is the main object's colour (``colour_probe``);
    None when no record could be judged."""
    return colour_probe(texts, metas, colours).get("colour_acc")
