"""ShapesWorld's text: captions (clean LTIP, noisy ALIGN alt-text, COCO sentences, video), the synonyms and
typos of the noisy ones, position and relation words, VQA-style questions and ten-annotator answers.

Every caption names the main object (``scene["objects"][0]``) by its colour and shape, so a caption can be
checked against the scene it came from.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .scene import COLOURS, SHAPES

_SIZE_WORDS = {"large": ["large", "big"], "small": ["small", "little"]}
_TEXTURE_ADJ = {"plain": ["", "", "solid ", "plain "], "striped": ["striped "], "dotted": ["dotted ", "spotted "]}
_TEXTURE_SUFFIX = {"plain": "", "striped": " with stripes", "dotted": " covered in dots"}
SHAPE_SYNONYMS = {"circle": ["circle", "disc", "round shape"], "square": ["square", "box"],
                   "triangle": ["triangle", "three-sided shape"], "diamond": ["diamond", "rhombus"],
                   "star": ["star", "five-pointed star"], "cross": ["cross", "plus sign"]}
COLOUR_SYNONYMS = {"red": ["red", "scarlet"], "orange": ["orange"], "yellow": ["yellow"], "green": ["green"],
                    "blue": ["blue"], "purple": ["purple", "violet"], "pink": ["pink"], "brown": ["brown"]}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
_DIRECTION_PHRASES = {"right": ["to the right", "towards the right", "rightwards"],
                      "left": ["to the left", "towards the left", "leftwards"],
                      "up": ["upwards", "up", "towards the top"], "down": ["downwards", "down", "towards the bottom"]}
_SPEED_ADVERBS = {"slow": ["slowly", "gently"], "fast": ["quickly", "fast", "rapidly"]}
_UNRELATED = ["free shipping on all orders", "click here to enlarge", "IMG_{n}.JPG", "best price guaranteed",
              "untitled design", "my holiday photos {n}", "stock photo", "download now", "banner ad 728x90",
              "share this post", "thumbnail", "image may contain: text", "page {n} of 12", "logo"]
_FILLER = ["I made this one last week.", "Thanks for reading!", "More pictures are coming soon.",
           "Let me know what you think in the comments.", "This post is part of a series.",
           "Drawing shapes is a relaxing hobby.", "The next one took longer to finish.",
           "Here is another one from the same set."]
_TITLES = ["My collection of shapes", "Notes from art class", "Shapes I drew this week", "A small gallery",
           "Learning colours with shapes", "Sticker sheet preview", "Geometry for kids", "Weekend doodles"]


def _pick(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def horizontal(x: float) -> str:
    """``left`` / ``middle`` / ``right`` from a centre x in [0, 1] (x grows rightwards)."""
    return "left" if x < 0.4 else "right" if x > 0.6 else "middle"


def vertical(y: float) -> str:
    """``top`` / ``middle`` / ``bottom`` from a centre y in [0, 1] (y grows downwards)."""
    return "top" if y < 0.4 else "bottom" if y > 0.6 else "middle"


def relation(main: dict[str, Any], other: dict[str, Any]) -> str:
    """Where ``other`` is relative to ``main``: "to the left of", "to the right of", "above", "below", "near"."""
    dx, dy = other["x"] - main["x"], other["y"] - main["y"]
    if abs(dx) >= 0.15 and abs(dx) >= abs(dy):
        return "to the right of" if dx > 0 else "to the left of"
    if abs(dy) >= 0.15:
        return "below" if dy > 0 else "above"
    return "near"


def _position(rng, obj: dict[str, Any]) -> str:
    h, v = horizontal(obj["x"]), vertical(obj["y"])
    if h == "middle" and v == "middle":
        return _pick(rng, ["in the centre", "in the middle"])
    if v == "middle":
        return _pick(rng, [f"on the {h}", f"on the {h} side", f"towards the {h}"])
    if h == "middle":
        return _pick(rng, [f"at the {v}", f"near the {v}"])
    return _pick(rng, [f"in the {v} {h} corner", f"at the {v} {h}", f"on the {h}, near the {v}"])


def _noun_phrase(rng, obj, synonyms: bool = False, size: bool = True) -> str:
    shape = _pick(rng, SHAPE_SYNONYMS[obj["shape"]]) if synonyms else obj["shape"]
    size_word = _pick(rng, _SIZE_WORDS[obj["size"]]) + " " if size else ""
    return f"{size_word}{_pick(rng, _TEXTURE_ADJ[obj['texture']])}{obj['colour']} {shape}"


def ltip_caption(rng: np.random.Generator, scene: dict[str, Any]) -> str:
    """A clean, long caption: main object (canonical colour and shape words), count, the others' places."""
    main, others = scene["objects"][0], scene["objects"][1:]
    np_main = _noun_phrase(rng, main, size=bool(rng.random() < 0.7))
    pos = _position(rng, main)
    first = _pick(rng, [
        f"{_cap(_a(np_main))} {pos}.",
        f"{_cap(pos)}, there is {_a(np_main)}.",
        f"The picture shows {_a(main['colour'] + ' ' + main['shape'])}{_TEXTURE_SUFFIX[main['texture']]} {pos}.",
        f"This image contains {_a(np_main)} {pos}.",
    ])
    n = len(scene["objects"])
    count = (_pick(rng, ["It is the only shape in the image.", "No other shapes are present."]) if n == 1 else
             _pick(rng, [f"There are {NUMBER_WORDS[n]} shapes in total.", f"{_cap(NUMBER_WORDS[n])} shapes are visible."]))
    rest = []
    for other in others:
        rel, np_other = relation(main, other), _noun_phrase(rng, other, synonyms=True)
        if rel in ("to the left of", "to the right of") and rng.random() < 0.4:
            rest.append(f"To its {rel.split()[-2]} is {_a(np_other)}.")
        else:
            rest.append(_pick(rng, [f"{_cap(_a(np_other))} is {rel} it.", f"{_cap(rel)} it, {_a(np_other)} can be seen."]))
    if rng.random() < 0.3:
        rest.append(f"The background is {scene['background']}.")
    order = int(rng.integers(3))
    sentences = [first, *rest, count] if order == 0 else [count, first, *rest] if order == 1 else [first, count, *rest]
    return " ".join(sentences)


