"""OpenFlamingo checkpoints (flamingo_core.openflamingo) and the two block placements.

For each LM family of the published checkpoints (MPT, GPT-NeoX, LLaMA: tiny random configs saved to folders) and a
tiny random open_clip ViT, OpenFlamingo 2.0.1's own factory builds the model; its trainable weights are randomised
(gates open, so the images matter) and saved as its training script saves them; the converted model gives
OpenFlamingo's logits (max abs diff <= 1e-4, fp32) and greedy tokens on one interleaved, left-padded batch (text
before, between and after two images). Keys that do not fit the named LM or tower are one-line errors raised
before any model is built. The peer comes from `bash benchmarks/peers/install_openflamingo.sh` (`make test` runs
it); without it those tests skip.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch
from fc_helpers import TINY_LMS, make_model, set_gates

import flamingo_core as fc
from flamingo_core.config import FlamingoConfig
from flamingo_core.lm_adapter import FlamingoDecoderLayer
from flamingo_core.openflamingo import (
    EOC_TOKEN,
    MEDIA_TOKEN,
    add_convert_parser,
    from_openflamingo,
    run_convert,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "peers"))
import openflamingo_peer as peer  # noqa: E402

needs_peer = pytest.mark.skipif(not peer.is_installed(),
                                reason=f"OpenFlamingo 2.0.1 is not installed: run `{peer.INSTALL_COMMAND}`")

OC_NAME, OC_CFG, FAMILIES = peer.TINY_VIT, peer.TINY_VIT_CONFIG, peer.TINY_LMS
TOWER = f"open_clip:{OC_NAME}"
EVERY = peer.EVERY
TEXTS = ["A photo:<image>a red circle.<|endofchunk|>Then<image>a blue", "<image>one<|endofchunk|><image>two"]
_save_lm, _randomise_trainable = peer.save_tiny_lm, peer.randomise_trainable


def _save_checkpoint(model, family: str, folder: Path) -> Path:
    """The checkpoint as OpenFlamingo's training writes it (``filter_state_dict_to_trainable``), in three forms:
    a flat ``checkpoint.pt`` (the published files), a DDP training checkpoint, a safetensors file."""
    state = peer.filter_state_dict_to_trainable()(model, model.state_dict())
    if family == "gpt_neox":  # as transformers 4 named GPT-NeoX's head, which OpenFlamingo then saved ("embed")
        head = model.lang_encoder.get_output_embeddings().weight
        with torch.no_grad():  # new rows unlike the LM's, as a resize that grows the matrix draws them
            head[257:259] = torch.randn(2, head.shape[1], generator=torch.Generator().manual_seed(5))
        state["lang_encoder.embed_out.weight"] = head.detach().clone()
        path = folder / "checkpoint_0.pt"
        torch.save({"epoch": 0, "model_state_dict": {f"module.{k}": v for k, v in state.items()},
                    "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
                    "lr_scheduler_state_dict": {"base_lrs": [1e-4], "last_epoch": 3}}, path)
    elif family == "llama":
        from safetensors.torch import save_file

        path = folder / "checkpoint.safetensors"
        save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(path))
    else:
        path = folder / "checkpoint.pt"
        torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def peer_models(tmp_path_factory):
    """family -> (OpenFlamingo model, its tokenizer, LM folder, checkpoint path), built on first use."""
    if not peer.is_installed():
        pytest.skip(f"OpenFlamingo 2.0.1 is not installed: run `{peer.INSTALL_COMMAND}`")
    root = tmp_path_factory.mktemp("openflamingo")
    peer.register_tiny_vit(root)
    built = {}

    def get(family: str):
        if family not in built:
            folder = _save_lm(root / family, family)
            # the tower's random weights from seed 0: ours are drawn with the same seed (config.seed 0)
            model, _, tok = peer.build_tiny_peer(folder, seed=len(built) + 1)
            built[family] = (model, tok, folder, _save_checkpoint(model, family, root / family))
        return built[family]

    return get


def _batch(tok):
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    pixels = torch.randn(len(TEXTS), 2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return enc["input_ids"], enc["attention_mask"], pixels  # pixels: (B, N, T, C, H, W)


def _until_stop(row: list[int], stops: list[int]) -> list[int]:
    for i, t in enumerate(row):
        if t in stops:
            return row[:i + 1]
    return row


@needs_peer
@pytest.mark.parametrize("family", list(FAMILIES))
def test_converted_model_gives_openflamingos_logits_and_greedy_tokens(peer_models, family):
    theirs, tok, folder, checkpoint = peer_models(family)
    ours = from_openflamingo(checkpoint, lm=str(folder), vision=TOWER)
    assert ours.xattn_layer_indices == [1, 3] and ours.config.cross_attn_placement == "openflamingo"
    assert (ours.media_token_id, ours.eoc_token_id) == (tok.convert_tokens_to_ids(MEDIA_TOKEN),
                                                        tok.convert_tokens_to_ids(EOC_TOKEN))  # OpenFlamingo's ids
    assert ours.tokenizer(TEXTS[0])["input_ids"] == tok(TEXTS[0])["input_ids"]
    for a, b in zip(ours.vision_encoder.model.state_dict().values(), theirs.vision_encoder.state_dict().values()):
        assert torch.equal(a, b), "precondition: the same random tower on both sides"
    ids, mask, pixels = _batch(tok)
    assert (mask == 0).any()  # left padding
    with torch.no_grad():
        want = theirs(vision_x=pixels, lang_x=ids, attention_mask=mask).logits
        got = ours(ids, mask, media=pixels).logits
        other_images = theirs(vision_x=pixels.flip(1), lang_x=ids, attention_mask=mask).logits
    real = mask.bool()
    # LLaMA's checkpoint has no lm_head rows for the added tokens (OpenFlamingo redraws them at each load)
    columns = slice(0, FAMILIES["llama"]["vocab_size"]) if family == "llama" else slice(0, len(tok))
    assert (want[real][:, columns] - got[real][:, columns]).abs().max() <= 1e-4
    assert (want - other_images)[real].abs().max() > 1e-2  # the images do matter

    stops = [ours.eoc_token_id, tok.eos_token_id]
    with torch.no_grad():
        want = theirs.generate(pixels, ids, mask, max_new_tokens=8, num_beams=1, do_sample=False,
                               eos_token_id=stops, pad_token_id=tok.pad_token_id,
                               suppress_tokens=[ours.media_token_id])[:, ids.shape[1]:]  # ours never emits <image>
    extra = list(range(len(tok), ours.vocab_size))  # the LM's rows OpenFlamingo's resize dropped
    got = ours.generate(ids, mask, pixels, max_new_tokens=8, eos_token_id=stops, suppress_tokens=extra or None)
    want, got = ([_until_stop(r, stops) for r in t.tolist()] for t in (want, got))
    assert got == want
    assert max(len(set(r)) for r in got) > 2  # not a degenerate repetition


@needs_peer
def test_a_whole_state_dict_converts_to_the_same_weights(peer_models, tmp_path):
    """``torch.save(model.state_dict())`` of the whole model: the frozen parts' keys (vision_encoder.*, the LM's, the
    old_decoder_blocks / gated_cross_attn_layers duplicates) are taken from --lm / --vision instead."""
    theirs, _, folder, checkpoint = peer_models("mpt")
    torch.save(theirs.state_dict(), tmp_path / "whole.pt")
    a = from_openflamingo(tmp_path / "whole.pt", lm=str(folder), vision=TOWER, cross_attn_every=EVERY)
    b = from_openflamingo(checkpoint, lm=str(folder), vision=TOWER)
    for (key, x), y in zip(a.trainable_state_dict().items(), b.trainable_state_dict().values()):
        assert torch.equal(x, y), key


@needs_peer
def test_cli_writes_a_folder_that_reloads_to_the_same_model(peer_models, tmp_path, capsys, monkeypatch):
    theirs, tok, folder, checkpoint = peer_models("mpt")
    parser = argparse.ArgumentParser()
    add_convert_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "converted"
    args = parser.parse_args(["convert-openflamingo", "--checkpoint", str(checkpoint), "--lm", str(folder),
                              "--vision", TOWER, "--out", str(out), "--cross-attn-every", str(EVERY)])
    assert run_convert(args) == 0
    assert "wrote" in capsys.readouterr().out
    reloaded = fc.Flamingo.from_pretrained(out)
    assert reloaded.config.extra["converted_from"]["format"] == "openflamingo-2.0.1"
    ids, mask, pixels = _batch(tok)
    with torch.no_grad():
        want = theirs(vision_x=pixels, lang_x=ids, attention_mask=mask).logits
        got = reloaded(ids, mask, media=pixels).logits
    assert (want - got[..., :len(tok)])[mask.bool()].abs().max() <= 1e-4
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("not a saved model")
    args.out = str(tmp_path / "busy")
    _refuse_model_building(monkeypatch)  # refused before converting anything, on one line
    capsys.readouterr()
    assert run_convert(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flamingo convert-openflamingo: error: --out") and "\n" not in err


def _refuse_model_building(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the error must come before any model is built")

    monkeypatch.setattr(fc.factory, "create_model", fail)


def _one_line_error(match: str, **kwargs) -> str:
    with pytest.raises(ValueError, match=match) as e:
        from_openflamingo(**kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


@needs_peer
def test_keys_that_do_not_fit_the_named_lm_or_tower_are_one_line_errors(peer_models, tmp_path, monkeypatch):
    _, _, mpt_folder, mpt_checkpoint = peer_models("mpt")
    _, _, _, llama_checkpoint = peer_models("llama")
    _refuse_model_building(monkeypatch)
    msg = _one_line_error("does not fit LM .*MptForCausalLM", checkpoint=llama_checkpoint, lm=str(mpt_folder),
                          vision=TOWER)
    assert "lang_encoder.model.layers" in msg and "transformer.blocks" in msg
    _one_line_error("cross_attn_every=3 does not give", checkpoint=mpt_checkpoint, lm=str(mpt_folder), vision=TOWER,
                    cross_attn_every=3)
    state = torch.load(mpt_checkpoint, weights_only=True)
    state["perceiver.layers.0.0.to_query.weight"] = state.pop("perceiver.layers.0.0.to_q.weight")
    torch.save(state, tmp_path / "renamed.pt")
    msg = _one_line_error("Perceiver Resampler does not fit", checkpoint=tmp_path / "renamed.pt",
                          lm=str(mpt_folder), vision=TOWER)
    assert "perceiver.layers.0.0.to_query.weight" in msg and "perceiver.layers.0.0.to_q.weight" in msg
    state = torch.load(mpt_checkpoint, weights_only=True)
    del state["lang_encoder.transformer.blocks.3.gated_cross_attn_layer.ff_gate"]
    torch.save(state, tmp_path / "no-gate.pt")
    _one_line_error(r"missing \['lang_encoder.transformer.blocks.3.gated_cross_attn_layer.ff_gate'\]",
                    checkpoint=tmp_path / "no-gate.pt", lm=str(mpt_folder), vision=TOWER)
    wide = {**OC_CFG, "vision_cfg": {**OC_CFG["vision_cfg"], "width": 48}}
    (tmp_path / "of-test-vit-48.json").write_text(json.dumps(wide))
    import open_clip

    open_clip.add_model_config(tmp_path / "of-test-vit-48.json")
    _one_line_error("does not fit vision tower 'open_clip:of-test-vit-48'", checkpoint=mpt_checkpoint,
                    lm=str(mpt_folder), vision="open_clip:of-test-vit-48")
    _one_line_error("is not an OpenFlamingo checkpoint", checkpoint=_our_weights(tmp_path), lm=str(mpt_folder),
                    vision=TOWER)


@needs_peer
def test_a_checkpoint_trained_on_another_lm_of_the_family_is_refused(peer_models, tmp_path):
    _, _, _, checkpoint = peer_models("mpt")
    other = _save_lm(tmp_path / "other-mpt", "mpt", seed=7)  # same shapes, other weights
    _one_line_error("differ from the LM's .*trained on another LM", checkpoint=checkpoint, lm=str(other),
                    vision=TOWER)


def _our_weights(tmp_path: Path) -> Path:
    model = make_model()
    model.save_pretrained(tmp_path / "ours")
    return tmp_path / "ours" / "model.safetensors"


def test_files_that_are_not_weights_only_checkpoints_are_refused(tmp_path):
    torch.save({"model_state_dict": {"perceiver.latents": torch.zeros(2, 2)}, "hook": len}, tmp_path / "pickle.pt")
    _one_line_error("not a weights-only torch checkpoint", checkpoint=tmp_path / "pickle.pt", lm="x", vision=TOWER)
    _one_line_error("no such file", checkpoint=tmp_path / "missing.pt", lm="x", vision=TOWER)
    torch.save([1, 2], tmp_path / "list.pt")
    _one_line_error("expected a state dict of tensors", checkpoint=tmp_path / "list.pt", lm="x", vision=TOWER)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_convert_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert-openflamingo", "--checkpoint", str(tmp_path / "none.pt"), "--lm", "x",
                              "--vision", TOWER, "--out", str(tmp_path / "out")])
    assert run_convert(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"flamingo convert-openflamingo: error: OpenFlamingo checkpoint {tmp_path / 'none.pt'}: no such file"


# ---------------------------------------------------------------------------------------------------- placement
def test_both_placements_give_the_expected_layers():
    assert FlamingoConfig(cross_attn_every=4).xattn_layer_indices(10) == [3, 7]  # OpenFlamingo: (i + 1) % n == 0
    assert FlamingoConfig(cross_attn_every=4, cross_attn_placement="paper").xattn_layer_indices(10) == [0, 4, 8]
    # Appendix B.1.1: the 80B model's 12 blocks over Chinchilla's 80 layers, every 7th from the very first
    paper_80b = FlamingoConfig(cross_attn_every=7, cross_attn_placement="paper").xattn_layer_indices(80)
    assert len(paper_80b) == 12 and paper_80b[:2] == [0, 7]
    assert len(FlamingoConfig(cross_attn_every=7).xattn_layer_indices(80)) == 11
    assert FlamingoConfig(cross_attn_every=1, cross_attn_placement="paper").xattn_layer_indices(3) == [0, 1, 2]
    with pytest.raises(ValueError, match="cross_attn_placement 'first': expected one of openflamingo, paper"):
        FlamingoConfig(cross_attn_placement="first")


def test_a_saved_model_keeps_its_placement(tmp_path):
    lm_config = dict(TINY_LMS["gpt2"], n_layer=8)
    model = make_model("gpt2", lm_config=lm_config, cross_attn_every=4, cross_attn_placement="paper")
    assert model.xattn_layer_indices == [0, 4]
    assert [i for i, m in enumerate(model.lm.transformer.h) if isinstance(m, FlamingoDecoderLayer)] == [0, 4]
    set_gates(model, 1.0)
    model.save_pretrained(tmp_path / "m")
    again = fc.Flamingo.from_pretrained(tmp_path / "m")
    assert again.config.cross_attn_placement == "paper" and again.xattn_layer_indices == [0, 4]
    ids = torch.tensor([[model.media_token_id, 72, 105, 33, 10]])
    media = torch.randn(1, 1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(again(ids, media=media).logits, model(ids, media=media).logits)
