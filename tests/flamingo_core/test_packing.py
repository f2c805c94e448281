"""Sequence packing (packing.py): a packed batch gives the unpacked batch's loss and gradients, on every LM family
and packing layout, and a packed sample sees neither another sample's tokens nor its media."""

from __future__ import annotations

import pytest
import torch
from fc_helpers import diversify_lm, make_model, random_image, set_gates

import flamingo_core as fc
from flamingo_core.packing import pack_batch

CAPTIONS = ["a red circle.", "two small blue squares on the left of a big star.", "a cross.",
            "a green triangle above a purple diamond, both striped.", "nothing else here at all"]


def _model(arch: str):
    torch.manual_seed(0)
    model = diversify_lm(make_model(arch), std=0.1)
    set_gates(model, 1.0)
    return model


def _batch(model, captions=CAPTIONS, seed=0):
    size = model.vision_encoder.image_size
    samples = [[random_image(seed + i, size), c + "<EOC>"] for i, c in enumerate(captions)]
    samples[1] = [[random_image(seed + 10, size), random_image(seed + 11, size)], captions[1] + "<EOC>"]  # a video
    enc = model.processor(samples, padding_side="right")
    enc["labels"] = fc.make_labels(enc["input_ids"], enc["attention_mask"], [model.media_token_id])
    return enc


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    keys = ("input_ids", "attention_mask", "media", "media_mask", "media_frame_mask", "labels", "segment_ids")
    loss = model(**{k: batch[k] for k in keys if batch.get(k) is not None}, loss_reduction="sum").loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt", "gpt_neox"])
@pytest.mark.parametrize("window", [60, 100, 300])
def test_packed_and_unpacked_batches_give_the_same_loss_and_gradients(arch, window):
    model = _model(arch)
    batch = _batch(model)
    packed = pack_batch(batch, window)
    assert packed["input_ids"].shape[0] < batch["input_ids"].shape[0] and 0 < packed["packing"] <= 1
    assert int((packed["labels"] != -100).sum()) == int((batch["labels"][:, 1:] != -100).sum())
    want_loss, want_grads = _loss_and_grads(model, batch)
    loss, grads = _loss_and_grads(model, packed)
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-5)
    assert grads.keys() == want_grads.keys()
    for name, g in want_grads.items():  # equal to float rounding, relative to the tensor's scale
        assert float((grads[name] - g).abs().max()) <= 1e-4 * float(g.abs().max()) + 1e-7, name


def test_a_packed_sample_sees_neither_another_samples_tokens_nor_its_media():
    model = _model("llama")
    batch = _batch(model)
    # every other sample's text (same length: the byte tokenizer gives the same packing) and images changed
    other = _batch(model, [c[::-1] for c in CAPTIONS], seed=100)
    for b in (batch, other):
        b["input_ids"][2], b["attention_mask"][2] = batch["input_ids"][2], batch["attention_mask"][2]
        b["media"][2] = batch["media"][2]
    p1, p2 = pack_batch(batch, 300), pack_batch(other, 300)
    assert torch.equal(p1["segment_ids"], p2["segment_ids"])
    keys = ("input_ids", "attention_mask", "media", "media_mask", "media_frame_mask", "segment_ids")
    with torch.no_grad():
        l1 = model(**{k: p1[k] for k in keys if p1.get(k) is not None}).logits
        l2 = model(**{k: p2[k] for k in keys if p2.get(k) is not None}).logits
    seg = p1["segment_ids"][0] == 3  # the third sample of the first row
    assert seg.any() and not torch.equal(l1[0, ~seg & (p1["segment_ids"][0] > 0)], l2[0, ~seg & (p1["segment_ids"][0] > 0)])
    torch.testing.assert_close(l1[0, seg], l2[0, seg], rtol=0, atol=1e-6)


def test_a_window_shorter_than_a_sample_is_one_line():
    model = _model("llama")
    with pytest.raises(ValueError, match="packing window 8 is shorter than a sample of"):
        pack_batch(_batch(model), 8)


def test_training_packs_pairs_by_default_and_logs_the_efficiency(tmp_path_factory, tmp_path):
    import json

    from test_data_world import make_world

    from flamingo_core.train import TrainConfig, train

    world = make_world(tmp_path_factory.getbasetemp())
    runs = {}
    for pack in (True, False):
        out = tmp_path / f"pack-{pack}"
        cfg = TrainConfig(data=str(world), out=str(out), model="tiny", vision_encoder=None,
                          weights="m3w=0,ltip=1,align=0,vtp=0.5", batch_size=4, lr=1e-3, warmup_steps=1, max_steps=2,
                          save_every=2, final_eval=False, progress=False, cpu=True, pack=pack)
        runs[pack] = train(cfg)
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        steps = [r for r in records if "packing/ltip" in r or "loss/ltip" in r]
        assert all(("packing/ltip" in r) == pack for r in steps) and steps
        if pack:
            assert all(0 < r["packing/ltip"] <= 1 and 0 < r["packing/vtp"] <= 1 for r in steps)
    for name, loss in runs[False].losses.items():
        assert runs[True].losses[name] == pytest.approx(loss, rel=1e-4)
