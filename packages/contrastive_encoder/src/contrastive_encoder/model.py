"""The dual encoder of Flamingo stage 1: an NFNet image tower and a BERT text tower in one joint space.

Flamingo (Alayrac et al., "Flamingo: a Visual Language Model for Few-Shot Learning", arXiv 2204.14198,
section 3.1 and appendix B.1.3) pretrains its vision encoder, a Normalizer-Free ResNet (Brock et al.,
"High-Performance Large-Scale Image Recognition Without Normalization", arXiv 2102.06171), as a dual encoder
against a BERT text encoder with the contrastive loss of CLIP (Radford et al., arXiv 2103.00020). Both towers
mean-pool their output (global average pooling over space, masked mean over tokens), project linearly into the
joint space and L2-normalise.
"""

from __future__ import annotations

import json
import math
import string
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DualEncoder",
    "DualEncoderConfig",
    "TextTower",
    "VisionTower",
    "build_char_tokenizer",
    "build_tokenizer",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
SPATIAL_FEATURES = ("final_conv", "last_stage")  # DualEncoderConfig.spatial_features


@dataclass
class DualEncoderConfig:
    name: str = "custom"  # preset name or a label; part of the exported encoder's identifier
    vision_arch: str | None = None  # a timm model name (e.g. "dm_nfnet_f6"); None builds vision_nf
    vision_nf: dict[str, Any] | None = None  # timm NfCfg fields for a small custom NFNet (used if no arch)
    image_size: int = 224  # training/eval resolution (square); 288 for the paper's F6
    output_stride: int = 32  # stride of the final feature map (16 dilates the last stage: more positions)
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # per-channel normalisation mean
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)  # per-channel normalisation std
    text_model: str | None = "minilm-l6"  # packaged name / folder / hub id of a BERT-family encoder
    text_pretrained: bool = True  # load text_model's weights; False: random init from its config
    text_config: dict[str, Any] | None = None  # transformers config dict (with model_type) if no text_model
    tokenizer: str = "minilm-l6"  # tokenizer name/folder, or "char" for the built-in offline one
    max_text_len: int = 64  # captions are truncated to this many tokens
    text_dropout: float = 0.0  # dropout inside the text encoder (0 keeps training deterministic)
    embed_dim: int = 256  # joint embedding space (1376 in the paper)
    # the spatial features Flamingo's resampler reads (SPATIAL_FEATURES): "final_conv", after the trunk's final 1x1
    # conv (timm's num_features, 3072 for NFNet-F6), or "last_stage", the last stage's output before it (1536 for
    # F6, the paper's D). The contrastive embedding pools after the final conv either way.
    spatial_features: str = "final_conv"
    init_logit_scale: float = math.log(1 / 0.07)  # learnable log-temperature init (CLIP)
    max_logit_scale: float = math.log(100.0)  # logit scale is clamped to exp(this) after each step
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes carried through save/load

    def __post_init__(self) -> None:
        if self.vision_arch is None and not self.vision_nf:
            raise ValueError("DualEncoderConfig needs vision_arch (a timm NFNet name) or vision_nf (NfCfg fields)")
        if self.text_model is None and not self.text_config:
            raise ValueError("DualEncoderConfig needs text_model (a pretrained encoder) or text_config")
        if self.spatial_features not in SPATIAL_FEATURES:
            raise ValueError(f"spatial_features {self.spatial_features!r}: expected one of {', '.join(SPATIAL_FEATURES)}")
        self.image_mean = tuple(self.image_mean)
        self.image_std = tuple(self.image_std)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> DualEncoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown DualEncoderConfig field(s) {unknown}; expected some of {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_char_tokenizer():
    """A character-level WordPiece tokenizer that needs no files (for the ``tiny`` preset and tests)."""
    from transformers import BertTokenizer

    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
    return BertTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, do_lower_case=True)


def build_tokenizer(name: str):
    """``"char"`` gives the built-in tokenizer; anything else goes through ``pretrained.load_tokenizer``."""
    if name == "char":
        return build_char_tokenizer()
    from .shared.pretrained import load_tokenizer

    return load_tokenizer(name)


def _build_trunk(cfg: DualEncoderConfig) -> nn.Module:
    import timm
    from timm.models.nfnet import NfCfg, NormFreeNet

    if cfg.vision_arch is not None:
        return timm.create_model(cfg.vision_arch, pretrained=False, num_classes=0, output_stride=cfg.output_stride)
    nf = dict(cfg.vision_nf)
    nf["depths"], nf["channels"] = tuple(nf["depths"]), tuple(nf["channels"])
    return NormFreeNet(NfCfg(**nf), num_classes=0, output_stride=cfg.output_stride)


