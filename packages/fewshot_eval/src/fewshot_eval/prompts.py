"""Few-shot prompts in the formats of the Flamingo paper (arXiv 2204.14198, Appendix A.2 and Fig. 2 / 3).

A prompt is the demonstrations followed by the query, each rendered from one template with ``<image>`` where
its media goes and ``{answer}`` (and ``{question}``) where its text goes; a demonstration ends its chunk with
``<EOC>``, the query stops right before the answer. Zero-shot uses two demonstrations with their images removed
(text only), as in the paper, so the model still sees the output format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fewshot_eval.datasets import VQA_TASKS
from fewshot_eval.model import EOC, IMAGE_TOKEN, Prompt

__all__ = ["DEFAULT_TEMPLATES", "ZERO_SHOT_DEMOS", "PromptTemplate", "Shot", "build_prompt", "get_template"]

ZERO_SHOT_DEMOS = 2  # text-only demonstrations in a zero-shot prompt (paper, Sec. 3 / Appendix A.2)


@dataclass(frozen=True)
class Shot:
    """One demonstration (``answer`` set) or the query (``answer`` None)."""

    media: object  # PIL image, list of frames, or anything the model's processor accepts
    answer: str | None = None
    question: str | None = None


@dataclass(frozen=True)
class PromptTemplate:
    """A demonstration template such as ``"<image>Question: {question} Answer: {answer}<EOC>"``."""

    demo: str

    def __post_init__(self):
        if self.demo.count(IMAGE_TOKEN) != 1 or self.demo.count("{answer}") != 1:
            raise ValueError(f"template {self.demo!r} must contain exactly one {IMAGE_TOKEN} and one {{answer}}")
        if self.demo.index(IMAGE_TOKEN) > self.demo.index("{answer}"):
            raise ValueError(f"template {self.demo!r}: {IMAGE_TOKEN} must come before {{answer}}")
        if "{question}" in self.demo.split("{answer}")[1]:
            raise ValueError(f"template {self.demo!r}: {{question}} must come before {{answer}}")

    @property
    def _head_tail(self) -> tuple[str, str]:
        head, tail = self.demo.split("{answer}")
        return head, tail

    def _fill(self, text: str, question: str | None) -> str:
        if "{question}" in text:
            if question is None:
                raise ValueError(f"template {self.demo!r} needs a question")
            text = text.replace("{question}", question)
        return text

    def render_demo(self, answer: str, question: str | None = None) -> str:
        """Text of a demonstration, ``<image>`` marking the media."""
        head, tail = self._head_tail
        return self._fill(head, question) + answer + self._fill(tail, question)

    def render_query(self, question: str | None = None) -> str:
        """Text of the query: the template up to the answer, trailing space removed."""
        return self._fill(self._head_tail[0], question).rstrip()

    def continuation(self, answer: str) -> str:
        """What follows the query for a given answer (scored in close-ended tasks), e.g. ``" circle<EOC>"``."""
        head, tail = self._head_tail
        return head[len(head.rstrip()) :] + answer + tail


DEFAULT_TEMPLATES = {
    "caption": "<image>Output: {answer}" + EOC,
    # every image VQA benchmark: the same prompt, as in OpenFlamingo's evaluation
    **{t: "<image>Question: {question} Answer: {answer}" + EOC for t in VQA_TASKS},
    "classify": "<image>Output: {answer}" + EOC,
    # OpenFlamingo's Hateful Memes prompt, the meme's text as the question
    "hateful-memes": "<image>is an image with: '{question}' written on it. Is it hateful? Answer: {answer}" + EOC,
    "video-caption": "<image>Output: {answer}" + EOC,
    "video-qa": "<image>Question: {question} Answer: {answer}" + EOC,
}


def get_template(task: str, override: str | None = None) -> PromptTemplate:
    """The task's template, or ``override`` (validated)."""
    return PromptTemplate(override if override is not None else DEFAULT_TEMPLATES[task])


def _append(prompt: Prompt, text: str, media: object | None) -> None:
    """Append ``text`` to the prompt, putting ``media`` where ``<image>`` is (or dropping the marker)."""
    if isinstance(media, str):
        raise TypeError("media must be an image or a list of frames, not a string")
    before, _, after = text.partition(IMAGE_TOKEN) if IMAGE_TOKEN in text else (text, "", "")
    pieces: list = [before] + ([media] if media is not None and IMAGE_TOKEN in text else []) + [after]
    for piece in pieces:
        if isinstance(piece, str):
            if not piece:
                continue
            if prompt and isinstance(prompt[-1], str):
                prompt[-1] += piece  # keep adjacent text in one item
                continue
        prompt.append(piece)


def build_prompt(
    demos: Sequence[Shot], query: Shot, template: PromptTemplate, text_only_demos: bool = False
) -> Prompt:
    """The interleaved prompt: demonstrations in the given order (under RICES the most similar last), then
    the query.

    Args:
        demos: the demonstrations, each with its answer.
        query: the query (its ``answer`` is ignored).
        template: the task template.
        text_only_demos: drop the demonstrations' images (zero-shot prompts).

    Returns:
        A list of strings and media; ``prompt_to_text`` gives its string form.
    """
    prompt: Prompt = []
    for d in demos:
        if d.answer is None:
            raise ValueError("a demonstration needs an answer")
        _append(prompt, template.render_demo(d.answer, d.question), None if text_only_demos else d.media)
    _append(prompt, template.render_query(query.question), query.media)
    return prompt
