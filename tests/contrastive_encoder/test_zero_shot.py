"""Zero-shot classification and retrieval logic, checked with an encoder whose embeddings are known."""

from __future__ import annotations

import json

import torch

from contrastive_encoder.zero_shot import load_classification_set, retrieval_recall, zero_shot_classify

COLOURS = ["red", "green", "blue"]


class ColourModel(torch.nn.Module):
    """Embeds an image by its mean RGB and a text by the colour words it names: a perfect colour classifier."""

    def __init__(self, image_size: int = 32):
        super().__init__()
        from contrastive_encoder.model import DualEncoderConfig

        self.config = DualEncoderConfig(vision_nf={"depths": [1], "channels": [1]}, text_model="x",
                                        image_size=image_size, image_mean=(0, 0, 0), image_std=(1, 1, 1))
        self.logit_scale = torch.nn.Parameter(torch.zeros(()))
        self.prompts: list[str] = []

    def encode_image(self, pixels):
        rgb = pixels.mean(dim=(2, 3))  # (B, 3)
        return torch.nn.functional.normalize((rgb == rgb.max(dim=1, keepdim=True).values).float(), dim=-1)

    def encode_captions(self, texts):
        self.prompts += texts
        vecs = torch.tensor([[float(c in t.lower()) for c in COLOURS] for t in texts]) + 1e-3
        return torch.nn.functional.normalize(vecs, dim=-1)


def test_zero_shot_picks_the_named_class(class_dir):
    model = ColourModel()
    res = zero_shot_classify(model, class_dir, templates=["A photo of a {class}.", "a {class} thing"])
    assert res["top1"] == 1.0 and res["n"] == 6 and res["classes"] == 3
    assert "A photo of a blue." in model.prompts and "a blue thing" in model.prompts


def test_class_order_from_classes_json(class_dir):
    (class_dir / "classes.json").write_text(json.dumps(["red", "green", "blue"]))
    items, classes = load_classification_set(class_dir)
    assert classes == ["red", "green", "blue"]
    assert {classes[label] for path, label in items if path.parent.name == "blue"} == {"blue"}


def test_jsonl_classification_set(tmp_path, class_dir):
    rows = [{"image": str(p), "label": p.parent.name} for p in sorted(class_dir.rglob("*.png"))]
    (tmp_path / "set.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # a wrongly named class makes the classifier fail, so the labels really are being used
    assert zero_shot_classify(ColourModel(), tmp_path / "set.jsonl")["top1"] == 1.0
    rows[0]["label"] = "green" if rows[0]["label"] != "green" else "red"
    (tmp_path / "set.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert zero_shot_classify(ColourModel(), tmp_path / "set.jsonl")["top1"] < 1.0


def test_retrieval_recall_with_several_captions(tmp_path, class_dir):
    paths = sorted(class_dir.rglob("*.png"))[::2]  # one image per colour
    rows = [{"image": str(p), "text": [f"a {p.parent.name} shape", f"something {p.parent.name}"]} for p in paths]
    (tmp_path / "ret.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = retrieval_recall(ColourModel(), tmp_path / "ret.jsonl", ks=(1, 2))
    assert res["images"] == 3 and res["captions"] == 6
    assert res["i2t_r1"] == 1.0 and res["t2i_r1"] == 1.0
