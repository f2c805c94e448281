"""ShapesWorld: a seeded synthetic multimodal world in the formats real users bring.

Flamingo (Alayrac et al., "Flamingo: a Visual Language Model for Few-Shot Learning", arXiv 2204.14198) trains
on image-text pairs (LTIP, ALIGN), video-text pairs (VTP) and interleaved web pages (M3W), and is evaluated
on COCO captioning, VQAv2, classification and video QA. This package writes a tiny stand-in for each, drawn
from coloured shapes, so every loader in the suite is exercised by real files and every caption can be checked
against the scene that produced it. The exact layout is in docs/formats.md.

Every record carries its ``scene``; the first object is the main one (the largest) and every caption names its
colour and shape. ``x`` grows rightwards and ``y`` downwards, so left/right wording follows the pixels.
Items are drawn from ``numpy.random.default_rng([seed, source, index])``, so output is byte-identical for
the same seed and options, and item i of a source does not depend on how many items the others have.

    python tools/shapesworld --out data/world --counts default

Modules: ``scene`` (vocabulary, sampling), ``render`` (pixels, videos), ``language`` (captions, questions,
answers), ``m3w_pages`` (interleaved pages), ``writers`` (one writer per format, manifest, output checks),
``world`` (options, ``generate``), ``cli``, and ``probes`` (task probes for evaluating a model on the world).
tools/ is not a package: callers put it on ``sys.path`` and ``import shapesworld``.
"""

from .cli import main, parse_args
from .language import (
    COLOUR_SYNONYMS,
    NUMBER_WORDS,
    SHAPE_SYNONYMS,
    align_caption,
    horizontal,
    human_answers,
    image_questions,
    ltip_caption,
    relation,
    short_caption,
    vertical,
    video_caption,
    video_questions,
)
from .probes import colour_accuracy, colour_probe, first_colour
from .render import render_scene, render_video
from .scene import (
    BACKGROUNDS,
    CLIP_TRAVEL,
    COLOUR_JITTER,
    COLOURS,
    DIRECTIONS,
    SHAPES,
    SIZES,
    SPEEDS,
    TEXTURES,
    ShapesWorldError,
    sample_scene,
    sample_video_scene,
)
from .world import FORMAT_VERSION, PRESETS, generate, resolve_options
from .writers import MANIFEST

__all__ = [
    "BACKGROUNDS",
    "CLIP_TRAVEL",
    "COLOURS",
    "COLOUR_JITTER",
    "COLOUR_SYNONYMS",
    "DIRECTIONS",
    "FORMAT_VERSION",
    "MANIFEST",
    "NUMBER_WORDS",
    "PRESETS",
    "SHAPES",
    "SHAPE_SYNONYMS",
    "SIZES",
    "SPEEDS",
    "TEXTURES",
    "ShapesWorldError",
    "align_caption",
    "colour_accuracy",
    "colour_probe",
    "first_colour",
    "generate",
    "horizontal",
    "human_answers",
    "image_questions",
    "ltip_caption",
    "main",
    "parse_args",
    "relation",
    "render_scene",
    "render_video",
    "resolve_options",
    "sample_scene",
    "sample_video_scene",
    "short_caption",
    "vertical",
    "video_caption",
    "video_questions",
]
