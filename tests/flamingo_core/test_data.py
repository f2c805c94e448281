"""Training data: M3W layout and previous/next draw, the three source kinds over JSONL, WebDataset tars and
`datasets`, video sampling, corrupt media policy, the resumable sharded sampler, labels and the collator."""

from __future__ import annotations

import json
import random
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fc_helpers import add_member, png_bytes
from PIL import Image
from test_data_world import make_world

from contrastive_encoder.shared.records import BadSampleError, SkipCounter
from flamingo_core.data import (
    EOC,
    IGNORE_INDEX,
    FlamingoCollator,
    MediaError,
    ResumableBatchSampler,
    SkippedSample,
    build_source,
    load_video,
    m3w_items,
    make_labels,
    make_loader,
    open_store,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def processor():
    import flamingo_core as fc

    return fc.create_model("tiny").processor


def _png(path: Path, colour=(255, 0, 0), size=16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


# ---------------------------------------------------------------- M3W layout


def test_m3w_layout_keeps_document_order_and_joins_texts():
    texts, images = ["T0", "more", None, "T1", None, "T2"], [None, None, "I1", None, "I2", None]
    assert m3w_items(texts, images) == [("text", "T0 more"), ("image", "I1"), ("text", "T1"), ("image", "I2"),
                                        ("text", "T2")]


def test_m3w_rejects_non_parallel_lists():
    with pytest.raises(ValueError, match="parallel"):
        m3w_items(["a"], [None, "x"])
    with pytest.raises(ValueError, match="exactly one"):
        m3w_items(["a", None], ["x", None])


def test_interleaved_source_draws_next_mode_with_p_next(tmp_path):
    _png(tmp_path / "a.png", (255, 0, 0))
    _png(tmp_path / "b.png", (0, 0, 255))
    doc = {"texts": ["intro", None, "about a", None], "images": [None, "a.png", None, "b.png"]}
    (tmp_path / "m3w.jsonl").write_text(json.dumps(doc) + "\n")

    def media_next(p_next, seed):
        src = build_source("m3w", "interleaved", tmp_path / "m3w.jsonl", p_next=p_next)
        items, meta = src.load(0, random.Random(seed))
        assert isinstance(items[0], str)  # the layout is the document's in both modes
        return meta["media_next"]

    assert not any(media_next(0.0, s) for s in range(10))
    assert all(media_next(1.0, s) for s in range(10))
    draws = [media_next(0.5, s) for s in range(40)]
    assert 5 < sum(draws) < 35
    assert draws == [media_next(0.5, s) for s in range(40)]  # reproducible per sample seed


def test_interleaved_items_close_chunks_after_media_with_eoc(world):
    src = build_source("m3w", "interleaved", world / "m3w" / "train.jsonl", p_next=0.0)
    items, meta = src.load(0, random.Random(0))
    assert meta["source"] == "m3w"
    n_img = sum(not isinstance(x, str) for x in items)
    assert 1 <= n_img <= 5
    for prev, cur in zip(items, items[1:]):
        if isinstance(cur, str) and not isinstance(prev, str):
            assert cur.endswith(EOC)


# ---------------------------------------------------------------- pairs and video


def test_pair_source_reads_shapesworld_ltip(world):
    src = build_source("ltip", "pairs", world / "ltip" / "train.jsonl")
    assert len(src) == 16
    items, meta = src.load(3, random.Random(0))
    assert isinstance(items[0], Image.Image) and items[0].mode == "RGB"
    assert items[1].endswith(EOC) and len(items[1]) > len(EOC)
    assert meta["scene"]["objects"][0]["colour"] in items[1]


def test_video_source_samples_frames_from_mp4_and_frame_folders(world, tmp_path_factory):
    src = build_source("vtp", "video", world / "vtp" / "train.jsonl", num_frames=8)
    rec = src.store.record(0)
    assert str(rec["video"]).endswith(".mp4")
    items, _ = src.load(0, random.Random(0))
    frames = items[0]
    assert len(frames) == 8 and all(isinstance(f, Image.Image) for f in frames)
    # a moving object: frames differ
    assert not np.array_equal(np.asarray(frames[0]), np.asarray(frames[-1]))

    folder_world = make_world(tmp_path_factory.getbasetemp(), video_format="frames")
    fsrc = build_source("vtp", "video", folder_world / "vtp" / "train.jsonl", num_frames=4)
    items, _ = fsrc.load(0, random.Random(0))
    assert len(items[0]) == 4


def test_load_video_one_fps_from_a_longer_clip(tmp_path):
    import av

    path = tmp_path / "long.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=2)  # 2 FPS, 20 frames = 10 s
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for i in range(20):
            arr = np.full((32, 32, 3), i * 12, dtype=np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    frames = load_video(path, num_frames=4, fps=1.0, rng=random.Random(1))
    levels = [int(np.asarray(f).mean()) for f in frames]
    steps = np.diff(levels)
    assert len(frames) == 4 and all(18 <= d <= 30 for d in steps), levels  # 1 s apart = 2 source frames


def test_load_video_missing_and_corrupt_raise_media_error(tmp_path):
    with pytest.raises(MediaError, match="nope.mp4"):
        load_video(tmp_path / "nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(MediaError, match="bad.mp4"):
        load_video(bad)


# ---------------------------------------------------------------- corrupt / missing media


def _corrupt_copy(world: Path, tmp_path: Path) -> Path:
    """ltip/train.jsonl copied with record 1's image truncated and record 2's image missing."""
    dst = tmp_path / "ltip"
    shutil.copytree(world / "ltip", dst)
    records = [json.loads(line) for line in (dst / "train.jsonl").read_text().splitlines()]
    data = (dst / records[1]["image"]).read_bytes()
    (dst / records[1]["image"]).write_bytes(data[: len(data) // 3])
    records[2]["image"] = "images/does_not_exist.png"
    (dst / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return dst / "train.jsonl"


def test_corrupt_and_missing_media_are_skipped_and_counted(world, tmp_path, processor):
    path = _corrupt_copy(world, tmp_path)
    src = build_source("ltip", "pairs", path)
    bad = [src.load(i, random.Random(0)) for i in (1, 2)]
    assert all(isinstance(b, SkippedSample) for b in bad)
    assert "does_not_exist.png" in bad[1].where
    assert isinstance(src.load(0, random.Random(0)), tuple)

    # through the loader: a full epoch of 16 samples yields 14 and counts 2
    collator = FlamingoCollator(processor, 64, processor.media_token_id)
    loader = iter(make_loader(src, collator, batch_size=4))
    counter, rows = SkipCounter(), 0
    for _ in range(4):
        batch = next(loader)
        for s in batch["skipped"]:
            counter.skip(s.reason, s.where, strict=False)
        rows += batch["input_ids"].shape[0] if "input_ids" in batch else 0
    assert rows == 14 and sum(counter.values()) == 2


def test_strict_mode_raises_naming_the_file(world, tmp_path):
    path = _corrupt_copy(world, tmp_path)
    src = build_source("ltip", "pairs", path, strict=True)
    with pytest.raises(BadSampleError, match=r"does_not_exist\.png|\.png"):
        src.load(1, random.Random(0))
    with pytest.raises(BadSampleError, match="does_not_exist.png"):
        src.load(2, random.Random(0))


def test_bad_jsonl_rows_are_skipped_and_counted(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "p.jsonl").write_text('{"image": "a.png", "text": "red"}\nnot json\n{"image": "a.png"}\n')
    counter = SkipCounter()
    src = build_source("p", "pairs", tmp_path / "p.jsonl", skipped=counter)
    assert len(src) == 2 and sum(counter.values()) == 1
    assert isinstance(src.load(1, random.Random(0)), SkippedSample)  # no text


# ---------------------------------------------------------------- WebDataset and datasets


def test_webdataset_pairs_and_interleaved(tmp_path):
    for shard in range(2):
        with tarfile.open(tmp_path / f"pairs-{shard:03d}.tar", "w") as tf:
            add_member(tf, f"s{shard}a.png", png_bytes((255, 0, 0)))
            add_member(tf, f"s{shard}a.txt", b"a red square")
            add_member(tf, f"s{shard}b.jpg", b"\x89garbage")
            add_member(tf, f"s{shard}b.json", json.dumps({"caption": "broken"}).encode())
    src = build_source("w", "pairs", str(tmp_path / "pairs-{000..001}.tar"))
    assert len(src) == 4
    results = [src.load(i, random.Random(0)) for i in range(4)]
    good = [r for r in results if isinstance(r, tuple)]
    bad = [r for r in results if isinstance(r, SkippedSample)]
    assert len(good) == 2 and good[0][0][1] == "a red square" + EOC
    assert len(bad) == 2 and all(".jpg" in b.where for b in bad)

    with tarfile.open(tmp_path / "doc.tar", "w") as tf:
        add_member(tf, "d0.json", json.dumps({"texts": ["hello", None, "bye"],
                                        "images": [None, "d0.0.png", None]}).encode())
        add_member(tf, "d0.0.png", png_bytes((0, 255, 0)))
    doc = build_source("m", "interleaved", tmp_path / "doc.tar", p_next=0.0)
    items, _ = doc.load(0, random.Random(0))
    assert items[0] == "hello" + EOC and isinstance(items[1].load(), Image.Image) and items[2] == "bye" + EOC


def test_webdataset_missing_shard_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope-001.tar"):
        open_store(str(tmp_path / "nope-{000..001}.tar"))


def test_hf_datasets_source(tmp_path):
    import datasets

    imgs = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    ds = datasets.Dataset.from_dict({"image": imgs, "text": ["red", "blue"]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "text": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "ds"))
    src = build_source("hf", "pairs", str(tmp_path / "ds"))
    items, _ = src.load(1, random.Random(0))
    assert items[1] == "blue" + EOC and np.asarray(items[0])[0, 0, 2] == 255


# ---------------------------------------------------------------- sampler, labels, collator


def test_sampler_shards_the_global_batch_across_processes():
    one = ResumableBatchSampler(10, 4, rank=0, world_size=1, seed=5)
    r0 = ResumableBatchSampler(10, 2, rank=0, world_size=2, seed=5)
    r1 = ResumableBatchSampler(10, 2, rank=1, world_size=2, seed=5)
    for step in range(7):  # crosses several epoch boundaries
        assert one.batch_at(step) == r0.batch_at(step) + r1.batch_at(step)
    epoch0 = [i for s in range(5) for e, i in ResumableBatchSampler(10, 2, seed=5).batch_at(s)]
    assert sorted(epoch0) == list(range(10))  # each epoch is a permutation
    assert ResumableBatchSampler(10, 2, seed=6).batch_at(0) != ResumableBatchSampler(10, 2, seed=5).batch_at(0)


def test_sampler_resumes_at_start_step():
    fresh = iter(ResumableBatchSampler(7, 3, seed=1))
    batches = [next(fresh) for _ in range(5)]
    resumed = iter(ResumableBatchSampler(7, 3, seed=1, start_step=3))
    assert next(resumed) == batches[3] and next(resumed) == batches[4]


def test_labels_mask_padding_by_attention_mask_and_media_tokens():
    eos = pad = 0
    ids = torch.tensor([[5, 9, 6, 7, eos, pad, pad], [5, 9, 6, eos, 8, 8, eos]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    labels = make_labels(ids, mask, [9])
    assert labels[0, 4] == eos  # the EOS that ends the text is predicted even though pad == EOS
    assert (labels[0, 5:] == IGNORE_INDEX).all()
    assert (labels[:, 1] == IGNORE_INDEX).all()  # the media token
    assert labels[1, 6] == eos


def test_collator_truncates_keeping_media_and_image_tokens_consistent(world, processor):
    src = build_source("m3w", "interleaved", world / "m3w" / "train.jsonl", p_next=0.0)
    samples = [src.load(i, random.Random(i)) for i in range(4)]
    full = FlamingoCollator(processor, 10_000, processor.media_token_id)(samples)
    cut = FlamingoCollator(processor, 40, processor.media_token_id)(samples)
    assert cut["input_ids"].shape[1] <= 40 < full["input_ids"].shape[1]
    per_row = (cut["input_ids"] == processor.media_token_id).sum(1)
    assert torch.equal(per_row, cut["media_mask"].sum(1))
    assert cut["media"].shape[1] <= full["media"].shape[1]
    assert (cut["labels"][cut["input_ids"] == processor.media_token_id] == IGNORE_INDEX).all()
    assert (cut["labels"][cut["attention_mask"] == 0] == IGNORE_INDEX).all()