def _typo(rng, word: str) -> str:
    if len(word) < 3:
        return word
    i = int(rng.integers(len(word) - 1))
    kind = int(rng.integers(3))
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


def align_caption(rng: np.random.Generator, scene: dict[str, Any]) -> tuple[str, str]:
    """A short noisy alt-text and the noise applied ("clean", "unrelated", or e.g. "dropped+typo")."""
    if rng.random() < 0.15:
        return _pick(rng, _UNRELATED).format(n=int(rng.integers(1000, 9999))), "unrelated"
    main = scene["objects"][0]
    colour, shape = _pick(rng, COLOUR_SYNONYMS[main["colour"]]), _pick(rng, SHAPE_SYNONYMS[main["shape"]])
    size = _pick(rng, _SIZE_WORDS[main["size"]])
    words = _pick(rng, [f"{colour} {shape}", f"{size} {colour} {shape} icon", f"{colour} {shape} clipart png",
                        f"photo of {_a(colour)} {shape}", f"{colour} {shape} on {scene['background']} background",
                        f"{shape} {colour} vector", f"{size} {colour} {shape} sticker"]).split()
    noise = []
    if len(words) > 2 and rng.random() < 0.3:
        del words[int(rng.integers(len(words)))]
        noise.append("dropped")
    if rng.random() < 0.3:
        i = int(rng.integers(len(words)))
        words[i] = _typo(rng, words[i])
        noise.append("typo")
    text = " ".join(words)
    if rng.random() < 0.3:
        text = _pick(rng, [text.upper(), text.title(), text.replace(" ", "_"), text + " | shop"])
        noise.append("style")
    return text, "+".join(noise) or "clean"


