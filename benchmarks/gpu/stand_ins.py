"""Random-weight stand-ins for the packaged models, for machines that have neither package (a lent GPU machine
with no registry access): same architectures and shapes, so timings and memory match the real models'.

  python benchmarks/gpu/stand_ins.py lm --config-from DIR --out DIR      # random LM with DIR's config + tokenizer
  python benchmarks/gpu/stand_ins.py vision --model nano-minilm --out DIR  # that preset's vision tower, random
                                                                          # tiny text tower (no packaged MiniLM)

DIR for ``lm`` is any Hugging Face folder with ``config.json`` and tokenizer files, e.g. the suite's converted
SmolLM2 cache (``python -m contrastive_encoder.shared.pretrained smollm2-135m`` prints it) without its weights.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "generation_config.json", "vocab.json", "merges.txt")


def random_lm(config_from: Path, out: Path, seed: int = 0) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(config_from)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (config_from / name).is_file():
            shutil.copy(config_from / name, out / name)
    return out


def random_vision(preset: str, out: Path, seed: int = 0) -> Path:
    """``preset``'s vision tower with a tiny random BERT as text tower, saved as a dual-encoder folder
    (``load_vision_encoder`` reads its vision half); the folder's ``preset.json`` is that model's preset, for
    ``contrastive-encoder train --model``."""
    from contrastive_encoder.factory import PRESET_DIR, create_model

    tiny = json.loads((PRESET_DIR / "tiny.json").read_text())
    overrides = dict(name=f"{preset}-random-text", text_model=None, text_pretrained=False,
                     tokenizer=tiny["tokenizer"], text_config=tiny["text_config"], max_text_len=tiny["max_text_len"])
    torch.manual_seed(seed)
    create_model(preset, **overrides).save_pretrained(out)
    spec = {**json.loads((PRESET_DIR / f"{preset}.json").read_text()), **overrides}
    (out / "preset.json").write_text(json.dumps(spec))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    lm = sub.add_parser("lm", help="random-weight causal LM from a folder's config.json and tokenizer")
    lm.add_argument("--config-from", type=Path, required=True)
    lm.add_argument("--out", type=Path, required=True)
    vis = sub.add_parser("vision", help="a contrastive_encoder preset's vision tower with a tiny text tower")
    vis.add_argument("--model", default="nano-minilm", help="contrastive_encoder model preset")
    vis.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    out = random_lm(args.config_from, args.out) if args.what == "lm" else random_vision(args.model, args.out)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
