"""Flamingo stage 1: an NFNet + BERT dual encoder pretrained with the CLIP contrastive loss, and the frozen
vision encoder it hands to flamingo_core."""

from .factory import create_model, get_preset_config, list_models
from .loss import ClipLoss, gather_features
from .model import DualEncoder, DualEncoderConfig, TextTower, VisionTower
from .transforms import EvalTransform, TrainTransform, swap_left_right
from .vision import FrozenVisionEncoder, load_vision_encoder
from .zero_shot import retrieval_recall, zero_shot_classify

__all__ = [
    "ClipLoss",
    "DualEncoder",
    "DualEncoderConfig",
    "EvalTransform",
    "FrozenVisionEncoder",
    "TextTower",
    "TrainTransform",
    "VisionTower",
    "create_model",
    "gather_features",
    "get_preset_config",
    "list_models",
    "load_vision_encoder",
    "retrieval_recall",
    "swap_left_right",
    "zero_shot_classify",
]
