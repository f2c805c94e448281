"""Vision towers beyond stage 1 (open_clip, transformers CLIP / SigLIP, timm), on small random configs built here
(nothing downloads): the frozen-encoder interface, features equal to each library's own call, identifiers that
name the weights, one-line errors, and for a CLIP in each library and a SigLIP: stage-2 training, generation,
RICES and a save / reload."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fc_helpers import random_image, set_gates
from test_data_world import make_world

import flamingo_core as fc
from flamingo_core.vision import FrozenTower, VisionEncoderError, load_vision_encoder

needs_open_clip = pytest.mark.skipif(importlib.util.find_spec("open_clip") is None,
                                     reason="open_clip not installed (pip install 'flamingo-core[open_clip]')")
OC_NAME = "flamingo-test-vit"  # a tiny open_clip config registered by the `towers` fixture
OC_CFG = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8,
                                          "head_width": 16},
          "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}
TINY_VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                patch_size=8)


def _save_hf(folder, seed: int, kind: str):
    """A tiny random transformers tower and its image processor, saved with save_pretrained."""
    import transformers as tf

    torch.manual_seed(seed)
    if kind == "clip":
        model = tf.CLIPVisionModelWithProjection(tf.CLIPVisionConfig(**TINY_VIT, projection_dim=16))
        processor = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    elif kind == "clip-full":
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64,
                    bos_token_id=0, eos_token_id=1, pad_token_id=1)
        model = tf.CLIPModel(tf.CLIPConfig(vision_config=TINY_VIT, text_config=text, projection_dim=16))
        processor = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    else:
        model = tf.SiglipVisionModel(tf.SiglipVisionConfig(**TINY_VIT))
        processor = tf.SiglipImageProcessor(size={"height": 32, "width": 32})
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    """Names of every tower under test -> the folder / file they need, built once."""
    root = tmp_path_factory.mktemp("towers")
    paths = {kind: _save_hf(root / kind, 0, kind) for kind in ("clip", "clip-full", "siglip")}
    paths["clip-other"] = _save_hf(root / "clip-other", 1, "clip")
    from safetensors.torch import save_file

    if importlib.util.find_spec("open_clip") is not None:
        import open_clip

        (root / f"{OC_NAME}.json").write_text(json.dumps(OC_CFG))
        open_clip.add_model_config(root / f"{OC_NAME}.json")
        for seed in (0, 1):
            torch.manual_seed(seed)
            save_file(open_clip.create_model(OC_NAME).state_dict(), str(root / f"oc{seed}.safetensors"))
    import timm

    for seed in (0, 1):
        torch.manual_seed(seed)
        save_file(timm.create_model("test_vit", num_classes=0).state_dict(), str(root / f"vit{seed}.safetensors"))
    return root


# name (with {root} for the fixture folder), S, d, D, image_size
CASES = {
    "open_clip": pytest.param(f"open_clip:{OC_NAME}", 16, 32, 16, 32, marks=needs_open_clip),
    "open_clip-file": pytest.param(f"open_clip:{OC_NAME}@{{root}}/oc0.safetensors", 16, 32, 16, 32,
                                   marks=needs_open_clip),
    "hf-clip": ("hf:{root}/clip", 16, 32, 16, 32),
    "hf-clip-full": ("hf:{root}/clip-full", 16, 32, 16, 32),
    "siglip-folder": ("{root}/siglip", 16, 32, 32, 32),  # a transformers folder needs no prefix
    "timm-vit": ("timm:test_vit", 100, 64, 64, 160),  # 160 px / 16 px patches; class token dropped
    "timm-vit-file": ("timm:test_vit@{root}/vit0.safetensors", 100, 64, 64, 160),
    "timm-cnn": ("timm:test_resnet", 25, 96, 96, 160),  # a 5 x 5 final map flattened
}


@pytest.mark.parametrize("name,s,d,big_d,size", list(CASES.values()), ids=list(CASES))
def test_interface_shapes_frozen_and_normalised(towers, name, s, d, big_d, size):
    enc = load_vision_encoder(name.format(root=towers))
    assert isinstance(enc, FrozenTower)
    assert (enc.feature_dim, enc.embed_dim, enc.image_size) == (d, big_d, size)
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not any(m.training for m in enc.modules())  # a parent's .train() must not enable dropout here
    pixels = torch.stack([enc.preprocess(random_image(i, 48)) for i in range(3)])
    assert pixels.shape == (3, 3, size, size)
    feats = enc(pixels)
    assert feats.shape == (3, 1, s, d) and torch.isfinite(feats).all()
    video = enc(pixels[None])  # (1, T=3, C, H, W): frames encoded independently
    assert video.shape == (1, 3, s, d)
    torch.testing.assert_close(video[0], feats[:, 0])
    emb = enc.embed(pixels)
    assert emb.shape == (3, big_d)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    assert not torch.allclose(emb[0], emb[1])


@needs_open_clip
def test_open_clip_features_are_what_openflamingo_feeds_its_resampler(towers):
    import open_clip

    enc = load_vision_encoder(f"open_clip:{OC_NAME}", seed=3)
    torch.manual_seed(3)
    clip, _, val = open_clip.create_model_and_transforms(OC_NAME)  # OpenFlamingo's factory call
    image = random_image(4, 40)
    x = val(image)[None]
    torch.testing.assert_close(enc.preprocess(image), val(image))  # the eval transform, not the training one
    pooled = F.normalize(clip.encode_image(x), dim=-1)
    clip.visual.output_tokens = True  # as open_flamingo/src/factory.py
    torch.testing.assert_close(enc(x)[:, 0], clip.visual(x)[1])  # Flamingo._encode_vision_x: vision_encoder(x)[1]
    torch.testing.assert_close(enc.embed(x), pooled)


def test_transformers_features_are_the_normalised_patch_tokens_and_get_image_features(towers):
    import transformers as tf

    full = tf.CLIPModel.from_pretrained(towers / "clip-full").eval()
    processor = tf.AutoImageProcessor.from_pretrained(towers / "clip-full")
    image = random_image(5, 40)
    x = processor(images=image, return_tensors="pt")["pixel_values"]
    enc = load_vision_encoder(f"hf:{towers / 'clip-full'}")
    torch.testing.assert_close(enc.preprocess(image), x[0])
    with torch.no_grad():
        vision = full.vision_model(pixel_values=x)
        want = full.vision_model.post_layernorm(vision.last_hidden_state[:, 1:])  # class token dropped
        pooled = full.get_image_features(pixel_values=x)
    pooled = pooled if torch.is_tensor(pooled) else pooled.pooler_output
    torch.testing.assert_close(enc(x)[:, 0], want)
    torch.testing.assert_close(enc.embed(x), F.normalize(pooled, dim=-1))

    siglip = tf.SiglipVisionModel.from_pretrained(towers / "siglip").eval()
    enc = load_vision_encoder(str(towers / "siglip"))
    with torch.no_grad():
        out = siglip(pixel_values=x)
    torch.testing.assert_close(enc(x)[:, 0], out.last_hidden_state)
    torch.testing.assert_close(enc.embed(x), F.normalize(out.pooler_output, dim=-1))


def test_timm_features_drop_prefix_tokens_and_flatten_cnn_maps():
    import timm

    image = random_image(6, 200)
    for name in ("test_vit", "test_resnet"):
        enc = load_vision_encoder(f"timm:{name}", seed=2)
        torch.manual_seed(2)
        ref = timm.create_model(name, num_classes=0).eval()
        cfg = timm.data.resolve_data_config({}, model=ref)
        x = timm.data.create_transform(**cfg)(image)[None]
        torch.testing.assert_close(enc.preprocess(image)[None], x)
        with torch.no_grad():
            f = ref.forward_features(x)
            want = f[:, ref.num_prefix_tokens:] if f.dim() == 3 else f.flatten(2).transpose(1, 2)
            pooled = ref.forward_head(f, pre_logits=True)
        torch.testing.assert_close(enc(x)[:, 0], want)
        torch.testing.assert_close(enc.embed(x), F.normalize(pooled, dim=-1))


def _ident(name: str, seed: int = 0) -> str:
    return load_vision_encoder(name, seed=seed).identifier


def test_identifiers_name_the_weights_not_the_folder(towers, tmp_path):
    shutil.copytree(towers / "clip", tmp_path / "copy")
    clip = _ident(f"hf:{towers / 'clip'}")
    assert clip == _ident(f"hf:{towers / 'clip'}") == _ident(str(tmp_path / "copy"))  # a copy: same weights
    assert clip != _ident(f"hf:{towers / 'clip-other'}")
    assert _ident("timm:test_vit") == _ident("timm:test_vit") != _ident("timm:test_vit", seed=1)
    shutil.copy(towers / "vit0.safetensors", tmp_path / "moved.safetensors")
    vit0 = _ident(f"timm:test_vit@{towers}/vit0.safetensors")
    assert vit0 == _ident(f"timm:test_vit@{tmp_path}/moved.safetensors")
    assert vit0 != _ident(f"timm:test_vit@{towers}/vit1.safetensors")
    assert _ident("timm:test_resnet") != _ident("timm:test_vit")


@needs_open_clip
def test_open_clip_identifiers_weights_files_and_folders(towers, tmp_path):
    rand = _ident(f"open_clip:{OC_NAME}")
    assert rand == _ident(f"open_clip:{OC_NAME}") != _ident(f"open_clip:{OC_NAME}", seed=1)
    file0 = load_vision_encoder(f"open_clip:{OC_NAME}@{towers}/oc0.safetensors", seed=5)
    assert file0.identifier != _ident(f"open_clip:{OC_NAME}@{towers}/oc1.safetensors")
    assert file0.identifier == _ident(f"open_clip:{OC_NAME}@{towers}/oc0.safetensors", seed=6)  # seed unused
    x = file0.preprocess(random_image(7))[None]
    assert torch.equal(file0(x), load_vision_encoder(f"open_clip:{OC_NAME}")(x))  # oc0 = the seed-0 weights
    for copy in ("a", "b"):  # an open_clip folder (config + weights), as open_clip's local-dir: / hf-hub: hold it
        (tmp_path / copy).mkdir()
        (tmp_path / copy / "open_clip_config.json").write_text(json.dumps({"model_cfg": OC_CFG}))
        shutil.copy(towers / "oc0.safetensors", tmp_path / copy / "open_clip_model.safetensors")
    local = load_vision_encoder(str(tmp_path / "a"))
    assert local.identifier == _ident(f"open_clip:local-dir:{tmp_path / 'b'}")  # a copy: same identifier
    assert torch.equal(local(x), file0(x))


BAD_NAMES = {
    "no-backend": ("openclip:ViT-L-14", ["open_clip:", "hf:", "timm:", "stage-1 export folder", "conv-tiny"]),
    "no-model": ("timm:", ["names no model"]),
    "timm-unknown": ("timm:no_such_net", ["unknown timm model 'no_such_net'"]),
    "timm-missing-file": ("timm:test_vit@/nonexistent/w.safetensors", ["does not exist"]),
    "hf-missing-folder": ("hf:/nonexistent/clip", ["does not exist"]),
    "hf-not-cached": ("hf:nobody/no-such-clip", ["not in the local hub cache", "FLAMINGO_ALLOW_DOWNLOAD"]),
    "oc-unknown": pytest.param("open_clip:ViT-Q-99", ["unknown open_clip model 'ViT-Q-99'"], marks=needs_open_clip),
    "oc-tag-not-cached": pytest.param("open_clip:ViT-L-14@openai", ["not in the local cache"], marks=needs_open_clip),
    "oc-bad-tag": pytest.param("open_clip:ViT-L-14@nope", ["neither a weights file nor a pretrained tag", "openai"],
                               marks=needs_open_clip),
    "oc-resnet": pytest.param("open_clip:RN50", ["no patch tokens"], marks=needs_open_clip),
}


@pytest.mark.parametrize("name,expected", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
def test_bad_names_are_one_line_errors_naming_the_input(name, expected, monkeypatch):
    monkeypatch.delenv("FLAMINGO_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(VisionEncoderError) as info:
        load_vision_encoder(name)
    message = str(info.value)
    assert "\n" not in message and name.split("@")[0] in message
    for part in expected:
        assert part in message


def test_names_are_checked_before_any_backend_loads(tmp_path):
    from flamingo_core.vision import check_vision_encoder_name

    for good in ("conv-tiny", "tiny", str(tmp_path), "hf:org/any-clip", "timm:any@/any/file", "open_clip:Any"):
        check_vision_encoder_name(good)  # syntax only: the backend judges the model when it loads
    with pytest.raises(VisionEncoderError, match=r"unknown vision encoder 'runs/none' \(there is no folder"):
        check_vision_encoder_name("runs/none")
    with pytest.raises(VisionEncoderError, match="names no model"):
        check_vision_encoder_name("hf:")


def test_weights_that_do_not_fit_and_missing_libraries_are_named(towers, tmp_path, monkeypatch):
    with pytest.raises(VisionEncoderError, match=r"does not fit timm model 'test_resnet' \(missing"):
        load_vision_encoder(f"timm:test_resnet@{towers}/vit0.safetensors")
    shutil.copytree(towers / "clip", tmp_path / "bad")
    cfg = json.loads((towers / "siglip" / "config.json").read_text())
    (tmp_path / "bad" / "config.json").write_text(json.dumps(cfg))  # SigLIP config over CLIP weights
    with pytest.raises(VisionEncoderError, match="do not fit SiglipVisionModel"):
        load_vision_encoder(str(tmp_path / "bad"))
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(VisionEncoderError, match="hf: takes CLIP and SigLIP models .* has model_type 'vit'"):
        load_vision_encoder(str(tmp_path / "bad"))
    monkeypatch.setitem(__import__("sys").modules, "open_clip", None)  # as if not installed
    with pytest.raises(VisionEncoderError, match=r"pip install 'flamingo-core\[open_clip\]'"):
        load_vision_encoder("open_clip:ViT-B-32")


FLAMINGO_TOWERS = {
    "open_clip-clip": pytest.param(f"open_clip:{OC_NAME}", marks=needs_open_clip),
    "hf-clip": "hf:{root}/clip",
    "hf-siglip": "hf:{root}/siglip",
}


@pytest.mark.parametrize("name", list(FLAMINGO_TOWERS.values()), ids=list(FLAMINGO_TOWERS))
def test_stage2_trains_generates_serves_rices_and_reloads_on_the_tower(towers, tmp_path_factory, tmp_path, name):
    pytest.importorskip("fewshot_eval")  # stage 3 serves RICES; flamingo_core itself never imports it
    from fewshot_eval.model import FlamingoEvalModel
    from fewshot_eval.rices import RICES, cached_features
    from flamingo_core.train import TrainConfig, train

    name = name.format(root=towers)
    model = fc.create_model("tiny", vision_encoder=name)
    tower = model.vision_encoder
    assert model.config.vision_encoder == name and model.perceiver.latents.shape[-1] == tower.feature_dim
    frozen = {k: v.clone() for k, v in tower.state_dict().items()}
    latents = model.perceiver.latents.detach().clone()
    cfg = TrainConfig(data=str(make_world(tmp_path_factory.getbasetemp())), out=str(tmp_path / "run"), model="tiny",
                      vision_encoder=None, weights="m3w=0,ltip=1,align=0.2,vtp=0", batch_size=2, lr=1e-3,
                      warmup_steps=1, max_steps=3, save_every=3, final_eval=False, progress=False, cpu=True)
    result = train(cfg, model=model)
    assert result.step == 3 and all(np.isfinite(v) for v in result.losses.values())
    assert not torch.equal(model.perceiver.latents, latents)  # the resampler trained on this tower's features
    assert all(torch.equal(v, frozen[k]) for k, v in tower.state_dict().items())  # the tower did not

    model.eval()
    set_gates(model, 1.0)  # open gates: the image must reach the LM
    prompts = [[[random_image(i), "A photo of"]] for i in (10, 11)]
    with torch.no_grad():
        logits = [model(**model.processor(p)).logits[:, -1] for p in prompts]
    assert not torch.allclose(*logits)
    new = model.generate(**model.processor(prompts[0], padding_side="left"), max_new_tokens=4)
    assert new.shape[0] == 1 and 1 <= new.shape[1] <= 4

    evaluator = FlamingoEvalModel(model=model, device="cpu")
    assert evaluator.encoder_identifier == tower.identifier  # RICES caches support features under the tower
    support = [random_image(20 + i) for i in range(5)]
    feats = cached_features(tmp_path / "rices", evaluator.encoder_identifier, "support-v1", list("abcde"),
                            lambda: evaluator.embed_images(support))
    assert feats.shape == (5, tower.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
    sidecar = json.loads(next((tmp_path / "rices").glob("*.json")).read_text())
    assert sidecar["encoder"] == tower.identifier
    assert RICES(feats, list("abcde")).search(evaluator.embed_images([support[3]]), k=1) == [[3]]

    loaded = fc.Flamingo.from_pretrained(result.model_dir)
    assert loaded.vision_encoder.identifier == tower.identifier
    enc = model.processor(prompts[1])
    with torch.no_grad():
        set_gates(loaded, 1.0)
        torch.testing.assert_close(loaded(**enc).logits, model(**enc).logits)
