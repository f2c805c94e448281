"""The dataset mixture: weights, the guarded next-token loss, the accumulation step (== weighted sum of
per-dataset gradients), the round-robin strategy (turn order, one source's gradient per step), global token
normalisation across processes, corrupt-batch fallback."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from fc_helpers import make_model, set_gates
from test_data_world import make_world

import flamingo_core as fc
from flamingo_core.data import IGNORE_INDEX, FlamingoCollator, SkippedSample, build_source
from flamingo_core.mixture import (
    DEFAULT_WEIGHTS,
    DatasetMixture,
    SourceSchedule,
    accumulate_gradients,
    flamingo_logits,
    next_token_nll,
    parse_weights,
    token_nll,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.getbasetemp())


def _model():
    model = fc.create_model("tiny", seed=1)
    with torch.no_grad():  # open gates so every trained part gets a gradient
        for block in model.xattn_layers:
            block.alpha_xattn.fill_(0.5)
            block.alpha_dense.fill_(0.5)
    return model.train()


@pytest.fixture(scope="module")
def batches(world):
    model = fc.create_model("tiny")
    proc = model.processor
    out = {}
    for name, kind, path, n in [("m3w", "interleaved", world / "m3w" / "train.jsonl", 2),
                                ("ltip", "pairs", world / "ltip" / "train.jsonl", 4),
                                ("vtp", "video", world / "vtp" / "train.jsonl", 2)]:
        opts = {"num_frames": 4} if kind == "video" else {}
        src = build_source(name, kind, path, **opts)
        samples = [src.load(i, random.Random(i)) for i in range(n)]
        out[name] = FlamingoCollator(proc, 96, proc.media_token_id)(samples)
    return out


def _mean_nll_grads(model, b):
    """One batch's mean next-token NLL, computed by hand, and its gradient on its own."""
    model.zero_grad(set_to_none=True)
    out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], media=b["media"],
                media_mask=b["media_mask"], media_frame_mask=b["media_frame_mask"])
    loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), b["labels"][:, 1:].flatten(),
                           ignore_index=IGNORE_INDEX)
    loss.backward()
    return float(loss.detach()), _grads(model)


def _grads(model):
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
            for n, p in model.named_parameters() if p.requires_grad}


def test_parse_weights_defaults_and_errors():
    names = ["m3w", "ltip", "align", "vtp", "extra"]
    w = parse_weights("ltip=0.5", names)
    assert w == {"m3w": 1.0, "ltip": 0.5, "align": 0.2, "vtp": 0.03, "extra": 0.0}
    assert parse_weights(None, list(DEFAULT_WEIGHTS)) == DEFAULT_WEIGHTS
    with pytest.raises(ValueError, match="NAME=NUMBER"):
        parse_weights("ltip:0.5", names)
    with pytest.raises(ValueError, match="unknown source"):
        parse_weights("coco=1", names)
    with pytest.raises(ValueError, match=">= 0"):
        parse_weights("ltip=-1", names)
    with pytest.raises(ValueError, match="at least one"):
        parse_weights("m3w=0,ltip=0,align=0,vtp=0", ["m3w", "ltip", "align", "vtp"])


def test_next_token_nll_matches_cross_entropy_mean():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.randint(0, 11, (2, 5))
    labels[0, 3:] = IGNORE_INDEX
    s, c = next_token_nll(logits, labels)
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    assert int(c) == int((labels[:, 1:] != IGNORE_INDEX).sum())
    assert torch.allclose(s / c, ref, atol=1e-6)


def test_token_nll_computes_logits_at_label_positions_only_and_matches_the_full_loss(batches):
    model = _model().eval()
    b = batches["m3w"]
    media = {k: b[k] for k in ("media", "media_mask", "media_frame_mask")}
    full = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], **media).logits
    assert torch.equal(flamingo_logits(model, b), full)
    ref_sum, ref_count = next_token_nll(full, b["labels"])
    for fused in (True, False):  # the fused head loss, and the logits path (FSDP)
        model.fused_head_loss = fused
        got_sum, got_count = token_nll(model, b)
        assert int(got_count) == int(ref_count) > 0
        assert torch.allclose(got_sum, ref_sum, rtol=1e-5), fused
    positions = torch.zeros_like(b["attention_mask"], dtype=torch.bool)
    positions[:, :-1] = b["labels"][:, 1:] != IGNORE_INDEX
    picked = flamingo_logits(model, b, positions)
    assert picked.shape == (int(positions.sum()), full.shape[-1])  # (P, V): padding and media rows skipped
    assert torch.allclose(picked, full[positions], atol=1e-5)
    mean = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"], **media)
    assert torch.equal(mean.logits, full) and torch.allclose(mean.loss * ref_count, ref_sum, rtol=1e-5)
    with pytest.raises(ValueError, match="not both"):
        model(input_ids=b["input_ids"], labels=b["labels"], logits_mask=positions, **media)
    with pytest.raises(ValueError, match="needs labels"):
        model(input_ids=b["input_ids"], loss_reduction="sum", **media)
    with pytest.raises(ValueError, match="'mean' or 'sum'"):
        model(input_ids=b["input_ids"], labels=b["labels"], loss_reduction="none", **media)


