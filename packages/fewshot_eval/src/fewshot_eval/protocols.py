"""Evaluation protocols: the prompts, decoding and scoring of an open-ended few-shot evaluation, as one choice.

- ``flamingo`` (default): the paper's (arXiv 2204.14198, Appendix A.2): ``<image>Output: {caption}<EOC>`` and
  ``<image>Question: {question} Answer: {answer}<EOC>`` with no separator, the majority answer of a VQA
  demonstration, beam search with 3 beams and transformers' length penalty 1, at least one token generated
  (an empty prediction never scores), this package's post-processing (``postprocess``), today's official VQA
  scorer.
- ``openflamingo``: OpenFlamingo 2.0.1's ``open_flamingo/eval/evaluate.py``, so that numbers line up with its
  table: ``<image>Output:{caption}<|endofchunk|>`` and ``<image>Question:{question} Short answer:{answer}
  <|endofchunk|>``, each demonstration followed by a newline, a VQA demonstration showing its first annotator's
  answer, 3 beams with length penalty 0, 20 new tokens for captions and 5 for VQA, no minimum length, decoding
  stopped only by ``<|endofchunk|>`` (its models' EOS is not a stop), its post-processing (a caption cut before
  "Output", double quotes dropped; an answer cut before "Question" / "Answer" / "Short" and the first ", ") and its
  copy of the VQA scorer. Zero-shot prompts are the same in both: two text-only demonstrations. Demonstrations are
  drawn by this package's selectors in both (OpenFlamingo samples them from a random 2048-example subset of the
  training set; ``tests/fewshot_eval/test_openflamingo_crosscheck.py`` gives both evaluators the same ones).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fewshot_eval.datasets import CAPTION_TASKS, SHORT_ANSWER_TASKS
from fewshot_eval.model import EOC
from fewshot_eval.postprocess import postprocess

__all__ = ["PROTOCOLS", "Protocol", "get_protocol"]


def _openflamingo_postprocess(text: str, task: str) -> str:
    """OpenFlamingo's ``postprocess_captioning_generation`` (+ its ``.replace('"', "")``) and
    ``postprocess_vqa_generation`` on the decoded text (special tokens already dropped)."""
    if "caption" in task:
        return text.split("Output", 1)[0].replace('"', "")
    answer = re.split("Question|Answer|Short", text, maxsplit=1)[0]
    return re.split(", ", answer, maxsplit=1)[0]


@dataclass(frozen=True)
class Protocol:
    """One way of running an open-ended evaluation (``PROTOCOLS``)."""

    name: str
    templates: dict[str, str] = field(default_factory=dict)  # task -> template, over prompts.DEFAULT_TEMPLATES
    max_new_tokens: dict[str, int] = field(default_factory=dict)  # open-ended task -> default generation length
    decoding: dict = field(default_factory=dict)  # extra keywords of EvalModel.generate (length penalty, ...)
    demo_answer: str = "target"  # "target" (majority answer / first caption) or "first" (first reference)
    vqa_scorer: str = "official"
    openflamingo_postprocess: bool = False

    def postprocess(self, text: str, task: str) -> str:
        return _openflamingo_postprocess(text, task) if self.openflamingo_postprocess else postprocess(text, task)

    def demo_text(self, target: str, references: tuple[str, ...]) -> str:
        return references[0].strip() if self.demo_answer == "first" and references else target


PROTOCOLS = {
    "flamingo": Protocol(  # 30 tokens for a caption, 5 for a short answer (the paper's short VQA answers)
        "flamingo", max_new_tokens={**{t: 30 for t in CAPTION_TASKS}, **{t: 5 for t in SHORT_ANSWER_TASKS}}),
    "openflamingo": Protocol(
        "openflamingo",
        templates={**{t: "<image>Output:{answer}" + EOC + "\n" for t in CAPTION_TASKS},
                   **{t: "<image>Question:{question} Short answer:{answer}" + EOC + "\n" for t in SHORT_ANSWER_TASKS}},
        max_new_tokens={**{t: 20 for t in CAPTION_TASKS}, **{t: 5 for t in SHORT_ANSWER_TASKS}},
        decoding={"length_penalty": 0.0, "min_new_tokens": 0, "stop_at_eos": False},
        demo_answer="first", vqa_scorer="openflamingo", openflamingo_postprocess=True),
}  # fmt: skip


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
