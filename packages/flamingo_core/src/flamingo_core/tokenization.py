"""Tokenizers for Flamingo: adding the ``<image>`` and ``<EOC>`` tokens (arXiv 2204.14198, Figure 7), and a
file-free byte-level tokenizer for the ``tiny`` preset and tests.
"""

from __future__ import annotations

__all__ = ["add_flamingo_tokens", "build_byte_tokenizer", "load_flamingo_tokenizer"]


def build_byte_tokenizer():
    """A byte-level tokenizer with 256 byte tokens and ``<|endoftext|>`` (id 256) as BOS/EOS/pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    # the ByteLevel alphabet is the GPT-2 bytes->unicode map; order it by byte value for stable ids
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_to_char = {b: chr(c) for b, c in zip(bs, cs)}
    assert set(byte_to_char.values()) == set(alphabet)
    vocab = {byte_to_char[b]: b for b in range(256)}
    vocab["<|endoftext|>"] = 256
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def add_flamingo_tokens(tokenizer, media_token: str = "<image>", eoc_token: str = "<EOC>") -> list[int]:
    """Add the media and end-of-chunk tokens (as special tokens) and a pad token if missing; return their ids.

    A tokenizer without a pad token gets its EOS as pad: padding is then masked with the attention mask only,
    never by token id.
    """
    from tokenizers import AddedToken

    new = [t for t in (media_token, eoc_token) if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in new], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return [tokenizer.convert_tokens_to_ids(t) for t in (media_token, eoc_token)]


def load_flamingo_tokenizer(name: str):
    """``byte`` = the built-in byte tokenizer; anything else goes to ``contrastive_encoder.shared.pretrained``."""
    if name == "byte":
        return build_byte_tokenizer()
    from contrastive_encoder.shared.pretrained import load_tokenizer

    return load_tokenizer(name)
