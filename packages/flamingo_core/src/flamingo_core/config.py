"""Configuration and named presets of the Flamingo model (arXiv 2204.14198, Table 2 / Appendix B.1).

Presets are JSON files in ``presets/`` loaded as ``FlamingoConfig(**json)``. The paper inserts a GATED
XATTN-DENSE block before every layer of the 3B model, every 4th of the 9B and every 7th of the 80B
(``cross_attn_every`` 1 / 4 / 7); the ``flamingo-*-spacing`` presets reproduce that spacing on SmolLM2 with the
trained parts at the paper's sizes (Table 4): a resampler of 16 heads of 96 (1536 wide) and cross-attention with
the LM's own heads, both with Squared ReLU feed-forwards 4x wide.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .perceiver import FFW_ACTIVATIONS

__all__ = ["CROSS_ATTN_PLACEMENTS", "FROZEN_DTYPES", "FlamingoConfig", "list_models", "load_config"]

PRESET_DIR = Path(__file__).parent / "presets"
FROZEN_DTYPES = ("float32", "bfloat16", "float16")
# Where the GATED XATTN-DENSE blocks go among L decoder layers, every n-th (n = cross_attn_every); a block at
# index i runs on layer i's input:
#   "openflamingo": before layers i with (i + 1) % n == 0, the last of each group of n (n-1, 2n-1, ...), as
#       OpenFlamingo 2.0.1 (and so its checkpoints) places them: floor(L / n) blocks.
#   "paper": before layers i with i % n == 0, "starting from the very first layer and before every n-th
#       transformer block" (Appendix B.1.1): ceil(L / n) blocks. The paper gives the 80B model 12 blocks over
#       Chinchilla's 80 layers with n = 7, which only this rule yields (0, 7, ..., 77; the other gives 11); for
#       the 9B (40 layers, n = 4) both give 10, for the 3B (n = 1) both put one before every layer.
CROSS_ATTN_PLACEMENTS = ("openflamingo", "paper")


@dataclass
class FlamingoConfig:
    lm: str = "smollm2-135m"  # frozen causal LM: packaged short name, local folder or hub id
    lm_config: dict | None = None  # instead of `lm`: a transformers config dict, random init; an `lm` override drops it
    lm_seed: int = 0  # seed of the random LM built from `lm_config`
    tokenizer: str | None = None  # tokenizer name; None = the LM's; "byte" = built-in byte-level tokenizer
    vision_encoder: str = "nano-minilm"  # contrastive_encoder preset or checkpoint folder; "conv-tiny" = test stem
    cross_attn_every: int = 4  # a GATED XATTN-DENSE block before every N-th decoder layer (paper: 1/4/7)
    cross_attn_placement: str = "openflamingo"  # which layers those are: CROSS_ATTN_PLACEMENTS ("paper")
    only_attend_immediate_media: bool = True  # phi masking: attend only to the last preceding media (paper)
    num_latents: int = 64  # R, visual tokens per image/video
    resampler_depth: int = 6  # Perceiver Resampler layers
    resampler_heads: int = 8  # its attention heads
    resampler_dim_head: int = 64  # width of each of its heads
    resampler_ff_mult: int = 4  # its feed-forward width multiplier
    max_frames: int = 8  # learned time embeddings, one per trained video frame (longer videos interpolate them)
    # stage-2 input side (Appendix B.1.2: 320 on the NFNet-F6 pretrained at 288); None = processor.stage2_image_size:
    # 320 for an NFNet-F6 tower, the encoder's own input size otherwise
    image_size: int | None = None
    xattn_heads: int | None = 8  # cross-attention heads; None = the LM's (paper, Table 4)
    xattn_dim_head: int | None = 64  # width of each cross-attention head; None = the LM's (hidden / heads)
    xattn_ff_mult: int = 4  # gated feed-forward width multiplier
    ffw_activation: str = "gelu"  # resampler and GATED XATTN-DENSE feed-forwards: FFW_ACTIVATIONS (paper: squared_relu)
    media_token: str = "<image>"  # marks where an image/video occurs in the text
    eoc_token: str = "<EOC>"  # end of chunk: ends a caption/answer, stops generation
    # put before every sequence when the tokenizer adds no start token itself, so the LM's first position (its
    # attention sink) is a token it knows rather than the trainable <image>: "auto" = the tokenizer's BOS, else
    # its EOS (GPT-2, GPT-NeoX: <|endoftext|>); or a token string; None = nothing
    doc_start_token: str | None = "auto"
    # dtype of the frozen LM and vision encoder: "float32", or "bfloat16" as the paper trains (frozen parts and
    # activations in bf16, the trained parts keeping fp32 master weights, Appendix B.1.2), or "float16"
    frozen_dtype: str = "float32"
    seed: int = 0  # seed of the trainable parts' initialisation
    name: str = ""  # preset name, informational
    extra: dict = field(default_factory=dict)  # free-form metadata carried in saved configs

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FlamingoConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown FlamingoConfig fields {unknown}; expected some of {sorted(known)}")
        return cls(**d)

    def __post_init__(self):
        if self.cross_attn_every < 1:
            raise ValueError(f"cross_attn_every must be >= 1, got {self.cross_attn_every}")
        if self.cross_attn_placement not in CROSS_ATTN_PLACEMENTS:
            raise ValueError(f"cross_attn_placement {self.cross_attn_placement!r}: expected one of "
                             f"{', '.join(CROSS_ATTN_PLACEMENTS)}")
        if self.num_latents < 1 or self.max_frames < 1:
            raise ValueError("num_latents and max_frames must be >= 1")
        if self.image_size is not None and (not isinstance(self.image_size, int) or self.image_size < 1):
            raise ValueError(f"image_size must be a positive integer or None (the encoder's), got {self.image_size!r}")
        if self.frozen_dtype not in FROZEN_DTYPES:
            raise ValueError(f"frozen_dtype {self.frozen_dtype!r}: expected one of {', '.join(FROZEN_DTYPES)}")
        if self.ffw_activation not in FFW_ACTIVATIONS:
            raise ValueError(f"ffw_activation {self.ffw_activation!r}: expected one of {', '.join(FFW_ACTIVATIONS)}")
        for name in ("resampler_heads", "resampler_dim_head", "xattn_heads", "xattn_dim_head"):
            value = getattr(self, name)
            if name.startswith("xattn") and value is None:  # None: the LM's
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def xattn_head_shape(self, lm_hidden_size: int, lm_num_heads: int) -> tuple[int, int]:
        """(heads, dim_head) of the cross-attention for an LM of ``lm_hidden_size`` and ``lm_num_heads``: the
        fields where given, the LM's heads and their width (hidden / heads) where None (paper, Table 4)."""
        heads = self.xattn_heads if self.xattn_heads is not None else lm_num_heads
        if self.xattn_dim_head is not None:
            return heads, self.xattn_dim_head
        if lm_hidden_size % heads:
            raise ValueError(f"xattn_dim_head None takes the LM's head width, but its hidden size {lm_hidden_size} "
                             f"does not split into {heads} heads; give xattn_dim_head")
        return heads, lm_hidden_size // heads

    def xattn_layer_indices(self, num_layers: int) -> list[int]:
        """Indices of the decoder layers (of ``num_layers``) that get a GATED XATTN-DENSE block before them, by
        ``cross_attn_every`` and ``cross_attn_placement`` (see ``CROSS_ATTN_PLACEMENTS``)."""
        n, offset = self.cross_attn_every, 1 if self.cross_attn_placement == "openflamingo" else 0
        return [i for i in range(num_layers) if (i + offset) % n == 0]


