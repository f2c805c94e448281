"""One factory for the dual encoder: named JSON presets beside the code, or a saved model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .model import CONFIG_NAME, DualEncoder, DualEncoderConfig
from .shared.readers import read_json

__all__ = ["create_model", "get_preset_config", "list_models"]

PRESET_DIR = Path(__file__).parent / "presets"


def list_models() -> list[str]:
    """Names of the shipped presets (``presets/*.json``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def get_preset_config(name_or_path: str | Path, **overrides: Any) -> DualEncoderConfig:
    """The config of a preset name or a JSON file, with field overrides applied."""
    path = Path(name_or_path)
    if not path.suffix == ".json" or not path.is_file():
        path = PRESET_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ValueError(
            f"unknown model '{name_or_path}': expected a preset ({', '.join(list_models())}), a preset JSON "
            f"file, or a folder written by save_pretrained"
        )
    data = read_json(path)  # a broken preset file is named, not a JSONDecodeError traceback
    data.update(overrides)
    return DualEncoderConfig.from_dict(data, source=str(path))


def create_model(name_or_path: str | Path, **overrides: Any) -> DualEncoder:
    """Build a dual encoder.

    Args:
        name_or_path: a preset name (see ``list_models()``), a preset JSON file, or a folder written by
            ``DualEncoder.save_pretrained`` (its weights are loaded; overrides are not allowed then).
        **overrides: DualEncoderConfig fields that replace the preset's values (e.g. ``image_size=96``).

    Returns:
        A DualEncoder in train mode, on the CPU (or the current default device).
    """
    folder = Path(name_or_path)
    if folder.is_dir() and (folder / CONFIG_NAME).is_file():
        if overrides:
            raise ValueError(f"{folder} is a saved model; config overrides {sorted(overrides)} are not supported")
        return DualEncoder.from_pretrained(folder)
    return DualEncoder(get_preset_config(name_or_path, **overrides))
