"""``generate``'s transformers options: with the gates at zero a Flamingo is its frozen LM (with the ``<image>`` /
``<EOC>`` rows in its matrices), so every option must give the tokens of transformers' own ``generate`` on that
plain LM; batched beam search gives each prompt its own result even when the stop tokens crowd the candidates;
streamers see what is returned; bad options are one-line errors."""

from __future__ import annotations

import copy

import pytest
import torch
from fc_helpers import diversify_lm, make_model, random_image
from torch import nn
from transformers import GenerationConfig
from transformers.generation.streamers import BaseStreamer

from flamingo_core.config import load_config
from flamingo_core.lm_adapter import find_decoder_layers

PROMPTS = [
    ["A photo:", random_image(1), "a red circle.<EOC>", random_image(2), "A photo:"],
    [random_image(3), "Question: what is it? Answer:"],
]


def plain_lm(model):
    """The frozen LM alone, its embedding (and head) grown by the Flamingo's new token rows: the model that a
    gate-zero Flamingo equals, ``<image>`` tokens included."""
    lm = copy.deepcopy(model.lm)
    parent, attr, layers = find_decoder_layers(lm)
    setattr(parent, attr, nn.ModuleList([getattr(layer, "decoder_layer", layer) for layer in layers]))
    ids = model.new_tokens.token_ids
    lm.resize_token_embeddings(model.vocab_size)
    with torch.no_grad():
        lm.get_input_embeddings().weight[ids] = model.new_tokens.input_rows
        if not model.new_tokens.tied:
            lm.get_output_embeddings().weight[ids] = model.new_tokens.output_rows
    return lm.eval()


@pytest.fixture(scope="module")
def pair():
    model = diversify_lm(make_model())  # gates at zero, as trained from scratch
    return model, plain_lm(model)


@pytest.fixture(scope="module")
def enc(pair):
    return pair[0].processor(PROMPTS, padding_side="left")


def reference(model, lm, enc, **options):
    """transformers' generate on the plain LM: the same stop ids and pad, ``<image>`` suppressed as Flamingo does."""
    options = {"eos_token_id": model.stop_token_ids, "pad_token_id": model.tokenizer.pad_token_id,
               "suppress_tokens": [model.media_token_id], "max_new_tokens": 12, **options}
    ids = enc["input_ids"]
    with torch.no_grad():
        return lm.generate(ids, attention_mask=enc["attention_mask"], **options)[:, ids.shape[1]:]


def ours(model, enc, **options):
    return model.generate(**enc, **{"max_new_tokens": 12, **options})


@pytest.mark.parametrize("options", [
    {"repetition_penalty": 1.8},
    {"no_repeat_ngram_size": 2},
    {"num_beams": 3},
    {"num_beams": 3, "length_penalty": 0.3, "early_stopping": True, "min_new_tokens": 4},
    {"num_beams": 3, "num_return_sequences": 2, "no_repeat_ngram_size": 3},
], ids=["repetition_penalty", "no_repeat_ngram", "beam3", "beam3_lp_early", "beam3_return2"])
def test_deterministic_options_equal_transformers(pair, enc, options):
    model, lm = pair
    expected = reference(model, lm, enc, **options)
    got = ours(model, enc, **options)
    assert torch.equal(got, expected), (got, expected)
    assert len(set(got.flatten().tolist())) > 6  # not a degenerate repetition


@pytest.mark.parametrize("options", [
    {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.9},
    {"do_sample": True, "top_k": 0, "num_return_sequences": 3},
    {"do_sample": True, "num_beams": 3, "num_return_sequences": 2, "temperature": 1.5},
], ids=["temperature_topk_topp", "return3", "beam_sample"])
def test_seeded_sampling_equals_transformers(pair, enc, options):
    model, lm = pair
    torch.manual_seed(7)
    expected = reference(model, lm, enc, **options)
    with_generator = ours(model, enc, generator=torch.Generator().manual_seed(7), **options)
    with_seed = ours(model, enc, seed=7, **options)
    torch.manual_seed(7)
    global_rng = ours(model, enc, **options)
    for got in (with_generator, with_seed, global_rng):
        assert torch.equal(got, expected), (got, expected)
    assert not torch.equal(ours(model, enc, seed=8, **options), expected)


