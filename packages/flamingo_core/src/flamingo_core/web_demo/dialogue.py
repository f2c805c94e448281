"""One turn of the web demo's visual dialogue (arXiv 2204.14198, Figure 1): the turn's media placed in the
conversation (``cli.Conversation``, the prompt ``flamingo chat`` builds), the answer decoded by ``cli.answer``
(the path of ``flamingo generate``) and streamed as it is generated where the decoding allows it (greedy and
sampling; beam search shows the answer at the end), and the model's tanh gates."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ..cli import Conversation, UserError, answer

__all__ = ["DECODING_MODES", "Decoding", "gate_values", "gate_table", "prompt_text", "respond", "stream_answer"]

DECODING_MODES = ("greedy", "beam search", "sampling")


@dataclass
class Decoding:
    """The page's decoding settings; ``args`` turns them into the CLI's decoding flags."""

    mode: str = "greedy"  # one of DECODING_MODES
    max_new_tokens: int = 30  # most tokens generated per answer
    num_beams: int = 3  # beam search width (beam search only)
    temperature: float = 1.0  # sampling only
    top_k: int = 0  # sampling: the k most likely tokens (0 = all)
    top_p: float = 1.0  # sampling: nucleus threshold in (0, 1]
    seed: int = 0  # sampling

    def args(self, base: argparse.Namespace) -> argparse.Namespace:
        """``base`` (the command line's flags) with these settings over it, for ``cli.decoding_options``."""
        if self.mode not in DECODING_MODES:
            raise UserError(f"decoding mode {self.mode!r}: expected one of {', '.join(DECODING_MODES)}")
        values = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams, "top_k": self.top_k,
                  "seed": self.seed}
        for name, value in values.items():
            if value is None or float(value) != int(value):
                raise UserError(f"{name.replace('_', ' ')} must be a whole number, got {value}")
        return argparse.Namespace(**{
            **vars(base), "sample": self.mode == "sampling", "max_new_tokens": int(self.max_new_tokens),
            "num_beams": int(self.num_beams) if self.mode == "beam search" else 1,
            "temperature": float(self.temperature), "top_k": int(self.top_k), "top_p": float(self.top_p),
            "seed": int(self.seed), "num_return_sequences": 1,
        })

    @property
    def streams(self) -> bool:
        return self.mode != "beam search"  # transformers streams one sequence, not a beam


def stream_answer(model, items: list, args: argparse.Namespace, stream: bool) -> Iterator[str]:
    """The answer to an interleaved prompt: its text so far while it is generated (``stream``), then the reply
    exactly as ``flamingo generate`` prints it (``cli.answer``). Raises ``UserError`` for a prompt or options the
    model refuses (longer than its context, ...)."""
    if not stream:
        yield answer(model, items, args)[0]
        return
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(model.tokenizer, skip_prompt=True, skip_special_tokens=True)
    result: dict = {}

    def work() -> None:
        try:
            result["reply"] = answer(model, items, args, streamer=streamer)[0]
        except BaseException as e:  # re-raised in the page's thread below
            result["error"] = e
        finally:
            streamer.end()  # unblocks the reader when generate failed before streaming anything

    thread = threading.Thread(target=work, name="flamingo-demo-generate", daemon=True)
    thread.start()
    text = ""
    for piece in streamer:
        text += piece
        if text.strip():
            yield text.lstrip()
    thread.join()
    if "error" in result:
        raise result["error"]
    yield result["reply"]


def respond(model, conv: Conversation, text: str, media: list, args: argparse.Namespace,
            stream: bool) -> Iterator[tuple[str, str]]:
    """Answer ``text`` after this turn's ``media`` (at its ``<image>`` markers, or before the text without any),
    yielding (the prompt as ``prompt_text`` writes it, the reply as ``stream_answer`` yields it); the turn joins
    ``conv`` once answered. A turn that fails (or is stopped) leaves ``conv`` as it was, to be sent again."""
    token = model.config.media_token
    kept_images, kept_pending = len(conv.images), conv.pending
    reply = None
    try:
        if token in text:
            if text.count(token) != len(media):
                raise UserError(f"{text.count(token)} {token} markers in the message but {len(media)} files "
                                "attached (each marker takes the next file; without markers they go first)")
            conv.images.extend(media)
        else:
            for item in media:
                conv.add_image(item)
        items = conv.items(text)
        prompt = prompt_text(items, token)
        for reply in stream_answer(model, items, args, stream):
            yield prompt, reply
    except BaseException:
        del conv.images[kept_images:]
        conv.pending = kept_pending
        raise
    conv.add_turn(text, reply)


def prompt_text(items: list, media_token: str) -> str:
    """The prompt as ``flamingo generate --prompt`` takes it: the text with ``<image>`` where each media goes."""
    return "".join(item if isinstance(item, str) else media_token for item in items)


def gate_values(model) -> list[tuple[int, int, float, float]]:
    """(block, LM layer it precedes, tanh(alpha_xattn), tanh(alpha_dense)) for each gated cross-attention block
    (Figure 5: at tanh(0) = 0 the block leaves the frozen LM's output unchanged)."""
    import torch

    rows = []
    for block_index, (layer, block) in enumerate(zip(model.xattn_layer_indices, model.xattn_layers)):
        with torch.no_grad():
            xattn, dense = (float(torch.tanh(p.detach().float()).reshape(-1)[0])
                            for p in (block.alpha_xattn, block.alpha_dense))
        rows.append((block_index, int(layer), xattn, dense))
    return rows


def gate_table(model) -> str:
    """``gate_values`` as a Markdown table."""
    lines = ["| block | LM layer | xattn | dense |", "| --- | --- | --- | --- |"]  # tanh(alpha_xattn), ..._dense
    lines += [f"| {b} | {layer} | {x:+.4f} | {d:+.4f} |" for b, layer, x, d in gate_values(model)]
    return "\n".join(lines)