def _build_text_encoder(cfg: DualEncoderConfig) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    drop = {"hidden_dropout_prob": cfg.text_dropout, "attention_probs_dropout_prob": cfg.text_dropout}
    if cfg.text_model is not None and cfg.text_pretrained:
        from .shared.pretrained import load_text_encoder

        encoder = load_text_encoder(cfg.text_model)
        for key, value in drop.items():
            if hasattr(encoder.config, key):
                setattr(encoder.config, key, value)
        for module in encoder.modules():  # the config is read at build time; patch the built layers too
            if isinstance(module, nn.Dropout):
                module.p = cfg.text_dropout
        if getattr(encoder, "pooler", None) is not None:  # unused (we mean-pool): drop it, DDP needs every
            encoder.pooler = None  # trainable parameter to receive a gradient
        return encoder
    if cfg.text_model is not None:
        from .shared.pretrained import resolve_pretrained

        config = AutoConfig.from_pretrained(resolve_pretrained(cfg.text_model))
    else:
        data = dict(cfg.text_config)
        model_type = data.pop("model_type", "bert")
        config = AutoConfig.for_model(model_type, **data)
    for key, value in drop.items():
        if hasattr(config, key):
            setattr(config, key, value)
    if config.model_type == "bert":  # the pooler is unused (we mean-pool), so it would never get gradients
        return AutoModel.from_config(config, add_pooling_layer=False)
    return AutoModel.from_config(config)


