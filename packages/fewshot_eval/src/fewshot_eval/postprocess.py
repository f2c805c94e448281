"""Post-processing of generated answers (Flamingo paper, Appendix A.2: open-ended tasks).

The model's text is cut at the end of its chunk (``<EOC>``) or the end of sequence, then at the first newline
and at the first stop word the model may go on with (``Question:``, ``Output:``, ...), because a few-shot model
readily continues with another demonstration.

Short answers (VQA, video QA) are also cut where the model runs on past the answer without ``<EOC>``: at the end
of the first sentence (``"No. What is the"`` -> ``"No"``) and where a new capitalised word is glued to the
answer (``"yellowThe answer is"`` -> ``"yellow"``, ``"3More"`` -> ``"3"``), which is how a small LM that has
not yet learned to close its chunk continues. Decimals (``"3.5"``) are kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from fewshot_eval.datasets import SHORT_ANSWER_TASKS
from fewshot_eval.model import EOC

__all__ = ["EOS_STRINGS", "STOP_WORDS", "postprocess"]

EOS_STRINGS = ("</s>", "<|endoftext|>", "<|im_end|>", "<eos>")
STOP_WORDS = ("Question:", "Answer:", "Output:", "Short answer:", "Long answer:", "<image>")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")  # a period before a digit ("3.5") is not an end
_GLUED_WORD = re.compile(r"(?<=[a-z0-9])(?=[A-Z][a-z])")  # "yellowThe": a new word started without a space


def postprocess(text: str, task: str = "caption", stop_words: Sequence[str] = STOP_WORDS) -> str:
    """Clean generated text into a prediction.

    Args:
        text: what the model generated after the prompt.
        task: the task name; short-answer tasks (``SHORT_ANSWER_TASKS``) are also cut after their first
            sentence and before a glued capitalised word.
        stop_words: strings at which the answer is cut.

    Returns:
        The stripped answer.
    """
    for stop in (EOC, *EOS_STRINGS, *stop_words):
        i = text.find(stop)
        if i != -1:
            text = text[:i]
    text = text.strip().split("\n", 1)[0].strip() if text.strip() else ""
    if task in SHORT_ANSWER_TASKS:
        text = _GLUED_WORD.split(text, maxsplit=1)[0]
        text = _SENTENCE_END.split(text, maxsplit=1)[0].strip()
    return text
