"""``flamingo`` command line: ``generate`` (one prompt with images), ``chat`` (a terminal visual dialogue, as the
paper's dialogue examples, arXiv 2204.14198 Figure 1), ``demo`` (the same in a web page, ``flamingo_core.web_demo``),
``convert-openflamingo`` (an OpenFlamingo checkpoint to a saved model, ``flamingo_core.openflamingo``) and ``train``
(flamingo_core.train)."""

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



def _add_model_args(p: argparse.ArgumentParser, num_beams: int) -> None:
    p.add_argument("--model", required=True, help="saved Flamingo folder (save_pretrained) or a preset name")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--max-new-tokens", type=positive_int, default=30, help="most tokens generated per answer")
    p.add_argument("--min-new-tokens", type=non_negative_int, default=0,
                   help="stop tokens are banned before this many new tokens")
    p.add_argument("--num-beams", type=positive_int, default=num_beams,
                   help=f"beam search width (the paper uses 3); 1 = greedy (default {num_beams})")
    p.add_argument("--length-penalty", type=float, default=1.0,
                   help="beam search: hypotheses ranked by sum logprob / length ** this (transformers' default 1)")
    p.add_argument("--repetition-penalty", type=positive_float, default=1.0,
                   help="divide the logits of tokens already in the sequence by this (> 0; 1 = none)")
    p.add_argument("--no-repeat-ngram-size", type=non_negative_int, default=0,
                   help="never repeat an n-gram of this size (0 = no constraint)")
    p.add_argument("--stop-string", action="append", default=[],
                   help="stop once the answer contains this text (kept in the answer); repeat for several")
    p.add_argument("--sample", action="store_true", help="sample instead of beam search / greedy")
    p.add_argument("--temperature", type=positive_float, default=1.0, help="sampling temperature (> 0)")
    p.add_argument("--top-k", type=non_negative_int, default=0, help="sample from the k most likely tokens (0 = all)")
    p.add_argument("--top-p", type=positive_fraction, default=1.0, help="nucleus sampling threshold in (0, 1]")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling")


def add_dialogue_args(p: argparse.ArgumentParser) -> None:
    """How the turns of a dialogue (``chat``, ``demo``) are formatted."""
    p.add_argument("--plain-prompt", action="store_true",
                   help="format turns with --user-prefix / --assistant-prefix even when the LM's tokenizer has a "
                        "chat template")
    p.add_argument("--user-prefix", default="User:", help="text before each user turn (without a chat template)")
    p.add_argument("--assistant-prefix", default="Assistant:",
                   help="text before each model answer (without a chat template; chat prints it before answers)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="flamingo", description="Flamingo visual language model")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate text for a prompt with images")
    _add_model_args(gen, num_beams=3)
    gen.add_argument("--image", action="append", default=[], help="image file; repeat for several images")
    gen.add_argument("--prompt", required=True,
                     help="text; each <image> marks where the next --image goes (default: images first)")
    gen.add_argument("--num-return-sequences", type=positive_int, default=1,
                     help="answers printed, one a line (at most --num-beams, or any number with --sample)")
    chat = sub.add_parser("chat", help="multi-turn visual dialogue in the terminal (/image PATH, /reset, /quit)")
    _add_model_args(chat, num_beams=1)  # greedy by default: the answer streams as it is generated
    add_dialogue_args(chat)
    demo = sub.add_parser("demo", help="web page: dialogue with images and videos, few-shot prompts, the gates "
                                       "(Gradio, the [demo] extra; serves on 127.0.0.1 by default)")
    _add_model_args(demo, num_beams=1)  # the page's initial decoding settings; greedy streams
    from .web_demo import add_demo_arguments

    add_demo_arguments(demo)
    sub.add_parser("train", help="train a Flamingo model (see `flamingo train --help`)", add_help=False)
    from .openflamingo import add_convert_parser

    add_convert_parser(sub)
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


class Conversation:
    """The dialogue so far, as the prompt of the next answer: each image where it was added (``<image>``), the
    user turns and the answers, formatted with the LM tokenizer's chat template when ``tokenizer`` is given
    (``<image>`` markers kept in the user turns) or with plain prefixes (``User: ... Assistant: ... <EOC>``)."""

    def __init__(self, media_token: str, eoc_token: str, user_prefix: str, assistant_prefix: str, tokenizer=None):
        self.media_token, self.eoc, self.tokenizer = media_token, eoc_token, tokenizer
        self.user_prefix, self.assistant_prefix = user_prefix, assistant_prefix
        self.reset()

    def reset(self) -> None:
        self.images: list = []
        self.turns: list[tuple[int, str, str]] = []  # (images added before the turn, user text, answer)
        self.pending = 0  # images added since the last turn

    def add_image(self, image) -> None:
        self.images.append(image)
        self.pending += 1

    def add_turn(self, line: str, reply: str) -> None:
        self.turns.append((self.pending, line, reply))
        self.pending = 0

    def items(self, line: str) -> list:
        """The interleaved prompt (text and images) for an answer to ``line``."""
        text = self._render([*self.turns, (self.pending, line, None)])
        pieces = text.split(self.media_token)
        if len(pieces) - 1 != len(self.images):
            raise UserError(f"{len(pieces) - 1} {self.media_token} markers in the conversation but "
                            f"{len(self.images)} images added (/image PATH adds one)")
        items = [pieces[0]]
        for image, piece in zip(self.images, pieces[1:]):
            items += [image, piece]
        return items

    def _render(self, turns: list) -> str:
        if self.tokenizer is None:
            return "".join(f"{self.media_token * n}{self.user_prefix} {line} {self.assistant_prefix}"
                           + ("" if reply is None else f" {reply}{self.eoc}") for n, line, reply in turns)
        messages = []
        for n, line, reply in turns:
            messages.append({"role": "user", "content": self.media_token * n + line})
            if reply is not None:
                messages.append({"role": "assistant", "content": reply})
        from jinja2 import TemplateError

        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except (TemplateError, ValueError) as e:  # a template's own error (raise_exception, a role it refuses)
            raise UserError(f"the tokenizer's chat template failed: {first_line(e)} (--plain-prompt skips it)") from e
        bos = self.tokenizer.bos_token
        return text[len(bos):] if bos and text.startswith(bos) else text  # the processor adds the start token


