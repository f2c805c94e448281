"""``contrastive-encoder train | eval | export``: the command line of stage 1.

``train``'s flags and defaults are ``TrainConfig``'s fields (``train_config.py``): the ``nano-minilm`` preset on
the ShapesWorld pairs written by ``tools/shapesworld`` under ``data/world``, evaluated zero-shot on its held-out
colour and shape images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .shared.argtypes import OneLineParser, positive_int
from .shared.command import run_command
from .shared.configcli import add_config_arguments, config_from_args
from .train_config import WORLD, TrainConfig

__all__ = ["main", "parse_args"]


def _train_parser(sub) -> None:
    # every flag and default comes from TrainConfig's fields (shared/configcli.py): the API trains the same run
    p = sub.add_parser("train", help="contrastive pretraining of a dual encoder")
    add_config_arguments(p, TrainConfig)


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
    from .shared.checkpoint import is_checkpoint, latest_checkpoint

    p = Path(path)
    if is_checkpoint(p):
        return str(p / "model")
    if (p / "checkpoints").is_dir():
        ckpt = latest_checkpoint(p)
        if ckpt is None:
            raise FileNotFoundError(f"{p}: no complete checkpoint under {p / 'checkpoints'}")
        return str(ckpt / "model")
    return path


def _train(args: argparse.Namespace) -> int:
    from .train import train

    cfg, default = config_from_args(TrainConfig, args), TrainConfig()
    default_data = cfg.data == default.data
    if default_data:  # ShapesWorld's LTIP (long captions) and ALIGN (short alt-texts): those written
        cfg.data = [d for d in cfg.data if Path(d).exists()] or cfg.data[:1]
    if cfg.zero_shot == default.zero_shot:  # its held-out colour and shape sets, when written
        cfg.zero_shot = [z for z in cfg.zero_shot if Path(z).is_dir()]
    missing = [d for d in cfg.data if not d.startswith("hf:") and not any(c in d for c in "*?[") and not Path(d).exists()]
    if missing:
        hint = f" (generate ShapesWorld with `python tools/shapesworld --out {WORLD}`)" if default_data else ""
        raise FileNotFoundError(f"training data not found: {', '.join(missing)}{hint}")
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
    commands = {"train": _train, "eval": _eval, "export": _export}
    return run_command(lambda args: f"contrastive-encoder {args.command}", lambda: parse_args(argv),
                       lambda args: commands[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
