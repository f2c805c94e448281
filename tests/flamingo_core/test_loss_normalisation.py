"""The stage-2 loss normalisation (paper Eq. 2, arXiv 2204.14198): with ``--loss-normalisation sequences`` each
source's loss is the sum of its sequences' summed NLLs divided by its number of sequences, packed rows counted by
their samples; ``tokens`` (the default) keeps the per-token mean."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from fc_helpers import make_model, set_gates
from test_data_world import make_world

from flamingo_core.data import IGNORE_INDEX, FlamingoCollator, build_source
from flamingo_core.train import TrainConfig, parse_args, train, train_step
from flamingo_core.train import loop as train_loop

WEIGHTS = {"m3w": 1.0, "ltip": 0.5}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def samples(world):
    """Two M3W documents and five LTIP pairs, as their sources load them. The documents are ones whose window
    keeps an image: a row without media batched with rows that have some runs the gated dense layers, which a
    batch without any media skips, so such a row's NLL alone would differ from its NLL in the batch."""
    proc = make_model().processor
    src = build_source("m3w", "interleaved", world / "m3w" / "train.jsonl")
    docs = (src.load(i, random.Random(i)) for i in range(len(src)))
    with_media = [s for s in docs if FlamingoCollator(proc, 96, proc.media_token_id)([s]).get("media") is not None]
    src = build_source("ltip", "pairs", world / "ltip" / "train.jsonl")
    return {"m3w": with_media[:2], "ltip": [src.load(i, random.Random(i)) for i in range(5)]}


def _batches(model, samples) -> dict:
    """M3W one document a row; LTIP packed, so its rows are fewer than its sequences."""
    proc = model.processor
    batches = {"m3w": FlamingoCollator(proc, 96, proc.media_token_id)(samples["m3w"]),
               "ltip": FlamingoCollator(proc, 96, proc.media_token_id, pack_window=192)(samples["ltip"])}
    assert batches["ltip"]["input_ids"].shape[0] < len(samples["ltip"])  # the packing the count must see through
    return batches


def _sequence_nll(model, sample) -> torch.Tensor:
    """One sequence's summed next-token NLL, from the model's logits on that sequence alone."""
    proc = model.processor
    b = FlamingoCollator(proc, 96, proc.media_token_id)([sample])
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], media=b["media"],
                   media_mask=b["media_mask"], media_frame_mask=b["media_frame_mask"],
                   media_next=b.get("media_next")).logits  # a "next image" document attends to the image after
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), b["labels"][:, 1:].flatten(),
                           ignore_index=IGNORE_INDEX, reduction="sum")


class _Recorder:
    """An optimizer that keeps the step's gradients and leaves the parameters alone."""

    def __init__(self, model):
        self.model, self.grads = model, None

    def step(self):
        self.grads = {n: p.grad.clone() for n, p in self.model.named_parameters() if p.grad is not None}

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=set_to_none)


def test_sequences_divides_each_sources_summed_nll_by_its_sequences_in_value_and_gradient(samples):
    model = make_model(seed=1)
    set_gates(model, 0.5)  # open gates: every trained part gets a gradient
    model.train()
    batches = _batches(model, samples)
    assert len(samples["m3w"]) == 2

    model.zero_grad(set_to_none=True)
    expected = {n: torch.stack([_sequence_nll(model, s) for s in samples[n]]).sum() / len(samples[n])
                for n in WEIGHTS}
    sum(WEIGHTS[n] * expected[n] for n in WEIGHTS).backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    opt = _Recorder(model)
    r = train_step(model, opt, batches, WEIGHTS, grad_clip=0.0, loss_normalisation="sequences")
    for n in WEIGHTS:
        assert r.losses[n] == pytest.approx(float(expected[n].detach()), rel=1e-4), n
    assert r.loss == pytest.approx(sum(WEIGHTS[n] * float(expected[n].detach()) for n in WEIGHTS), rel=1e-4)
    assert set(opt.grads) == set(ref) and ref
    for n in ref:
        assert torch.allclose(opt.grads[n], ref[n], rtol=1e-3, atol=1e-6), n
    tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches.values())
    assert r.tokens == tokens  # the step still reports label tokens

    per_token = train_step(model, opt, batches, WEIGHTS, grad_clip=0.0)  # the default: a per-token mean
    for n in WEIGHTS:
        count = int((batches[n]["labels"][:, 1:] != IGNORE_INDEX).sum())
        assert per_token.losses[n] == pytest.approx(float(expected[n].detach()) * len(samples[n]) / count, rel=1e-4), n
    assert per_token.tokens == tokens


def test_sequences_counts_the_sequences_of_every_process(samples):
    """Under DDP the divisor is the sequence count over all processes: with a second process holding the same
    batch, the summed NLL and the count both double, so the loss is unchanged."""
    model = make_model(seed=1)
    batches = {"ltip": _batches(model, samples)["ltip"]}

    class TwoProcesses:
        num_processes, device = 2, torch.device("cpu")

        def reduce(self, t, reduction="sum"):
            return t * 2

        def backward(self, loss):
            loss.backward()

        def no_sync(self, _model):
            return torch.enable_grad()

        def autocast(self):
            return torch.enable_grad()

        def clip_grad_norm_(self, params, _clip):
            return torch.nn.utils.clip_grad_norm_(params, float("inf"))

    with torch.no_grad():
        expected = sum(float(_sequence_nll(model, s)) for s in samples["ltip"]) / len(samples["ltip"])
    r = train_step(model, _Recorder(model), batches, {"ltip": 1.0}, accelerator=TwoProcesses(), grad_clip=0.0,
                   loss_normalisation="sequences")
    assert r.losses["ltip"] == pytest.approx(expected, rel=1e-4)


def test_the_option_is_a_flag_defaulting_to_tokens_and_reaches_the_step(world, tmp_path, monkeypatch):
    assert TrainConfig().loss_normalisation == "tokens" == parse_args([]).loss_normalisation
    assert parse_args(["--loss-normalisation", "sequences"]).loss_normalisation == "sequences"
    with pytest.raises(ValueError, match="loss_normalisation 'words': expected one of tokens, sequences"):
        train_step(None, None, {}, {}, loss_normalisation="words")
    seen = []

    def recording_step(*args, **kwargs):
        seen.append(kwargs["loss_normalisation"])
        return real_step(*args, **kwargs)

    real_step = train_loop.train_step
    monkeypatch.setattr(train_loop, "train_step", recording_step)
    cfg = TrainConfig(data=str(world), out=str(tmp_path / "run"), model="tiny", vision_encoder=None,
                      weights="m3w=0,ltip=1,align=0,vtp=0", batch_size=2, max_steps=1, save_every=0,
                      final_eval=False, progress=False, cpu=True, loss_normalisation="sequences")
    assert train(cfg).step == 1
    assert seen == ["sequences"]