def decoding_options(args) -> dict:
    """``generate``'s keywords from the decoding flags. Sampling replaces beam search, and its flags are passed
    only with --sample (transformers warns about sampling options on greedy or beam search)."""
    beams = 1 if args.sample else args.num_beams
    opts = {"max_new_tokens": args.max_new_tokens, "min_new_tokens": args.min_new_tokens, "num_beams": beams,
            "repetition_penalty": args.repetition_penalty, "no_repeat_ngram_size": args.no_repeat_ngram_size,
            "num_return_sequences": getattr(args, "num_return_sequences", 1)}
    if beams > 1:
        opts["length_penalty"] = args.length_penalty
    if args.stop_string:
        opts["stop_strings"] = list(args.stop_string)
    if args.sample:
        opts.update(do_sample=True, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                    seed=args.seed)
    return opts


def answer(model, items: list, args, streamer=None) -> list[str]:
    """The replies (``--num-return-sequences`` of them) to an interleaved prompt. A prompt the model cannot take
    (``<image>`` markers without their images, longer than the LM's context with ``--max-new-tokens``) or decoding
    options that do not go together are a ``UserError``: the processor and ``generate`` check them and say why."""
    processor = model.processor
    try:
        enc = processor([items], padding_side="left")
        out = model.generate(
            enc["input_ids"], enc["attention_mask"], enc["media"], media_mask=enc["media_mask"],
            media_frame_mask=enc["media_frame_mask"], streamer=streamer, **decoding_options(args),
        )
    except ValueError as e:
        raise UserError(first_line(e)) from e
    return [text.strip() for text in processor.decode(out)]


def run_generate(args) -> int:
    model = load_model(args.model, args.device)
    images = [load_image(p) for p in args.image]
    for reply in answer(model, build_items(args.prompt, images, model.config.media_token), args):
        print(reply)
    return 0


def _reply_streamer(tokenizer, prefix: str):
    """A transformers ``TextStreamer`` printing ``prefix`` and the answer as it is generated (the prompt and
    special tokens skipped, the answer's leading space dropped). The prefix waits for the first text, so a turn
    refused before decoding prints its error line only."""
    from transformers import TextStreamer

    class ReplyStreamer(TextStreamer):
        prefix_printed = text_started = False

        def on_finalized_text(self, text: str, stream_end: bool = False):
            if not self.prefix_printed:
                print(prefix, end=" ", flush=True)
                self.prefix_printed = True
            if not self.text_started:
                text = text.lstrip()
                self.text_started = bool(text)
            super().on_finalized_text(text, stream_end)

    return ReplyStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def run_chat(args, stdin=None) -> int:
    """A terminal dialogue. A bad image or a turn the model cannot take prints one error line and the
    conversation goes on without it: a turn past the LM's context is refused (not silently cut), /reset frees
    the context. Greedy or sampled answers stream as they are generated; beam search prints them at the end."""
    stdin = stdin or sys.stdin
    model = load_model(args.model, args.device)
    template = None if args.plain_prompt else getattr(model.tokenizer, "chat_template", None)
    conv = Conversation(model.config.media_token, model.config.eoc_token, args.user_prefix, args.assistant_prefix,
                        tokenizer=model.tokenizer if template else None)
    stream = args.sample or args.num_beams == 1
    print("Flamingo chat. /image PATH adds an image, /reset starts over, /quit ends.", flush=True)
    for line in stdin:
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line == "/reset":
            conv.reset()
            print("(conversation cleared)", flush=True)
            continue
        if line.startswith("/image"):
            path = line[len("/image"):].strip()
            try:
                conv.add_image(load_image(path))
            except UserError as e:
                print(f"error: {e}", flush=True)
                continue
            print(f"(image {len(conv.images)} loaded: {path})", flush=True)
            continue
        streamer = _reply_streamer(model.tokenizer, args.assistant_prefix) if stream else None
        try:
            reply = answer(model, conv.items(line), args, streamer=streamer)[0]
        except UserError as e:
            print(f"error: {e}; this turn was not added (/reset starts over)", flush=True)
            continue
        conv.add_turn(line, reply)
        if not stream:
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
    if args.command == "convert-openflamingo":
        from .openflamingo import run_convert

        return run_convert(args)  # its own one-line errors, exit 2
    try:
        if args.command == "generate":
            return run_generate(args)
        if args.command == "demo":
            from .web_demo import run_demo

            return run_demo(args)
        return run_chat(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
