"""Dual encoder: shapes, no NaN, gradients reach exactly the trainable parameters, save/load round trip,
and the paper's F6 preset (435M vision parameters, a (3072, 9, 9) map at 288 px) built on the meta device."""

from __future__ import annotations

import pytest
import torch

from contrastive_encoder import DualEncoder, create_model, get_preset_config, list_models
from contrastive_encoder.loss import ClipLoss

TINY = [m for m in list_models() if "tiny" in m]


def test_presets_listed():
    assert {"tiny", "nano-minilm", "nfnet-f0-minilm", "nfnet-f6-bert-base"} <= set(list_models())


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("lock_text", [False, True])
def test_forward_shapes_and_gradients_reach_trainable_parameters(name, lock_text):
    torch.manual_seed(0)
    model = create_model(name)
    if lock_text:
        model.lock_text()
    cfg = model.config
    pixels = torch.randn(3, 3, cfg.image_size, cfg.image_size)
    img, txt, scale = model(pixels, **model.tokenize(["a red circle", "a blue square on the left", "x"]))
    assert img.shape == txt.shape == (3, cfg.embed_dim)
    assert torch.isfinite(img).all() and torch.isfinite(txt).all()
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(3))
    ClipLoss()(img, txt, scale).backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"no gradient reached {n}"
        else:
            assert p.grad is None, f"frozen {n} got a gradient"
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert bool(frozen) == lock_text and all(n.startswith("text.encoder.") for n in frozen)


def test_text_pooling_ignores_padding():
    torch.manual_seed(0)
    model = create_model("tiny").eval()
    alone = model.encode_text(**model.tokenize(["a red circle"]))
    padded = model.encode_text(**model.tokenize(["a red circle", "a much longer caption that forces padding"]))
    torch.testing.assert_close(padded[0], alone[0], rtol=1e-5, atol=1e-6)


def test_feature_map_and_overrides():
    model = create_model("tiny", image_size=48, embed_dim=24)
    assert model.config.image_size == 48 and model.vision.proj.out_features == 24
    fmap = model.vision.forward_features(torch.randn(2, 3, 48, 48))
    assert fmap.shape == (2, model.vision.feature_dim, 3, 3)  # output stride 16


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create_model("tiny").eval()
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [  # + the manifest of the files written
        ".written.json", "config.json", "model.safetensors", "tokenizer"]
    loaded = create_model(str(tmp_path / "m")).eval()
    pixels = torch.randn(2, 3, 32, 32)
    tok = model.tokenize(["a green square", "two circles"])
    torch.testing.assert_close(loaded.encode_image(pixels), model.encode_image(pixels))
    torch.testing.assert_close(loaded.encode_text(**loaded.tokenize(["a green square", "two circles"])),
                               model.encode_text(**tok))
    with pytest.raises(ValueError, match="config overrides"):
        create_model(str(tmp_path / "m"), image_size=64)


def test_unknown_preset_and_bad_field_are_named():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        create_model("nope")
    with pytest.raises(ValueError, match="unknown DualEncoderConfig field.*bogus"):
        get_preset_config("tiny", bogus=1)


def test_f6_preset_on_meta_device():
    cfg = get_preset_config("nfnet-f6-bert-base")
    assert (cfg.image_size, cfg.embed_dim) == (288, 1376)
    with torch.device("meta"):
        model = DualEncoder(cfg)
        fmap = model.vision.forward_features(torch.empty(2, 3, 288, 288))
    vision = sum(p.numel() for p in model.vision.trunk.parameters())
    assert abs(vision - 435e6) <= 1e6, vision
    assert tuple(fmap.shape) == (2, 3072, 9, 9)
    assert model.text.hidden_dim == 768 and model.text.encoder.config.num_hidden_layers == 12