def short_caption(rng: np.random.Generator, scene: dict[str, Any]) -> str:
    """One COCO-style sentence; naming the main object's colour and shape."""
    main, n = scene["objects"][0], len(scene["objects"])
    np_main, pos = _noun_phrase(rng, main, size=bool(rng.random() < 0.5)), _position(rng, main)
    options = [f"{_cap(_a(np_main))} {pos}.",
               f"{_cap(_a(np_main))} on {_a(scene['background'])} background.",
               f"There is {_a(main['colour'] + ' ' + main['shape'])}{_TEXTURE_SUFFIX[main['texture']]} in this picture.",
               f"A picture of {_a(main['colour'] + ' ' + main['shape'])} {pos}."]
    if n > 1:
        other = scene["objects"][1]
        options += [f"{_cap(NUMBER_WORDS[n])} shapes; the largest is {_a(main['colour'] + ' ' + main['shape'])}.",
                    f"{_cap(_a(np_main))} with {_a(other['colour'] + ' ' + other['shape'])} {relation(main, other)} it."]
    else:
        options.append(f"A single {main['colour']} {main['shape']} {pos}.")
    return _pick(rng, options)


def _m3w_description(rng: np.random.Generator, scene: dict[str, Any], k: int) -> str:
    """The text after the k-th image of a page: a caption, or a web-page style mention of the main object."""
    kind = int(rng.integers(3))
    if kind == 0:
        return short_caption(rng, scene)
    if kind == 1:
        return ltip_caption(rng, scene)
    lead = _pick(rng, ["This is", "Here you can see", "Above is", f"Number {k + 1} is"])
    return f"{lead} {_a(_noun_phrase(rng, scene['objects'][0]))} {_position(rng, scene['objects'][0])}."


def video_caption(rng: np.random.Generator, scene: dict[str, Any]) -> str:
    """Colour, shape and motion of the main object, then what the second object does."""
    main, mo = scene["objects"][0], scene["motion"][0]
    speed, way = _pick(rng, _SPEED_ADVERBS[mo["speed"]]), _pick(rng, _DIRECTION_PHRASES[mo["direction"]])
    name = f"{main['colour']} {main['shape']}"
    parts = [_pick(rng, [f"{_cap(_a(name))} moves {speed} {way}.", f"The {name} slides {way} {speed}.",
                         f"{_cap(_a(name))} travels {way}, moving {speed}."])]
    if len(scene["objects"]) > 1:
        other, t0 = scene["objects"][1], scene["appears"][1]
        np_other = f"{other['colour']} {other['shape']}"
        if t0 > 0:
            parts.append(_pick(rng, [f"Midway through the clip, {_a(np_other)} appears {_position(rng, other)}.",
                                     f"Then {_a(np_other)} appears."]))
        else:
            parts.append(_pick(rng, [f"{_cap(_a(np_other))} stays still {_position(rng, other)}.",
                                     f"A small {np_other} does not move."]))
    return " ".join(parts)


# ---------------------------------------------------------------------------------- answers (VQA style)

_CONFUSIONS = {
    "red": ["orange", "dark red", "pink"], "orange": ["yellow", "red", "dark orange"],
    "yellow": ["orange", "gold", "light yellow"], "green": ["dark green", "lime", "teal"],
    "blue": ["dark blue", "purple", "navy"], "purple": ["violet", "blue", "pink"],
    "pink": ["purple", "magenta", "light pink"], "brown": ["orange", "dark brown", "red"],
    "circle": ["round", "oval", "ball"], "square": ["rectangle", "box", "diamond"],
    "triangle": ["pyramid", "arrow", "star"], "diamond": ["square", "rhombus", "kite"],
    "star": ["flower", "cross", "triangle"], "cross": ["plus", "x", "star"],
    "yes": ["no"], "no": ["yes"], "left": ["right", "middle", "center"], "right": ["left", "middle", "center"],
    "up": ["down", "right", "left"], "down": ["up", "left", "right"],
    "slow": ["fast", "slowly", "medium"], "fast": ["slow", "quickly", "very fast"],
}


