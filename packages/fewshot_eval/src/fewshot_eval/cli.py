"""``fewshot-eval``: few-shot evaluation of a saved Flamingo model from the command line.

Example:
    fewshot-eval run --model runs/flamingo/final --task vqa --data data/world/eval/vqav2 \\
        --shots 0 4 8 --selection random rices --limit 200 --out runs/eval/vqa

``run``'s flags and defaults are ``EvalConfig``'s fields (``config.py``); ``run(cfg)`` is the command from Python.

Every bad input is one line on stderr and exit code 2: a bad flag value (refused by the parser), data of the
wrong format, a model folder that cannot be loaded, a device this machine lacks, an ``--out`` that is a file,
unwritable, or holds a previous evaluation (``--resume`` continues it, ``--overwrite`` starts it again), a
flag of classification used with another task, too few support examples of a class for ``--selection
balanced``, unusable ``--nonce-words``, and prompts that do not fit in the language model's context - all before
the model's weights are loaded (the prompts are counted with the model folder's tokenizer alone). A
``--feature-cache`` folder written for another vision encoder is refused as the model loads (the loaded tower's
identifier is what names its features).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from contrastive_encoder.shared.argtypes import OneLineParser
from contrastive_encoder.shared.configcli import add_config_arguments, config_from_args
from contrastive_encoder.shared.outputs import check_writable_dir
from fewshot_eval.config import EvalConfig
from fewshot_eval.datasets import CLOSE_ENDED_TASKS, DataError
from fewshot_eval.model import ModelLoadError

__all__ = ["COMMAND", "build_parser", "load_model", "load_token_counter", "main", "parse_args", "run"]

COMMAND = "fewshot-eval run"  # recorded in <out>/run.json: a rerun of it into --out must say --resume or --overwrite


def build_parser() -> argparse.ArgumentParser:
    """Every flag and default of ``run`` is an ``EvalConfig`` field (``shared/configcli.py``)."""
    parser = OneLineParser(prog="fewshot-eval", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="evaluate a model on one task for several shot counts and selection methods")
    add_config_arguments(run, EvalConfig)
    return parser


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    return config_from_args(EvalConfig, build_parser().parse_args(argv))


def load_model(model_dir: str, device: str | None = None, feature_cache: str | None = None):
    """The model behind ``--model`` (a seam tests replace with a fake), its frozen features cached in
    ``feature_cache`` (``--feature-cache``: a folder, ``memory`` or None)."""
    from fewshot_eval.model import FlamingoEvalModel

    return FlamingoEvalModel(model_dir, device=device, feature_cache=feature_cache)


def load_token_counter(model_dir: str):
    """What counts the prompts' tokens before the weights load (a seam tests replace with their fake): the
    model folder's tokenizer and LM context, ``fewshot_eval.model.TokenCounter``."""
    from fewshot_eval.model import TokenCounter

    return TokenCounter.from_pretrained(model_dir)


def _note_skipped(data) -> None:
    """One line per set that lost records to the skip-and-count policy (no annotation, bad entries, ...)."""
    for s in {(str(s.source), s.split): s for s in (data.support, data.query)}.values():
        if sum(s.skipped.values()):
            print(f"fewshot-eval: note: {s.source} (split {s.split!r}): {s.skipped.report()}", file=sys.stderr)


def _note_feature_cache(model, where: str) -> None:
    """How much of the frozen tower's work the feature cache spared (a run's misses are what the next one reads)."""
    cache = getattr(model, "feature_cache", None)  # an EvalModel other than FlamingoEvalModel may have none
    if cache is not None:
        print(f"fewshot-eval: note: feature cache {where}: {cache.hits} hits, {cache.misses} misses", file=sys.stderr)


def run(cfg: EvalConfig) -> list[dict]:
    """``fewshot-eval run`` without the printing: check every input before the weights load, claim ``cfg.out``,
    evaluate. Returns ``evaluate``'s result records.

    Raises:
        DataError, ModelLoadError, ValueError, FileNotFoundError: one line naming the bad input.
    """
    from fewshot_eval.evaluate import OUTPUT_NAMES, check_context, claim_output, evaluate, prepare_data
    from fewshot_eval.model import resolve_device

    if cfg.resume is not None and cfg.overwrite:
        raise ValueError("--resume and --overwrite exclude each other: continue the evaluation, or start again")
    if cfg.ensemble > 1 and cfg.task not in CLOSE_ENDED_TASKS:
        # one flag set can then drive every task (as tools/run_pipeline.py does)
        print(f"fewshot-eval: note: --ensemble applies to 'classify' only; ignored for {cfg.task!r}", file=sys.stderr)
        cfg = dataclasses.replace(cfg, ensemble=1)  # the caller's config stays as given
    if not Path(cfg.model).is_dir():
        raise ModelLoadError(f"--model {cfg.model}: no such folder (expected a saved Flamingo model)")
    if cfg.device is not None:
        resolve_device(cfg.device)  # a missing GPU is named before the data is read
    data = prepare_data(cfg.task, cfg.data, cfg.shots, **cfg.data_kwargs())
    if cfg.cache_dir is not None:  # a file or read-only folder fails now, not after the first predictions
        check_writable_dir(cfg.cache_dir, "--cache-dir")
    if cfg.feature_cache not in (None, "memory"):  # likewise; a folder of another tower is refused when it loads
        check_writable_dir(cfg.feature_cache, "--feature-cache")
    problem = check_context(load_token_counter(cfg.model), data, cfg.shots, trials=cfg.trials, template=cfg.template,
                            max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, protocol=cfg.protocol,
                            **cfg.plan())  # fmt: skip
    if problem:  # before the weights load: 32 shots that cannot fit should not cost a model load first
        raise ValueError(problem)
    # claimed once the inputs are known good, so that a typo in --data does not leave a run folder behind
    claim_output(cfg.out, COMMAND, OUTPUT_NAMES, resume=cfg.resume is not None, overwrite=cfg.overwrite)
    _note_skipped(data)  # after the checks: a refused run prints its one error line only
    # the keyword only when on: a replacement of the seam that predates it, load(model_dir, device), still works
    cache = {} if cfg.feature_cache is None else {"feature_cache": cfg.feature_cache}
    model = load_model(cfg.model, cfg.device, **cache)
    results = evaluate(model, cfg.task, data, cfg.shots, **cfg.evaluate_kwargs())
    if cfg.feature_cache is not None:
        _note_feature_cache(model, cfg.feature_cache)
    return results


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(argv)
    except SystemExit as e:  # the parser has printed its one line (or --help); return its code like the others
        return int(e.code or 0)
    from fewshot_eval.report import markdown_table

    try:
        results = run(cfg)
    except (DataError, ModelLoadError, ValueError, FileNotFoundError) as e:
        print(f"fewshot-eval: error: {e}", file=sys.stderr)
        return 2
    if results:
        print(markdown_table(results))
        n = results[0]["n"]
        print(f"Evaluated {cfg.task} on {n} queries for shots {cfg.shots} with {', '.join(cfg.selection)}; "
              f"results in {Path(cfg.out) / 'results.json'}, table in results.md, plot in results.png.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