def test_the_fsdp_setting_takes_the_logits_path_with_the_fused_loss_and_gradients(batches, monkeypatch):
    """``fused_head_loss = False`` (the trainer's setting under FSDP, whose sharded parameters the in-forward
    gradient of the fused head loss would bypass): the loss comes from one (P, V) block of logits by autograd, no
    fused head loss runs, and the loss and every trained part's gradient equal the fused path's."""
    from flamingo_core import head_loss

    model = _model()
    b = batches["m3w"]
    fused_ran = []
    real_apply = head_loss.LinearHeadNLL.apply
    monkeypatch.setattr(head_loss.LinearHeadNLL, "apply", lambda *a: fused_ran.append(1) or real_apply(*a))
    fused_loss, count = token_nll(model, b)
    fused_loss.backward()
    assert fused_ran == [1]
    fused = _grads(model)
    model.zero_grad(set_to_none=True)

    def refuse(*args):
        raise AssertionError("a fused head loss ran with fused_head_loss = False")

    for fn in (head_loss.LinearHeadNLL, head_loss.ChunkedHeadNLL):
        monkeypatch.setattr(fn, "apply", refuse)
    heads = []
    real_logits = type(model).compute_logits
    monkeypatch.setattr(type(model), "compute_logits",
                        lambda self, h, decoding=False: heads.append(tuple(h.shape)) or real_logits(self, h, decoding))
    model.fused_head_loss = False
    loss, logits_count = token_nll(model, b)
    assert heads == [(int(count), model.lm.config.hidden_size)]  # the label positions only, in one block
    assert int(logits_count) == int(count) > 0
    loss.backward()
    assert torch.allclose(loss, fused_loss, rtol=1e-5)
    got = _grads(model)
    for name, g in fused.items():
        _assert_close(got[name], g, name, rtol=1e-4)
    assert fused["new_tokens.input_rows"].abs().sum() > 0 and fused["perceiver.latents"].abs().sum() > 0


def _assert_close(got, ref, name, rtol):
    """Equal up to float32 summation order: ``rtol`` per entry, and an absolute slack of 1e-6 of the largest
    entry for the entries near zero (sums of hundreds of terms of either sign)."""
    atol = 1e-6 * max(1.0, float(ref.abs().max()))
    assert torch.allclose(got, ref, rtol=rtol, atol=atol), (name, float((got - ref).abs().max()))


@pytest.mark.parametrize("head", ["linear", "autograd"])
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("chunk", [3, 64])
def test_head_loss_equals_the_logits_loss_in_value_and_gradients(batches, tied, chunk, head, monkeypatch):
    """Flamingo.forward(labels=..., loss_reduction="sum") - LinearHeadNLL (hand-written gradients, vocabulary in tiles) or
    ChunkedHeadNLL (autograd chunk by chunk) - against cross-entropy on the (P, V) logits: same loss, same
    gradient for every trained part."""
    from flamingo_core import head_loss

    torch.manual_seed(0)
    model = fc.create_model("tiny", seed=1, **({} if tied else {"lm_config": dict(
        fc.load_config("tiny").lm_config, tie_word_embeddings=False)}))
    assert (model.new_tokens.output_rows is None) == tied
    assert model.linear_head_weight(torch.float32) is not None  # the tiny LLaMA's head is a plain linear map
    used = []
    if head == "linear":
        monkeypatch.setattr(head_loss, "VOCAB_TILE", 7)  # several tiles of the tiny vocabulary, the last one short
        assert model.lm_vocab_size % 7
        spied = head_loss.LinearHeadNLL
    else:
        monkeypatch.setattr(type(model), "linear_head_weight", lambda self, dtype: None)
        spied = head_loss.ChunkedHeadNLL
    real_apply = spied.apply
    monkeypatch.setattr(spied, "apply", lambda *a: used.append(spied) or real_apply(*a))
    with torch.no_grad():
        for block in model.xattn_layers:
            block.alpha_xattn.fill_(0.5)
            block.alpha_dense.fill_(0.5)
    model.train()
    b = batches["m3w"]
    media = {k: b[k] for k in ("media", "media_mask", "media_frame_mask")}
    keep = b["labels"][:, 1:] != IGNORE_INDEX
    positions = F.pad(keep, (0, 1), value=False)
    targets = b["labels"][:, 1:][keep]
    assert len(targets) > chunk  # several chunks
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], logits_mask=positions, **media).logits
    ref = F.cross_entropy(logits.float(), targets, reduction="sum")
    ref.backward()
    ref_grads = _grads(model)
    model.zero_grad(set_to_none=True)
    out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"],
                loss_reduction="sum", loss_chunk=chunk, **media)
    assert out.logits is None and used == [spied]
    out.loss.backward()
    assert torch.allclose(out.loss, ref, rtol=1e-5)
    got = _grads(model)
    for name, g in ref_grads.items():
        _assert_close(got[name], g, name, rtol=1e-4)
    assert ref_grads["new_tokens.input_rows"].abs().sum() > 0
    with torch.no_grad():  # without autograd the same sum comes from the plain chunked path
        again = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"],
                      loss_reduction="sum", loss_chunk=chunk, **media).loss
    assert torch.allclose(again, ref, rtol=1e-5)


