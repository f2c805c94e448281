"""The Flamingo model on tiny random LMs: frozen-LM equality at zero gates, phi masking through the whole model,
32 images after training with 5, exactly the trainable parts train, save/load roundtrip."""

import pytest
import torch
from fc_helpers import TINY_LMS, make_model, random_image, set_gates

import flamingo_core as fc

ARCHS = list(TINY_LMS)


def batch_of(model, samples, **kw):
    return model.processor(samples, **kw)


def two_image_sample(seed_a=1, seed_b=2):
    return ["Cute pics.<EOC>", random_image(seed_a), "My puppy.<EOC>", random_image(seed_b), "My cat looks"]


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_gates_equal_frozen_lm_for_any_images(arch):
    model = make_model(arch)
    lm = model.lm
    enc = batch_of(model, [two_image_sample(1, 2), ["A caption", random_image(3), "!"]])
    out_a = model(**enc).logits
    out_b = model(**batch_of(model, [two_image_sample(7, 8), ["A caption", random_image(9), "!"]])).logits
    v = model.lm_vocab_size
    # compare the LM's own vocabulary (the new tokens may reuse unused rows of a padded vocabulary: GPT-2 here)
    cols = [i for i in range(v) if i not in (model.media_token_id, model.eoc_token_id)]
    # the frozen LM on the same embeddings (the new rows stand in for <image> / <EOC>)
    pos = fc.flamingo.position_ids_from_mask(enc["attention_mask"])
    ref = lm(inputs_embeds=model.embed_tokens(enc["input_ids"]), attention_mask=enc["attention_mask"],
             position_ids=pos).logits
    real = enc["attention_mask"].bool()
    assert (out_a[..., cols] - ref[..., cols])[real].abs().max() < 1e-5
    assert torch.equal(out_a, out_b)  # images have no effect at all
    # and on plain text the Flamingo logits are the LM's own, token ids in
    ids = model.tokenizer(["plain text only"], return_tensors="pt")["input_ids"]
    text_ref = lm(input_ids=ids).logits
    got = model(ids, media=enc["media"][:1], media_mask=enc["media_mask"][:1]).logits
    assert (got[..., cols] - text_ref[..., cols]).abs().max() < 1e-5


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_images_only_reach_later_tokens(arch):
    model = make_model(arch)
    set_gates(model, 1.0)
    first = model.processor([two_image_sample(1, 2)])
    second = model.processor([two_image_sample(5, 2)])  # image 1 changed
    ids = first["input_ids"][0]
    img_pos = (ids == model.media_token_id).nonzero().squeeze(1).tolist()
    outs = {}
    for key, enc in (("first", first), ("second", second)):
        captured = []
        hook = model.xattn_layers[0].register_forward_hook(lambda m, a, o, c=captured: c.append(o))
        logits = model(**enc).logits
        hook.remove()
        outs[key] = (logits, captured[0])
    (la, xa), (lb, xb) = outs["first"], outs["second"]
    assert torch.equal(la[:, : img_pos[0]], lb[:, : img_pos[0]])  # nothing before the first image changes
    assert not torch.allclose(la[:, img_pos[0]:], lb[:, img_pos[0]:])
    # the first cross-attention layer reads the text embeddings: its output after image 2 ignores image 1
    assert torch.equal(xa[:, img_pos[1]:], xb[:, img_pos[1]:])
    assert not torch.allclose(xa[:, img_pos[0]: img_pos[1]], xb[:, img_pos[0]: img_pos[1]])
    # in all-media mode image 1 is seen after image 2 as well
    for block in model.xattn_layers:
        block.attn.only_immediate = False
    captured = []
    hook = model.xattn_layers[0].register_forward_hook(lambda m, a, o: captured.append(o))
    model(**first)
    model(**second)
    hook.remove()
    assert not torch.allclose(captured[0][:, img_pos[1]:], captured[1][:, img_pos[1]:])


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def train_steps(model, steps, max_images=5, seed=0):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(steps):
        n = 1 + (step % max_images)
        sample = []
        for i in range(n):
            sample += [random_image(seed + 10 * step + i), f"image {i} caption<EOC>"]
        enc = model.processor([sample])
        labels = fc.make_labels(enc["input_ids"], enc["attention_mask"], [model.media_token_id])
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_backward_reaches_exactly_the_trainable_parts():
    model = make_model("gpt_neox")  # untied head: the new output rows train too
    set_gates(model, 0.5)
    enc = model.processor([two_image_sample()])
    labels = fc.make_labels(enc["input_ids"], enc["attention_mask"], [model.media_token_id])
    model(**enc, labels=labels).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable_names(model)
    assert all(n.startswith(("perceiver.", "xattn_layers.", "new_tokens.")) for n in with_grad)
    assert {"new_tokens.input_rows", "new_tokens.output_rows", "perceiver.latents"} <= with_grad
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n in with_grad)
    counts = model.parameter_counts()
    assert counts["trainable"] == sum(p.numel() for n, p in model.named_parameters() if n in with_grad)


