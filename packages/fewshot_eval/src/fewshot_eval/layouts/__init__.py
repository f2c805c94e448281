"""The benchmarks' on-disk layouts, one loader a module (docs/formats.md, "Evaluation sets"):

- ``karpathy``: COCO / Flickr30K / Flickr8K captions in Karpathy's JSON;
- ``vqa``: VQAv2's questions + annotations (also OK-VQA, VizWiz, TextVQA in it), test-dev without answers;
- ``image_template``: where a VQA split's images are (one template, one per split, or COCO's folders);
- ``classification``: class folders (ImageNet's, WordNet ids named) or JSON Lines with class names;
- ``hateful_memes``: Hateful Memes' JSON Lines;
- ``video``: video captioning / video QA JSON Lines;
- ``evalset``: what they return (``Example``, ``EvalSet``) and their error (``DataError``).
"""

from fewshot_eval.layouts.classification import load_classification
from fewshot_eval.layouts.evalset import DataError, EvalSet, Example
from fewshot_eval.layouts.hateful_memes import load_hateful_memes
from fewshot_eval.layouts.image_template import ImageTemplate
from fewshot_eval.layouts.karpathy import load_karpathy
from fewshot_eval.layouts.video import load_video_jsonl
from fewshot_eval.layouts.vqa import load_vqa

__all__ = [
    "DataError", "EvalSet", "Example", "ImageTemplate", "load_classification", "load_hateful_memes",
    "load_karpathy", "load_video_jsonl", "load_vqa",
]  # fmt: skip
