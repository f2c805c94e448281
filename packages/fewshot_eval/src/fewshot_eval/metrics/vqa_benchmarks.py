"""VQA accuracy of each VQA benchmark (task) as its evaluation computes it, for a chosen ``vqa.SCORERS`` scorer.

- ``vqa`` (VQAv2), ``video-qa``: ``vqa.vqa_accuracy`` with the scorer.
- ``okvqa``: the prediction stemmed first (``okvqa.okvqa_stem``, as OpenFlamingo does; OK-VQA v1.1's answers
  are stemmed), then the scorer; OK-VQA's own evaluation is the VQA code.
- ``vizwiz``: ``official`` is the VizWiz code (``vizwiz.vizwiz_accuracy``: a different contraction table,
  answers never normalised); ``official-2017`` and ``openflamingo`` are those scorers of the VQA code
  (OpenFlamingo scores VizWiz with its VQA copy).
- ``textvqa``: the VQA code with the scorer, as OpenFlamingo does. What differs from VQAv2: TextVQA's answers
  are raw annotator text, never pre-normalised, so ``official`` compares ten identical raw answers unnormalised
  (``"Coca Cola"`` x 10 against ``"coca cola"`` scores 0); and the TextVQA authors' evaluator (MMF's
  ``TextVQAAccuracyEvaluator``) normalises answers and prediction always, like ``openflamingo``, after also
  lower-casing, deleting ``,`` and ``?`` and splitting off ``'s`` - that evaluator is not reproduced here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fewshot_eval.metrics.vizwiz import vizwiz_accuracy
from fewshot_eval.metrics.vqa import SCORERS, vqa_accuracy

__all__ = ["VQA_BENCHMARKS", "vqa_task_accuracy"]

VQA_BENCHMARKS = ("vqa", "okvqa", "vizwiz", "textvqa", "video-qa")


def vqa_task_accuracy(
    task: str, predictions: Mapping[str, str], answers: Mapping[str, Sequence[str]], scorer: str = "official"
) -> tuple[float, dict[str, float]]:
    """Mean accuracy (0-1) of ``task``'s predictions and the per-question scores (module docstring).

    Args:
        task: one of ``VQA_BENCHMARKS``.
        predictions: question id -> predicted answer (as generated: OK-VQA's stemming happens here).
        answers: question id -> annotators' answers as the data files give them.
        scorer: one of ``vqa.SCORERS``.
    """
    if task not in VQA_BENCHMARKS:
        raise ValueError(f"unknown VQA task {task!r}; expected one of {', '.join(VQA_BENCHMARKS)}")
    if scorer not in SCORERS:
        raise ValueError(f"unknown VQA scorer {scorer!r}; expected one of {', '.join(SCORERS)}")
    if task == "okvqa":
        from fewshot_eval.metrics.okvqa import okvqa_accuracy  # nltk is imported only for OK-VQA

        return okvqa_accuracy(predictions, answers, scorer)
    if task == "vizwiz" and scorer == "official":
        return vizwiz_accuracy(predictions, answers)
    return vqa_accuracy(predictions, answers, scorer)
