"""ShapesWorld's interleaved pages (M3W): independent descriptions, and pages with in-context structure.

Flamingo's few-shot ability comes from M3W (arXiv 2204.14198, Table 3: without it few-shot results drop):
real web pages are full of text that only the page itself explains - a catalogue's names for its items, a
quiz's answer format, a list written in one style. A page whose images are described one by one teaches none
of that: nothing rewards reading the earlier image-text pairs. The structured kinds here do:

- ``names``: the page gives each kind of object (its main object's colour, or its shape) a page-local name and
  uses it again whenever that kind appears again ("Meet the team. <image> Say hi to bazel. <image> Say hi to
  morin. <image> Say hi to bazel."): the name after a repeated kind is predictable only by matching the image
  to an earlier one - the binding that novel-label evaluation asks for;
- ``format``: every image is described in one page-specific format ("SHAPE / COLOUR", "colour=red; shape=star");
- ``qa``: a quiz page asks one kind of question about every image, in a page-specific question-answer format
  and answer style.

The names, formats and question words come from lists disjoint from those of evaluation (fewshot_eval's nonce
words and prompt templates "Output:", "Question: ... Answer:"), so a gain in evaluation measures reading the
prompt, not memory; tests/pipeline/test_shapesworld.py checks that no evaluation word appears in a training file.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["PAGE_KINDS", "STRUCTURED_KINDS", "TRAIN_NAMES", "m3w_page"]

STRUCTURED_KINDS = ("names", "format", "qa")
PAGE_KINDS = ("descriptions", *STRUCTURED_KINDS)
_KIND_P = (0.5, 0.25, 0.25)  # binding first: it is what novel-label evaluation measures


def _train_names() -> tuple[str, ...]:
    """Page-local names: consonant-vowel-consonant-vowel-consonant nonce words from a fixed syllable set,
    shuffled once (so the list does not depend on anything but this code)."""
    onsets, vowels, codas = "bdfgklmprstvz", "aeiou", ("n", "l", "r", "sh", "k")
    words = [a + v + b + w + c for a, v, b, w, c in itertools.product(onsets, vowels, "lmnrv", "aeiou", codas)]
    order = np.random.default_rng(20221).permutation(len(words))
    return tuple(words[i] for i in order[:400])


TRAIN_NAMES = _train_names()

_NAME_INTROS = {
    "colour": ["Every colour has its own name on this page.", "Meet the team: each colour is one character.",
               "In this game the colours are called by secret names.", "Our mascots, named by colour."],
    "shape": ["Every shape has its own name on this page.", "Meet the team: each shape is one character.",
              "In this game the shapes are called by secret names.", "Our mascots, named by shape."],
    "any": ["Meet the team.", "Characters of my comic.", "Say hello to our mascots.", "The cast.", ""],
}
_NAME_FORMATS = ["This is {name}.", "Say hi to {name}.", "Name: {name}", "{name}!", "Here comes {name}.",
                 "It's {name}.", "Called {name}.", "- {name}", "Meet {name}.", "{Name} again?"]
_CAPTION_FORMATS = ["{colour} {shape}", "{shape}, {colour}", "{COLOUR} {SHAPE}", "colour={colour}; shape={shape}",
                    "{shape} in {colour}", "{colour}-{shape}", "[{colour}] [{shape}]", "{SHAPE} / {COLOUR}",
                    "{Colour} {Shape}", "{size} {colour} {shape}", "{shape} ({colour}, {size})"]
_LIST_MARKS = ["", "", "{i}. ", "({i}) ", "* ", "#{i} "]
_FORMAT_TITLES = ["Inventory.", "Sticker list.", "Parts catalogue.", "Labels for the set.", "Index of shapes.", ""]
_QA_FORMATS = ["Q: {q} A: {a}", "Quiz: {q} Reply: {a}", "{q} -> {a}", "Ask: {q} Says: {a}", "{q} = {a}",
               "{q} ... {a}"]
_QA_QUESTIONS = {"colour": ["Colour?", "Which colour is the big shape?", "Main colour?"],
                 "shape": ["Shape?", "Which shape is the big one?", "Main shape?"],
                 "count": ["How many?", "Count the shapes.", "Number of shapes?"]}
_ANSWER_STYLES = ["{a}", "{A}", "it is {a}", "{a}!", "'{a}'", "{a}, I think"]
_QA_TITLES = ["Quiz time.", "Test yourself.", "Colour and shape drill.", "Practice sheet.", ""]
_NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}


def _pick(rng: np.random.Generator, options) -> str:
    return str(options[int(rng.integers(len(options)))])


def _fields(scene: dict[str, Any]) -> dict[str, str]:
    main = scene["objects"][0]
    colour, shape, size = main["colour"], main["shape"], main["size"]
    return {"colour": colour, "shape": shape, "size": size, "COLOUR": colour.upper(), "SHAPE": shape.upper(),
            "Colour": colour.capitalize(), "Shape": shape.capitalize()}


def _names_page(rng, sample_scene: Callable, colours, shapes) -> tuple[list, dict]:
    by = "colour" if rng.random() < 0.7 else "shape"
    values = list(colours if by == "colour" else shapes)
    n_kinds, n_images = int(rng.choice([2, 3], p=[0.4, 0.6])), int(rng.integers(4, 6))
    kinds = [str(values[i]) for i in rng.choice(len(values), n_kinds, replace=False)]
    names = [str(TRAIN_NAMES[i]) for i in rng.choice(len(TRAIN_NAMES), n_kinds, replace=False)]
    naming = dict(zip(kinds, names))
    # every kind is introduced once, then the rest repeat kinds at random: the name after a repeat is
    # predictable only by matching its image to the earlier ones (no position rule such as "the previous
    # name" or "two back" gives it)
    sequence = kinds + [kinds[int(i)] for i in rng.integers(n_kinds, size=n_images - n_kinds)]
    fmt, intro = _pick(rng, _NAME_FORMATS), _pick(rng, _NAME_INTROS[by] + _NAME_INTROS["any"])
    items: list[tuple] = [(intro, None)] if intro else []
    for value in sequence:
        scene = sample_scene(rng, **({"main_colour": value} if by == "colour" else {"main_shape": value}))
        name = naming[value]
        items += [(None, scene), (fmt.format(name=name, Name=name.capitalize()), None)]
    return items, {"kind": "names", "by": by, "names": naming, "format": fmt}


def _format_page(rng, sample_scene: Callable) -> tuple[list, dict]:
    fmt, mark, title = _pick(rng, _CAPTION_FORMATS), _pick(rng, _LIST_MARKS), _pick(rng, _FORMAT_TITLES)
    items: list[tuple] = [(title, None)] if title else []
    for i in range(int(rng.integers(3, 6))):
        scene = sample_scene(rng)
        items += [(None, scene), (mark.format(i=i + 1) + fmt.format(**_fields(scene)), None)]
    return items, {"kind": "format", "format": mark + fmt}


def _qa_page(rng, sample_scene: Callable) -> tuple[list, dict]:
    about = _pick(rng, list(_QA_QUESTIONS))
    question, fmt, style = _pick(rng, _QA_QUESTIONS[about]), _pick(rng, _QA_FORMATS), _pick(rng, _ANSWER_STYLES)
    title = _pick(rng, _QA_TITLES)
    items: list[tuple] = [(title, None)] if title else []
    for _ in range(int(rng.integers(3, 6))):
        scene = sample_scene(rng)
        answer = _NUMBERS[len(scene["objects"])] if about == "count" else _fields(scene)[about]
        items += [(None, scene), (fmt.format(q=question, a=style.format(a=answer, A=answer.upper())), None)]
    return items, {"kind": "qa", "about": about, "question": question, "format": fmt, "style": style}


def m3w_page(rng: np.random.Generator, structured: float, sample_scene: Callable, describe: Callable,
             titles, fillers, colours, shapes) -> tuple[list[tuple[str | None, dict | None]], dict]:
    """One page as ``[(text, None) | (None, scene), ...]`` and its ``page`` record (kind and page-local rules).

    Args:
        rng: the page's generator.
        structured: probability that the page is structured (one of ``STRUCTURED_KINDS``) instead of a page of
            independent descriptions.
        sample_scene: ``sample_scene(rng, main_colour=None, main_shape=None)`` of ShapesWorld.
        describe: ``describe(rng, scene, k)`` -> the description of the k-th image (independent pages).
        titles / fillers: unrelated page text of independent pages.
        colours / shapes: the world's vocabularies.
    """
    if rng.random() < structured:
        kind = STRUCTURED_KINDS[int(rng.choice(len(STRUCTURED_KINDS), p=_KIND_P))]
        if kind == "names":
            return _names_page(rng, sample_scene, colours, shapes)
        return _format_page(rng, sample_scene) if kind == "format" else _qa_page(rng, sample_scene)
    items: list[tuple] = [(_pick(rng, titles) + ".", None)] if rng.random() < 0.7 else []
    for k in range(int(rng.integers(1, 6))):
        scene = sample_scene(rng)
        # the paper pairs each image with the text that follows it: describe it right after
        items += [(None, scene), (describe(rng, scene, k), None)]
        if rng.random() < 0.3:
            items.append((_pick(rng, fillers), None))
    return items, {"kind": "descriptions"}