class VisionTower(nn.Module):
    """NFNet trunk -> global average pool -> linear projection -> L2 normalisation.

    ``spatial_features`` picks the map ``spatial_map`` gives the Perceiver Resampler (``SPATIAL_FEATURES``).
    """

    def __init__(self, trunk: nn.Module, embed_dim: int, spatial_features: str = "final_conv"):
        super().__init__()
        self.trunk = trunk
        self.feature_dim = int(trunk.num_features)
        self.spatial_features = spatial_features
        last_stage = trunk.feature_info[-2 if trunk.feature_info[-1]["module"] == "final_conv" else -1]
        self.spatial_dim = self.feature_dim if spatial_features == "final_conv" else int(last_stage["num_chs"])
        self.proj = nn.Linear(self.feature_dim, embed_dim, bias=False)

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The final feature map ``(B, d, h, w)``, after the final conv (what the contrastive embedding pools)."""
        return self.trunk.forward_features(pixels)

    def spatial_map(self, pixels: torch.Tensor) -> torch.Tensor:
        """The feature map the Perceiver Resampler reads, ``(B, spatial_dim, h, w)``."""
        if self.spatial_features == "final_conv":
            return self.forward_features(pixels)
        return self.trunk.stages(self.trunk.stem(pixels))  # the last stage's output, before the final conv

    def pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.proj(feature_map.mean(dim=(2, 3)))  # (B, D)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.pool(self.forward_features(pixels)), dim=-1)


class TextTower(nn.Module):
    """BERT-family encoder -> masked mean over tokens -> linear projection -> L2 normalisation."""

    def __init__(self, encoder: nn.Module, embed_dim: int):
        super().__init__()
        self.encoder = encoder
        self.hidden_dim = int(encoder.config.hidden_size)
        self.proj = nn.Linear(self.hidden_dim, embed_dim, bias=False)

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Masked mean of the last hidden states, ``(B, hidden)``, before the projection."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, H)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.pool(input_ids, attention_mask)), dim=-1)


class DualEncoder(nn.Module):
    """Image and text towers plus the learnable temperature of the contrastive loss."""

    def __init__(self, config: DualEncoderConfig, tokenizer=None):
        super().__init__()
        self.config = config
        self.vision = VisionTower(_build_trunk(config), config.embed_dim, config.spatial_features)
        self.text = TextTower(_build_text_encoder(config), config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))
        self.tokenizer = tokenizer if tokenizer is not None else build_tokenizer(config.tokenizer)

    # -- encoding ----------------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask ``(B, L)`` for a list of captions."""
        out = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.config.max_text_len, return_tensors="pt"
        )
        return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings ``(B, D)``."""
        return self.vision(pixels)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised text embeddings ``(B, D)``."""
        return self.text(input_ids, attention_mask)

    @torch.no_grad()
    def encode_captions(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Embed raw strings (tokenised here) on the model's device, ``(N, D)``."""
        device = self.logit_scale.device
        chunks = []
        for i in range(0, len(texts), batch_size):
            tok = {k: v.to(device) for k, v in self.tokenize(texts[i : i + batch_size]).items()}
            chunks.append(self.encode_text(**tok).float())
        return torch.cat(chunks)

    def forward(
        self, pixels: torch.Tensor, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
        text_pooled: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(image_features (B, D), text_features (B, D), logit_scale.exp())``.

        ``text_pooled`` (B, hidden), the text encoder's pooled output computed earlier (a frozen encoder's
        cache), replaces ``input_ids`` / ``attention_mask``; only the projection runs then.
        """
        if text_pooled is None:
            text = self.encode_text(input_ids, attention_mask)
        else:
            text = F.normalize(self.text.proj(text_pooled), dim=-1)
        return self.encode_image(pixels), text, self.logit_scale.exp()

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """Keep the temperature in [0, max_logit_scale] (CLIP clamps after each optimizer step)."""
        self.logit_scale.clamp_(0.0, self.config.max_logit_scale)

    # -- freezing ----------------------------------------------------------------------------------------
    def lock_text(self, unlock_projection: bool = True) -> None:
        """Freeze the text encoder (``--lock-text``); its projection stays trainable unless told otherwise."""
        for p in self.text.encoder.parameters():
            p.requires_grad_(False)
        for p in self.text.proj.parameters():
            p.requires_grad_(unlock_projection)

    def lock_image(self) -> None:
        """Freeze the whole image tower (LiT-style)."""
        for p in self.vision.parameters():
            p.requires_grad_(False)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable and frozen parameter counts, and the image/text tower sizes."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        return {
            "trainable": trainable,
            "frozen": total - trainable,
            "vision": sum(p.numel() for p in self.vision.trunk.parameters()),
            "text": sum(p.numel() for p in self.text.encoder.parameters()),
        }

    # -- save / load -------------------------------------------------------------------------------------
    def export_config(self) -> DualEncoderConfig:
        """The config that rebuilds this model from its saved weights alone (no pretrained files needed)."""
        data = self.config.to_dict()
        text_cfg = self.text.encoder.config.to_dict()
        for key in ("_name_or_path", "architectures", "transformers_version", "torch_dtype", "dtype"):
            text_cfg.pop(key, None)
        data.update(text_model=None, text_pretrained=False, text_config=text_cfg)
        return DualEncoderConfig.from_dict(data)

    def save_pretrained(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``tokenizer/`` atomically into ``directory``.

        A previous save there is replaced; a non-empty folder with other files is refused unless ``overwrite``
        (then only the saved files are replaced and the others kept; see ``outputs.atomic_save_dir``).
        """
        from safetensors.torch import save_file

        from .shared.outputs import atomic_save_dir

        directory = Path(directory)
        with atomic_save_dir(directory, overwrite=overwrite, by="DualEncoder.save_pretrained") as tmp:
            cfg = self.export_config().to_dict()
            cfg["tokenizer"] = TOKENIZER_DIR
            (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            self.tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> DualEncoder:
        """Load a folder written by ``save_pretrained``.

        Raises:
            FileNotFoundError: no ``config.json`` or ``model.safetensors`` in ``directory``.
            CorruptFileError: a config that is not JSON or not a DualEncoder config, weights that are truncated,
                not safetensors, or of another architecture (each message names the file).
        """
        from .shared.readers import CorruptFileError, first_line, load_weights, read_json

        directory = Path(directory)
        cfg_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{directory} is not a saved DualEncoder: no {CONFIG_NAME} in it")
        data = read_json(cfg_path)
        tok_name = data.get("tokenizer", "char")
        if tok_name == TOKENIZER_DIR:
            data["tokenizer"] = str(directory / TOKENIZER_DIR)
        try:
            config = DualEncoderConfig.from_dict(data, source=str(cfg_path))
        except (TypeError, KeyError, ValueError) as e:  # fields of the wrong type or shape
            if str(cfg_path) in str(e) or isinstance(e, CorruptFileError):
                raise
            raise CorruptFileError(f"{cfg_path}: not a valid DualEncoder config ({type(e).__name__}: {e})") from e
        try:  # the tokenizer first, so that a damaged tokenizer/ is not blamed on config.json
            tokenizer = build_tokenizer(config.tokenizer)
        except (OSError, TypeError, KeyError, ValueError) as e:
            reason = first_line(e)
            raise CorruptFileError(f"{config.tokenizer}: cannot load the saved tokenizer ({type(e).__name__}: "
                                   f"{reason})") from e
        try:
            model = cls(config, tokenizer=tokenizer)
        except (OSError, TypeError, KeyError, ValueError) as e:  # fields of the wrong type for the layers
            reason = first_line(e)
            raise CorruptFileError(f"{cfg_path}: not a valid DualEncoder config ({type(e).__name__}: {reason})") from e
        state = load_weights(weights_path, device=str(map_location))
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # tensors of another shape: weights of another architecture
            reason = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
            raise CorruptFileError(f"{weights_path} does not match {cfg_path} ({reason})") from e
        if missing or unexpected:
            raise CorruptFileError(
                f"{weights_path} does not match {cfg_path}: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        return model
