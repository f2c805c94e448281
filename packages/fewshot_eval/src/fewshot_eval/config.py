"""The options of a few-shot evaluation (``EvalConfig``): every field is also a ``fewshot-eval run`` flag of the
same name (``contrastive_encoder.shared.configcli``), so the Python API and the CLI have one set of defaults.

Python API::

    from fewshot_eval import EvalConfig, FlamingoEvalModel, evaluate
    cfg = EvalConfig(model="runs/flamingo/model", task="vqa", data="data/world/eval/vqav2", shots=[0, 4])
    model = FlamingoEvalModel(cfg.model, device=cfg.device, feature_cache=cfg.feature_cache)
    results = evaluate(model, cfg.task, cfg.data, cfg.shots, **cfg.evaluate_kwargs())

``fewshot_eval.cli.run(cfg)`` does what ``fewshot-eval run`` does: every input checked before the weights load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contrastive_encoder.shared.argtypes import non_negative_float, non_negative_int, positive_int
from contrastive_encoder.shared.configcli import option
from fewshot_eval.bootstrap import N_BOOTSTRAP
from fewshot_eval.datasets import DEFAULT_IMAGE_TEMPLATE, TASKS
from fewshot_eval.ensemble import DEFAULT_ENSEMBLE
from fewshot_eval.media import PAPER_VIDEO
from fewshot_eval.metrics.coco_caption import CAPTION_SCORERS
from fewshot_eval.metrics.vqa import SCORERS as VQA_SCORERS
from fewshot_eval.prompts import ZERO_SHOT_DEMOS
from fewshot_eval.protocols import PROTOCOLS
from fewshot_eval.selection import SELECTIONS

__all__ = ["EvalConfig"]


@dataclass
class EvalConfig:
    """One model evaluated on one task for several shot counts and selection methods."""

    # what to evaluate: no defaults, so the flags are required
    model: str = field(metadata=option("folder written by Flamingo.save_pretrained"))
    task: str = field(metadata=option("task, which fixes the data format, prompt and metric", choices=TASKS))
    data: str = field(metadata=option("dataset file or folder in the task's format (docs/formats.md)"))
    # the prompts
    shots: list[int] = field(default_factory=lambda: [0, 4, 8], metadata=option(
        "shot counts (0: no image demonstrations, --zero-shot-demos text-only ones)", type=non_negative_int, nargs="+"))
    zero_shot_demos: int = field(default=ZERO_SHOT_DEMOS, metadata=option(
        f"text-only demonstrations of a 0-shot prompt (default {ZERO_SHOT_DEMOS}, the paper's; with one, the paper "
        "says, the model copies it)", type=positive_int))
    selection: list[str] = field(default_factory=lambda: ["random"], metadata=option(
        "demonstration selection: random, rices (most similar images), balanced (classify: every class in equal "
        "numbers, min(k, classes) classes)", choices=SELECTIONS, nargs="+"))
    trials: int = field(default=3, metadata=option(
        "seeded trials for random and balanced selection (mean and std over trials; the CI resamples them too)",
        type=positive_int))
    nonce_labels: bool = field(default=False, metadata=option(
        "classify with novel labels: every class renamed with a nonce word drawn per query (Frozen's fast concept "
        "binding); the true names never appear in the prompt"))
    nonce_words: str | None = field(default=None, metadata=option(
        "text file, one nonce word per line, replacing the built-in list (with --nonce-labels)", metavar="PATH"))
    bootstrap: int = field(default=N_BOOTSTRAP, metadata=option(
        "bootstrap resamples of the 95%% confidence interval over queries and trials", type=positive_int,
        metavar="B"))
    ensemble: int = field(default=1, metadata=option(
        f"average over this many demonstration orderings, classify only (default 1 = none; bare flag = "
        f"{DEFAULT_ENSEMBLE})", type=positive_int, nargs="?", const=DEFAULT_ENSEMBLE))
    limit: int | None = field(default=None, metadata=option(
        "evaluate N queries spread evenly over the query set (every class of a class-sorted set)",
        type=positive_int))
    # the output folder, named and policed as the training commands' --out
    out: str = field(default="runs/fewshot", metadata=option("output folder: predictions/, results.json/.md/.png"))
    resume: str | None = field(default=None, metadata=option(
        "continue the evaluation in --out (or add another task to it), same model only; '--resume latest' as in "
        "the training commands", nargs="?", const="latest", choices=("latest",)))
    overwrite: bool = field(default=False, metadata=option(
        "delete the previous evaluation's outputs in --out and start again (or write into a non-empty folder that "
        "is not an evaluation; its files are kept)"))
    # the data
    split: str | None = field(default=None, metadata=option(
        "query split (default: test for caption if present, else val)"))
    support_split: str | None = field(default=None, metadata=option(
        "support split demonstrations come from (default: train)"))
    image_template: str = field(default=DEFAULT_IMAGE_TEMPLATE, metadata=option(
        "VQA image paths: one template (may use {split}, {image_id}), per split 'train=...,val=...', or 'coco' "
        "(train2014/, val2014/, test2015/ with COCO file names)"))
    cache_dir: str | None = field(default=None, metadata=option("RICES feature cache (default: <out>/cache)"))
    # the model's, not evaluate()'s: FlamingoEvalModel(feature_cache=...), so evaluate_kwargs() leaves it out
    feature_cache: str | None = field(default=None, metadata=option(
        "keep the frozen vision encoder's outputs of every image in a folder that later runs over the same images "
        "and tower read (other tasks, shots, ablations; the resampler still runs), or 'memory' for this run only; "
        "default: off", metavar="DIR|memory"))
    video_frames: int = field(default=PAPER_VIDEO.frames, metadata=option(
        "frames read from each video (video tasks; the paper: 30)", type=positive_int))
    video_fps: float = field(default=PAPER_VIDEO.fps, metadata=option(
        "their rate from the clip's start, placed on the model's 1-FPS trained time axis (the paper: 3); 0: "
        "--video-frames frames spread evenly over the whole clip", type=non_negative_float))
    # benchmark layouts
    score: bool | None = field(default=None, metadata=option(
        "--score: score the query split (one without annotations is an error); --no-score: write the evaluation "
        "server's result file instead (vqa); default: score, or write that file for a test split without "
        "annotations (VQAv2 test-dev)"))
    # decoding
    batch_size: int = field(default=8, metadata=option("queries per generation batch", type=positive_int))
    num_beams: int = field(default=3, metadata=option("beams for open-ended decoding", type=positive_int))
    max_new_tokens: int | None = field(default=None, metadata=option(
        "generation length (default per task)", type=positive_int))
    template: str | None = field(default=None, metadata=option(
        "prompt template, e.g. '<image>Q: {question} A: {answer}<EOC>'"))
    protocol: str = field(default="flamingo", metadata=option(
        "prompts, decoding and post-processing of open-ended tasks: flamingo (the paper's) or openflamingo "
        "(OpenFlamingo 2.0.1's evaluation, to compare with its table)", choices=tuple(PROTOCOLS)))
    # scoring
    vqa_scorer: str | None = field(default=None, metadata=option(
        "VQA accuracy as computed by: official (today's official VQA code; VizWiz's own for vizwiz), official-2017 "
        "(the VQA code before its 2021 fix), openflamingo (OpenFlamingo 2.0.1's copy, to compare with its numbers); "
        "default: the protocol's (official, or openflamingo under --protocol openflamingo)", choices=VQA_SCORERS))
    caption_scorer: str = field(default="auto", metadata=option(
        "CIDEr / BLEU-4 / ROUGE-L computed by: pycocoevalcap (the COCO caption evaluation; needs Java), python "
        "(this package's ports, equal to it), auto (pycocoevalcap where it and Java are installed)",
        choices=CAPTION_SCORERS))
    # the run: --seed and --progress/--no-progress as in the training commands; --device as in `flamingo generate`
    # (any torch device: the training commands' --cpu cannot name cuda:1 or mps)
    seed: int = field(default=0, metadata=option("seed of random selection and ensembling"))
    device: str | None = field(default=None, metadata=option("torch device (default: cuda if available)"))
    progress: bool = field(default=True, metadata=option("progress bars"))

    @property
    def labels(self) -> str:
        """``evaluate``'s ``labels``: ``nonce`` with ``nonce_labels``, else ``true``."""
        return "nonce" if self.nonce_labels else "true"

    def plan(self) -> dict[str, Any]:
        """The keywords ``prepare_data``, ``check_context`` and ``evaluate`` share: what is evaluated."""
        return dict(selection=self.selection, labels=self.labels, nonce_words=self.nonce_words,
                    zero_shot_demos=self.zero_shot_demos)  # fmt: skip

    def data_kwargs(self) -> dict[str, Any]:
        """``prepare_data``'s keywords beyond ``task``, ``data`` and ``shots``."""
        return dict(split=self.split, support_split=self.support_split, limit=self.limit,
                    image_template=self.image_template, score=self.score, **self.plan())  # fmt: skip

    def evaluate_kwargs(self) -> dict[str, Any]:
        """``evaluate``'s keywords beyond ``model``, ``task``, ``data`` and ``shots`` (``data`` a path or what
        ``prepare_data(**data_kwargs())`` returned: the limit of a prepared set is already applied)."""
        return dict(trials=self.trials, ensemble=self.ensemble, out_dir=self.out, resume=self.resume is not None,
                    batch_size=self.batch_size, num_beams=self.num_beams, max_new_tokens=self.max_new_tokens,
                    template=self.template, cache_dir=self.cache_dir, seed=self.seed, progress=self.progress,
                    n_bootstrap=self.bootstrap, vqa_scorer=self.vqa_scorer, caption_scorer=self.caption_scorer,
                    protocol=self.protocol, max_frames=self.video_frames, video_fps=self.video_fps or None,
                    **self.data_kwargs())  # fmt: skip
