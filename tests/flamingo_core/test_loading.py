"""Loading as transformers does: the frozen parts in bf16 (the paper's layout: trained parts keep fp32 master
weights), a dtype refused before any weights load, and a saved folder that is self-contained - its tokenizer
inside, local parts by absolute path or copied in - so it loads from another working directory and as a copy."""

from __future__ import annotations

import shutil

import pytest
import torch
from fc_helpers import make_model, random_image, set_gates

import flamingo_core as fc
from flamingo_core.tokenization import build_byte_tokenizer


def _frozen_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)


def _batch(model):
    size = model.vision_encoder.image_size
    samples = [["A photo:", random_image(1, size), "a red shape.<EOC>", random_image(2, size), "and a blue one."]]
    enc = model.processor(samples)
    return enc, fc.make_labels(enc["input_ids"], enc["attention_mask"], [model.media_token_id])


def test_bf16_frozen_parts_halve_their_memory_and_keep_fp32_trained_parts():
    full, half = make_model(), make_model(dtype="bfloat16")
    assert half.config.frozen_dtype == "bfloat16"
    assert {p.dtype for p in half.lm.parameters()} == {p.dtype for p in half.vision_encoder.parameters()} == {
        torch.bfloat16}
    assert {p.dtype for p in half.parameters() if p.requires_grad} == {torch.float32}
    assert _frozen_bytes(half) * 2 == _frozen_bytes(full)
    assert make_model(torch_dtype=torch.bfloat16).config.frozen_dtype == "bfloat16"  # transformers' older name


def test_bf16_model_trains_and_generates_and_equals_its_lm_with_closed_gates():
    model = make_model(dtype="bfloat16")
    enc, labels = _batch(model)
    with torch.no_grad():  # gates at zero: exactly the bf16 LM
        ours = model(**enc).logits[..., : model.lm_vocab_size]
        text_ids = enc["input_ids"].clone()
        lm = model.lm(input_ids=torch.where(text_ids >= model.lm_vocab_size, 0, text_ids),
                      attention_mask=enc["attention_mask"]).logits
    is_text = enc["input_ids"] < model.lm_vocab_size
    # rows after an added token differ (its embedding is ours); the first added token is <image>, at position 1+
    first_new = int((~is_text[0]).nonzero()[0])
    torch.testing.assert_close(ours[0, :first_new], lm[0, :first_new].to(ours.dtype), rtol=0, atol=0)
    set_gates(model, 1.0)
    out = model(**enc, labels=labels)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.perceiver.latents.grad is not None and model.perceiver.latents.grad.dtype == torch.float32
    assert all(p.grad is None for p in model.lm.parameters())
    generated = model.generate(enc["input_ids"], enc["attention_mask"], enc["media"], max_new_tokens=4)
    assert generated.shape[0] == 1 and generated.shape[1] >= 1


@pytest.mark.parametrize("dtype", ["int8", "float64", "bf16"])
def test_a_dtype_outside_the_supported_ones_is_one_line_before_loading(dtype):
    with pytest.raises(ValueError, match=f"frozen_dtype '{dtype}': expected one of float32, bfloat16, float16") as e:
        make_model(dtype=dtype)
    assert "\n" not in str(e.value)


def test_a_saved_model_is_self_contained(tmp_path, monkeypatch):
    """Trained with a relative LM folder and a stage-1 export; loads from elsewhere and as a copy."""
    ce = pytest.importorskip("contrastive_encoder")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    from transformers import AutoConfig, AutoModelForCausalLM

    lm_config = dict(fc.load_config("tiny").lm_config)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(lm_config.pop("model_type"), **lm_config)).save_pretrained("lm")
    build_byte_tokenizer().save_pretrained("lm")  # the LM's own tokenizer, as a hub folder has it
    ce.create_model("tiny").save_pretrained("stage1")
    model = fc.create_model("tiny", lm="lm", vision_encoder="stage1")
    set_gates(model, 0.5)
    enc, _ = _batch(model)
    with torch.no_grad():
        want = model(**enc).logits
    model.save_pretrained("saved")
    model.save_pretrained("saved-with-encoder", copy_vision_encoder=True)
    assert (work / "saved" / "tokenizer" / "tokenizer_config.json").is_file()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):  # the saved one serves
        (work / "lm" / name).unlink(missing_ok=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    shutil.copytree(work / "saved", elsewhere / "copy")
    for folder in (work / "saved", elsewhere / "copy"):
        loaded = fc.Flamingo.from_pretrained(folder)
        assert loaded.tokenizer.get_vocab() == model.tokenizer.get_vocab()
        with torch.no_grad():
            assert torch.equal(loaded(**enc).logits, want)
    shutil.copytree(work / "saved-with-encoder", elsewhere / "copy-with-encoder")
    shutil.rmtree(work / "stage1")  # the copied encoder is the one it loads
    with torch.no_grad():
        assert torch.equal(fc.Flamingo.from_pretrained(elsewhere / "copy-with-encoder")(**enc).logits, want)


def test_device_map_on_one_device_places_every_part_there():
    model = make_model(device_map="cpu")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: a CUDA map is not refused here")
    with pytest.raises(ValueError, match="names a CUDA device"):
        make_model(device_map="cuda:0")
