"""Post-processing of generated answers (Flamingo paper, Appendix A.2: open-ended tasks).

The model's text is cut at the end of its chunk (``<EOC>``) or the end of sequence, then at the first newline
and at the first stop word the model may go on with (``Question:``, ``Output:``, ...), because a few-shot model
readily continues with another demonstration.
"""

from __future__ import annotations

from collections.abc import Sequence

from fewshot_eval.model import EOC

__all__ = ["EOS_STRINGS", "STOP_WORDS", "postprocess"]

EOS_STRINGS = ("</s>", "<|endoftext|>", "<|im_end|>", "<eos>")
STOP_WORDS = ("Question:", "Answer:", "Output:", "Short answer:", "Long answer:", "<image>")


def postprocess(text: str, task: str = "caption", stop_words: Sequence[str] = STOP_WORDS) -> str:
    """Clean generated text into a prediction.

    Args:
        text: what the model generated after the prompt.
        task: the task name; VQA answers also lose a trailing period.
        stop_words: strings at which the answer is cut.

    Returns:
        The stripped answer.
    """
    for stop in (EOC, *EOS_STRINGS, *stop_words):
        i = text.find(stop)
        if i != -1:
            text = text[:i]
    text = text.strip().split("\n", 1)[0].strip() if text.strip() else ""
    if task in ("vqa", "video-qa"):
        text = text.rstrip(".").strip()
    return text