def test_generation_config_with_keyword_override(pair, enc):
    model, lm = pair
    config = GenerationConfig(num_beams=3, repetition_penalty=1.8, max_new_tokens=5)
    got = model.generate(**enc, generation_config=config, num_beams=1, max_new_tokens=9)
    assert torch.equal(got, reference(model, lm, enc, repetition_penalty=1.8, max_new_tokens=9))
    assert config.num_beams == 3 and config.max_new_tokens == 5  # the caller's config is not changed


def test_stop_strings_stop_at_the_string(pair, enc):
    model, lm = pair
    tok = model.tokenizer
    first = enc["input_ids"][:1], enc["attention_mask"][:1]
    one = {"input_ids": first[0], "attention_mask": first[1], "media": enc["media"][:1],
           "media_mask": enc["media_mask"][:1], "media_frame_mask": enc["media_frame_mask"][:1]}
    free = ours(model, one)[0].tolist()
    text = tok.decode(free)
    stop = next(text[i:i + 2] for i in range(3, len(text) - 1) if text[i:i + 2].isascii() and text[i:i + 2].strip())
    got = ours(model, one, stop_strings=[stop])
    expected = reference(model, lm, {"input_ids": first[0], "attention_mask": first[1]}, stop_strings=[stop],
                         tokenizer=tok)
    assert torch.equal(got, expected)
    got_text = tok.decode(got[0].tolist())
    assert got_text.endswith(stop) and stop not in got_text[:-1] and len(got[0]) < len(free)
    assert text.startswith(got_text)


class Recorder(BaseStreamer):
    def __init__(self):
        self.puts, self.ended = [], False

    def put(self, value):
        self.puts.append(value.clone())

    def end(self):
        self.ended = True


@pytest.mark.parametrize("options", [{}, {"do_sample": True, "seed": 3}])
def test_streamer_receives_the_returned_tokens(pair, options):
    model, _ = pair
    one = model.processor([PROMPTS[1]], padding_side="left")
    streamer = Recorder()
    out = model.generate(**one, max_new_tokens=10, streamer=streamer, **options)
    assert torch.equal(streamer.puts[0], one["input_ids"])  # transformers puts the prompt first
    streamed = torch.cat([p.reshape(-1) for p in streamer.puts[1:]])
    assert streamer.ended and torch.equal(streamed, out[0])


# ---------------------------------------------------------------- batched beam search with crowding stop tokens


def bigram_model():
    """A gate-zero Flamingo on a bigram LM: attention and MLP outputs zeroed, each token embedded as a basis vector
    (x, a, b, c, d on dimensions of their own), so the logits after token i are 8 * W[:, dim(i)]. After "x" come
    a, b, c, d; after any of those the two stop tokens S, T lead every other token by ~10 nats, so with 3 beams
    all six best candidates of the second step are stops. After other tokens the table is random."""
    lm_config = {**load_config("tiny").lm_config, "tie_word_embeddings": False}
    model = make_model(lm_config=lm_config)
    gen = torch.Generator().manual_seed(0)
    designed = {c: 59 + k for k, c in enumerate("xabcd")}  # dims 59..63; every other token on i % 59
    stops = [ord("S"), ord("T")]
    with torch.no_grad():
        _, _, layers = find_decoder_layers(model.lm)
        for layer in layers:
            inner = getattr(layer, "decoder_layer", layer)
            inner.self_attn.o_proj.weight.zero_()
            inner.mlp.down_proj.weight.zero_()
        emb = model.lm.get_input_embeddings().weight  # (257, 64)
        dims = torch.arange(emb.shape[0]) % 59
        dims[[ord(c) for c in designed]] = torch.tensor(list(designed.values()))
        emb.copy_(torch.eye(64)[dims])
        head = model.lm.get_output_embeddings().weight  # (257, 64)
        head.copy_(torch.randn(head.shape, generator=gen) * 0.3)
        head[:, 59:] = torch.randn(head.shape[0], 5, generator=gen) * 0.1
        for rank, c in enumerate("abcd"):
            head[ord(c), designed["x"]] = 1.0 - 0.1 * rank
            head[stops, designed[c]] = torch.tensor([1.5, 1.4])
        head[stops, designed["x"]] = -1.0
        model.new_tokens.output_rows.zero_()  # <EOC> at logit 0: never in the way
    return model, stops


