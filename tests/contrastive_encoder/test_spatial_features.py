"""Which NFNet features Flamingo's resampler reads: after timm's final 1x1 conv (3072 channels for F6) or the last
stage's output before it (1536 for F6, the width D of the paper's resampler, Table 4)."""

import pytest
import torch

from contrastive_encoder import create_model
from contrastive_encoder.factory import get_preset_config
from contrastive_encoder.vision import FrozenVisionEncoder


def _encoders():
    # tiny with a final conv that widens, as NFNet-F6's (1536 -> 3072)
    nf = {**get_preset_config("tiny").vision_nf, "num_features": 64}
    torch.manual_seed(0)
    final = create_model("tiny", vision_nf=nf)
    last = create_model("tiny", vision_nf=nf, spatial_features="last_stage")
    last.load_state_dict(final.state_dict())  # the same weights: only what the resampler reads differs
    return FrozenVisionEncoder.from_dual_encoder(final), FrozenVisionEncoder.from_dual_encoder(last)


def test_last_stage_features_are_the_trunk_before_its_final_conv():
    final, last = _encoders()
    trunk = last.tower.trunk
    pixels = torch.randn(2, 3, 32, 32)
    stage = trunk.stages(trunk.stem(pixels))  # (B, C_last_stage, h, w)
    assert last.feature_dim == stage.shape[1] == trunk.feature_info[-2]["num_chs"] != final.feature_dim
    feats = last(pixels)  # (B, 1, h*w, C)
    torch.testing.assert_close(feats[:, 0], stage.flatten(2).transpose(1, 2))
    assert final(pixels).shape[-1] == trunk.num_features  # the default: after the final conv
    torch.testing.assert_close(last.embed(pixels), final.embed(pixels))  # the contrastive embedding is the same
    assert last.identifier != final.identifier  # the feature cache keeps them apart


def test_bad_spatial_features_are_named():
    with pytest.raises(ValueError, match="spatial_features 'pool': expected one of final_conv, last_stage"):
        create_model("tiny", spatial_features="pool")
