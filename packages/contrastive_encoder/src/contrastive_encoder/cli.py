"""``contrastive-encoder train | eval | export``: the command line of stage 1.

Defaults train the ``nano-minilm`` preset on the ShapesWorld pairs written by ``tools/shapesworld.py`` under
``data/world`` and evaluate zero-shot colour and shape classification on its held-out images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .data.mixing import STRATEGIES
from .shared.argtypes import OneLineParser, non_negative_float, non_negative_int, positive_float, positive_int
from .shared.nonfinite import EXIT_NONFINITE, NonFiniteLossError
from .shared.pretrained import PretrainedError
from .shared.records import BadSampleError

__all__ = ["main", "parse_args"]

WORLD = Path("data/world")


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="contrastive pretraining of a dual encoder")
    p.add_argument("--model", default="nano-minilm", help="preset name, preset JSON, or saved model folder")
    p.add_argument("--data", action="append", default=None,
                   help="pair source, repeatable: file.jsonl, shard.tar / shard folder / glob, or hf:<dataset>[:split] "
                        f"(default {WORLD}/ltip/train.jsonl and {WORLD}/align/train.jsonl, as the paper's LTIP + ALIGN)")
    p.add_argument("--data-weights", type=non_negative_float, nargs="+", default=None, help="one weight per --data (default 1 each)")
    p.add_argument("--strategy", choices=STRATEGIES, default="accumulation", help="how several datasets are combined")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="global batch size of one micro-batch of one dataset (all processes)")
    p.add_argument("--accum-steps", type=positive_int, default=1, help="micro-batches per dataset per optimizer step")
    p.add_argument("--steps", type=positive_int, default=1800, help="optimizer steps (the default takes about 9 minutes on 2 idle cores)")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw", help="optimizer (sgd: plain, for ablations)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate")
    p.add_argument("--text-lr", type=positive_float, default=None, help="peak learning rate of the text tower (default --lr)")
    p.add_argument("--weight-decay", type=non_negative_float, default=0.05, help="AdamW weight decay on weight matrices")
    p.add_argument("--warmup-steps", type=non_negative_int, default=50, help="linear warmup steps")
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine", help="learning-rate schedule after warmup")
    p.add_argument("--grad-clip", type=non_negative_float, default=1.0, help="max gradient norm (0 disables)")
    p.add_argument("--agc", type=non_negative_float, default=0.0, help="adaptive gradient clipping factor for the NFNet (0 disables)")
    p.add_argument("--lock-text", action=argparse.BooleanOptionalAction, default=None,
                   help="freeze the text encoder (its projection still trains); default: frozen when pretrained")
    p.add_argument("--no-text-cache", dest="text_cache", action="store_false",
                   help="recompute a frozen text encoder's outputs instead of caching them per caption")
    p.add_argument("--local-loss", action="store_true", help="score local rows only against the global batch")
    p.add_argument("--image-size", type=positive_int, default=None, help="override the preset's resolution")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="disable colour jitter and flips")
    p.add_argument("--no-swap-lr", dest="swap_lr", action="store_false",
                   help="do not swap left/right words in captions of flipped images")
    p.add_argument("--strict", action="store_true", help="fail on the first corrupt/missing image, naming the file")
    p.add_argument("--seed", type=int, default=0, help="init, shuffling and augmentation seed")
    p.add_argument("--workers", type=non_negative_int, default=1, help="DataLoader worker processes")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto", help="autocast precision")
    p.add_argument("--out", default="runs/contrastive", help="run folder (checkpoints, metrics.jsonl, summary.json)")
    p.add_argument("--save-every", type=non_negative_int, default=200, help="checkpoint every N steps (and at the end)")
    p.add_argument("--keep", type=non_negative_int, default=2, help="checkpoints to keep (0 keeps all)")
    p.add_argument("--resume", default=None, help="'latest' or a checkpoint folder to continue from")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in a folder holding a previous run (deletes that run's checkpoints and metrics, "
                        "nothing else), or write into a non-empty folder that is not a run; also applies to --export")
    p.add_argument("--stop-after", type=positive_int, default=None, help="stop after N steps in this run (preemption test)")
    p.add_argument("--max-minutes", type=non_negative_float, default=10.0,
                   help="wall-clock budget of the training loop; checkpoint and stop when spent (0: no budget)")
    p.add_argument("--log-every", type=positive_int, default=10, help="steps between metrics records")
    p.add_argument("--eval-every", type=non_negative_int, default=0, help="steps between zero-shot evaluations (0: at the end)")
    p.add_argument("--zero-shot", action="append", default=None,
                   help=f"class-folder or JSONL set for zero-shot eval, repeatable (default: {WORLD}/eval/colour/val "
                        f"and {WORLD}/eval/classify/val when they exist)")
    p.add_argument("--template", dest="templates", action="append", default=None,
                   help="prompt template with {class}, repeatable (default 'A photo of a {class}.')")
    p.add_argument("--eval-max-images", type=positive_int, default=500, help="cap on images per zero-shot set")
    p.add_argument("--export", default=None, help="also save the final model to this folder")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")


def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="zero-shot classification and retrieval recall")
    p.add_argument("--model", required=True, help="saved model folder, training checkpoint folder, or preset")
    p.add_argument("--zero-shot", action="append", default=[], help="class-folder or JSONL set, repeatable")
    p.add_argument("--retrieval", action="append", default=[],
                   help="JSONL (image, text|[texts]) or Karpathy JSON set for recall@1/5/10, repeatable")
    p.add_argument("--split", default="test",
                   help="Karpathy split for --retrieval (an error if the file has no image in it)")
    p.add_argument("--template", dest="templates", action="append", default=None,
                   help="prompt template with {class}, repeatable (default 'A photo of a {class}.')")
    p.add_argument("--max-images", type=positive_int, default=None, help="cap on images per set")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass")
    p.add_argument("--strict", action="store_true",
                   help="fail on the first bad row or unreadable image, naming the file (default: skip and count)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")


def _export_parser(sub) -> None:
    p = sub.add_parser("export", help="write a save_pretrained folder from a run or checkpoint")
    p.add_argument("--checkpoint", required=True, help="run folder (its latest checkpoint) or a checkpoint folder")
    p.add_argument("--out", required=True, help="destination folder (config.json + model.safetensors + tokenizer); "
                   "a previous export there is replaced, any other non-empty folder needs --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty folder that is not an export (only the exported files are replaced)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(prog="contrastive-encoder", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _eval_parser(sub)
    _export_parser(sub)
    return parser.parse_args(argv)


def _model_folder(path: str) -> str:
    """A training checkpoint holds its model in ``model/``; a run folder means its latest checkpoint."""
    from .shared.checkpoint import latest_checkpoint

    p = Path(path)
    if (p / "trainer_state.json").is_file():
        return str(p / "model")
    if (p / "checkpoints").is_dir():
        ckpt = latest_checkpoint(p)
        if ckpt is None:
            raise FileNotFoundError(f"{p}: no complete checkpoint under {p / 'checkpoints'}")
        return str(ckpt / "model")
    return path


def _train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train
    from .zero_shot import DEFAULT_TEMPLATES

    data = args.data
    if data is None:  # ShapesWorld's LTIP (long captions) and ALIGN (short alt-texts naming colour and shape)
        data = [str(WORLD / n / "train.jsonl") for n in ("ltip", "align") if (WORLD / n / "train.jsonl").exists()]
        data = data or [str(WORLD / "ltip" / "train.jsonl")]
    missing = [d for d in data if not d.startswith("hf:") and not any(c in d for c in "*?[") and not Path(d).exists()]
    if missing:
        hint = " (generate ShapesWorld with `python tools/shapesworld --out data/world`)" if args.data is None else ""
        raise FileNotFoundError(f"training data not found: {', '.join(missing)}{hint}")
    zero_shot = args.zero_shot
    if zero_shot is None:
        zero_shot = [str(WORLD / "eval" / n / "val") for n in ("colour", "classify") if (WORLD / "eval" / n / "val").is_dir()]
    fields = {k: v for k, v in vars(args).items() if k not in ("command", "data", "zero_shot", "templates")}
    if args.max_minutes is not None and args.max_minutes <= 0:
        fields["max_minutes"] = None
    cfg = TrainConfig(data=data, zero_shot=zero_shot, templates=args.templates or list(DEFAULT_TEMPLATES), **fields)
    train(cfg)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .factory import create_model
    from .shared.outputs import OutputError, atomic_write_text
    from .zero_shot import DEFAULT_TEMPLATES, retrieval_recall, zero_shot_classify

    if not args.zero_shot and not args.retrieval:
        raise ValueError("nothing to evaluate: give --zero-shot and/or --retrieval")
    if args.json and (Path(args.json).is_dir() or not Path(args.json).parent.is_dir()):
        # checked before the evaluation, so a bad --json does not cost its results
        raise OutputError(f"--json {args.json}: expected a file path in an existing folder")
    model = create_model(_model_folder(args.model)).eval()
    results = {}
    for path in args.zero_shot:
        results[f"zero_shot:{path}"] = r = zero_shot_classify(
            model, path, args.templates or DEFAULT_TEMPLATES, args.batch_size, args.max_images, strict=args.strict
        )
        print(f"zero-shot {path}: top1 {r['top1']:.1%}  top5 {r['top5']:.1%}  ({r['n']} images, {r['classes']} "
              f"classes{_skipped_note(r)})")
    for path in args.retrieval:
        results[f"retrieval:{path}"] = r = retrieval_recall(model, path, batch_size=args.batch_size,
                                                            max_images=args.max_images, split=args.split,
                                                            strict=args.strict)
        print(f"retrieval {path}: " + "  ".join(f"{k} {v:.1%}" for k, v in r.items() if "_r" in k)
              + f"  ({r['images']} images, {r['captions']} captions{_skipped_note(r)})")
    if args.json:
        try:
            atomic_write_text(args.json, json.dumps(results, indent=2))
        except OSError as e:
            raise OutputError(f"--json {args.json}: cannot write it ({e.strerror or e})") from e
    return 0


def _skipped_note(result: dict) -> str:
    n = result.get("skipped", 0)
    return f", {n} bad rows or unreadable images skipped" if n else ""


def _export(args: argparse.Namespace) -> int:
    from .model import DualEncoder
    from .shared.outputs import check_save_target

    check_save_target(args.out, args.overwrite)  # before loading: a refused --out costs nothing
    model = DualEncoder.from_pretrained(_model_folder(args.checkpoint))
    model.save_pretrained(args.out, overwrite=args.overwrite)
    print(f"exported {model.config.name} to {args.out} (load with contrastive_encoder.load_vision_encoder)")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as e:  # the parser has printed its one line (or --help): return its code like the others
        return int(e.code or 0)
    try:
        return {"train": _train, "eval": _eval, "export": _export}[args.command](args)
    except NonFiniteLossError as e:
        print(f"contrastive-encoder {args.command}: {e}", file=sys.stderr)
        return EXIT_NONFINITE
    except (FileNotFoundError, ValueError, BadSampleError, PretrainedError) as e:
        print(f"contrastive-encoder {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
