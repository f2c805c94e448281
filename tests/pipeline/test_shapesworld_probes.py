"""ShapesWorld's task probes (tools/shapesworld/probes.py): the colour probe's first-colour-word rule, and that
the world's own captions pass it while captions of other scenes do not."""

from __future__ import annotations

import numpy as np
import pytest

import shapesworld as sw
from shapesworld.probes import colour_accuracy, colour_probe, colour_words, first_colour


def _meta(*colours: str) -> dict:
    return {"scene": {"objects": [{"colour": c, "shape": "circle"} for c in colours]}}


def test_first_colour_word_decides_not_any_colour_word():
    metas = [_meta("red", "blue"), _meta("red", "blue"), _meta("red", "blue"), _meta("red", "blue")]
    texts = ["A blue circle beside a red square.",  # names the main colour, but not first: wrong
             "Red! A red square.",  # punctuation and case do not hide the word
             "A large square with stripes.",  # no colour word at all: wrong
             "A small red square to the left of a blue circle."]
    assert colour_probe(texts, metas) == {"colour_acc": 0.5, "colour_judged": 4}
    assert colour_accuracy(texts[:1], metas[:1]) == 0.0
    assert first_colour("Scarlet and red.", ["blue", "red"]) == "red"  # synonyms are not colour words


def test_records_without_a_scene_are_not_judged():
    metas = [_meta("green"), {"scene": None}, {}, {"scene": {"objects": []}}]
    texts = ["a green star", "a green star", "a green star", "a green star"]
    assert colour_probe(texts, metas) == {"colour_acc": 1.0, "colour_judged": 1}
    assert colour_probe(texts[1:], metas[1:]) == {} and colour_accuracy(texts[1:], metas[1:]) is None


def test_colour_vocabulary_defaults_to_the_records_colours():
    metas = [_meta("pink", "brown"), _meta("green")]
    assert colour_words(metas) == ["brown", "green", "pink"]
    # "orange" is not a colour of these scenes, so the first colour word read is "pink"
    assert colour_accuracy(["an orange and pink star"], metas[:1]) == 1.0
    assert colour_accuracy(["an orange and pink star"], metas[:1], colours=list(sw.COLOURS)) == 0.0


def test_one_text_per_record():
    with pytest.raises(ValueError, match="one text per record"):
        colour_probe(["a red circle"], [_meta("red"), _meta("red")])


def test_world_captions_pass_and_captions_of_other_scenes_fail():
    metas, texts = [], []
    for i in range(60):
        rng = np.random.default_rng([11, i])
        scene = sw.sample_scene(rng)
        metas.append({"scene": scene})
        texts.append(sw.ltip_caption(rng, scene) if i % 2 else sw.short_caption(rng, scene))
    assert colour_probe(texts, metas) == {"colour_acc": 1.0, "colour_judged": 60}
    shifted = texts[1:] + texts[:1]  # each caption scored against another item's scene
    assert colour_accuracy(shifted, metas) < 0.5
