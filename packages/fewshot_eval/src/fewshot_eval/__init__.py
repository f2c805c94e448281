"""Flamingo stage 3: in-context few-shot evaluation with RICES and prompt ensembling (arXiv 2204.14198).

Python API::

    from fewshot_eval import FlamingoEvalModel, evaluate
    results = evaluate(FlamingoEvalModel("runs/flamingo"), "vqa", "data/world/eval/vqav2",
                       shots=[0, 4], selection=["random", "rices"], out_dir="runs/eval/vqa")

or with the options of ``fewshot-eval run``, defaults included (``EvalConfig``)::

    cfg = EvalConfig(model="runs/flamingo", task="vqa", data="data/world/eval/vqav2", shots=[0, 4])
    results = evaluate(FlamingoEvalModel(cfg.model), cfg.task, cfg.data, cfg.shots, **cfg.evaluate_kwargs())
"""

from fewshot_eval.bootstrap import bootstrap_ci
from fewshot_eval.config import EvalConfig
from fewshot_eval.datasets import TASKS, DataError, EvalSet, Example, load_task_data
from fewshot_eval.ensemble import ensemble_scores, permutations
from fewshot_eval.evaluate import TaskData, evaluate, prepare_data
from fewshot_eval.metrics import caption_scores, cider, ptb_tokenize, topk_accuracy, vqa_accuracy, vqa_score
from fewshot_eval.model import EvalModel, FlamingoEvalModel, ModelLoadError, TokenCounter, prompt_to_text
from fewshot_eval.nonce import EVAL_NONCE_WORDS, nonce_names
from fewshot_eval.postprocess import postprocess
from fewshot_eval.prompts import DEFAULT_TEMPLATES, PromptTemplate, Shot, build_prompt
from fewshot_eval.report import markdown_table, plot_scores, write_report
from fewshot_eval.rices import RICES, cached_features
from fewshot_eval.scoring import score_predictions
from fewshot_eval.selection import BalancedSelector, RandomSelector, RicesSelector, mean_std

__all__ = [
    "DEFAULT_TEMPLATES", "EVAL_NONCE_WORDS", "RICES", "TASKS", "BalancedSelector", "DataError", "EvalConfig",
    "EvalModel", "EvalSet", "Example", "FlamingoEvalModel", "ModelLoadError", "PromptTemplate", "RandomSelector",
    "RicesSelector", "Shot", "TaskData", "TokenCounter", "bootstrap_ci", "build_prompt", "cached_features",
    "caption_scores", "cider",
    "ensemble_scores", "evaluate", "load_task_data", "markdown_table", "mean_std", "nonce_names", "permutations",
    "plot_scores", "postprocess", "prepare_data", "prompt_to_text", "ptb_tokenize", "score_predictions",
    "topk_accuracy", "vqa_accuracy", "vqa_score", "write_report",
]  # fmt: skip
