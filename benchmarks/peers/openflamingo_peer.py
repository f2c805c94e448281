"""OpenFlamingo 2.0.1 as the peer of the tests and benchmarks: imported from ``benchmarks/.peer-site`` (installed by
``bash benchmarks/peers/install_openflamingo.sh``, never into the packages' environment) with the patches it needs
on transformers 5. Nothing here is part of the packages.

Patches (applied once, by ``import_openflamingo``):

- ``FlamingoLMMixin.forward(input_ids, attention_mask, **kw)`` requires ``attention_mask`` as a positional
  argument; transformers 5's ``generate`` leaves it out when it is all ones (and calls the prefill with keywords
  only), so it defaults to None here.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["INSTALL_COMMAND", "PEER_SITE", "filter_state_dict_to_trainable", "import_openflamingo", "is_installed"]

ROOT = Path(__file__).resolve().parents[2]
PEER_SITE = ROOT / "benchmarks" / ".peer-site"
INSTALL_COMMAND = "bash benchmarks/peers/install_openflamingo.sh"
_PATCHED = "_flamingo_suite_patched"


def is_installed() -> bool:
    return (PEER_SITE / "open_flamingo").is_dir()


def import_openflamingo():
    """The ``open_flamingo`` package, patched for transformers 5.

    The peer site goes at the END of ``sys.path``: what the environment already has (open_clip, transformers)
    wins, so the peer and this suite share one open_clip (and its registered model configs); only the modules the
    environment lacks (open_flamingo, einops, einops_exts) come from the peer site.
    """
    if not is_installed():
        raise ModuleNotFoundError(f"OpenFlamingo is not installed in {PEER_SITE}: run `{INSTALL_COMMAND}`")
    if str(PEER_SITE) not in sys.path:
        sys.path.append(str(PEER_SITE))
    import open_flamingo
    from open_flamingo.src.flamingo_lm import FlamingoLMMixin

    if not getattr(FlamingoLMMixin, _PATCHED, False):
        original_forward = FlamingoLMMixin.forward

        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            return original_forward(self, input_ids, attention_mask, **kwargs)

        FlamingoLMMixin.forward = forward
        setattr(FlamingoLMMixin, _PATCHED, True)
    return open_flamingo


def filter_state_dict_to_trainable():
    """OpenFlamingo's own ``train_utils.filter_state_dict_to_trainable(model, state_dict)``: what its training
    script writes to ``checkpoint.pt`` (the trained weights and every weight whose name holds "embed", without the
    duplicates under ``old_decoder_blocks`` / ``gated_cross_attn_layers`` and without the vision encoder).

    Compiled from the function's source in the peer site: ``open_flamingo/train/train_utils.py`` imports wandb and
    FSDP at module level, which the peer site does not install.
    """
    import ast

    import torch

    import_openflamingo()
    path = PEER_SITE / "open_flamingo" / "train" / "train_utils.py"
    tree = ast.parse(path.read_text())
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "filter_state_dict_to_trainable")
    namespace = {"torch": torch}
    exec(compile(ast.Module(body=[func], type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
    return namespace["filter_state_dict_to_trainable"]