def test_batched_beam_search_with_crowding_stops_equals_one_by_one():
    model, stops = bigram_model()
    prompts = ["x", "y", "z"]
    kwargs = {"max_new_tokens": 6, "num_beams": 3, "stop_token_ids": stops}
    batch = model.generate(**model.processor(prompts, padding_side="left"), **kwargs)
    alone = [model.generate(**model.processor([p], padding_side="left"), **kwargs)[0] for p in prompts]
    assert alone[0][-1].item() in stops and len(alone[0]) == 2  # "x": a stop after one token
    assert all(len(a) > 2 for a in alone[1:])  # the others go on past the crowded step
    pad = model.tokenizer.pad_token_id
    for i, single in enumerate(alone):
        assert torch.equal(batch[i, : len(single)], single), (i, batch[i], single)
        assert (batch[i, len(single):] == pad).all()
    lm = plain_lm(model)
    ids = model.processor(prompts, padding_side="left")
    expected = reference(model, lm, ids, max_new_tokens=6, num_beams=3, eos_token_id=stops)
    assert torch.equal(batch, expected)


# ---------------------------------------------------------------- bad options: one line naming the option


@pytest.mark.parametrize("options, names", [
    ({"no_such_option": 1}, ["no_such_option"]),
    ({"num_beams": 3, "num_return_sequences": 4}, ["num_return_sequences", "num_beams"]),
    ({"num_return_sequences": 2}, ["num_return_sequences", "do_sample"]),
    ({"penalty_alpha": 0.6, "top_k": 4}, ["contrastive search"]),
    ({"prompt_lookup_num_tokens": 3}, ["assisted decoding"]),
    ({"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 1.0}, ["group beam search"]),
    ({"return_dict_in_generate": True}, ["return_dict_in_generate"]),
    ({"cache_implementation": "static"}, ["cache_implementation"]),
    ({"repetition_penalty": 0.0}, ["repetition_penalty"]),
    ({"no_repeat_ngram_size": -1}, ["no_repeat_ngram_size"]),
    ({"early_stopping": "sometimes", "num_beams": 2}, ["early_stopping"]),
    ({"generation_config": {"num_beams": 2}}, ["generation_config"]),
    ({"do_sample": True, "seed": 1, "generator": torch.Generator()}, ["generator", "seed"]),
    ({"stop_token_ids": [5], "eos_token_id": 6}, ["stop_token_ids", "eos_token_id"]),
    ({"num_beams": 2, "streamer": Recorder()}, ["streamer", "num_beams"]),
])
def test_bad_options_are_one_line_errors(pair, options, names):
    model, _ = pair
    one = model.processor(["x"], padding_side="left")
    with pytest.raises(ValueError) as info:
        model.generate(**one, max_new_tokens=3, **options)
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert name in message, message


def test_stop_strings_without_a_tokenizer_is_one_line(pair, monkeypatch):
    model, _ = pair
    one = model.processor(["x"], padding_side="left")
    monkeypatch.setattr(model, "tokenizer", None)
    with pytest.raises(ValueError, match="stop_strings.*tokenizer") as info:
        model.generate(**one, max_new_tokens=3, stop_strings=["a"])
    assert "\n" not in str(info.value)
