"""Flamingo on the real stage-1 tower: contrastive_encoder's ``tiny`` preset as the frozen vision encoder."""

import pytest
import torch
from fc_helpers import random_image, set_gates

import flamingo_core as fc

ce = pytest.importorskip("contrastive_encoder")


def test_tiny_stage1_encoder_end_to_end(tmp_path):
    model = fc.create_model("tiny", vision_encoder="tiny")
    assert isinstance(model.vision_encoder, ce.FrozenVisionEncoder)
    set_gates(model, 1.0)
    size = model.vision_encoder.image_size
    sample = ["A photo:", random_image(1, size), "a shape.<EOC>", [random_image(2, size), random_image(3, size)], "x"]
    enc = model.processor([sample])
    assert enc["media"].shape[:3] == (1, 2, 2)  # an image and a 2-frame video
    labels = fc.make_labels(enc["input_ids"], enc["attention_mask"], [model.media_token_id])
    out = model(**enc, labels=labels)
    out.loss.backward()
    assert all(p.grad is None for p in model.vision_encoder.parameters())
    assert model.perceiver.latents.grad is not None
    model.save_pretrained(tmp_path / "m")
    loaded = fc.Flamingo.from_pretrained(tmp_path / "m")
    assert loaded.vision_encoder.identifier == model.vision_encoder.identifier  # same seeded random tower
    with torch.no_grad():
        assert torch.equal(loaded(**enc).logits, model(**enc).logits)
