"""``fewshot-eval``: few-shot evaluation of a saved Flamingo model from the command line.

Example:
    fewshot-eval run --model runs/flamingo/final --task vqa --data data/world/eval/vqav2 \\
        --shots 0 4 8 --selection random rices --limit 200 --out runs/eval/vqa

Every bad input is one line on stderr and exit code 2: a bad flag value (refused by the parser), data of the
wrong format, a model folder that cannot be loaded, a device this machine lacks, an ``--out`` that is a file,
unwritable, or holds a previous evaluation (``--resume`` continues it, ``--overwrite`` starts it again), a
flag of classification used with another task, too few support examples of a class for ``--selection
balanced``, unusable ``--nonce-words``, and prompts that do not fit in the language model's context - all before
the model's weights are loaded (the prompts are counted with the model folder's tokenizer alone).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contrastive_encoder.shared.argtypes import OneLineParser, non_negative_int, positive_int
from contrastive_encoder.shared.outputs import check_writable_dir
from fewshot_eval.bootstrap import N_BOOTSTRAP
from fewshot_eval.datasets import TASKS, DataError
from fewshot_eval.ensemble import DEFAULT_ENSEMBLE
from fewshot_eval.model import ModelLoadError
from fewshot_eval.prompts import ZERO_SHOT_DEMOS
from fewshot_eval.selection import SELECTIONS

__all__ = ["COMMAND", "build_parser", "load_model", "load_token_counter", "main", "parse_args"]

COMMAND = "fewshot-eval run"  # recorded in <out>/run.json: a rerun of it into --out must say --resume or --overwrite



def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="fewshot-eval", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="evaluate a model on one task for several shot counts and selection methods")
    run.add_argument("--model", required=True, help="folder written by Flamingo.save_pretrained")
    run.add_argument("--task", required=True, choices=TASKS, help="task, which fixes the data format, prompt and metric")
    run.add_argument("--data", required=True, help="dataset file or folder in the task's format (docs/formats.md)")
    run.add_argument("--shots", type=non_negative_int, nargs="+", default=[0, 4, 8], help="shot counts (0 = two text-only demos)")
    run.add_argument("--zero-shot-demos", type=positive_int, default=ZERO_SHOT_DEMOS,
                     help=f"text-only demonstrations of a 0-shot prompt (default {ZERO_SHOT_DEMOS}, the paper's; with "
                          "one, the paper says, the model copies it)")
    run.add_argument("--selection", nargs="+", default=["random"], choices=SELECTIONS,
                     help="demonstration selection: random, rices (most similar images), balanced (classify: "
                          "every class in equal numbers, min(k, classes) classes)")
    run.add_argument("--trials", type=positive_int, default=3,
                     help="seeded trials for random and balanced selection (mean and std over trials; the CI resamples them too)")
    run.add_argument("--nonce-labels", action="store_true",
                     help="classify with novel labels: every class renamed with a nonce word drawn per query "
                          "(Frozen's fast concept binding); the true names never appear in the prompt")
    run.add_argument("--nonce-words", default=None, metavar="PATH",
                     help="text file, one nonce word per line, replacing the built-in list (with --nonce-labels)")
    run.add_argument("--bootstrap", type=positive_int, default=N_BOOTSTRAP, metavar="B",
                     help="bootstrap resamples of the 95%% confidence interval over queries and trials")
    run.add_argument("--ensemble", type=positive_int, nargs="?", const=DEFAULT_ENSEMBLE, default=1,
                     help=f"average over this many demonstration orderings (classify; bare flag = {DEFAULT_ENSEMBLE})")
    run.add_argument("--limit", type=positive_int, default=None, help="evaluate N queries spread evenly over the query set (every class of a class-sorted set)")
    run.add_argument("--out", default="runs/fewshot", help="output folder: predictions/, results.json/.md/.png")
    run.add_argument("--resume", nargs="?", const="latest", choices=["latest"], default=None,
                     help="continue the evaluation in --out (or add another task to it), same model only; "
                          "'--resume latest' as in the training commands")
    run.add_argument("--overwrite", action="store_true",
                     help="delete the previous evaluation's outputs in --out and start again (or write into a "
                          "non-empty folder that is not an evaluation; its files are kept)")
    run.add_argument("--split", default=None, help="query split (default: test for caption if present, else val)")
    run.add_argument("--support-split", default=None, help="support split demonstrations come from (default: train)")
    run.add_argument("--batch-size", type=positive_int, default=8, help="queries per generation batch")
    run.add_argument("--num-beams", type=positive_int, default=3, help="beams for open-ended decoding")
    run.add_argument("--max-new-tokens", type=positive_int, default=None, help="generation length (default per task)")
    run.add_argument("--template", default=None, help="prompt template, e.g. '<image>Q: {question} A: {answer}<EOC>'")
    run.add_argument("--image-template", default="images/{image_id:012d}.png", help="VQA image path template")
    run.add_argument("--cache-dir", default=None, help="RICES feature cache (default: <out>/cache)")
    run.add_argument("--seed", type=int, default=0, help="seed of random selection and ensembling")
    run.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def load_model(model_dir: str, device: str | None = None):
    """The model behind ``--model`` (a seam tests replace with a fake)."""
    from fewshot_eval.model import FlamingoEvalModel

    return FlamingoEvalModel(model_dir, device=device)


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


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as e:  # the parser has printed its one line (or --help); return its code like the others
        return int(e.code or 0)
    from fewshot_eval.evaluate import OUTPUT_NAMES, check_context, claim_output, evaluate, prepare_data
    from fewshot_eval.model import resolve_device
    from fewshot_eval.report import markdown_table

    try:
        args.resume = args.resume is not None
        if args.resume and args.overwrite:
            raise ValueError("--resume and --overwrite exclude each other: continue the evaluation, or start again")
        if args.ensemble > 1 and args.task != "classify":
            # one flag set can then drive every task (as tools/run_pipeline.py does)
            print(f"fewshot-eval: note: --ensemble applies to 'classify' only; ignored for {args.task!r}", file=sys.stderr)
            args.ensemble = 1
        if not Path(args.model).is_dir():
            raise ModelLoadError(f"--model {args.model}: no such folder (expected a saved Flamingo model)")
        if args.device is not None:
            resolve_device(args.device)  # a missing GPU is named before the data is read
        labels = "nonce" if args.nonce_labels else "true"
        plan = dict(selection=args.selection, labels=labels, nonce_words=args.nonce_words,
                    zero_shot_demos=args.zero_shot_demos)
        data = prepare_data(args.task, args.data, args.shots, args.split, args.support_split, args.limit,
                            args.image_template, **plan)  # fmt: skip
        if args.cache_dir is not None:  # a file or read-only folder fails now, not after the first predictions
            check_writable_dir(args.cache_dir, "--cache-dir")
        problem = check_context(load_token_counter(args.model), data, args.shots, trials=args.trials,
                                template=args.template, max_new_tokens=args.max_new_tokens, seed=args.seed, **plan)
        if problem:  # before the weights load: 32 shots that cannot fit should not cost a model load first
            raise ValueError(problem)
        # claimed once the inputs are known good, so that a typo in --data does not leave a run folder behind
        claim_output(args.out, COMMAND, OUTPUT_NAMES, resume=args.resume, overwrite=args.overwrite)
        _note_skipped(data)  # after the checks: a refused run prints its one error line only
        model = load_model(args.model, args.device)
        results = evaluate(
            model, args.task, data, args.shots, trials=args.trials, ensemble=args.ensemble,
            out_dir=args.out, resume=args.resume, batch_size=args.batch_size, num_beams=args.num_beams,
            max_new_tokens=args.max_new_tokens, template=args.template, cache_dir=args.cache_dir,
            seed=args.seed, progress=not args.no_progress, n_bootstrap=args.bootstrap, **plan,
        )  # fmt: skip
    except (DataError, ModelLoadError, ValueError, FileNotFoundError) as e:
        print(f"fewshot-eval: error: {e}", file=sys.stderr)
        return 2
    if results:
        print(markdown_table(results))
        n = results[0]["n"]
        print(f"Evaluated {args.task} on {n} queries for shots {args.shots} with {', '.join(args.selection)}; "
              f"results in {Path(args.out) / 'results.json'}, table in results.md, plot in results.png.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
