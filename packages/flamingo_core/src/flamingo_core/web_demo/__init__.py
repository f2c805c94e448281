"""``flamingo demo``: a local web page for a saved Flamingo (arXiv 2204.14198): interleaved images, videos and
text in a multi-turn dialogue with streamed answers (Figure 1), a few-shot prompt builder (Section 3), the
decoding settings and the tanh gates. Gradio is the optional extra ``flamingo-core[demo]``; this module imports
it only when the page is built, so the flags and the dialogue logic load without it."""

from __future__ import annotations

import argparse
import os

from contrastive_encoder.shared.argtypes import positive_int

from .uploads import DEFAULT_MAX_IMAGE_PIXELS

__all__ = ["add_demo_arguments", "run_demo"]


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``flamingo demo`` beyond the model and decoding flags it shares with ``generate``/``chat``
    (those set the page's initial decoding settings)."""
    p.add_argument("--host", default="127.0.0.1",
                   help="address to serve on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=positive_int, default=7860, help="port to serve on")
    p.add_argument("--data", default=None,
                   help="dataset folder the few-shot builder starts with (COCO Karpathy dataset_*.json or VQAv2 "
                        "train_questions.json + train_annotations.json), e.g. data/world-quick/eval/coco")
    p.add_argument("--max-image-pixels", type=positive_int, default=DEFAULT_MAX_IMAGE_PIXELS,
                   help=f"refuse images (and video frames) with more pixels (default {DEFAULT_MAX_IMAGE_PIXELS:,})")
    p.add_argument("--video-frames", type=positive_int, default=8,
                   help="frames read from a video, evenly spaced (at most the model's max_frames)")
    p.add_argument("--max-upload", default="100mb", help="largest file the page accepts (Gradio's max_file_size)")
    from ..cli import add_dialogue_args

    add_dialogue_args(p)


def run_demo(args: argparse.Namespace) -> int:
    """Serve the demo until Ctrl+C. Raises ``cli.UserError`` when Gradio is missing or the port is taken."""
    from ..cli import UserError

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read when gradio is imported
    try:
        import gradio  # noqa: F401
    except ImportError as e:
        raise UserError("flamingo demo needs Gradio: pip install 'flamingo-core[demo]'") from e
    from .app import launch

    launch(args)
    return 0
