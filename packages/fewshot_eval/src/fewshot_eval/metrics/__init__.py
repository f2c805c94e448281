"""Task metrics, each matching the reference implementation the published numbers were computed with."""

from fewshot_eval.metrics.cider import cider, ptb_tokenize
from fewshot_eval.metrics.coco_caption import caption_scores
from fewshot_eval.metrics.vizwiz import vizwiz_accuracy
from fewshot_eval.metrics.vqa import SCORERS, accuracy_by_type, normalize_answer, vqa_accuracy, vqa_score
from fewshot_eval.metrics.vqa_benchmarks import VQA_BENCHMARKS, vqa_task_accuracy

__all__ = [
    "SCORERS", "VQA_BENCHMARKS", "accuracy_by_type", "caption_scores", "cider", "normalize_answer", "ptb_tokenize", "topk_accuracy",
    "vizwiz_accuracy", "vqa_accuracy", "vqa_score", "vqa_task_accuracy",
]  # fmt: skip


def topk_accuracy(ranked: list[list[str]], labels: list[str], k: int) -> float:
    """Fraction (0-1) of examples whose label is among the first ``k`` ranked class names."""
    if len(ranked) != len(labels):
        raise ValueError(f"{len(ranked)} rankings but {len(labels)} labels")
    if not labels:
        return 0.0
    return sum(label in r[:k] for r, label in zip(ranked, labels)) / len(labels)