def human_answers(rng: np.random.Generator, answer: str) -> list[str]:
    """Ten annotator answers with realistic disagreement.

    At least 6 of the 10 give ``answer`` (a number may be spelled out, as VQA annotators do); the rest pick
    plausible confusions, so ``answer`` is always the clear majority after VQA's number normalisation.
    """
    if answer.isdigit():
        confusers = [str(int(answer) + d) for d in (-1, 1) if int(answer) + d >= 0]
    else:
        confusers = _CONFUSIONS.get(answer, ["i don't know"])
    wrong = min(4, int(rng.binomial(10, rng.uniform(0.0, 0.3))))
    answers = [answer] * (10 - wrong) + [_pick(rng, confusers) for _ in range(wrong)]
    if answer.isdigit() and int(answer) in NUMBER_WORDS:  # some annotators spell numbers out
        for i in range(10 - wrong):
            if rng.random() < 0.15 and i > 0:
                answers[i] = NUMBER_WORDS[int(answer)]
    order = rng.permutation(10)
    return [answers[i] for i in order]


def image_questions(rng: np.random.Generator, scene: dict[str, Any]) -> list[dict[str, str]]:
    """VQAv2-style questions whose answers follow from the scene, in random order."""
    objs = scene["objects"]
    shapes = [o["shape"] for o in objs]
    colours = [o["colour"] for o in objs]
    qs = []
    unique_shape = [o for o in objs if shapes.count(o["shape"]) == 1]
    if unique_shape:
        o = unique_shape[int(rng.integers(len(unique_shape)))]
        qs.append({"question": f"What color is the {o['shape']}?", "answer": o["colour"],
                   "question_type": "what color is the", "answer_type": "other"})
    unique_colour = [o for o in objs if colours.count(o["colour"]) == 1]
    if unique_colour:
        o = unique_colour[int(rng.integers(len(unique_colour)))]
        qs.append({"question": f"What shape is the {o['colour']} object?", "answer": o["shape"],
                   "question_type": "what shape is the", "answer_type": "other"})
    qs.append({"question": _pick(rng, ["How many shapes are there?", "How many shapes are in the picture?"]),
               "answer": str(len(objs)), "question_type": "how many", "answer_type": "number"})
    if rng.random() < 0.5:
        o = objs[int(rng.integers(len(objs)))]
        colour, shape, ans = o["colour"], o["shape"], "yes"
    else:
        colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
        ans = "yes" if any(o["colour"] == colour and o["shape"] == shape for o in objs) else "no"
    qs.append({"question": f"Is there {_a(colour)} {shape}?", "answer": ans, "question_type": "is there a",
               "answer_type": "yes/no"})
    sided = [o for o in objs if horizontal(o["x"]) != "middle"]
    if sided:
        o = sided[int(rng.integers(len(sided)))]
        qs.append({"question": f"Is the {o['colour']} {o['shape']} on the left or the right?",
                   "answer": horizontal(o["x"]), "question_type": "is the", "answer_type": "other"})
    return [qs[i] for i in rng.permutation(len(qs))]


def video_questions(rng: np.random.Generator, scene: dict[str, Any]) -> list[dict[str, str]]:
    """Video QA questions (direction, speed, colour, appearing shape) in random order."""
    main, mo = scene["objects"][0], scene["motion"][0]
    name = f"{main['colour']} {main['shape']}"
    qs = [{"question": f"In which direction does the {name} move?", "answer": mo["direction"],
           "question_type": "direction"},
          {"question": f"Does the {name} move fast or slowly?", "answer": mo["speed"], "question_type": "speed"},
          {"question": "What color is the moving shape?", "answer": main["colour"], "question_type": "color"}]
    if len(scene["objects"]) > 1 and scene["appears"][1] > 0:
        qs.append({"question": "What shape appears during the video?", "answer": scene["objects"][1]["shape"],
                   "question_type": "appears"})
    return [qs[i] for i in rng.permutation(len(qs))]
