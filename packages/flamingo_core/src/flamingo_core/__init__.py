"""Flamingo stage 2 (arXiv 2204.14198): Perceiver Resampler and gated XATTN-DENSE layers on a frozen causal LM."""

from .config import FlamingoConfig, list_models, load_config
from .factory import create_model
from .flamingo import Flamingo
from .gated_xattn import GatedCrossAttentionBlock, MaskedCrossAttention
from .generation import ContinuationScores, generate, score_continuations
from .labels import IGNORE_INDEX, make_labels
from .lm_adapter import find_decoder_layers
from .openflamingo import convert_openflamingo, from_openflamingo
from .perceiver import PerceiverResampler
from .processor import FlamingoProcessor
from .tokenization import add_flamingo_tokens, build_byte_tokenizer
from .vision import ConvStemVisionEncoder, freeze_module, load_vision_encoder

__all__ = [
    "ContinuationScores",
    "ConvStemVisionEncoder",
    "Flamingo",
    "FlamingoConfig",
    "FlamingoProcessor",
    "GatedCrossAttentionBlock",
    "MaskedCrossAttention",
    "PerceiverResampler",
    "add_flamingo_tokens",
    "build_byte_tokenizer",
    "convert_openflamingo",
    "create_model",
    "from_openflamingo",
    "IGNORE_INDEX",
    "make_labels",
    "find_decoder_layers",
    "freeze_module",
    "generate",
    "list_models",
    "load_config",
    "load_vision_encoder",
    "score_continuations",
]