def list_models() -> list[str]:
    """Names of the bundled presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


# Fields chosen for one particular LM: a preset's random `lm_config` and the tokenizer it pairs with it. An
# explicit `lm` replaces that LM, so they go back to their defaults (None: the named LM and its own tokenizer).
_LM_SPECIFIC = ("lm_config", "tokenizer")


def _apply_lm_override(d: dict, overrides: dict) -> dict:
    """Honour an explicit ``lm`` that differs from the config's: drop what belonged to the config's own LM
    (``_LM_SPECIFIC``, unless also given), so the named LM is built with its own tokenizer and the config, saved
    later, describes what was built (the tiny preset's inline ``lm_config`` would otherwise win silently)."""
    lm = overrides.get("lm")
    if lm is None or lm == d.get("lm"):
        return d
    defaults = {f.name: f.default for f in fields(FlamingoConfig) if f.name in _LM_SPECIFIC}
    return {**d, **{k: v for k, v in defaults.items() if k not in overrides}}


def load_config(name_or_path: str | Path | FlamingoConfig, **overrides) -> FlamingoConfig:
    """A preset name, a JSON file, a saved model folder (its config.json) or a config -> FlamingoConfig.

    ``overrides`` replace fields; an ``lm`` override replaces the LM with everything that belonged to the old
    one (``_apply_lm_override``). A file that is not JSON or holds a bad config raises ``ValueError`` naming it.
    """
    from contrastive_encoder.shared.readers import CorruptFileError, read_json

    path = None
    if isinstance(name_or_path, FlamingoConfig):
        d = name_or_path.to_dict()
    else:
        path = Path(name_or_path)
        if path.is_dir():
            path = path / "config.json"
        elif not path.is_file():
            path = PRESET_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise ValueError(
                f"unknown Flamingo model '{name_or_path}': not a preset ({', '.join(list_models())}), "
                "a JSON file or a folder with config.json"
            )
        d = read_json(path)
        if "flamingo" in d:  # a saved model: the config nests under "flamingo"
            d = d["flamingo"]
            if not isinstance(d, dict):
                raise CorruptFileError(f"{path}: 'flamingo' must be a JSON object of FlamingoConfig fields")
            d.setdefault("doc_start_token", None)  # saved before the field existed: trained without a start token
            for key in ("lm", "tokenizer", "vision_encoder"):  # parts saved inside the folder, named relative to it
                if isinstance(d.get(key), str) and not Path(d[key]).is_absolute() and (path.parent / d[key]).exists():
                    d[key] = str(path.parent / d[key])
        try:
            FlamingoConfig.from_dict(d)
        except (TypeError, ValueError) as e:  # wrong field names or values in the file, not in the overrides
            raise CorruptFileError(f"{path}: not a valid Flamingo config ({e})") from e
    d = _apply_lm_override(d, overrides)
    d.update(overrides)
    return FlamingoConfig.from_dict(d)
