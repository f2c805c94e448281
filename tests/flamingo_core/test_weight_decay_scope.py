"""Weight decay as the paper applies it (Appendix B.1.2: every trained parameter but the resampler's) and as the
default does (the GATED XATTN-DENSE matrices only)."""

import pytest

import flamingo_core as fc
from flamingo_core.train import param_groups


def _names(model, group) -> set[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)] for p in group["params"]}


def test_paper_scope_decays_every_trained_parameter_but_the_resamplers():
    model = fc.create_model("tiny")
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    decay, no_decay = param_groups(model, 0.1, decay="paper")
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert _names(model, no_decay) == {n for n in trained if n.startswith("perceiver.")}
    decayed = _names(model, decay)
    assert decayed == {n for n in trained if not n.startswith("perceiver.")}
    assert any("alpha_xattn" in n for n in decayed) and any(n.startswith("new_tokens.") for n in decayed)
    assert any(n.endswith("norm.weight") for n in decayed)
    # the default: the blocks' matrices only
    default = _names(model, param_groups(model, 0.1)[0])
    assert default < decayed and all(n.startswith("xattn_layers.") for n in default)


def test_paper_scope_keeps_the_decay_in_the_lr_groups():
    model = fc.create_model("tiny")
    groups = param_groups(model, 0.1, lr=1e-3, gate_lr_mult=10.0, resampler_lr_mult=0.5, decay="paper")
    gates, resampler = groups[2], groups[3]
    assert gates["weight_decay"] == 0.1 and _names(model, gates) and all("alpha" in n for n in _names(model, gates))
    assert resampler["weight_decay"] == 0.0 and all(n.startswith("perceiver.") for n in _names(model, resampler))
    assert param_groups(model, 0.1, lr=1e-3, gate_lr_mult=10.0)[2]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="decay 'all': expected one of matrices, paper"):
        param_groups(model, 0.1, decay="all")
