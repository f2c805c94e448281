"""Frozen features computed once (feature_cache.py): training with the cache equals training without it (stage 2
does not augment), a folder serves a later run, and a stale entry cannot be read."""

from __future__ import annotations

import pytest
import torch
from fc_helpers import make_model, random_image
from safetensors.torch import load_file
from test_data_world import make_world

from flamingo_core.feature_cache import FrozenFeatureCache
from flamingo_core.train import TrainConfig, train


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.getbasetemp())


def _run(world, out, **kw):
    cfg = TrainConfig(data=str(world), out=str(out), model="tiny", vision_encoder=None,
                      weights="m3w=0,ltip=1,align=0,vtp=0", batch_size=8, lr=1e-3, warmup_steps=1, max_steps=6,
                      save_every=6, final_eval=False, progress=False, cpu=True, augment=False, **kw)  # fmt: skip
    model = make_model()
    result = train(cfg, model=model)
    weights = load_file(str(out / "checkpoints" / "step_00000006" / "model" / "model.safetensors"))
    return result, weights, model


def test_training_with_the_feature_cache_equals_training_without_it(world, tmp_path):
    plain, plain_weights, _ = _run(world, tmp_path / "plain")
    cached, cached_weights, model = _run(world, tmp_path / "cached", feature_cache="memory")
    assert model.feature_cache.hits > 0  # 48 draws from the small world: images recur
    assert cached.losses.keys() == plain.losses.keys()
    for name in plain.losses:
        assert cached.losses[name] == pytest.approx(plain.losses[name], rel=1e-5)
    # equal up to float rounding: a cached image's features were computed in the batch it was first drawn in,
    # and a convolution's sums may round differently in another batch
    for key, value in plain_weights.items():
        torch.testing.assert_close(cached_weights[key], value, rtol=1e-4, atol=1e-5)


def test_a_cache_folder_serves_a_later_run_and_refuses_another_encoder(tmp_path):
    model = make_model()
    enc = model.processor([["x", random_image(1), "y", random_image(2)]])
    first = model.use_feature_cache(tmp_path / "features")
    with torch.no_grad():
        want = model(**enc).logits
    assert (first.hits, first.misses) == (0, 2)
    again = make_model()
    second = again.use_feature_cache(tmp_path / "features")
    with torch.no_grad():
        assert torch.equal(again(**enc).logits, want)
    assert (second.hits, second.misses) == (2, 0) and not second.memory.keys() - first.memory.keys()
    with pytest.raises(ValueError, match="holds features of vision encoder .* not 'another-encoder'"):
        FrozenFeatureCache("another-encoder", tmp_path / "features")


def test_changed_pixels_or_another_encoder_are_other_keys():
    cache = FrozenFeatureCache("enc-a")
    pixels = torch.rand(1, 3, 32, 32)
    changed = pixels.clone()
    changed[0, 0, 0, 0] += 1e-3
    assert cache.key(pixels) != cache.key(changed) != FrozenFeatureCache("enc-b").key(changed)
    assert cache.key(pixels) == cache.key(pixels.clone())
