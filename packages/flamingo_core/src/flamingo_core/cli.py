"""``flamingo`` command line: ``generate`` (one prompt with images), ``chat`` (a terminal visual dialogue, as the
paper's dialogue examples, arXiv 2204.14198 Figure 1) and ``train`` (flamingo_core.train)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contrastive_encoder.shared.argtypes import (
    OneLineParser,
    non_negative_int,
    positive_float,
    positive_fraction,
    positive_int,
)
from contrastive_encoder.shared.readers import first_line

__all__ = ["main"]


class UserError(Exception):
    """An expected mistake in the command line: printed as one line, exit code 2."""



def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="saved Flamingo folder (save_pretrained) or a preset name")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--max-new-tokens", type=positive_int, default=30, help="most tokens generated per answer")
    p.add_argument("--num-beams", type=positive_int, default=3,
                   help="beam search width (the paper uses 3); 1 = greedy")
    p.add_argument("--sample", action="store_true", help="sample instead of beam search / greedy")
    p.add_argument("--temperature", type=positive_float, default=1.0, help="sampling temperature (> 0)")
    p.add_argument("--top-k", type=non_negative_int, default=0, help="sample from the k most likely tokens (0 = all)")
    p.add_argument("--top-p", type=positive_fraction, default=1.0, help="nucleus sampling threshold in (0, 1]")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="flamingo", description="Flamingo visual language model")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate text for a prompt with images")
    _add_model_args(gen)
    gen.add_argument("--image", action="append", default=[], help="image file; repeat for several images")
    gen.add_argument("--prompt", required=True,
                     help="text; each <image> marks where the next --image goes (default: images first)")
    chat = sub.add_parser("chat", help="multi-turn visual dialogue in the terminal (/image PATH, /reset, /quit)")
    _add_model_args(chat)
    chat.add_argument("--user-prefix", default="User:", help="text before each user turn")
    chat.add_argument("--assistant-prefix", default="Assistant:", help="text before each model answer")
    sub.add_parser("train", help="train a Flamingo model (see `flamingo train --help`)", add_help=False)
    return parser.parse_args(argv)


def load_model(name: str, device: str):
    import torch

    from .config import load_config
    from .factory import create_model
    from .flamingo import Flamingo

    try:
        if Path(name).is_dir():
            model = Flamingo.from_pretrained(name)
        else:
            config = load_config(name)  # an unknown name fails here, before the note
            print(f"note: '{name}' is not a saved model folder; building preset '{name}' with untrained "
                  "Flamingo layers", file=sys.stderr)
            model = create_model(config)
    except ValueError as e:  # the readers' CorruptFileError and PretrainedError name the file / the model
        raise UserError(first_line(e)) from e
    except OSError as e:
        raise UserError(f"cannot load model '{name}': {first_line(e)}") from e
    try:
        return model.to(torch.device(device)).eval()
    except (RuntimeError, AssertionError) as e:
        raise UserError(f"cannot use device '{device}': {first_line(e)}") from e


def load_image(path: str):
    """Open an image as the training data loader does (``shared.media.load_image``: decompression bombs refused)."""
    from contrastive_encoder.shared.media import MediaError
    from contrastive_encoder.shared.media import load_image as decode

    try:
        return decode(path)
    except MediaError as e:
        raise UserError(str(e)) from e


def build_items(prompt: str, images: list, media_token: str) -> list:
    """Place images at the ``<image>`` markers of the prompt, or all before it when it has none."""
    if media_token not in prompt:
        return [*images, prompt]
    pieces = prompt.split(media_token)
    if len(pieces) - 1 != len(images):
        raise UserError(f"{len(pieces) - 1} {media_token} markers in --prompt but {len(images)} --image given")
    items = [pieces[0]]
    for image, text in zip(images, pieces[1:]):
        items += [image, text]
    return items


def answer(model, items: list, args) -> str:
    """One reply to an interleaved prompt. A prompt the model cannot take (``<image>`` markers without their
    images, longer than the LM's context with ``--max-new-tokens``) is a ``UserError``: the processor and
    ``generate`` check it and say why."""
    import torch

    processor = model.processor
    try:
        enc = processor([items], padding_side="left")
        gen = torch.Generator(device=model.device).manual_seed(args.seed)
        out = model.generate(
            enc["input_ids"], enc["attention_mask"], enc["media"], media_mask=enc["media_mask"],
            media_frame_mask=enc["media_frame_mask"], max_new_tokens=args.max_new_tokens,
            num_beams=1 if args.sample else args.num_beams, do_sample=args.sample, temperature=args.temperature,
            top_k=args.top_k, top_p=args.top_p, generator=gen,
        )
    except ValueError as e:
        raise UserError(first_line(e)) from e
    return processor.decode(out)[0].strip()


def run_generate(args) -> int:
    model = load_model(args.model, args.device)
    images = [load_image(p) for p in args.image]
    print(answer(model, build_items(args.prompt, images, model.config.media_token), args))
    return 0


def run_chat(args, stdin=None) -> int:
    """A terminal dialogue. A bad image or a turn the model cannot take prints one error line and the
    conversation goes on without it: a turn past the LM's context is refused (not silently cut), /reset frees
    the context."""
    stdin = stdin or sys.stdin
    model = load_model(args.model, args.device)
    eoc = model.config.eoc_token
    history: list = []
    print("Flamingo chat. /image PATH adds an image, /reset starts over, /quit ends.", flush=True)
    for line in stdin:
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line == "/reset":
            history = []
            print("(conversation cleared)", flush=True)
            continue
        if line.startswith("/image"):
            path = line[len("/image"):].strip()
            try:
                history.append(load_image(path))
            except UserError as e:
                print(f"error: {e}", flush=True)
                continue
            print(f"(image {sum(not isinstance(h, str) for h in history)} loaded: {path})", flush=True)
            continue
        turn = f"{args.user_prefix} {line} {args.assistant_prefix}"
        try:
            reply = answer(model, [*history, turn], args)
        except UserError as e:
            print(f"error: {e}; this turn was not added (/reset starts over)", flush=True)
            continue
        history += [turn, f" {reply}{eoc}"]
        print(f"{args.assistant_prefix} {reply}", flush=True)
    return 0


def run_train(argv: list[str]) -> int:
    try:
        from .train import main as train_main
    except ImportError:
        print("error: flamingo train is not available yet (flamingo_core.train is missing)", file=sys.stderr)
        return 2
    return train_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        return run_train(argv[1:])
    try:
        args = parse_args(argv)
    except SystemExit as e:  # argparse has printed its one line (or --help); return its code like the others
        return int(e.code or 0)
    try:
        if args.command == "generate":
            return run_generate(args)
        return run_chat(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
