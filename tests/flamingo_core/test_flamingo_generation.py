"""Generation and scoring: the cached path (LM KV cache + media K/V computed once) equals recomputing
everything at every step, token for token; left-padded batches equal one-by-one; prefix reuse in scoring."""

import pytest
import torch
from fc_helpers import diversify_lm, make_model, random_image, set_gates

PROMPTS = [
    ["A photo:", random_image(1), "a red circle.<EOC>", random_image(2), "A photo:"],
    [random_image(3), "Question: what is it? Answer:"],
    ["Once", random_image(4), "upon"],
]


@pytest.fixture(scope="module")
def model():
    m = diversify_lm(make_model())
    set_gates(m, 1.0)
    return m


def left_batch(model, prompts):
    return model.processor(prompts, padding_side="left")


@pytest.mark.parametrize("num_beams", [1, 3])
def test_cached_equals_uncached(model, num_beams):
    enc = left_batch(model, PROMPTS)
    cached = model.generate(**enc, max_new_tokens=8, num_beams=num_beams)
    uncached = model.generate(**enc, max_new_tokens=8, num_beams=num_beams, use_cache=False)
    no_media_cache = model.generate(**enc, max_new_tokens=8, num_beams=num_beams, use_media_cache=False)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, no_media_cache)
    assert cached.shape == (3, 8)
    assert len(set(cached.flatten().tolist())) > 6  # not a degenerate repetition


@pytest.mark.parametrize("num_beams", [1, 3])
def test_left_padded_batch_equals_one_by_one(model, num_beams):
    batch = model.generate(**left_batch(model, PROMPTS), max_new_tokens=6, num_beams=num_beams)
    for i, prompt in enumerate(PROMPTS):
        single = model.generate(**left_batch(model, [prompt]), max_new_tokens=6, num_beams=num_beams)
        width = single.shape[1]
        assert torch.equal(batch[i, :width], single[0]), i
        assert (batch[i, width:] == model.tokenizer.pad_token_id).all()


def test_images_change_generation(model):
    a = model.generate(**left_batch(model, [[random_image(10), "A photo of"]]), max_new_tokens=6)
    b = model.generate(**left_batch(model, [[random_image(11), "A photo of"]]), max_new_tokens=6)
    logits_a = model(**model.processor([[random_image(10), "A photo of"]])).logits[:, -1]
    logits_b = model(**model.processor([[random_image(11), "A photo of"]])).logits[:, -1]
    assert not torch.allclose(logits_a, logits_b)
    assert a.shape[0] == b.shape[0] == 1


def test_stops_at_stop_token_and_pads(model):
    enc = left_batch(model, PROMPTS)
    free = model.generate(**enc, max_new_tokens=6)
    stop = int(free[0, 1])  # make the 2nd token of sample 0 a stop token
    stopped = model.generate(**enc, max_new_tokens=6, stop_token_ids=[stop])
    first = (free[0] == stop).nonzero()[0, 0].item()
    assert stopped[0, first] == stop
    assert (stopped[0, first + 1:] == model.tokenizer.pad_token_id).all()
    assert model.processor.decode(stopped[:1], stop_token_ids=[stop]) == [
        model.tokenizer.decode(stopped[0, :first].tolist(), skip_special_tokens=True)]


def test_never_generates_the_media_token(model):
    enc = left_batch(model, PROMPTS)
    with torch.no_grad():
        model.new_tokens.input_rows[0] *= 1000  # <image> would win every argmax
    try:
        out = model.generate(**enc, max_new_tokens=4)
    finally:
        with torch.no_grad():
            model.new_tokens.input_rows[0] /= 1000
    assert not (out == model.media_token_id).any()


def test_sampling(model):
    enc = left_batch(model, PROMPTS)
    greedy = model.generate(**enc, max_new_tokens=5)
    top1 = model.generate(**enc, max_new_tokens=5, do_sample=True, top_k=1)
    assert torch.equal(greedy, top1)
    g1 = torch.Generator().manual_seed(3)
    g2 = torch.Generator().manual_seed(3)
    s1 = model.generate(**enc, max_new_tokens=5, do_sample=True, temperature=2.0, top_p=0.9, generator=g1)
    s2 = model.generate(**enc, max_new_tokens=5, do_sample=True, temperature=2.0, top_p=0.9, generator=g2)
    assert torch.equal(s1, s2)


def test_score_continuations_prefix_reuse_equals_scratch(model):
    enc = model.processor([["Output:", random_image(5), "a shape:", random_image(6), "Output:"]])
    prefix = enc["input_ids"][0]
    tok = model.tokenizer
    continuations = [tok(" circle<EOC>")["input_ids"], tok(" square")["input_ids"], tok(" a<EOC>")["input_ids"]]
    scores = model.score_continuations(prefix, continuations, media=enc["media"], media_mask=enc["media_mask"],
                                       batch_size=2)
    for i, cont in enumerate(continuations):
        ids = torch.cat([prefix, torch.tensor(cont)])[None]
        with torch.no_grad():
            logp = torch.log_softmax(model(ids, media=enc["media"], media_mask=enc["media_mask"]).logits[0].float(), -1)
        n = len(cont)
        expected = logp[-n - 1:-1].gather(-1, torch.tensor(cont)[:, None]).sum()
        assert abs(float(scores.logprobs[i]) - float(expected)) < 1e-4
        assert int(scores.num_tokens[i]) == n
    assert len(set(scores.logprobs.tolist())) == 3


@pytest.mark.parametrize("num_beams", [1, 3])
def test_min_new_tokens_bans_stop_tokens(model, num_beams):
    enc = left_batch(model, PROMPTS[:1])
    free = model.generate(**enc, max_new_tokens=5, num_beams=num_beams)
    stop = int(free[0, 0])
    if num_beams == 1:  # greedy stops right away; beam search may prefer a longer finished hypothesis
        assert model.generate(**enc, max_new_tokens=5, stop_token_ids=[stop]).shape[1] == 1
    forced = model.generate(**enc, max_new_tokens=5, min_new_tokens=3, num_beams=num_beams, stop_token_ids=[stop])
    assert forced.shape[1] >= 3 and stop not in forced[0, :3].tolist()


@pytest.mark.parametrize("arch", ["gpt2", "opt", "gpt_neox"])
def test_cached_equals_uncached_other_lm_families(arch):
    m = diversify_lm(make_model(arch))
    set_gates(m, 1.0)
    enc = left_batch(m, PROMPTS[:2])
    for beams in (1, 3):
        cached = m.generate(**enc, max_new_tokens=4, num_beams=beams)
        assert torch.equal(cached, m.generate(**enc, max_new_tokens=4, num_beams=beams, use_cache=False))
    single = m.generate(**left_batch(m, PROMPTS[1:2]), max_new_tokens=4)
    assert torch.equal(m.generate(**enc, max_new_tokens=4)[1, : single.shape[1]], single[0])
