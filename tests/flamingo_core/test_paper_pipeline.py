"""Stage-2 inputs as the paper builds them (arXiv 2204.14198): the padded, flipped and colour-jittered images of
Appendix B.1.2, the pair captions' leading space, the M3W next-image phi shift (A.3.2), the random 256-token M3W
window with its first 5 images (2.4), per-source sequence lengths and <EOC> after every text chunk (Figure 7)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from fc_helpers import make_model, set_gates
from PIL import Image
from test_data_world import make_world

import flamingo_core as fc
from contrastive_encoder import load_vision_encoder
from contrastive_encoder.shared.records import BadSampleError
from flamingo_core.data import (
    EOC,
    DocumentImage,
    FlamingoCollator,
    SkippedSample,
    Stage2Augmentation,
    build_source,
    m3w_window,
    pad_to_square,
    sample_rng,
)
from flamingo_core.processor import stage2_image_size, stage2_image_transform
from flamingo_core.train.cli import main as train_main
from flamingo_core.train.cli import parse_args
from flamingo_core.train.source_specs import build_sources, source_max_tokens

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (128, 0, 0),
           (0, 128, 0), (0, 0, 128), (128, 128, 0)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return make_model()


def _wide_image() -> Image.Image:
    """60 x 30 white with a centred 10 x 10 black square."""
    a = np.full((30, 60, 3), 255, dtype=np.uint8)
    a[10:20, 25:35] = 0
    return Image.fromarray(a)


def _dark_box(a: np.ndarray) -> tuple[int, int]:
    """(height, width) of the bounding box of the dark pixels of an (H, W, 3) array."""
    ys, xs = np.nonzero(a.mean(-1) < 100)
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


def _png(path: Path, colour, size=(16, 16)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path.name


# ---------------------------------------------------------------- images (Appendix B.1.2)


def test_pad_to_square_keeps_the_aspect_and_fills_with_the_mean_colour():
    image = _wide_image()
    square = np.asarray(pad_to_square(image))
    assert square.shape == (60, 60, 3)
    assert _dark_box(square) == (10, 10)  # the square stays a square
    mean = np.asarray(image).reshape(-1, 3).mean(0)
    assert np.abs(square[0, 0].astype(float) - mean).max() <= 1  # the border is the image's mean colour
    assert np.array_equal(square[15:45], np.asarray(image))  # the image itself, centred and untouched


def test_stage2_transform_resizes_the_padded_image_where_the_encoder_squashes_it(model):
    tower = model.vision_encoder  # conv-tiny: resizes to 32 x 32, normalises with mean 0.5 / std 0.25
    to_pixels = lambda x: ((x * 0.25 + 0.5) * 255).permute(1, 2, 0).numpy()  # noqa: E731
    ours = to_pixels(stage2_image_transform(tower)(_wide_image()))
    theirs = to_pixels(tower.preprocess(_wide_image()))
    assert ours.shape == theirs.shape == (32, 32, 3)
    h, w = _dark_box(ours)
    assert abs(h - w) <= 1  # proportions kept
    h, w = _dark_box(theirs)
    assert h > 1.5 * w  # the encoder's own square resize squashes the wide image


def test_stage2_image_size_is_320_for_the_paper_tower_and_the_encoders_own_otherwise():
    tower = load_vision_encoder("tiny")
    assert stage2_image_size(tower) == tower.image_size
    out = stage2_image_transform(tower, 48)(_wide_image())
    assert out.shape == (3, 48, 48)

    class PaperTower:
        identifier, image_size = "nfnet-f6-bert-base@0123456789ab", 288

    assert stage2_image_size(PaperTower()) == 320


def test_stage2_transform_refuses_a_size_the_encoder_cannot_take(model):
    with pytest.raises(ValueError, match="image size 48.*resizes to 32"):
        stage2_image_transform(model.vision_encoder, 48)


def test_training_pairs_are_flipped_and_jittered_per_sample_and_held_out_pairs_are_not(tmp_path):
    a = np.zeros((16, 16, 3), dtype=np.uint8)
    a[:, :4] = (200, 60, 30)  # a stripe on the left
    Image.fromarray(a).save(tmp_path / "a.png")
    (tmp_path / "p.jsonl").write_text(json.dumps({"image": "a.png", "text": "a stripe on the left"}) + "\n")
    train = build_source("p", "pairs", tmp_path / "p.jsonl", augment=Stage2Augmentation())
    held_out = build_source("p", "pairs", tmp_path / "p.jsonl")
    flipped = jittered = 0
    for seed in range(40):
        (image, text), _ = train.load(0, random.Random(seed))
        x = np.asarray(image).astype(int)
        on_right = x[:, -4:].sum() > x[:, :4].sum()
        flipped += on_right
        assert text == ("a stripe on the right" if on_right else "a stripe on the left") + EOC
        stripe = x[:, -4:] if on_right else x[:, :4]
        jittered += int(np.abs(stripe[0, 0] - a[0, 0]).max() > 2)
        (again, _), _ = train.load(0, random.Random(seed))
        assert np.array_equal(np.asarray(again), np.asarray(image))  # a function of the sample's seed
        (plain, plain_text), _ = held_out.load(0, random.Random(seed))
        assert np.array_equal(np.asarray(plain), a) and plain_text == "a stripe on the left" + EOC
    assert 8 < flipped < 32 and jittered > 30


def test_no_augment_keeps_the_padding_only(tmp_path):
    Image.new("RGB", (20, 10), (10, 200, 30)).save(tmp_path / "a.png")
    (tmp_path / "p.jsonl").write_text(json.dumps({"image": "a.png", "text": "green on the left"}) + "\n")
    src = build_source("p", "pairs", tmp_path / "p.jsonl", augment=Stage2Augmentation(augment=False))
    for seed in range(10):
        (image, text), _ = src.load(0, random.Random(seed))
        assert np.array_equal(np.asarray(image), np.full((20, 20, 3), (10, 200, 30), dtype=np.uint8))
        assert text == "green on the left" + EOC


def test_video_frames_share_one_draw(tmp_path):
    for k in range(3):
        a = np.zeros((16, 16, 3), dtype=np.uint8)
        a[:, :4] = 50 + 60 * k
        Image.fromarray(a).save(tmp_path / f"f{k}.png")
    (tmp_path / "v.jsonl").write_text(json.dumps({"video": ["f0.png", "f1.png", "f2.png"], "text": "x"}) + "\n")
    src = build_source("v", "video", tmp_path / "v.jsonl", num_frames=3, augment=Stage2Augmentation())
    for seed in range(12):
        (frames, _), _ = src.load(0, random.Random(seed))
        sides = {bool(np.asarray(f)[:, -4:].sum() > np.asarray(f)[:, :4].sum()) for f in frames}
        assert len(sides) == 1


def test_pair_captions_get_a_leading_space_with_probability_one_half(tmp_path):
    _png(tmp_path / "a.png", (255, 0, 0))
    (tmp_path / "p.jsonl").write_text(json.dumps({"image": "a.png", "text": "red"}) + "\n")
    src = build_source("p", "pairs", tmp_path / "p.jsonl", p_leading_space=0.5)
    texts = [src.load(0, random.Random(s))[0][1] for s in range(60)]
    assert set(texts) == {"red" + EOC, " red" + EOC}
    assert 15 < texts.count(" red" + EOC) < 45
    assert texts == [src.load(0, random.Random(s))[0][1] for s in range(60)]
    never = build_source("p", "pairs", tmp_path / "p.jsonl")
    assert {never.load(0, random.Random(s))[0][1] for s in range(20)} == {"red" + EOC}


# ---------------------------------------------------------------- <EOC> (Figure 7)


def _document(tmp_path: Path, texts: list, colours: list, name="doc.jsonl", missing=()) -> Path:
    row_texts, row_images = [], []
    for i, t in enumerate(texts):
        row_texts.append(t)
        row_images.append(None)
        if i < len(colours):
            image = f"im{i}.png" if i in missing else _png(tmp_path / f"im{i}.png", colours[i])
            row_texts.append(None)
            row_images.append(image)
    (tmp_path / name).write_text(json.dumps({"texts": row_texts, "images": row_images}) + "\n")
    return tmp_path / name


def test_every_text_chunk_ends_with_eoc_as_figure_7(tmp_path, model):
    path = _document(tmp_path, ["Cute pics of my pets!", "My puppy sitting in the grass.",
                                "My cat looking very dignified."], COLOURS[:2])
    src = build_source("m3w", "interleaved", path, p_next=0.0)
    sample = src.load(0, random.Random(0))
    items = sample[0]
    assert [x if isinstance(x, str) else "<image>" for x in items] == [
        "Cute pics of my pets!<EOC>", "<image>", "My puppy sitting in the grass.<EOC>", "<image>",
        "My cat looking very dignified.<EOC>"]
    proc = model.processor
    batch = FlamingoCollator(proc, 256, proc.media_token_id)([sample])
    ids = batch["input_ids"][0].tolist()
    expected = proc.token_ids("Cute pics of my pets!<EOC><image>My puppy sitting in the grass.<EOC><image>"
                              "My cat looking very dignified.<EOC>")
    assert ids == expected and batch["media_mask"].sum() == 2


# ---------------------------------------------------------------- M3W window (Section 2.4)


def test_m3w_window_takes_length_tokens_and_the_first_images_in_them():
    img = -1
    doc = [1, 2, img, 3, 4, img, 5, img, 6, img, 7, 8, img, 9, img, 10]  # images 0..5
    window, kept = m3w_window(doc, img, length=8, max_images=2, u=0.0)
    assert window == [1, 2, img, 3, 4, img, 5] and kept == [0, 1]  # doc[:8], its third image's token removed
    window, kept = m3w_window(doc, img, length=8, max_images=5, u=0.999)  # the last window
    assert window == doc[-8:] and kept == [3, 4, 5]
    starts = {tuple(m3w_window(doc, img, 8, 5, u)[0]) for u in np.linspace(0, 0.999, 30)}
    assert len(starts) == len(doc) - 8 + 1  # every start can be drawn
    assert m3w_window(doc[:5], img, 8, 5, 0.7) == (doc[:5], [0])  # a short document is kept whole


def test_collated_m3w_documents_keep_images_inside_a_random_window(tmp_path, model):
    texts = [f"chunk {i} " + "x" * 50 for i in range(11)]
    path = _document(tmp_path, texts, COLOURS, missing=(9,))  # image 9's file is missing
    src = build_source("m3w", "interleaved", path, p_next=0.0)
    proc = model.processor
    collate = FlamingoCollator(proc, 256, proc.media_token_id)
    full = proc.token_ids("".join(x if isinstance(x, str) else "<image>" for x in src.load(0, random.Random(0))[0]))
    assert len(full) > 600
    firsts, skipped = set(), 0
    for seed in range(16):
        batch = collate([src.load(0, sample_rng(0, "m3w", 0, seed))])
        if "input_ids" not in batch:  # the window kept the missing image
            assert "im9.png" in batch["skipped"][0].reason and batch["skipped"][0].where.endswith("doc.jsonl:1")
            skipped += 1
            continue
        ids = batch["input_ids"][0].tolist()
        assert len(ids) <= 256 and ids[0] == full[0]  # the start token stays first
        n = int(batch["media_mask"].sum())
        assert 1 <= n <= 5 and n == ids.count(proc.media_token_id)
        colours = [tuple(int(round(v)) for v in ((batch["media"][0, j, 0, :, 0, 0] * 0.25 + 0.5) * 255).tolist())
                   for j in range(n)]
        kept = [COLOURS.index(c) for c in colours]
        assert kept == list(range(kept[0], kept[0] + n))  # consecutive: the first images of the window
        text_ids = [t for t in ids[1:] if t != proc.media_token_id]
        full_text = [t for t in full[1:] if t != proc.media_token_id]
        start = next(i for i in range(len(full_text)) if full_text[i:i + len(text_ids)] == text_ids)
        firsts.add(start)
    assert len(firsts) > 4 and skipped < 16  # random windows; images outside them are never loaded


def test_a_kept_image_that_fails_skips_the_document_or_raises_when_strict(tmp_path, model):
    path = _document(tmp_path, ["a", "b"], COLOURS[:1], missing=(0,))
    proc = model.processor
    lenient = build_source("m3w", "interleaved", path, p_next=0.0)
    batch = FlamingoCollator(proc, 256, proc.media_token_id)([lenient.load(0, random.Random(0))])
    assert "input_ids" not in batch and isinstance(batch["skipped"][0], SkippedSample)
    strict = build_source("m3w", "interleaved", path, p_next=0.0, strict=True)
    with pytest.raises(BadSampleError, match="im0.png"):
        FlamingoCollator(proc, 256, proc.media_token_id)([strict.load(0, random.Random(0))])
    assert isinstance(lenient.load(0, random.Random(0))[0][1], DocumentImage)


# ---------------------------------------------------------------- previous / next image (Appendix A.3.2)


def test_phi_shift_points_each_token_at_the_next_image(model):
    img = model.media_token_id
    ids = torch.tensor([[5, 6, img, 7, 8, img, 9, 10]])
    assert model.phi(ids).tolist() == [[0, 0, 1, 1, 1, 2, 2, 2]]
    assert model.phi(ids, media_next=torch.tensor([True])).tolist() == [[1, 1, 2, 2, 2, 0, 0, 0]]
    both = model.phi(ids.repeat(2, 1), media_next=torch.tensor([False, True]))
    assert both.tolist() == [[0, 0, 1, 1, 1, 2, 2, 2], [1, 1, 2, 2, 2, 0, 0, 0]]


def test_next_mode_changes_which_image_a_token_sees_and_not_the_tokens(tmp_path, model):
    path = _document(tmp_path, ["first words", "second words", "last words"], COLOURS[:2])
    proc = model.processor
    collate = FlamingoCollator(proc, 256, proc.media_token_id)
    prev = collate([build_source("m3w", "interleaved", path, p_next=0.0).load(0, random.Random(0))])
    nxt = collate([build_source("m3w", "interleaved", path, p_next=1.0).load(0, random.Random(0))])
    assert torch.equal(prev["input_ids"], nxt["input_ids"])  # the LM reads the same tokens in the same order
    assert torch.equal(prev["media"], nxt["media"])
    assert prev["media_next"].tolist() == [False] and nxt["media_next"].tolist() == [True]

    set_gates(model, 1.0)
    try:
        ids = nxt["input_ids"]
        first = ids[0].tolist().index(proc.media_token_id)  # tokens before it: the first text chunk

        def logits(media, media_next):
            with torch.no_grad():
                out = model(ids, nxt["attention_mask"], media=media, media_mask=nxt["media_mask"],
                            media_next=torch.tensor([media_next]))
            return out.logits[0, :first]

        other1, other2 = nxt["media"].clone(), nxt["media"].clone()
        other1[:, 0] = torch.randn_like(other1[:, 0])
        other2[:, 1] = torch.randn_like(other2[:, 1])
        base = logits(nxt["media"], True)
        assert not torch.allclose(base, logits(other1, True))  # next mode: the first chunk sees image 1
        assert torch.allclose(base, logits(other2, True))  # ... and not image 2
        assert torch.allclose(logits(nxt["media"], False), logits(other1, False))  # previous mode: no image
    finally:
        set_gates(model, 0.0)


def test_next_image_rows_are_refused_in_packed_batches(model):
    ids = torch.tensor([[5, model.media_token_id, 6, 7]])
    with pytest.raises(ValueError, match="media_next"):
        model(ids, media=torch.zeros(1, 1, 1, 3, 32, 32), media_mask=torch.ones(1, 1, dtype=torch.bool),
              segment_ids=torch.ones_like(ids), media_next=torch.tensor([True]))


# ---------------------------------------------------------------- sources of a run


def test_pair_sequence_lengths_per_source(world, tmp_path):
    cfg = parse_args(["--data", str(world)])
    assert source_max_tokens(cfg) == {"m3w": 256, "ltip": 64, "align": 32, "vtp": 32}
    sources = build_sources(cfg, {"m3w": 1, "ltip": 1, "align": 1, "vtp": 1}, None)
    assert {n: s.max_tokens for n, s in sources.items()} == {"m3w": 256, "ltip": 64, "align": 32, "vtp": 32}
    assert sources["ltip"].p_leading_space == 0.5 and sources["ltip"].augment.augment
    assert sources["m3w"].p_next == 0.0
    cfg = parse_args(["--data", str(world), "--max-tokens", "align=16,ltip=40", "--no-augment",
                      "--p-leading-space", "0"])
    assert source_max_tokens(cfg) == {"m3w": 256, "ltip": 40, "align": 16, "vtp": 32}
    sources = build_sources(cfg, {"align": 1}, None)
    assert sources["align"].max_tokens == 16 and not sources["align"].augment.augment
    moved = parse_args(["--data", str(world), "--source", f"align=interleaved:{world}/m3w/train.jsonl"])
    assert source_max_tokens(moved)["align"] == 256  # another kind under the name: its kind's length


def test_bad_max_tokens_is_one_line_exit_2(world, tmp_path, capsys):
    assert train_main(["--data", str(world), "--max-tokens", "align:16", "--out", str(tmp_path / "o")]) == 2
    assert "--max-tokens entry 'align:16'" in capsys.readouterr().err
    rc = train_main(["--data", str(world), "--max-tokens", "nope=16", "--model", "tiny", "--vision-encoder", "",
                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown source(s) ['nope']" in err and "Traceback" not in err


def test_a_run_trains_on_augmented_windowed_documents(world, tmp_path):
    from flamingo_core.train import train

    cfg = parse_args(["--data", str(world), "--weights", "m3w=1,ltip=1,align=0,vtp=0", "--batch-size", "4",
                      "--max-steps", "2", "--no-eval", "--no-progress", "--p-next", "0.5",
                      "--out", str(tmp_path / "run")])
    result = train(cfg, model=fc.create_model("tiny"))
    assert result.step == 2 and set(result.losses) == {"m3w", "ltip"}
    assert all(np.isfinite(v) for v in result.losses.values())


def test_the_mixture_passes_media_next_to_the_model(tmp_path, model):
    from flamingo_core.mixture import token_nll

    path = _document(tmp_path, ["first words", "second words", "last words"], COLOURS[:2])
    proc = model.processor
    collate = FlamingoCollator(proc, 256, proc.media_token_id)
    prev = collate([build_source("m3w", "interleaved", path, p_next=0.0).load(0, random.Random(0))])
    nxt = collate([build_source("m3w", "interleaved", path, p_next=1.0).load(0, random.Random(0))])
    set_gates(model, 1.0)
    try:
        with torch.no_grad():
            assert not torch.allclose(token_nll(model, prev)[0], token_nll(model, nxt)[0])
    finally:
        set_gates(model, 0.0)