def test_gate_zero_still_trains_the_gates():
    model = make_model()
    enc = model.processor([two_image_sample()])
    labels = fc.make_labels(enc["input_ids"], enc["attention_mask"], [model.media_token_id])
    model(**enc, labels=labels).loss.backward()
    assert all(b.alpha_xattn.grad.abs() > 0 for b in model.xattn_layers)


def test_optimizer_steps_leave_frozen_weights_bitwise_unchanged():
    model = make_model()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    train_steps(model, 3)
    params = dict(model.named_parameters())
    assert frozen and all(torch.equal(params[n], v) for n, v in frozen.items())
    assert any(not torch.equal(params[n], v) for n, v in trained.items())
    assert not any(m.training for m in (model.lm, model.vision_encoder))


def test_trained_with_five_images_runs_with_thirty_two():
    model = train_steps(make_model(), 5, max_images=5)
    set_gates(model, 1.0)
    shots = []
    for i in range(32):
        shots += [random_image(100 + i), f"shape {i}<EOC>"]  # short: 33 images fit the tiny LM's 512 positions
    enc = model.processor([shots + [random_image(999), "Output:"]])
    assert int(enc["media_mask"].sum()) == 33
    logits = model(**enc).logits
    assert torch.isfinite(logits).all()
    other = model.processor([shots + [random_image(1000), "Output:"]])
    assert not torch.allclose(model(**other).logits[:, -1], logits[:, -1])  # the 33rd image is used
    new = model.generate(**model.processor([shots + [random_image(999), "Output:"]], padding_side="left"),
                         max_new_tokens=3)
    assert new.shape == (1, 3)


def test_media_count_mismatch_in_forward_is_an_error(tiny_model):
    enc = tiny_model.processor([["x", random_image(1), "y"]])
    ids = torch.cat([enc["input_ids"], torch.tensor([[tiny_model.media_token_id]])], dim=1)
    with pytest.raises(ValueError, match="2 <image> tokens in the text but 1 images were given"):
        tiny_model(ids, media=enc["media"], media_mask=enc["media_mask"])


def test_save_load_roundtrip(tmp_path):
    model = train_steps(make_model(), 2)
    set_gates(model, 0.7)
    enc = model.processor([two_image_sample()])
    expected = model(**enc).logits
    model.save_pretrained(tmp_path / "m")
    saved = set((tmp_path / "m").iterdir())
    assert {p.name for p in saved} == {"config.json", "model.safetensors", "tokenizer", ".written.json"}  # + manifest
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / "m" / "model.safetensors")))
    assert keys == set(model.trainable_state_dict()) and not any(k.startswith("lm.") for k in keys)
    loaded = fc.Flamingo.from_pretrained(tmp_path / "m")
    assert torch.equal(loaded(**loaded.processor([two_image_sample()])).logits, expected)


def test_from_pretrained_rejects_a_non_model_folder(tmp_path):
    with pytest.raises(ValueError, match="not a saved Flamingo model"):
        fc.Flamingo.from_pretrained(tmp_path)


def test_presets():
    names = fc.list_models()
    assert {"tiny", "smollm2", "flamingo-3b-spacing", "flamingo-9b-spacing", "flamingo-80b-spacing"} <= set(names)
    spacing = {n: fc.load_config(n).cross_attn_every for n in names if n.endswith("-spacing")}
    assert spacing == {"flamingo-3b-spacing": 1, "flamingo-9b-spacing": 4, "flamingo-80b-spacing": 7}
    with pytest.raises(ValueError, match="unknown Flamingo model"):
        fc.load_config("nope")
    with pytest.raises(ValueError, match="unknown FlamingoConfig fields"):
        fc.load_config("tiny", bogus=1)


def test_xattn_spacing_in_the_lm():
    cfg = dict(TINY_LMS["gpt2"], n_layer=8)
    model = make_model("gpt2", lm_config=cfg, cross_attn_every=4)
    assert model.xattn_layer_indices == [3, 7]
    assert len(model.xattn_layers) == 2