def test_all_masked_batch_gives_zero_loss_and_no_nan(batches):
    model = _model()
    masked = dict(batches["ltip"], labels=torch.full_like(batches["ltip"]["labels"], IGNORE_INDEX))
    losses = accumulate_gradients(model, {"ltip": masked}, {"ltip": 1.0})
    assert losses["ltip"].sum_nll == 0.0 and losses["ltip"].count == 0
    for name, g in _grads(model).items():
        assert torch.isfinite(g).all() and (g == 0).all(), name


def test_accumulation_equals_weighted_sum_of_per_dataset_gradients(batches):
    weights = {"m3w": 1.0, "ltip": 0.2, "vtp": 0.03}
    model = _model()
    accumulate_gradients(model, batches, weights)
    accumulated = _grads(model)

    # by hand: each dataset's mean-NLL gradient on its own, then the weighted sum
    expected = {n: torch.zeros_like(g) for n, g in accumulated.items()}
    for name, w in weights.items():
        _, grads = _mean_nll_grads(model, batches[name])
        for n, g in grads.items():
            expected[n] += w * g
    nonzero = 0
    for n in accumulated:
        _assert_close(accumulated[n], expected[n], n, rtol=1e-5)
        nonzero += bool(accumulated[n].abs().sum() > 0)
    assert nonzero > 0.8 * len(accumulated)  # the gradients are not trivially zero


def test_weight_zero_source_is_not_run(batches):
    model = _model()
    losses = accumulate_gradients(model, batches, {"m3w": 0.0, "ltip": 1.0, "vtp": 0.0})
    assert list(losses) == ["ltip"]


def test_global_token_normalisation_makes_shards_average_to_the_full_batch(batches):
    """Emulates DDP: two shards' gradients, each normalised by the global token count and averaged, equal the
    full batch's gradient even though the shards hold different numbers of tokens."""
    full = batches["ltip"]
    model = _model()
    accumulate_gradients(model, {"ltip": full}, {"ltip": 1.0})
    g_full = _grads(model)
    halves = [{k: (v[sl] if torch.is_tensor(v) else v) for k, v in full.items()}
              for sl in (slice(0, 1), slice(1, 4))]
    total = sum(int((h["labels"][:, 1:] != IGNORE_INDEX).sum()) for h in halves)
    avg = None
    for h in halves:
        model.zero_grad(set_to_none=True)
        accumulate_gradients(model, {"ltip": h}, {"ltip": 1.0}, global_counts={"ltip": total}, world_size=2)
        g = _grads(model)
        avg = g if avg is None else {n: (avg[n] + g[n]) for n in g}
    for n in g_full:
        assert torch.allclose(avg[n] / 2, g_full[n], rtol=1e-4, atol=1e-7), n


def test_mixture_replaces_an_all_corrupt_batch_with_a_masked_one(batches):
    good = batches["ltip"]
    bad = {"skipped": [SkippedSample("corrupt or missing media", "x.png")], "meta": []}
    seen = []
    mixture = DatasetMixture({"ltip": iter([good, bad, good]), "vtp": iter([])}, {"ltip": 1.0, "vtp": 0.0},
                             on_skip=seen.append)
    assert mixture.active == ["ltip"]
    first = mixture.next()["ltip"]
    assert torch.equal(first["labels"], good["labels"])
    second = mixture.next()["ltip"]
    assert (second["labels"] == IGNORE_INDEX).all() and torch.equal(second["input_ids"], good["input_ids"])
    assert [s.where for s in seen] == ["x.png"]


def _tagged(name: str, log: list):
    """An endless loader whose i-th batch is tagged (name, i), logging every read."""
    i = 0
    while True:
        log.append((name, i))
        yield {"input_ids": torch.ones(1, 2, dtype=torch.long), "labels": torch.ones(1, 2, dtype=torch.long),
               "tag": (name, i)}
        i += 1


# smooth weighted round-robin over m3w=1, align=1, vtp=0.5 (ltip has weight 0): a cycle of 5 steps
RR_WEIGHTS = {"m3w": 1.0, "ltip": 0.0, "align": 1.0, "vtp": 0.5}
RR_CYCLE = ["m3w", "align", "vtp", "m3w", "align"]


def test_round_robin_takes_one_source_per_step_in_turn_and_skips_weight_zero():
    reads: list = []
    mixture = DatasetMixture({n: _tagged(n, reads) for n in RR_WEIGHTS}, RR_WEIGHTS, strategy="round-robin")
    steps = [mixture.next() for _ in range(3 * len(RR_CYCLE))]  # three cycles
    assert all(len(b) == 1 for b in steps)
    assert [next(iter(b)) for b in steps] == RR_CYCLE * 3
    # a source's loader is read only at its turns, batch after batch; the weight-0 source is never read
    seen = [b[n]["tag"] for b in steps for n in b]
    for name in ("m3w", "align", "vtp"):
        assert [t for t in seen if t[0] == name] == [(name, i) for i in range(3 * RR_CYCLE.count(name))]
    assert sorted(reads) == sorted(seen) and not any(n == "ltip" for n, _ in reads)
    schedule = SourceSchedule(RR_WEIGHTS, "round-robin")
    assert schedule.batches_before(15) == {"m3w": 6, "align": 6, "vtp": 3}
    assert schedule.loss_weights(["vtp"]) == {"vtp": 1.0}  # the weights set the turns, not a loss factor
    # a run resumed at step 7 (the loaders restarted after their batches_before(7)) continues the cycle
    resumed = DatasetMixture({n: _tagged(n, []) for n in RR_WEIGHTS}, RR_WEIGHTS, strategy="round-robin",
                             start_step=7)
    assert [next(iter(resumed.next())) for _ in range(8)] == (RR_CYCLE * 3)[7:]
    # equal weights cycle in source order; accumulation reads every source at every step
    equal = SourceSchedule(dict.fromkeys(["m3w", "ltip", "align", "vtp"], 1.0), "round-robin")
    assert [equal.sources(k)[0] for k in range(8)] == ["m3w", "ltip", "align", "vtp"] * 2
    both = DatasetMixture({n: _tagged(n, []) for n in RR_WEIGHTS}, RR_WEIGHTS)
    assert [list(both.next()) for _ in range(2)] == [["m3w", "align", "vtp"]] * 2
    assert SourceSchedule(RR_WEIGHTS).loss_weights(["m3w", "vtp"]) == {"m3w": 1.0, "vtp": 0.5}
    with pytest.raises(ValueError, match="round-robin"):
        SourceSchedule(RR_WEIGHTS, "merge")


def test_round_robin_step_gradient_is_the_one_sources_loss_gradient_alone(batches):
    """train_step under round-robin: each step's gradient (what the optimizer sees) is the gradient of the
    mean NLL of the one source whose turn it is, with weight 1 (not lambda: the weights set the turns)."""
    from flamingo_core.train import train_step

    weights = {"m3w": 1.0, "ltip": 0.5, "vtp": 0.0}
    model = make_model(seed=1)
    set_gates(model, 0.5)  # open gates: every trained part gets a gradient
    model.train()

    expected = {n: _mean_nll_grads(model, batches[n]) for n in ("m3w", "ltip")}
    model.zero_grad(set_to_none=True)

    class Recorder:  # an optimizer that keeps each step's gradients and leaves the parameters alone
        def __init__(self):
            self.grads = []

        def step(self):
            self.grads.append(_grads(model))

        def zero_grad(self, set_to_none=True):
            model.zero_grad(set_to_none=set_to_none)

    opt = Recorder()
    mixture = DatasetMixture({n: iter([batches[n]] * 4) if n != "vtp" else iter([]) for n in weights}, weights,
                             strategy="round-robin")
    used = []
    for _ in range(3):
        step_batches = mixture.next()
        result = train_step(model, opt, step_batches, weights, grad_clip=0.0, strategy="round-robin")
        (name,) = result.losses
        used.append(name)
        assert result.loss == pytest.approx(result.losses[name]) == pytest.approx(expected[name][0], rel=1e-5)
        got, ref = opt.grads[-1], expected[name][1]
        for n in ref:
            _assert_close(got[n], ref[n], n, rtol=1e-5)
        assert sum(bool(g.abs().sum() > 0) for g in got.values()) > 0.8 * len(got)  # not trivially zero
    assert used == ["m3w", "ltip", "m3w"]
    ltip_step = opt.grads[1]
    assert any(not torch.allclose(ltip_step[n], 0.5 * expected["ltip"][1][n]) for n in ltip_step)
    with pytest.raises(ValueError, match="one source"):
        train_step(model, opt, {n: batches[n] for n in ("m3w", "ltip")}, weights, strategy="round-robin")
